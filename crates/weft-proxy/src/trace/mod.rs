//! HTTP tracing as Envoy's connection manager does it (`tracing` of the HCM): Envoy's sampling
//! decision, kept in the `x-request-id` UUID so that every hop decides alike; one span per
//! request and proxy (kind SERVER on inbound listeners, CLIENT elsewhere, as istiod's
//! sidecars make them: no upstream span is spawned); its context propagated as B3 (Zipkin) or
//! W3C Trace Context (OpenTelemetry); and finished spans reported to the collector
//! (`export`). A request that carries malformed trace headers gets no span, as in Envoy.

pub mod context;
pub mod export;

use http::{HeaderMap, HeaderValue};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Where finished spans go, and in what form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Collector {
    pub cluster: String,
    /// The request path (`/api/v2/spans`, `/v1/traces`).
    pub path: String,
    /// The `Host` of the report.
    pub host: String,
    pub format: export::Format,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    Zipkin {
        trace_id_128bit: bool,
        /// Envoy's default: a SERVER span takes the caller's span id.
        shared_span_context: bool,
    },
    OpenTelemetry {
        service_name: String,
    },
}

/// A custom tag's value.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Literal(String),
    RequestHeader { name: String, default: String },
}

/// An HCM's `tracing`.
#[derive(Debug)]
pub struct Tracer {
    pub provider: Provider,
    pub collector: Arc<Collector>,
    /// The listener is inbound: spans are SERVER spans, Envoy's "ingress".
    pub ingress: bool,
    /// Out of 10 000, as Envoy keeps them.
    pub random_sampling: u32,
    pub client_sampling: u32,
    pub overall_sampling: u32,
    pub max_path_tag_length: usize,
    pub custom_tags: Vec<(String, TagValue)>,
}

/// A request's span, from its start to its end.
#[derive(Debug)]
pub struct Span {
    tracer: Arc<Tracer>,
    pub trace_id: u128,
    wide: bool,
    pub id: u64,
    pub parent: Option<u64>,
    pub sampled: bool,
    name: String,
    start_wall: SystemTime,
    start: Instant,
    /// Tags read from the request, for sampled spans only.
    tags: Vec<(String, String)>,
}

/// The ids of a request's trace context as this proxy propagated it, sampled or not: what
/// Envoy's active span gives the access loggers (`getTraceId`, `getSpanId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub trace_id: u128,
    /// A 128-bit trace id (a 64-bit one is written as 16 hex digits, 8 bytes).
    pub wide: bool,
    /// This proxy's span: Envoy's OpenTelemetry spans say it, its Zipkin spans do not.
    pub span_id: Option<u64>,
}

impl Ids {
    /// The trace id's bytes, big-endian: 16, or 8 for a 64-bit id.
    pub fn trace_id_bytes(&self) -> Vec<u8> {
        let b = self.trace_id.to_be_bytes();
        if self.wide {
            b.to_vec()
        } else {
            b[8..].to_vec()
        }
    }
}

/// What a span reads of its request besides the headers.
#[derive(Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub peer: std::net::SocketAddr,
}

/// What the end of a request tells its span.
pub struct Finished<'a> {
    pub status: u16,
    pub flags: u32,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub cluster: Option<&'a str>,
    pub shared: &'a crate::server::ServerState,
}

fn random_u64() -> u64 {
    // Zero is not a valid span id.
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

/// Envoy's trace reasons in the UUID's 15th character: `9` sampled, `a` forced by the
/// service, `b` forced by the client, `4` (the UUID version) not traced.
const TRACE_BYTE: usize = 14;

impl Tracer {
    /// Envoy's decision for a request (`mutateTracingRequestHeader`): a request id already
    /// marked keeps its mark; else a client's `x-client-trace-id` (at `client_sampling`), else
    /// `x-envoy-force-trace`, else the request id's own number against `random_sampling`; and
    /// `overall_sampling` over all. Returns the decision and, when the request id must say
    /// something else, the request id that says it.
    fn decide(&self, scan: &context::Scan<'_>) -> (bool, Option<HeaderValue>) {
        let Some(rid) = scan.request_id.and_then(|v| v.to_str().ok()) else {
            return (false, None);
        };
        let Some(number) = rid.get(..8).and_then(|h| u32::from_str_radix(h, 16).ok()) else {
            return (false, None);
        };
        let result = number % 10_000;
        let uuid = rid.len() == 36;
        let mark = uuid.then(|| rid.as_bytes()[TRACE_BYTE]);
        let mut reason = match mark {
            Some(b'9' | b'a' | b'b') => mark,
            _ => None,
        };
        if reason.is_none() {
            reason = if scan.client_trace_id && fastrand::u32(..10_000) < self.client_sampling {
                Some(b'b')
            } else if scan.force_trace {
                Some(b'a')
            } else if result < self.random_sampling {
                Some(b'9')
            } else {
                None
            };
        }
        if reason.is_some() && result >= self.overall_sampling {
            reason = None;
        }
        let marked = reason.unwrap_or(b'4');
        // Most requests are not traced and already say so (`4`, the UUID's version).
        let rewritten = (uuid && mark != Some(marked))
            .then(|| {
                let mut bytes = [0u8; 36];
                bytes.copy_from_slice(rid.as_bytes());
                bytes[TRACE_BYTE] = marked;
                HeaderValue::from_bytes(&bytes).ok()
            })
            .flatten();
        (reason.is_some(), rewritten)
    }

    /// The span of a request starting now, its context written into the request for the
    /// upstream; `None` when the request's trace headers are malformed, or when it is not
    /// sampled (its context is still propagated, as Envoy does). `ids` is set to the context's
    /// ids whenever there is one, sampled or not.
    pub fn start(
        self: &Arc<Self>,
        headers: &mut HeaderMap,
        request: &RequestLine<'_>,
        ids: &mut Option<Ids>,
    ) -> Option<Box<Span>> {
        let RequestLine {
            method,
            scheme,
            authority,
            path,
            protocol,
            peer,
        } = *request;
        // What the request says is read in one pass, before anything is written.
        let scan = context::Scan::of(headers);
        let (decided, rewritten) = self.decide(&scan);
        // The incoming context as the provider reads it, and the sampling flag it carries.
        let found = match &self.provider {
            Provider::Zipkin { .. } => context::b3(&scan),
            Provider::OpenTelemetry { .. } => context::w3c(&scan, headers).map(|c| {
                let flag = c.as_ref().and_then(|c| c.sampled);
                (c, flag)
            }),
        };
        let leftovers = scan.b3_leftovers();
        if let Some(rid) = rewritten {
            headers.insert(X_REQUEST_ID.clone(), rid);
        }
        let (incoming, flag) = found.ok()?;
        let sampled = flag.unwrap_or(decided);
        let server = self.ingress;
        let (trace_id, wide, id, parent, name) = match &self.provider {
            Provider::Zipkin {
                trace_id_128bit,
                shared_span_context,
            } => {
                let (trace_id, wide, id, parent) = match incoming {
                    None => {
                        let id = random_u64();
                        let high = if *trace_id_128bit {
                            u128::from(random_u64()) << 64
                        } else {
                            0
                        };
                        (high | u128::from(id), *trace_id_128bit, id, None)
                    }
                    Some(context::Incoming {
                        trace_id,
                        trace_id_128,
                        span_id,
                        parent_id,
                        ..
                    }) => {
                        if server && *shared_span_context {
                            (trace_id, trace_id_128, span_id, parent_id)
                        } else {
                            (trace_id, trace_id_128, random_u64(), Some(span_id))
                        }
                    }
                };
                context::inject_b3(headers, trace_id, wide, id, parent, sampled, leftovers);
                // Only a sampled span is reported: the others need no name.
                let name = if sampled {
                    authority.to_string()
                } else {
                    String::new()
                };
                (trace_id, wide, id, parent, name)
            }
            Provider::OpenTelemetry { .. } => {
                let (trace_id, parent, tracestate) = match incoming {
                    None => (
                        (u128::from(random_u64()) << 64) | u128::from(random_u64()),
                        None,
                        None,
                    ),
                    Some(c) => (c.trace_id, Some(c.span_id), c.tracestate),
                };
                let id = random_u64();
                context::inject_w3c(headers, trace_id, id, sampled, tracestate.as_ref());
                let name = match (sampled, server) {
                    (false, _) => String::new(),
                    (true, true) => "ingress".to_string(),
                    (true, false) => format!("egress {authority}"),
                };
                (trace_id, true, id, parent, name)
            }
        };
        *ids = Some(Ids {
            trace_id,
            wide,
            span_id: matches!(self.provider, Provider::OpenTelemetry { .. }).then_some(id),
        });
        // An unsampled span is propagated (above) and never reported: it needs nothing more.
        if !sampled {
            return None;
        }
        let mut tags = Vec::new();
        {
            let header = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let mut url = format!("{scheme}://{authority}{path}");
            let limit = scheme.len() + 3 + authority.len() + self.max_path_tag_length;
            if url.len() > limit {
                let mut cut = limit;
                while !url.is_char_boundary(cut) {
                    cut -= 1;
                }
                url.truncate(cut);
            }
            tags.push(("http.url".into(), url));
            tags.push(("http.method".into(), method.to_string()));
            tags.push(("http.protocol".into(), protocol.to_string()));
            if let Some(rid) = header("x-request-id") {
                tags.push(("guid:x-request-id".into(), rid));
            }
            if let Some(cid) = header("x-client-trace-id") {
                tags.push(("guid:x-client-trace-id".into(), cid));
            }
            tags.push((
                "downstream_cluster".into(),
                header("x-envoy-downstream-service-cluster").unwrap_or_else(|| "-".into()),
            ));
            tags.push((
                "user_agent".into(),
                header("user-agent").unwrap_or_else(|| "-".into()),
            ));
            tags.push(("peer.address".into(), peer.ip().to_string()));
            for (tag, value) in &self.custom_tags {
                let v = match value {
                    TagValue::Literal(v) => v.clone(),
                    TagValue::RequestHeader { name, default } => {
                        header(name).unwrap_or_else(|| default.clone())
                    }
                };
                tags.push((tag.clone(), v));
            }
        }
        Some(Box::new(Span {
            tracer: self.clone(),
            trace_id,
            wide,
            id,
            parent,
            sampled,
            name,
            start_wall: SystemTime::now(),
            start: Instant::now(),
            tags,
        }))
    }
}

impl Span {
    /// Ends the span; a sampled one is reported.
    pub fn finish(mut self, done: &Finished<'_>) {
        if !self.sampled {
            return;
        }
        let t = &mut self.tags;
        t.push(("request_size".into(), done.bytes_received.to_string()));
        t.push(("response_size".into(), done.bytes_sent.to_string()));
        t.push(("component".into(), "proxy".into()));
        if let Some(c) = done.cluster {
            t.push(("upstream_cluster".into(), c.to_string()));
            t.push(("upstream_cluster.name".into(), c.to_string()));
        }
        t.push(("http.status_code".into(), done.status.to_string()));
        t.push((
            "response_flags".into(),
            crate::access_log::flags::render(done.flags),
        ));
        if let Some(id) = done.shared.node.get("id").and_then(|v| v.as_str()) {
            t.push(("node_id".into(), id.to_string()));
        }
        if done.status == 0 || done.status >= 500 {
            t.push(("error".into(), "true".into()));
        }
        t.retain(|(_, v)| !v.is_empty());
        let service = done
            .shared
            .node
            .get("cluster")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let tracer = self.tracer.clone();
        let span = export::Finished {
            trace_id: self.trace_id,
            wide: self.wide,
            id: self.id,
            parent: self.parent,
            name: std::mem::take(&mut self.name),
            server: tracer.ingress,
            start: self.start_wall,
            duration: self.start.elapsed(),
            tags: std::mem::take(&mut self.tags),
            service: match &tracer.provider {
                Provider::OpenTelemetry { service_name } if !service_name.is_empty() => {
                    service_name.clone()
                }
                _ => service,
            },
            address: done.shared.local_address,
        };
        let Some(addr) = crate::http::side::endpoint(done.shared, &tracer.collector.cluster) else {
            tracing::debug!(
                cluster = %tracer.collector.cluster,
                "no endpoint for the trace collector; span dropped"
            );
            return;
        };
        export::report(tracer.collector.clone(), addr, span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(provider: Provider) -> Arc<Tracer> {
        Arc::new(Tracer {
            provider,
            collector: Arc::new(Collector {
                cluster: "c".into(),
                path: "/".into(),
                host: "c".into(),
                format: export::Format::ZipkinJson,
            }),
            ingress: false,
            random_sampling: 0,
            client_sampling: 10_000,
            overall_sampling: 10_000,
            max_path_tag_length: 256,
            custom_tags: Vec::new(),
        })
    }

    fn start(t: &Arc<Tracer>, headers: &mut HeaderMap) -> Option<Ids> {
        let line = RequestLine {
            method: "GET",
            scheme: "http",
            authority: "a",
            path: "/",
            protocol: "HTTP/1.1",
            peer: ([127, 0, 0, 1], 1).into(),
        };
        let mut ids = None;
        assert!(
            t.start(headers, &line, &mut ids).is_none(),
            "nothing is sampled"
        );
        ids
    }

    /// The ids an access log reads are those written upstream, sampled or not: the span id
    /// only from OpenTelemetry, as Envoy's Zipkin spans give none.
    #[test]
    fn unsampled_requests_keep_the_ids_they_propagate() {
        let mut h = HeaderMap::new();
        let zipkin = tracer(Provider::Zipkin {
            trace_id_128bit: true,
            shared_span_context: false,
        });
        let ids = start(&zipkin, &mut h).unwrap();
        assert_eq!(
            context::trace_id_hex(ids.trace_id, ids.wide),
            h["x-b3-traceid"]
        );
        assert_eq!(ids.trace_id_bytes().len(), 16);
        assert_eq!(ids.span_id, None);

        let mut h = HeaderMap::new();
        let otel = tracer(Provider::OpenTelemetry {
            service_name: String::new(),
        });
        let ids = start(&otel, &mut h).unwrap();
        let expected = format!("00-{:032x}-{:016x}-00", ids.trace_id, ids.span_id.unwrap());
        assert_eq!(h["traceparent"], expected.as_str());

        // Malformed trace headers: no span, no ids (Envoy makes no span either).
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("00-zz-1-01"));
        assert_eq!(start(&otel, &mut h), None);
    }
}
