//! Envoy's OpenTelemetry access logger (`envoy.access_loggers.open_telemetry`): each entry a
//! `LogRecord` (its start time, the formatted body and attributes), batched per logger and
//! sent to the collector's `LogsService/Export` over gRPC. As Envoy: a batch goes out when it
//! reaches `buffer_size_bytes` (16 KiB) or every `buffer_flush_interval` (1 s); an entry that
//! finds the queue full is dropped, never waited for.
//!
//! The sending is one thread for the process, so a slow collector costs a worker nothing.

use crate::access_log::{Entry, Format};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use weft_proto::otlp;

const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_BUFFER_BYTES: usize = 16 * 1024;
/// Records waiting while a collector is slow or down: past this, new ones are dropped.
const MAX_PENDING: usize = 10_000;

/// One configured OpenTelemetry access logger.
#[derive(Debug)]
pub struct OtelLog {
    pub cluster: String,
    /// The `:authority` of the export (`envoy_grpc.authority`, else the cluster's name).
    pub authority: String,
    /// Formatted per entry, in the order given.
    pub attributes: Vec<(String, Format)>,
    /// The resource's attributes: Envoy's built-in labels unless disabled, then
    /// `resource_attributes`.
    pub resource: Vec<(String, String)>,
    pub flush_interval: Duration,
    pub buffer_bytes: usize,
}

fn kv(key: &str, value: String) -> otlp::KeyValue {
    otlp::KeyValue {
        key: key.to_string(),
        value: Some(otlp::AnyValue {
            string_value: value,
        }),
    }
}

struct Record {
    log: Arc<OtelLog>,
    addr: SocketAddr,
    record: otlp::LogRecord,
}

fn sender() -> &'static mpsc::SyncSender<Record> {
    static SENDER: OnceLock<mpsc::SyncSender<Record>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel(MAX_PENDING);
        let spawned = std::thread::Builder::new()
            .name("weft-otel-log".into())
            .spawn(move || run(&rx));
        if let Err(e) = spawned {
            tracing::error!("cannot start the OpenTelemetry access log exporter: {e}");
        }
        tx
    })
}

/// Queues `entry` for the collector at `addr`, its body formatted by `body`.
pub fn log(log: &Arc<OtelLog>, addr: SocketAddr, entry: &Entry<'_>, body: &Format) {
    let time_unix_nano = entry
        .start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let record = otlp::LogRecord {
        time_unix_nano,
        body: Some(otlp::AnyValue {
            string_value: entry.render(body),
        }),
        attributes: log
            .attributes
            .iter()
            .map(|(k, format)| kv(k, entry.render(format)))
            .collect(),
        // As Envoy's logger: the active span's trace id, and its span id where the tracer
        // gives one (OpenTelemetry's does, Zipkin's does not).
        trace_id: entry.trace.map(|t| t.trace_id_bytes()).unwrap_or_default(),
        span_id: entry
            .trace
            .and_then(|t| t.span_id)
            .map(|s| s.to_be_bytes().to_vec())
            .unwrap_or_default(),
    };
    let _ = sender().try_send(Record {
        log: log.clone(),
        addr,
        record,
    });
}

struct Batch {
    log: Arc<OtelLog>,
    addr: SocketAddr,
    records: Vec<otlp::LogRecord>,
    bytes: usize,
    since: Instant,
}

fn run(rx: &mpsc::Receiver<Record>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut batches: HashMap<usize, Batch> = HashMap::new();
    loop {
        let wait = batches
            .values()
            .filter(|b| !b.records.is_empty())
            .map(|b| b.log.flush_interval.saturating_sub(b.since.elapsed()))
            .min()
            .unwrap_or(DEFAULT_FLUSH_INTERVAL);
        match rx.recv_timeout(wait) {
            Ok(r) => {
                let batch = batches
                    .entry(Arc::as_ptr(&r.log) as usize)
                    .or_insert_with(|| Batch {
                        log: r.log.clone(),
                        addr: r.addr,
                        records: Vec::new(),
                        bytes: 0,
                        since: Instant::now(),
                    });
                if batch.records.is_empty() {
                    batch.since = Instant::now();
                }
                batch.addr = r.addr;
                batch.bytes += prost::Message::encoded_len(&r.record);
                batch.records.push(r.record);
                if batch.bytes >= batch.log.buffer_bytes {
                    rt.block_on(flush(batch));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        for batch in batches.values_mut() {
            if !batch.records.is_empty() && batch.since.elapsed() >= batch.log.flush_interval {
                rt.block_on(flush(batch));
            }
        }
        // A logger no config holds any more, with nothing left to send.
        batches.retain(|_, b| !b.records.is_empty() || Arc::strong_count(&b.log) > 1);
    }
}

async fn flush(batch: &mut Batch) {
    let records = std::mem::take(&mut batch.records);
    batch.bytes = 0;
    let n = records.len();
    let request = otlp::ExportLogsServiceRequest {
        resource_logs: vec![otlp::ResourceLogs {
            resource: Some(otlp::Resource {
                attributes: batch
                    .log
                    .resource
                    .iter()
                    .map(|(k, v)| kv(k, v.clone()))
                    .collect(),
            }),
            scope_logs: vec![otlp::ScopeLogs {
                scope: None,
                log_records: records,
            }],
        }],
    };
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        crate::grpc_client::unary::<_, otlp::ExportLogsServiceResponse>(
            batch.addr,
            &batch.log.authority,
            LOGS_EXPORT,
            request,
        ),
    );
    match sent.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(collector = %batch.log.cluster, "{n} access log records not sent: {e}")
        }
        Err(_) => {
            tracing::warn!(collector = %batch.log.cluster, "{n} access log records not sent: timed out")
        }
    }
}
