//! Reporting finished spans: one thread for the process (never a worker's time), which batches
//! spans per collector and posts them as Envoy's tracers do: Zipkin v2 JSON (POST, `202`
//! expected), or OTLP over HTTP (protobuf, POST) or over gRPC (`TraceService/Export` on an
//! HTTP/2 connection, as `envoy_grpc` makes it). A batch goes out at 5 spans or after 5 s,
//! Envoy's `min_flush_spans` and `flush_interval_ms` defaults; workers hold their spans until
//! they have 5, and HTTP collectors are posted to over kept connections.

use super::Collector;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
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

const SHARDS: usize = 8;

/// Finished spans not yet handed to the exporter, per shard of threads. A worker adds to its
/// own shard (a lock nobody else takes but the exporter, every few seconds) and wakes the
/// exporter only once a batch is full: Envoy's tracers buffer spans per worker the same way,
/// and a thread woken for every sampled request costs the workers more than the spans do.
static PENDING: [Mutex<Vec<Report>>; SHARDS] = [const { Mutex::new(Vec::new()) }; SHARDS];

fn sender() -> &'static mpsc::SyncSender<Vec<Report>> {
    static SENDER: OnceLock<mpsc::SyncSender<Vec<Report>>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel(MAX_PENDING / MIN_FLUSH_SPANS);
        let spawned = std::thread::Builder::new()
            .name("weft-trace-export".into())
            .spawn(move || run(&rx));
        if let Err(e) = spawned {
            tracing::error!("cannot start the trace exporter: {e}");
        }
        tx
    })
}

/// Queues a span for `collector` at `addr`; never blocks (a full queue drops the batch).
pub fn report(collector: Arc<Collector>, addr: SocketAddr, span: Finished) {
    // Started with the first span, so that a lone span is still sent at the interval.
    let tx = sender();
    let shard = crate::server::thread_index() % SHARDS;
    let batch = {
        let mut pending = crate::server::lock(&PENDING[shard]);
        pending.push(Report {
            collector,
            addr,
            span,
        });
        if pending.len() < MIN_FLUSH_SPANS {
            return;
        }
        std::mem::take(&mut *pending)
    };
    let _ = tx.try_send(batch);
}

type Batches = HashMap<Arc<Collector>, (SocketAddr, Vec<Finished>)>;

fn add(batches: &mut Batches, reports: Vec<Report>) {
    for r in reports {
        let entry = batches
            .entry(r.collector)
            .or_insert_with(|| (r.addr, Vec::new()));
        entry.0 = r.addr;
        entry.1.push(r.span);
    }
}

fn run(rx: &mpsc::Receiver<Vec<Report>>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut batches = Batches::new();
    let mut conns = Connections::default();
    let mut last_flush = Instant::now();
    loop {
        let wait = FLUSH_INTERVAL.saturating_sub(last_flush.elapsed());
        match rx.recv_timeout(wait) {
            Ok(reports) => {
                add(&mut batches, reports);
                for (collector, (addr, spans)) in &mut batches {
                    if spans.len() >= MIN_FLUSH_SPANS {
                        let spans = std::mem::take(spans);
                        rt.block_on(post(&mut conns, collector, *addr, spans));
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if last_flush.elapsed() >= FLUSH_INTERVAL {
            for shard in &PENDING {
                let reports = std::mem::take(&mut *crate::server::lock(shard));
                add(&mut batches, reports);
            }
            for (collector, (addr, spans)) in &mut batches {
                if !spans.is_empty() {
                    let spans = std::mem::take(spans);
                    rt.block_on(post(&mut conns, collector, *addr, spans));
                }
            }
            last_flush = Instant::now();
        }
    }
}

/// Open HTTP/1.1 connections and gRPC channels to collectors, one per address, kept between
/// batches as Envoy's cluster pool keeps them: under load a batch leaves every few milliseconds, and a
/// connection each would cost the collector and this process more than the spans.
#[derive(Default)]
struct Connections {
    http: HashMap<SocketAddr, SendRequest<Full<Bytes>>>,
    grpc: HashMap<(SocketAddr, String), tonic::transport::Channel>,
}

impl Connections {
    /// `POST path` with `body` to `addr`: the response's status, its body read so that the
    /// connection can carry the next batch. A kept connection the collector has closed is only
    /// found out on use: the batch is then sent once more, on a new connection.
    async fn post(
        &mut self,
        addr: SocketAddr,
        collector: &Collector,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<http::StatusCode, String> {
        let mut kept = self.http.remove(&addr).filter(|s| !s.is_closed());
        loop {
            let reused = kept.is_some();
            let mut sender = match kept.take() {
                Some(s) => s,
                None => crate::http::side::connect(addr).await?,
            };
            let req = http::Request::post(collector.path.as_str())
                .header(http::header::HOST, collector.host.as_str())
                .header(http::header::CONTENT_TYPE, content_type)
                .body(Full::new(body.clone()))
                .map_err(|e| e.to_string())?;
            let sent = match sender.ready().await {
                Ok(()) => sender.send_request(req).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(resp) => {
                    let status = resp.status();
                    if resp.into_body().collect().await.is_ok() {
                        self.http.insert(addr, sender);
                    }
                    return Ok(status);
                }
                Err(_) if reused => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// An OTLP export on the channel kept for `addr` and `authority`; a channel whose call
    /// failed is not kept.
    async fn export_grpc(
        &mut self,
        addr: SocketAddr,
        authority: &str,
        request: weft_proto::otlp::ExportTraceServiceRequest,
    ) -> Result<(), String> {
        let key = (addr, authority.to_string());
        let channel = match self.grpc.remove(&key) {
            Some(c) => c,
            None => crate::grpc_client::channel(addr, authority).await?,
        };
        crate::grpc_client::unary_on::<_, weft_proto::otlp::ExportTraceServiceResponse>(
            channel.clone(),
            OTLP_TRACE_EXPORT,
            request,
        )
        .await?;
        self.grpc.insert(key, channel);
        Ok(())
    }
}

async fn post(
    conns: &mut Connections,
    collector: &Collector,
    addr: SocketAddr,
    spans: Vec<Finished>,
) {
    let (content_type, body) = match collector.format {
        Format::ZipkinJson => ("application/json", zipkin_json(&spans).into_bytes()),
        Format::OtlpHttp => (
            "application/x-protobuf",
            prost::Message::encode_to_vec(&otlp(&spans)),
        ),
        Format::OtlpGrpc => {
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                conns.export_grpc(addr, &collector.host, otlp(&spans)),
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
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        conns.post(addr, collector, content_type, Bytes::from(body)),
    );
    match sent.await {
        Ok(Ok(status)) if status.is_success() => {}
        Ok(Ok(status)) => tracing::warn!(
            collector = %collector.cluster,
            status = status.as_u16(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const ACCEPTED: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";

    fn collector() -> Collector {
        Collector {
            cluster: "zipkin".into(),
            path: "/api/v2/spans".into(),
            host: "zipkin".into(),
            format: Format::ZipkinJson,
        }
    }

    /// An empty batch posted over `conns`: the collector's status.
    async fn post_empty(conns: &mut Connections, addr: SocketAddr) -> http::StatusCode {
        let body = Bytes::from_static(b"[]");
        conns
            .post(addr, &collector(), "application/json", body)
            .await
            .unwrap()
    }

    /// Reads one request with a `content-length` body from `s`; false at the end of the
    /// connection.
    async fn read_request(s: &mut tokio::net::TcpStream) -> bool {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    return true;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    #[tokio::test]
    async fn batches_share_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut requests = 0;
            while read_request(&mut s).await {
                requests += 1;
                s.write_all(ACCEPTED).await.unwrap();
            }
            requests
        });
        let mut conns = Connections::default();
        for _ in 0..3 {
            assert_eq!(post_empty(&mut conns, addr).await, 202);
        }
        drop(conns);
        assert_eq!(
            server.await.unwrap(),
            3,
            "three batches on the first connection"
        );
    }

    #[tokio::test]
    async fn a_connection_the_collector_closed_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers one request per connection, then closes it without saying so, as a
        // collector whose keep-alive timeout ran out between two batches.
        let server = tokio::spawn(async move {
            let mut served = 0;
            for _ in 0..4 {
                let (mut s, _) = listener.accept().await.unwrap();
                assert!(read_request(&mut s).await);
                s.write_all(ACCEPTED).await.unwrap();
                served += 1;
            }
            served
        });
        let mut conns = Connections::default();
        for _ in 0..2 {
            assert_eq!(post_empty(&mut conns, addr).await, 202);
            // The close reaches this side before the next batch.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The next batch right after the answer, before the close is seen: the batch is
        // sent again on a new connection.
        for _ in 0..2 {
            assert_eq!(post_empty(&mut conns, addr).await, 202);
        }
        assert_eq!(server.await.unwrap(), 4);
    }
}
