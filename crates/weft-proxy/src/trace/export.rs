//! Reporting finished spans: one thread for the process (never a worker's time), which batches
//! spans per collector and posts them as Envoy's tracers do: Zipkin v2 JSON (POST, `202`
//! expected), or OTLP over HTTP (protobuf, POST) or over gRPC (`TraceService/Export` on an
//! HTTP/2 connection, as `envoy_grpc` makes it). A batch goes out at 5 spans or after 5 s,
//! Envoy's `min_flush_spans` and `flush_interval_ms` defaults.

use super::Collector;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    ZipkinJson,
    OtlpHttp,
    OtlpGrpc,
}

const OTLP_TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

const MIN_FLUSH_SPANS: usize = 5;
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Spans waiting while a collector is slow or down: past this, new ones are dropped.
const MAX_PENDING: usize = 10_000;

/// A span as reported.
#[derive(Debug, Clone)]
pub struct Finished {
    pub trace_id: u128,
    pub wide: bool,
    pub id: u64,
    pub parent: Option<u64>,
    pub name: String,
    pub server: bool,
    pub start: SystemTime,
    pub duration: Duration,
    pub tags: Vec<(String, String)>,
    pub service: String,
    pub address: IpAddr,
}

struct Report {
    collector: Arc<Collector>,
    addr: SocketAddr,
    span: Finished,
}

fn sender() -> &'static mpsc::SyncSender<Report> {
    static SENDER: OnceLock<mpsc::SyncSender<Report>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel(MAX_PENDING);
        let spawned = std::thread::Builder::new()
            .name("weft-trace-export".into())
            .spawn(move || run(&rx));
        if let Err(e) = spawned {
            tracing::error!("cannot start the trace exporter: {e}");
        }
        tx
    })
}

/// Queues a span for `collector` at `addr`; never blocks (a full queue drops the span).
pub fn report(collector: Arc<Collector>, addr: SocketAddr, span: Finished) {
    let _ = sender().try_send(Report {
        collector,
        addr,
        span,
    });
}

fn run(rx: &mpsc::Receiver<Report>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut batches: HashMap<Arc<Collector>, (SocketAddr, Vec<Finished>)> = HashMap::new();
    let mut last_flush = Instant::now();
    loop {
        let wait = FLUSH_INTERVAL.saturating_sub(last_flush.elapsed());
        match rx.recv_timeout(wait) {
            Ok(r) => {
                let entry = batches
                    .entry(r.collector.clone())
                    .or_insert_with(|| (r.addr, Vec::new()));
                entry.0 = r.addr;
                entry.1.push(r.span);
                if entry.1.len() >= MIN_FLUSH_SPANS {
                    let spans = std::mem::take(&mut entry.1);
                    rt.block_on(post(&r.collector, r.addr, spans));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if last_flush.elapsed() >= FLUSH_INTERVAL {
            for (collector, (addr, spans)) in &mut batches {
                if !spans.is_empty() {
                    let spans = std::mem::take(spans);
                    rt.block_on(post(collector, *addr, spans));
                }
            }
            last_flush = Instant::now();
        }
    }
}

async fn post(collector: &Collector, addr: SocketAddr, spans: Vec<Finished>) {
    let (content_type, body) = match collector.format {
        Format::ZipkinJson => ("application/json", zipkin_json(&spans).into_bytes()),
        Format::OtlpHttp => (
            "application/x-protobuf",
            prost::Message::encode_to_vec(&otlp(&spans)),
        ),
        Format::OtlpGrpc => {
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                crate::grpc_client::unary::<_, weft_proto::otlp::ExportTraceServiceResponse>(
                    addr,
                    &collector.host,
                    OTLP_TRACE_EXPORT,
                    otlp(&spans),
                ),
            );
            match sent.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(collector = %collector.cluster, "{} spans not sent: {e}", spans.len())
                }
                Err(_) => {
                    tracing::warn!(collector = %collector.cluster, "spans not sent: timed out")
                }
            }
            return;
        }
    };
    let req = http::Request::post(collector.path.as_str())
        .header(http::header::HOST, collector.host.as_str())
        .header(http::header::CONTENT_TYPE, content_type)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)));
    let Ok(req) = req else {
        return;
    };
    let sent = tokio::time::timeout(Duration::from_secs(5), crate::http::side::send(addr, req));
    match sent.await {
        Ok(Ok(resp)) if resp.status().is_success() => {}
        Ok(Ok(resp)) => tracing::warn!(
            collector = %collector.cluster,
            status = resp.status().as_u16(),
            "the trace collector refused {} spans",
            spans.len()
        ),
        Ok(Err(e)) => tracing::warn!(collector = %collector.cluster, "spans not sent: {e}"),
        Err(_) => tracing::warn!(collector = %collector.cluster, "spans not sent: timed out"),
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Zipkin's v2 JSON: a list of spans.
pub fn zipkin_json(spans: &[Finished]) -> String {
    let list: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "traceId": super::context::trace_id_hex(s.trace_id, s.wide),
                "id": format!("{:016x}", s.id),
                "kind": if s.server { "SERVER" } else { "CLIENT" },
                "timestamp": micros(s.start),
                "duration": s.duration.as_micros() as u64,
                "localEndpoint": match s.address {
                    IpAddr::V4(a) => serde_json::json!({"serviceName": s.service, "ipv4": a.to_string()}),
                    IpAddr::V6(a) => serde_json::json!({"serviceName": s.service, "ipv6": a.to_string()}),
                },
            });
            let tags: serde_json::Map<String, serde_json::Value> = s
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            v["tags"] = serde_json::Value::Object(tags);
            if let Some(p) = s.parent {
                v["parentId"] = format!("{p:016x}").into();
            }
            if !s.name.is_empty() {
                v["name"] = s.name.clone().into();
            }
            v
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// OTLP's `ExportTraceServiceRequest`.
pub fn otlp(spans: &[Finished]) -> weft_proto::otlp::ExportTraceServiceRequest {
    use weft_proto::otlp;
    let kv = |k: &str, v: &str| otlp::KeyValue {
        key: k.to_string(),
        value: Some(otlp::AnyValue {
            string_value: v.to_string(),
        }),
    };
    let service = spans.first().map_or("", |s| s.service.as_str());
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    otlp::ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(otlp::Resource {
                attributes: vec![kv("service.name", service)],
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(otlp::InstrumentationScope {
                    name: "weft".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans: spans
                    .iter()
                    .map(|s| {
                        let error = s.tags.iter().any(|(k, v)| k == "error" && v == "true");
                        otlp::Span {
                            trace_id: s.trace_id.to_be_bytes().to_vec(),
                            span_id: s.id.to_be_bytes().to_vec(),
                            parent_span_id: s
                                .parent
                                .map(|p| p.to_be_bytes().to_vec())
                                .unwrap_or_default(),
                            name: s.name.clone(),
                            kind: if s.server {
                                otlp::SPAN_KIND_SERVER
                            } else {
                                otlp::SPAN_KIND_CLIENT
                            },
                            start_time_unix_nano: nanos(s.start),
                            end_time_unix_nano: nanos(s.start + s.duration),
                            attributes: s.tags.iter().map(|(k, v)| kv(k, v)).collect(),
                            status: error.then(|| otlp::Status {
                                message: String::new(),
                                code: otlp::STATUS_ERROR,
                            }),
                            ..Default::default()
                        }
                    })
                    .collect(),
            }],
        }],
    }
}
