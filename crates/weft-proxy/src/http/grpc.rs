//! gRPC clients read a call's outcome from `grpc-status`, not from the HTTP status, so the
//! proxy's own replies to them are shaped as gRPC replies, as Envoy shapes them.

use crate::http::body::ProxyBody;
use http::{HeaderValue, Response, StatusCode};

/// A local reply to a gRPC client as Envoy makes it: HTTP 200 with only headers, the HTTP
/// status mapped to a gRPC status and the reply's text as `grpc-message`, because gRPC clients
/// read the status from there and not from `:status`.
///
/// `code` overrides the mapped status where Envoy names one (DEADLINE_EXCEEDED for a stream
/// past its duration).
pub fn local_reply(resp: Response<ProxyBody>, code: Option<u16>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    let code = code.unwrap_or(match parts.status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    });
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
    parts.headers.insert("grpc-status", HeaderValue::from(code));
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

/// gRPC's DEADLINE_EXCEEDED.
pub const DEADLINE_EXCEEDED: u16 = 4;

/// The `grpc-timeout` header: up to eight digits and a unit (H, M, S, m, u, n). `None` when
/// absent or malformed, which Envoy ignores.
pub fn timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
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

/// The `grpc-status` a header block carries (trailers, or a trailers-only response's headers).
pub fn status(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_reads_each_unit_and_ignores_the_malformed() {
        use std::time::Duration;
        let t = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", http::HeaderValue::from_str(v).unwrap());
            timeout(&h)
        };
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("1S"), Some(Duration::from_secs(1)));
        assert_eq!(t("300m"), Some(Duration::from_millis(300)));
        assert_eq!(t("0m"), Some(Duration::ZERO));
        assert_eq!(t("15u"), Some(Duration::from_micros(15)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["bogus", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("no healthy upstream"), "no healthy upstream");
        assert_eq!(percent_encode("50% ü"), "50%25 %C3%BC");
    }
}

/// Messages of a gRPC stream so far, each way (Envoy's `GrpcStatsObject` filter state): the
/// request body counts into `request`, the response body into `response`.
#[derive(Debug, Default)]
pub struct MessageCounts {
    pub request: std::sync::atomic::AtomicU64,
    pub response: std::sync::atomic::AtomicU64,
    /// `emit_filter_state`: later filters (Istio's stats) may read the counts.
    pub emitted: bool,
}

/// Counts the length-prefixed messages of one direction of a gRPC stream as its bytes pass,
/// however the frames split them: a message counts when its 5-byte prefix begins, as Envoy's
/// frame inspector counts it.
#[derive(Debug)]
pub struct FrameCounter {
    counts: std::sync::Arc<MessageCounts>,
    response: bool,
    /// Bytes of the current prefix read so far (0 when between messages).
    prefix_read: u8,
    length: [u8; 4],
    /// Bytes of the current message still to pass.
    body_left: u64,
}

impl FrameCounter {
    pub fn new(counts: std::sync::Arc<MessageCounts>, response: bool) -> Self {
        FrameCounter {
            counts,
            response,
            prefix_read: 0,
            length: [0; 4],
            body_left: 0,
        }
    }

    pub fn inspect(&mut self, mut data: &[u8]) {
        let mut started = 0;
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len() as u64);
                self.body_left -= n;
                data = data.get(n as usize..).unwrap_or_default();
                continue;
            }
            if self.prefix_read == 0 {
                started += 1;
            }
            let Some((&b, rest)) = data.split_first() else {
                break;
            };
            data = rest;
            if let Some(slot) = self
                .length
                .get_mut(usize::from(self.prefix_read).wrapping_sub(1))
            {
                *slot = b;
            }
            self.prefix_read += 1;
            if self.prefix_read == 5 {
                self.prefix_read = 0;
                self.body_left = u64::from(u32::from_be_bytes(self.length));
            }
        }
        if started > 0 {
            let counter = if self.response {
                &self.counts.response
            } else {
                &self.counts.request
            };
            counter.fetch_add(started, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod frame_tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    #[test]
    fn counts_messages_however_the_bytes_are_split() {
        let mut stream = Vec::new();
        for len in [0, 3, 300, 1] {
            stream.extend(message(len));
        }
        for chunk in [1, 2, 5, 7, 64, stream.len()] {
            let counts = Arc::new(MessageCounts::default());
            let mut c = FrameCounter::new(counts.clone(), true);
            for piece in stream.chunks(chunk) {
                c.inspect(piece);
            }
            assert_eq!(
                counts.response.load(Ordering::Relaxed),
                4,
                "chunks of {chunk}"
            );
            assert_eq!(counts.request.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn a_message_counts_when_its_prefix_begins() {
        let counts = Arc::new(MessageCounts::default());
        let mut c = FrameCounter::new(counts.clone(), false);
        c.inspect(&[0, 0]);
        assert_eq!(counts.request.load(Ordering::Relaxed), 1);
        c.inspect(&[0, 0, 2, 1]);
        assert_eq!(counts.request.load(Ordering::Relaxed), 1);
        c.inspect(&[1]);
        c.inspect(&[0]);
        assert_eq!(counts.request.load(Ordering::Relaxed), 2);
    }
}
