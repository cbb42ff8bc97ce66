//! Trace context on the wire: B3 (Zipkin's `x-b3-*` headers, and the single `b3` header
//! Envoy reads but never writes) and W3C Trace Context (`traceparent`, `tracestate`), read and
//! written as Envoy's Zipkin and OpenTelemetry tracers do.

use http::{HeaderMap, HeaderName, HeaderValue};

pub static B3: HeaderName = HeaderName::from_static("b3");
pub static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What a request says about the trace it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: u128,
    /// 128-bit ids are written back as 32 hex digits, 64-bit ones as 16.
    pub trace_id_128: bool,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    /// `None` when the request leaves it to this proxy.
    pub sampled: Option<bool>,
    pub tracestate: Option<HeaderValue>,
}

/// Why a request's trace headers are not usable: Envoy then makes no span at all.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

fn hex64(s: &str) -> Option<u64> {
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

fn trace_id(s: &str) -> Option<(u128, bool)> {
    if !matches!(s.len(), 16 | 32) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((u128::from_str_radix(s, 16).ok()?, s.len() == 32))
}

/// The trace headers of a request, each name's first value, found in one pass over the
/// headers: most requests carry none of them, and one look at each name costs less than a
/// hashed lookup by each of the ten names a tracer reads.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    pub request_id: Option<&'a HeaderValue>,
    pub client_trace_id: bool,
    pub force_trace: bool,
    b3: Option<&'a HeaderValue>,
    b3_trace_id: Option<&'a HeaderValue>,
    b3_span_id: Option<&'a HeaderValue>,
    b3_parent_span_id: Option<&'a HeaderValue>,
    b3_sampled: Option<&'a HeaderValue>,
    traceparent: Option<&'a HeaderValue>,
    tracestate: bool,
}

impl<'a> Scan<'a> {
    pub fn of(headers: &'a HeaderMap) -> Self {
        let mut s = Scan::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                "x-request-id" => &mut s.request_id,
                "x-client-trace-id" => {
                    s.client_trace_id = true;
                    continue;
                }
                "x-envoy-force-trace" => {
                    s.force_trace = true;
                    continue;
                }
                "b3" => &mut s.b3,
                "x-b3-traceid" => &mut s.b3_trace_id,
                "x-b3-spanid" => &mut s.b3_span_id,
                "x-b3-parentspanid" => &mut s.b3_parent_span_id,
                "x-b3-sampled" => &mut s.b3_sampled,
                "traceparent" => &mut s.traceparent,
                "tracestate" => {
                    s.tracestate = true;
                    continue;
                }
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        s
    }

    /// The request carries B3 headers that writing a span's own does not replace.
    pub fn b3_leftovers(&self) -> (bool, bool) {
        (self.b3.is_some(), self.b3_parent_span_id.is_some())
    }
}

/// A header's text; a value that is not visible ASCII is malformed.
fn text(v: Option<&HeaderValue>) -> Result<Option<&str>, Malformed> {
    v.map(|v| v.to_str().map_err(|_| Malformed)).transpose()
}

/// B3, the single `b3` header first (`traceid-spanid[-sampled[-parentid]]`, or only the
/// sampling flag), else `x-b3-traceid` and `x-b3-spanid` (both needed) with the optional
/// parent and `x-b3-sampled`. `Ok(None)`: no context; a sampling flag alone is returned as
/// a flag with no ids.
pub fn b3(scan: &Scan<'_>) -> Result<(Option<Incoming>, Option<bool>), Malformed> {
    let flag = |s: &str| match s {
        "1" | "d" | "true" => Ok(Some(true)),
        "0" | "false" => Ok(Some(false)),
        _ => Err(Malformed),
    };
    if let Some(single) = text(scan.b3)? {
        let mut parts = single.split('-');
        let (Some(first), second, third, fourth) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Malformed);
        };
        if parts.next().is_some() {
            return Err(Malformed);
        }
        let Some(span) = second else {
            return Ok((None, flag(first)?));
        };
        let sampled = match third {
            Some(f) => flag(f)?,
            None => None,
        };
        return Ok((Some(b3_context(first, span, fourth, sampled)?), sampled));
    }
    let sampled = match text(scan.b3_sampled)? {
        Some(s) => flag(s)?,
        None => None,
    };
    let (Some(t), Some(s)) = (text(scan.b3_trace_id)?, text(scan.b3_span_id)?) else {
        return Ok((None, sampled));
    };
    let parent = text(scan.b3_parent_span_id)?;
    Ok((Some(b3_context(t, s, parent, sampled)?), sampled))
}

/// A B3 context from its trace id, span id and optional parent id, in hex.
fn b3_context(
    trace: &str,
    span: &str,
    parent: Option<&str>,
    sampled: Option<bool>,
) -> Result<Incoming, Malformed> {
    let (trace_id, trace_id_128) = trace_id(trace).ok_or(Malformed)?;
    Ok(Incoming {
        trace_id,
        trace_id_128,
        span_id: hex64(span).ok_or(Malformed)?,
        parent_id: match parent {
            Some(p) => Some(hex64(p).ok_or(Malformed)?),
            None => None,
        },
        sampled,
        tracestate: None,
    })
}

/// W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex flags>`), with `tracestate` passed on.
pub fn w3c(scan: &Scan<'_>, headers: &HeaderMap) -> Result<Option<Incoming>, Malformed> {
    let Some(tp) = text(scan.traceparent)? else {
        return Ok(None);
    };
    let parts: Vec<&str> = tp.split('-').collect();
    let [version, t, s, flags] = parts.as_slice() else {
        return Err(Malformed);
    };
    if tp.len() != 55 || version.len() != 2 || t.len() != 32 || flags.len() != 2 {
        return Err(Malformed);
    }
    let (trace_id, _) = trace_id(t).ok_or(Malformed)?;
    let span_id = hex64(s).ok_or(Malformed)?;
    let flags = u8::from_str_radix(flags, 16).map_err(|_| Malformed)?;
    if trace_id == 0 || span_id == 0 {
        return Err(Malformed);
    }
    let states: Vec<&str> = if scan.tracestate {
        headers
            .get_all(&TRACESTATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    Ok(Some(Incoming {
        trace_id,
        trace_id_128: true,
        span_id,
        parent_id: None,
        sampled: Some(flags & 1 == 1),
        tracestate: (!states.is_empty())
            .then(|| HeaderValue::from_str(&states.join(",")).ok())
            .flatten(),
    }))
}

/// The trace id as written: 32 hex digits, or 16 for a 64-bit id.
pub fn trace_id_hex(id: u128, wide: bool) -> String {
    if wide {
        format!("{id:032x}")
    } else {
        format!("{:016x}", id as u64)
    }
}

/// `bytes` as lowercase hex into `out` (twice as long): what every request's trace headers
/// are made of, a byte at a time.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Writes B3 headers for a span (Envoy writes the multi-header form only). `leftovers` is
/// what [`Scan::b3_leftovers`] found: a single `b3` header, a parent span id; they are removed
/// only when there.
pub fn inject_b3(
    headers: &mut HeaderMap,
    trace_id: u128,
    wide: bool,
    span_id: u64,
    parent_id: Option<u64>,
    sampled: bool,
    leftovers: (bool, bool),
) {
    let (had_b3, had_parent) = leftovers;
    if had_b3 {
        headers.remove(&B3);
    }
    // One buffer for the three ids, each header a slice of it: one allocation per request.
    let digits = if wide { 32 } else { 16 };
    let mut hex = [0u8; 64];
    let trace = trace_id.to_be_bytes();
    hex_into(&trace[16 - digits / 2..], &mut hex[..digits]);
    hex_into(&span_id.to_be_bytes(), &mut hex[digits..digits + 16]);
    let len = match parent_id {
        Some(p) => {
            hex_into(&p.to_be_bytes(), &mut hex[digits + 16..digits + 32]);
            digits + 32
        }
        None => digits + 16,
    };
    let hex = bytes::Bytes::copy_from_slice(&hex[..len]);
    headers.reserve(4);
    let mut put = |n: &HeaderName, range: std::ops::Range<usize>| {
        if let Ok(v) = HeaderValue::from_maybe_shared(hex.slice(range)) {
            headers.insert(n.clone(), v);
        }
    };
    put(&B3_TRACE_ID, 0..digits);
    put(&B3_SPAN_ID, digits..digits + 16);
    if parent_id.is_some() {
        put(&B3_PARENT_SPAN_ID, digits + 16..digits + 32);
    } else if had_parent {
        headers.remove(&B3_PARENT_SPAN_ID);
    }
    headers.insert(
        B3_SAMPLED.clone(),
        HeaderValue::from_static(if sampled { "1" } else { "0" }),
    );
}

/// Writes `traceparent` (and the `tracestate` passed on) for a span.
pub fn inject_w3c(
    headers: &mut HeaderMap,
    trace_id: u128,
    span_id: u64,
    sampled: bool,
    tracestate: Option<&HeaderValue>,
) {
    let v = format!(
        "00-{trace_id:032x}-{span_id:016x}-{}",
        if sampled { "01" } else { "00" }
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        headers.insert(TRACEPARENT.clone(), v);
    }
    if let Some(ts) = tracestate {
        headers.insert(TRACESTATE.clone(), ts.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn b3_multi_single_and_flag_only() {
        let b3 = |h: HeaderMap| b3(&Scan::of(&h));
        let (c, s) = b3(headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "1"),
        ]))
        .unwrap();
        let c = c.unwrap();
        assert_eq!(c.trace_id, 0x463ac35c9f6413ad48485a3953bb6124);
        assert!(c.trace_id_128);
        assert_eq!(c.span_id, 0xa2fb4a1d1a96d312);
        assert_eq!(c.parent_id, Some(0x20000000000001));
        assert_eq!(s, Some(true));
        let (c, s) = b3(headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90",
        )]))
        .unwrap();
        assert_eq!(c.unwrap().parent_id, Some(0x05e3ac9a4f6e3b90));
        assert_eq!(s, Some(true));
        assert_eq!(b3(headers(&[("b3", "0")])).unwrap(), (None, Some(false)));
        assert_eq!(b3(headers(&[("b3", "xyz-1")])), Err(Malformed));
        assert_eq!(b3(headers(&[("b3", "a-b-1-c-d")])), Err(Malformed));
        // A trace id without a span id is no context.
        assert_eq!(
            b3(headers(&[("x-b3-traceid", "463ac35c9f6413ad")])).unwrap(),
            (None, None)
        );
    }

    #[test]
    fn b3_written_as_hex_and_leftovers_removed() {
        let mut h = headers(&[
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("x-b3-parentspanid", "0020000000000001"),
        ]);
        let leftovers = Scan::of(&h).b3_leftovers();
        assert_eq!(leftovers, (true, true));
        inject_b3(
            &mut h,
            0x0123456789abcdef_fedcba9876543210,
            true,
            0x00a0b0c0d0e0f001,
            None,
            false,
            leftovers,
        );
        assert_eq!(h["x-b3-traceid"], "0123456789abcdeffedcba9876543210");
        assert_eq!(h["x-b3-spanid"], "00a0b0c0d0e0f001");
        assert_eq!(h["x-b3-sampled"], "0");
        assert!(!h.contains_key("b3") && !h.contains_key("x-b3-parentspanid"));
        // A 64-bit trace id is its low half; a parent is written.
        let mut h = HeaderMap::new();
        inject_b3(
            &mut h,
            u128::MAX - 1,
            false,
            1,
            Some(u64::MAX),
            true,
            (false, false),
        );
        assert_eq!(h["x-b3-traceid"], "fffffffffffffffe");
        assert_eq!(h["x-b3-spanid"], "0000000000000001");
        assert_eq!(h["x-b3-parentspanid"], "ffffffffffffffff");
        assert_eq!(h["x-b3-sampled"], "1");
    }

    #[test]
    fn traceparent_round_trip() {
        let h = headers(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ]);
        let w3c = |h: &HeaderMap| w3c(&Scan::of(h), h);
        let c = w3c(&h).unwrap().unwrap();
        assert_eq!(c.sampled, Some(true));
        assert_eq!(
            c.tracestate.as_ref().unwrap(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        let mut out = HeaderMap::new();
        inject_w3c(&mut out, c.trace_id, 0x1234, true, c.tracestate.as_ref());
        assert_eq!(
            out["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-0000000000001234-01"
        );
        assert_eq!(
            w3c(&headers(&[(
                "traceparent",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01"
            )])),
            Err(Malformed)
        );
    }
}
