//! gRPC clients read a call's outcome from `grpc-status`, not from the HTTP status, so the
//! proxy's own replies to them are shaped as gRPC replies, as Envoy shapes them.

use crate::body::ProxyBody;
use http::{HeaderValue, Response, StatusCode};

/// A local reply to a gRPC client as Envoy makes it: HTTP 200 with only headers, the HTTP
/// status mapped to a gRPC status and the reply's text as `grpc-message`, because gRPC clients
/// read the status from there and not from `:status`.
pub fn local_reply(resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    let code = match parts.status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    };
    let message = match &body {
        ProxyBody::Full(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    parts.status = StatusCode::OK;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    parts
        .headers
        .insert("grpc-status", HeaderValue::from(code as u16));
    if let (false, Ok(v)) = (
        message.is_empty(),
        HeaderValue::from_str(&percent_encode(&message)),
    ) {
        parts.headers.insert("grpc-message", v);
    }
    Response::from_parts(parts, ProxyBody::Empty)
}

/// A trailers-only gRPC reply with `code` (a fault filter's `grpc_status` abort).
pub fn status_reply(code: u32, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Empty);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// gRPC's `grpc-message` encoding: printable ASCII except `%` as is, the rest percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("no healthy upstream"), "no healthy upstream");
        assert_eq!(percent_encode("50% ü"), "50%25 %C3%BC");
    }
}
