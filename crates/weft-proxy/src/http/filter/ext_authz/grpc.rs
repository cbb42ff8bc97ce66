//! The gRPC check: `envoy.service.auth.v3.Authorization/Check` with the request's attributes
//! (its peers, method, path, host, scheme and headers), as Envoy's client sends them.

use super::Verdict;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, check_response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::net::SocketAddr;

fn peer(addr: SocketAddr) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

pub fn check_request(cx: &crate::http::filter::RequestContext<'_>) -> CheckRequest {
    let head = &*cx.head;
    let mut headers = std::collections::HashMap::new();
    for (name, value) in &head.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|old: &mut String| {
                old.push(',');
                old.push_str(&v);
            })
            .or_insert(v);
    }
    let host = head
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| head.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    let id = head
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(cx.conn.peer)),
            destination: Some(peer(cx.conn.local)),
            request: Some(Request {
                http: Some(HttpRequest {
                    id,
                    method: head.method.to_string(),
                    headers,
                    path: head
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string(),
                    host,
                    scheme: if cx.conn.tls { "https" } else { "http" }.into(),
                    protocol: format!("{:?}", head.version),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn header_map(
    options: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption],
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for o in options {
        if let Some(h) = &o.header
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.key.as_bytes()),
                HeaderValue::from_str(&h.value),
            )
        {
            out.insert(n, v);
        }
    }
    out
}

pub async fn check(
    addr: SocketAddr,
    authority: String,
    request: CheckRequest,
) -> Result<Verdict, String> {
    let channel = crate::grpc_client::channel(addr, &authority).await?;
    let response = AuthorizationClient::new(channel)
        .check(request)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    if response.status.as_ref().is_none_or(|s| s.code == 0) {
        let headers = match &response.http_response {
            Some(check_response::HttpResponse::OkResponse(ok)) => header_map(&ok.headers),
            _ => HeaderMap::new(),
        };
        return Ok(Verdict::Allow(headers));
    }
    let (status, headers, body) = match &response.http_response {
        Some(check_response::HttpResponse::DeniedResponse(d)) => (
            d.status
                .as_ref()
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| c.as_u16() >= 200)
                .unwrap_or(StatusCode::FORBIDDEN),
            header_map(&d.headers),
            d.body.clone(),
        ),
        _ => (StatusCode::FORBIDDEN, HeaderMap::new(), String::new()),
    };
    let mut out = http::Response::new(crate::http::body::ProxyBody::full(body));
    *out.status_mut() = status;
    out.headers_mut().extend(headers);
    Ok(Verdict::Deny(out))
}
