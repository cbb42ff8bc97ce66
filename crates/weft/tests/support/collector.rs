//! A trace and log collector for tests: takes Zipkin v2 JSON (`POST /api/v2/spans`, answered
//! 202), OTLP over HTTP (`POST /v1/traces`, protobuf) and OTLP over gRPC (traces and logs, on
//! HTTP/1.1 or h2c), and keeps every span in one form and every log record.

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A span as either exporter sent it: ids in hex.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: String,
    pub id: String,
    pub parent: Option<String>,
    pub kind: String,
    pub name: String,
    pub tags: std::collections::BTreeMap<String, String>,
    /// `zipkin`, `otlp` (HTTP) or `otlp-grpc`.
    pub via: &'static str,
}

pub type Spans = Arc<Mutex<Vec<Span>>>;

/// One OTLP log record, with its resource's attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub time_unix_nano: u64,
    pub body: String,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub resource: std::collections::BTreeMap<String, String>,
    /// Hex, empty when the record has none.
    pub trace_id: String,
    pub span_id: String,
}

pub type Logs = Arc<Mutex<Vec<LogRecord>>>;

const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The message of a unary gRPC request body (one length-prefixed, uncompressed message).
fn grpc_message(body: &[u8]) -> &[u8] {
    match body {
        [0, a, b, c, d, rest @ ..] => {
            let n = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            rest.get(..n).unwrap_or_default()
        }
        _ => &[],
    }
}

fn logs(body: &[u8]) -> Vec<LogRecord> {
    use weft_proto::otlp;
    let Ok(req) = <otlp::ExportLogsServiceRequest as prost::Message>::decode(body) else {
        return Vec::new();
    };
    let kv = |list: Vec<otlp::KeyValue>| {
        list.into_iter()
            .map(|kv| (kv.key, kv.value.map(|v| v.string_value).unwrap_or_default()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let mut out = Vec::new();
    for rl in req.resource_logs {
        let resource = kv(rl.resource.map(|r| r.attributes).unwrap_or_default());
        for sl in rl.scope_logs {
            for r in sl.log_records {
                out.push(LogRecord {
                    time_unix_nano: r.time_unix_nano,
                    body: r.body.map(|b| b.string_value).unwrap_or_default(),
                    attributes: kv(r.attributes),
                    resource: resource.clone(),
                    trace_id: r.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                    span_id: r.span_id.iter().map(|b| format!("{b:02x}")).collect(),
                });
            }
        }
    }
    out
}

type Body = BoxBody<Bytes, Infallible>;

/// A unary gRPC answer: an empty message, then `grpc-status: 0` in the trailers.
fn grpc_ok() -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)).boxed())
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn zipkin(body: &[u8]) -> Vec<Span> {
    let list: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap_or_default();
    list.iter()
        .map(|s| Span {
            trace_id: s["traceId"].as_str().unwrap_or_default().to_string(),
            id: s["id"].as_str().unwrap_or_default().to_string(),
            parent: s["parentId"].as_str().map(str::to_string),
            kind: s["kind"].as_str().unwrap_or_default().to_string(),
            name: s["name"].as_str().unwrap_or_default().to_string(),
            tags: s["tags"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            via: "zipkin",
        })
        .collect()
}

fn otlp(body: &[u8], via: &'static str) -> Vec<Span> {
    use weft_proto::otlp;
    let Ok(req) = <otlp::ExportTraceServiceRequest as prost::Message>::decode(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    kind: match s.kind {
                        otlp::SPAN_KIND_SERVER => "SERVER".into(),
                        otlp::SPAN_KIND_CLIENT => "CLIENT".into(),
                        k => k.to_string(),
                    },
                    name: s.name,
                    tags: s
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, kv.value.map(|v| v.string_value).unwrap_or_default()))
                        .collect(),
                    via,
                });
            }
        }
    }
    out
}

/// Starts the collector; the spans it receives are pushed to the returned list.
pub async fn start() -> (SocketAddr, Spans) {
    let (addr, spans, _) = start_all().await;
    (addr, spans)
}

/// Starts the collector, keeping spans and log records.
pub async fn start_all() -> (SocketAddr, Spans, Logs) {
    let spans: Spans = Arc::default();
    let logs_kept: Logs = Arc::default();
    let kept = spans.clone();
    let kept_logs = logs_kept.clone();
    let addr = super::serve_each(move |stream| {
        let kept = kept.clone();
        let kept_logs = kept_logs.clone();
        async move {
            let service = service_fn(move |req: http::Request<Incoming>| {
                let kept = kept.clone();
                let kept_logs = kept_logs.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await?.to_bytes();
                    let (got, status) = match path.as_str() {
                        "/api/v2/spans" => (zipkin(&body), 202),
                        "/v1/traces" => (otlp(&body, "otlp"), 200),
                        TRACE_EXPORT => {
                            kept.lock()
                                .unwrap()
                                .extend(otlp(grpc_message(&body), "otlp-grpc"));
                            return Ok::<_, hyper::Error>(grpc_ok());
                        }
                        LOGS_EXPORT => {
                            kept_logs.lock().unwrap().extend(logs(grpc_message(&body)));
                            return Ok(grpc_ok());
                        }
                        _ => (Vec::new(), 404),
                    };
                    kept.lock().unwrap().extend(got);
                    Ok(http::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::new()).boxed())
                        .unwrap())
                }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await;
    (addr, spans, logs_kept)
}
