//! What Envoy's codecs and connection manager refuse in a client's request, checked before any
//! filter or route sees it. hyper parses more liberally than Envoy (lowercase methods, other
//! transfer codings, HTTP/1.0, a missing `Host`), so what Envoy's codec would reject is rejected
//! here with Envoy's status and `%RESPONSE_CODE_DETAILS%`, and never forwarded.

use super::HttpConnectionManager;
use super::local_reply::{DownstreamError, LocalReply};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderValue, Method, Version};

/// `headers_with_underscores_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnderscoreAction {
    #[default]
    Allow,
    RejectRequest,
    DropHeader,
}

/// The methods Envoy's HTTP/1 codec knows (it refuses any other, in any case).
const HTTP1_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
];

static HTTP2_SETTINGS: http::HeaderName = http::HeaderName::from_static("http2-settings");

/// Checks a request as Envoy's codec and connection manager would, and normalises what Envoy
/// normalises (several `Host` headers joined, an `h2c` upgrade offer dropped). `Ok` is the
/// request's authority (the target's, else `Host`, else empty); `Err` the reply that refuses
/// it.
pub(super) fn check(
    parts: &mut http::request::Parts,
    hcm: &HttpConnectionManager,
    codec: &crate::stats::CodecStats,
) -> Result<String, LocalReply> {
    let refuse = |e| Err(LocalReply::Downstream(e));
    // One pass over the headers gathers what the checks need.
    let mut size = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    let (mut te, mut te_chunked, mut content_length, mut hosts, mut h2c, mut underscored) =
        (0u32, true, false, 0u32, false, false);
    let underscores_matter = hcm.headers_with_underscores != UnderscoreAction::Allow;
    for (name, value) in parts.headers.iter() {
        size += name.as_str().len() + value.len();
        if name == TRANSFER_ENCODING {
            te += 1;
            te_chunked &= value.as_bytes().eq_ignore_ascii_case(b"chunked");
        } else if name == CONTENT_LENGTH {
            content_length = true;
        } else if name == HOST {
            hosts += 1;
        } else if name == UPGRADE {
            h2c = value.as_bytes().eq_ignore_ascii_case(b"h2c");
        } else if underscores_matter && name.as_str().contains('_') {
            underscored = true;
        }
    }
    let http1 = matches!(
        parts.version,
        Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
    );
    if http1 {
        // `accept_http_10` is not supported: Envoy's default answers 426.
        if parts.version != Version::HTTP_11 {
            return refuse(DownstreamError::LowVersion);
        }
        if !HTTP1_METHODS.contains(&parts.method.as_str()) {
            return refuse(DownstreamError::Codec);
        }
        if te > 0 {
            if te > 1 || !te_chunked {
                return refuse(DownstreamError::InvalidTransferEncoding);
            }
            if content_length {
                return refuse(DownstreamError::ContentLengthAndChunked);
            }
        }
        if parts.method == Method::CONNECT {
            let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
            if parts.uri.authority().is_none() || !(target.is_empty() || target == "/") {
                return refuse(DownstreamError::Codec);
            }
        } else if parts.uri.scheme().is_none() {
            let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
            if target == "*" {
                return refuse(DownstreamError::AbsolutePathRejected);
            }
            if !target.starts_with('/') {
                return refuse(DownstreamError::Codec);
            }
        }
        // An `h2c` upgrade offer is ignored: the request is served as HTTP/1.1, as Envoy does.
        if h2c {
            parts.headers.remove(UPGRADE);
            parts.headers.remove(&HTTP2_SETTINGS);
            parts.headers.remove(CONNECTION);
        }
        if hosts > 1 {
            join_hosts(parts);
        }
        if hosts == 0 && parts.uri.authority().is_none() {
            return refuse(DownstreamError::MissingHost);
        }
    }
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str().as_bytes(),
        None => parts
            .headers
            .get(HOST)
            .map_or(&[][..], HeaderValue::as_bytes),
    };
    // Valid authority characters are ASCII, so the text is UTF-8 once they are checked.
    let authority = match std::str::from_utf8(authority) {
        Ok(a) if authority_is_valid(a.as_bytes()) => a.to_string(),
        _ => return refuse(DownstreamError::InvalidAuthority),
    };
    if size > hcm.max_request_headers_bytes {
        return refuse(DownstreamError::HeadersTooLarge);
    }
    if underscored {
        let (dropped, rejected) = codec.underscores(!http1);
        if hcm.headers_with_underscores == UnderscoreAction::RejectRequest {
            crate::stats::inc(rejected);
            return refuse(DownstreamError::Underscore);
        }
        let names: Vec<http::HeaderName> = parts
            .headers
            .keys()
            .filter(|k| k.as_str().contains('_'))
            .cloned()
            .collect();
        for k in names {
            parts.headers.remove(&k);
            crate::stats::inc(dropped);
        }
    }
    Ok(authority)
}

/// Several `Host` headers become one, their values joined with commas, as Envoy's codec joins
/// repeated headers.
fn join_hosts(parts: &mut http::request::Parts) {
    let mut joined = Vec::new();
    for h in parts.headers.get_all(HOST) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(h.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        parts.headers.insert(HOST, v);
    }
}

/// RFC 3986's authority characters (host, port, userinfo, IPv6 brackets), as Envoy's
/// `authorityIsValid` allows them.
fn authority_is_valid(a: &[u8]) -> bool {
    a.iter().all(|&c| AUTHORITY_CHARS[usize::from(c)])
}

/// `AUTHORITY_CHARS[c]`: `c` may appear in an authority. A table: this runs on every request.
static AUTHORITY_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'['
                    | b']'
                    | b'%'
            );
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_with_spaces_or_controls_are_invalid() {
        assert!(authority_is_valid(b"a.example:8080"));
        assert!(authority_is_valid(b"[::1]:80"));
        assert!(authority_is_valid(b"a,b"));
        assert!(!authority_is_valid(b"a b"));
        assert!(!authority_is_valid(b"a\tb"));
        assert!(!authority_is_valid(b"a/b"));
    }
}
