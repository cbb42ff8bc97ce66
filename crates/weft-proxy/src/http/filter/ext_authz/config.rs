//! `ExtAuthz` → the filter. What the proxy does not do is refused by name.

use super::{ExtAuthz, Service};
use crate::config::FieldError;
use envoy_types::pb::envoy::config::core::v3::{grpc_service, http_uri};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3::ListStringMatcher;
use http::StatusCode;
use std::time::Duration;

type Result<T> = std::result::Result<T, FieldError>;

/// (GrpcService, its EnvoyGrpc and HttpStatus are listed with the proxy's other uses of them.)
pub const SUPPORTED: &[(&str, &str)] = &[
    (
        super::TYPE,
        "http_service grpc_service transport_api_version=V3 failure_mode_allow status_on_error \
         filter_enabled_metadata allowed_headers",
    ),
    (
        "envoy.extensions.filters.http.ext_authz.v3.HttpService",
        "server_uri path_prefix authorization_request authorization_response",
    ),
    ("envoy.config.core.v3.HttpUri", "uri cluster timeout"),
    (
        "envoy.extensions.filters.http.ext_authz.v3.AuthorizationRequest",
        "allowed_headers headers_to_add",
    ),
    (
        "envoy.extensions.filters.http.ext_authz.v3.AuthorizationResponse",
        "allowed_upstream_headers allowed_client_headers",
    ),
    ("envoy.type.matcher.v3.ListStringMatcher", "patterns"),
];

/// Envoy's gRPC default: a check that takes longer fails.
const GRPC_DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

fn list(l: Option<&ListStringMatcher>, path: &str) -> Result<Vec<crate::route::StringMatch>> {
    l.map(|l| {
        l.patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                crate::config::convert::headers_string_match(p, &format!("{path}.patterns[{i}]"))
            })
            .collect()
    })
    .unwrap_or_else(|| Ok(Vec::new()))
}

pub fn build(c: &pb::ExtAuthz, path: &str) -> Result<ExtAuthz> {
    let (service, timeout) = match &c.services {
        Some(pb::ext_authz::Services::HttpService(h)) => {
            let hpath = format!("{path}.http_service");
            let uri = h
                .server_uri
                .as_ref()
                .ok_or_else(|| FieldError::new(format!("{hpath}.server_uri"), "is required"))?;
            let Some(http_uri::HttpUpstreamType::Cluster(cluster)) = &uri.http_upstream_type else {
                return Err(FieldError::new(
                    format!("{hpath}.server_uri.cluster"),
                    "is required",
                ));
            };
            let timeout =
                crate::config::convert::duration(uri.timeout.as_ref()).ok_or_else(|| {
                    FieldError::new(format!("{hpath}.server_uri.timeout"), "is required")
                })?;
            let request = h.authorization_request.as_ref();
            let response = h.authorization_response.as_ref();
            // Envoy moved `allowed_headers` to the filter; either place names them.
            #[allow(deprecated)]
            let allowed = c
                .allowed_headers
                .as_ref()
                .or(request.and_then(|r| r.allowed_headers.as_ref()));
            (
                Service::Http {
                    cluster: cluster.clone(),
                    path_prefix: h.path_prefix.clone(),
                    allowed_headers: list(allowed, &format!("{path}.allowed_headers"))?,
                    headers_to_add: request
                        .map(|r| &r.headers_to_add)
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, h)| {
                            let hpath =
                                format!("{hpath}.authorization_request.headers_to_add[{i}]");
                            let name = http::HeaderName::from_bytes(h.key.as_bytes())
                                .map_err(|_| FieldError::new(&hpath, "not a header name"))?;
                            let value = http::HeaderValue::from_str(&h.value)
                                .map_err(|_| FieldError::new(&hpath, "not a header value"))?;
                            Ok((name, value))
                        })
                        .collect::<Result<_>>()?,
                    upstream_headers: list(
                        response.and_then(|r| r.allowed_upstream_headers.as_ref()),
                        &format!("{hpath}.authorization_response.allowed_upstream_headers"),
                    )?,
                    client_headers: list(
                        response.and_then(|r| r.allowed_client_headers.as_ref()),
                        &format!("{hpath}.authorization_response.allowed_client_headers"),
                    )?,
                },
                timeout,
            )
        }
        Some(pb::ext_authz::Services::GrpcService(g)) => {
            let Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) = &g.target_specifier else {
                return Err(FieldError::new(
                    format!("{path}.grpc_service.envoy_grpc"),
                    "is required (google_grpc is not supported by the Weft proxy)",
                ));
            };
            (
                Service::Grpc {
                    cluster: e.cluster_name.clone(),
                    authority: e.authority.clone(),
                },
                crate::config::convert::duration(g.timeout.as_ref())
                    .unwrap_or(GRPC_DEFAULT_TIMEOUT),
            )
        }
        None => {
            return Err(FieldError::new(
                path,
                "http_service or grpc_service is required",
            ));
        }
    };
    let status_on_error = match &c.status_on_error {
        Some(s) => u16::try_from(s.code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| FieldError::new(format!("{path}.status_on_error"), "not a status"))?,
        None => StatusCode::FORBIDDEN,
    };
    let enabled_metadata = c
        .filter_enabled_metadata
        .as_ref()
        .map(|m| {
            crate::config::convert::rbac_metadata(m, &format!("{path}.filter_enabled_metadata"))
        })
        .transpose()?;
    Ok(ExtAuthz {
        service,
        timeout,
        failure_mode_allow: c.failure_mode_allow,
        status_on_error,
        enabled_metadata,
    })
}
