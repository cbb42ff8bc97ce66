//! `envoy.filters.http.ext_authz`: Envoy's external authorization filter, as istiod writes it
//! for CUSTOM AuthorizationPolicies. When its `filter_enabled_metadata` matches (the RBAC
//! filter's shadow rules found a CUSTOM policy for the request), it asks the authorization
//! service, over HTTP (the request's method and path under `path_prefix`, its allowed headers)
//! or gRPC (`envoy.service.auth.v3.Authorization/Check`): an OK lets the request go on with the
//! headers the service adds; a denial is the service's own status, body and headers; a service
//! that cannot be asked answers `status_on_error` (403) unless `failure_mode_allow`.
//!
//! The service is reached at an endpoint of its cluster, on a connection of the filter's own
//! (not the cluster's pool or counters).

mod config;
mod grpc;

use crate::rbac::metadata::MetadataMatch;
use crate::route::StringMatch;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";

#[derive(Debug)]
pub enum Service {
    Http {
        cluster: String,
        path_prefix: String,
        /// `allowed_headers` (besides those always sent).
        allowed_headers: Vec<StringMatch>,
        /// `authorization_request.headers_to_add`: set on every check.
        headers_to_add: Vec<(HeaderName, HeaderValue)>,
        /// `authorization_response.allowed_upstream_headers`.
        upstream_headers: Vec<StringMatch>,
        /// `authorization_response.allowed_client_headers`; empty: all but `host`.
        client_headers: Vec<StringMatch>,
    },
    Grpc {
        cluster: String,
        authority: String,
    },
}

#[derive(Debug)]
pub struct ExtAuthz {
    pub service: Service,
    pub timeout: Duration,
    pub failure_mode_allow: bool,
    pub status_on_error: StatusCode,
    pub enabled_metadata: Option<MetadataMatch>,
}

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: None,
    build: |any, cx| {
        let pb = crate::config::convert::decode_any(any, cx.path)?;
        Ok(Arc::new(config::build(&pb, cx.path)?))
    },
    build_per_route: |_, cx| {
        Err(crate::config::FieldError::new(
            cx.path,
            "ExtAuthzPerRoute is not supported by the Weft proxy",
        ))
    },
    supported: config::SUPPORTED,
};

/// What the service answered.
pub enum Verdict {
    Allow(HeaderMap),
    Deny(http::Response<crate::http::body::ProxyBody>),
}

/// Headers the HTTP check always carries, as Envoy's client sends them.
const ALWAYS: [&str; 2] = ["authorization", "content-length"];

impl ExtAuthz {
    fn endpoint(&self, cx: &super::RequestContext<'_>) -> Option<SocketAddr> {
        let cluster = match &self.service {
            Service::Http { cluster, .. } | Service::Grpc { cluster, .. } => cluster,
        };
        crate::http::side::endpoint(&cx.conn.shared, cluster)
    }
}

fn matches_any(list: &[StringMatch], name: &str) -> bool {
    list.iter().any(|m| m.matches(name))
}

/// The HTTP check of a request: its method, and its path under the prefix, with its host,
/// the headers always sent, those `allowed` names, and those `added`.
fn check_request(
    head: &http::request::Parts,
    path_prefix: &str,
    allowed: &[StringMatch],
    added: &[(HeaderName, HeaderValue)],
) -> Result<http::Request<Empty<Bytes>>, String> {
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = http::Request::builder()
        .method(head.method.clone())
        .uri(format!("{path_prefix}{path}"));
    let host = head.headers.get(http::header::HOST).cloned().or_else(|| {
        head.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(h) = host {
        req = req.header(http::header::HOST, h);
    }
    for (name, value) in &head.headers {
        let n = name.as_str();
        if n != "host" && (ALWAYS.contains(&n) || matches_any(allowed, n)) {
            req = req.header(name, value);
        }
    }
    for (name, value) in added {
        req = req.header(name, value);
    }
    req.header(http::header::CONTENT_LENGTH, "0")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())
}

/// Sends the HTTP check and reads the verdict: a 200 allows, with the upstream headers it
/// may set; anything else denies with the service's status, body and client headers.
async fn http_check(
    addr: SocketAddr,
    req: http::Request<Empty<Bytes>>,
    upstream_allowed: Vec<StringMatch>,
    client_allowed: Vec<StringMatch>,
) -> Result<Verdict, String> {
    let resp = crate::http::side::send(addr, req).await?;
    let (parts, body) = resp.into_parts();
    if parts.status == StatusCode::OK {
        let mut add = HeaderMap::new();
        for (name, value) in &parts.headers {
            if matches_any(&upstream_allowed, name.as_str()) {
                add.insert(name.clone(), value.clone());
            }
        }
        return Ok(Verdict::Allow(add));
    }
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let mut out = http::Response::new(crate::http::body::ProxyBody::full(body));
    *out.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        let always = [
            "path",
            "status",
            "content-length",
            "www-authenticate",
            "location",
        ];
        let keep = if client_allowed.is_empty() {
            n != "host"
        } else {
            always.contains(&n) || matches_any(&client_allowed, n)
        };
        if keep && n != "transfer-encoding" && n != "connection" {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(Verdict::Deny(out))
}

impl super::HttpFilter for ExtAuthz {
    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        _per_route: super::PerRoute<'_>,
    ) -> super::Decode {
        if let Some(m) = &self.enabled_metadata
            && !m.matches(cx.stream.metadata.as_deref())
        {
            return super::Decode::Continue;
        }
        let failed = |allow: bool, status: StatusCode| {
            if allow {
                super::Decode::Continue
            } else {
                super::Decode::Respond(Box::new(local(status)), "ext_authz_error")
            }
        };
        let Some(addr) = self.endpoint(cx) else {
            return failed(self.failure_mode_allow, self.status_on_error);
        };
        let timeout = self.timeout;
        let (allow_on_error, status_on_error) = (self.failure_mode_allow, self.status_on_error);
        let check: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Verdict, String>> + Send>,
        > = match &self.service {
            Service::Http {
                path_prefix,
                allowed_headers,
                headers_to_add,
                upstream_headers,
                client_headers,
                ..
            } => {
                let req = check_request(cx.head, path_prefix, allowed_headers, headers_to_add);
                let (upstream, client) = (upstream_headers.clone(), client_headers.clone());
                Box::pin(async move { http_check(addr, req?, upstream, client).await })
            }
            Service::Grpc { authority, .. } => {
                let request = grpc::check_request(cx);
                Box::pin(grpc::check(addr, authority.clone(), request))
            }
        };
        super::Decode::Pause(Box::pin(async move {
            match tokio::time::timeout(timeout, check).await {
                Ok(Ok(Verdict::Allow(headers))) => super::Decode::ContinueWith(headers),
                Ok(Ok(Verdict::Deny(resp))) => {
                    super::Decode::Respond(Box::new(resp), "ext_authz_denied")
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "ext_authz: the authorization service failed");
                    failed(allow_on_error, status_on_error)
                }
                Err(_) => failed(allow_on_error, status_on_error),
            }
        }))
    }
}

/// An answer of the filter's own: a status and no body.
fn local(status: StatusCode) -> http::Response<crate::http::body::ProxyBody> {
    let mut r = http::Response::new(crate::http::body::ProxyBody::Empty);
    *r.status_mut() = status;
    r
}
