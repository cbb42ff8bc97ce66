//! Counters, gauges and histograms under Envoy's names, so dashboards and alerts written for
//! Envoy read Weft's `/stats` and `/stats/prometheus` unchanged. Plain relaxed atomics: a worker
//! never waits for another to count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stat_block {
    ($(#[$m:meta])* $name:ident { counters: [$($c:ident),* $(,)?], gauges: [$($g:ident),* $(,)?] $(, extra: [$($x:ident: $t:ty),* $(,)?])? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name {
            $(pub $c: AtomicU64,)*
            $(pub $g: AtomicU64,)*
            $($(pub $x: $t,)*)?
        }
        impl $name {
            /// (name, value, is_counter) for every stat of the block.
            pub fn entries(&self) -> Vec<(&'static str, u64, bool)> {
                vec![
                    $((stringify!($c), self.$c.load(Ordering::Relaxed), true),)*
                    $((stringify!($g), self.$g.load(Ordering::Relaxed), false),)*
                ]
            }
        }
    };
}

stat_block!(
    /// `cluster.<name>.*`
    ClusterStats {
        counters: [
            upstream_cx_total, upstream_cx_http1_total, upstream_cx_http2_total,
            upstream_cx_connect_fail, upstream_cx_connect_timeout, upstream_cx_destroy,
            upstream_cx_rx_bytes_total, upstream_cx_tx_bytes_total,
            upstream_rq_total, upstream_rq_completed, upstream_rq_timeout,
            upstream_rq_1xx, upstream_rq_2xx, upstream_rq_3xx, upstream_rq_4xx, upstream_rq_5xx,
            upstream_cx_none_healthy, upstream_rq_rx_reset, upstream_rq_tx_reset,
            upstream_rq_retry, upstream_rq_retry_success, upstream_rq_retry_limit_exceeded,
            upstream_rq_retry_backoff_exponential, upstream_rq_per_try_timeout,
            upstream_rq_per_try_idle_timeout,
            upstream_cx_overflow, upstream_cx_pool_overflow, upstream_rq_pending_total,
            upstream_rq_pending_overflow, upstream_rq_active_overflow, upstream_rq_retry_overflow, upstream_cx_max_requests,
            upstream_cx_idle_timeout, retry_or_shadow_abandoned,
            update_attempt, update_success, update_failure,
        ],
        gauges: [
            upstream_cx_active, upstream_rq_active, upstream_rq_pending_active,
            membership_healthy, membership_total,
        ],
        extra: [codes: StatusCodes, grpc: GrpcStats]
    }
);

/// The control plane connection and the fate of its updates. Envoy spreads these over
/// `control_plane.*`, `cluster_manager.cds.*`, `listener_manager.lds.*` and per-resource RDS/EDS
/// scopes; `/stats` prints them under those names, with RDS and EDS totalled.
#[derive(Debug, Default)]
pub struct XdsStats {
    pub connected_state: AtomicU64,
    pub cds_update_success: AtomicU64,
    pub cds_update_rejected: AtomicU64,
    pub lds_update_success: AtomicU64,
    pub lds_update_rejected: AtomicU64,
    pub rds_update_success: AtomicU64,
    pub rds_update_rejected: AtomicU64,
    pub eds_update_success: AtomicU64,
    pub eds_update_rejected: AtomicU64,
    /// `listener_manager.total_listeners_active` / `_warming`, `cluster_manager.active_clusters`
    /// / `warming_clusters`: gauges.
    pub listeners_active: AtomicU64,
    pub listeners_warming: AtomicU64,
    pub clusters_active: AtomicU64,
    pub clusters_warming: AtomicU64,
}

/// What the codecs count across every connection manager: Envoy's `http1.*` and `http2.*`.
#[derive(Debug, Default)]
pub struct CodecStats {
    pub http1_dropped_headers_with_underscores: AtomicU64,
    pub http1_requests_rejected_with_underscores_in_headers: AtomicU64,
    pub http2_dropped_headers_with_underscores: AtomicU64,
    pub http2_requests_rejected_with_underscores_in_headers: AtomicU64,
    pub http2_outbound_control_flood: AtomicU64,
    pub http2_inbound_empty_frames_flood: AtomicU64,
}

impl CodecStats {
    /// (Envoy name, value): all counters.
    pub fn entries(&self) -> [(&'static str, u64); 6] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            (
                "http1.dropped_headers_with_underscores",
                get(&self.http1_dropped_headers_with_underscores),
            ),
            (
                "http1.requests_rejected_with_underscores_in_headers",
                get(&self.http1_requests_rejected_with_underscores_in_headers),
            ),
            (
                "http2.dropped_headers_with_underscores",
                get(&self.http2_dropped_headers_with_underscores),
            ),
            (
                "http2.requests_rejected_with_underscores_in_headers",
                get(&self.http2_requests_rejected_with_underscores_in_headers),
            ),
            (
                "http2.outbound_control_flood",
                get(&self.http2_outbound_control_flood),
            ),
            (
                "http2.inbound_empty_frames_flood",
                get(&self.http2_inbound_empty_frames_flood),
            ),
        ]
    }

    /// The underscore counters of the codec a request came over: (dropped, rejected).
    pub fn underscores(&self, http2: bool) -> (&AtomicU64, &AtomicU64) {
        if http2 {
            (
                &self.http2_dropped_headers_with_underscores,
                &self.http2_requests_rejected_with_underscores_in_headers,
            )
        } else {
            (
                &self.http1_dropped_headers_with_underscores,
                &self.http1_requests_rejected_with_underscores_in_headers,
            )
        }
    }
}

impl XdsStats {
    /// (Envoy name, value, is_counter)
    pub fn entries(&self) -> Vec<(&'static str, u64, bool)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "control_plane.connected_state",
                get(&self.connected_state),
                false,
            ),
            (
                "cluster_manager.cds.update_success",
                get(&self.cds_update_success),
                true,
            ),
            (
                "cluster_manager.cds.update_rejected",
                get(&self.cds_update_rejected),
                true,
            ),
            (
                "listener_manager.lds.update_success",
                get(&self.lds_update_success),
                true,
            ),
            (
                "listener_manager.lds.update_rejected",
                get(&self.lds_update_rejected),
                true,
            ),
            ("rds.update_success", get(&self.rds_update_success), true),
            ("rds.update_rejected", get(&self.rds_update_rejected), true),
            ("eds.update_success", get(&self.eds_update_success), true),
            ("eds.update_rejected", get(&self.eds_update_rejected), true),
            (
                "listener_manager.total_listeners_active",
                get(&self.listeners_active),
                false,
            ),
            (
                "listener_manager.total_listeners_warming",
                get(&self.listeners_warming),
                false,
            ),
            (
                "cluster_manager.active_clusters",
                get(&self.clusters_active),
                false,
            ),
            (
                "cluster_manager.warming_clusters",
                get(&self.clusters_warming),
                false,
            ),
        ]
    }
}

stat_block!(
    /// `http.<stat_prefix>.*`
    HttpStats {
        counters: [
            downstream_cx_total, downstream_cx_http1_total, downstream_cx_http2_total,
            downstream_cx_protocol_error, downstream_cx_destroy,
            downstream_rq_total, downstream_rq_http1_total, downstream_rq_http2_total,
            downstream_rq_completed, downstream_rq_timeout, downstream_rq_idle_timeout,
            downstream_rq_max_duration_reached, downstream_cx_idle_timeout,
            downstream_rq_1xx, downstream_rq_2xx, downstream_rq_3xx, downstream_rq_4xx,
            downstream_rq_5xx, no_route, no_cluster, rq_direct_response, rq_redirect,
            downstream_cx_upgrades_total,
        ],
        gauges: [downstream_cx_active, downstream_rq_active]
    }
);

stat_block!(
    /// `listener.<address>.*`
    ListenerStats {
        counters: [
            downstream_cx_total, downstream_cx_destroy, no_filter_chain_match,
            downstream_pre_cx_timeout,
        ],
        gauges: [downstream_cx_active]
    }
);

stat_block!(
    /// `listener.<address>.ssl.*`: TLS terminated by the listener's filter chains.
    SslStats {
        counters: [handshake, connection_error, no_certificate],
        gauges: []
    }
);

/// Most workers a listener counts connections for (`listener.<address>.worker_<N>.*`).
pub const MAX_WORKERS: usize = 128;

/// `listener.<address>.worker_<N>.downstream_cx_total`: how the connections of a listener
/// spread over the workers.
#[derive(Debug)]
pub struct WorkerStats {
    pub downstream_cx_total: Box<[AtomicU64]>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            downstream_cx_total: (0..MAX_WORKERS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl WorkerStats {
    pub fn count(&self, worker: usize) {
        if let Some(c) = self.downstream_cx_total.get(worker) {
            inc(c);
        }
    }
}

stat_block!(
    /// `tcp.<stat_prefix>.*`
    TcpStats {
        counters: [
            downstream_cx_total, downstream_cx_rx_bytes_total, downstream_cx_tx_bytes_total,
            idle_timeout, upstream_flush_total, downstream_cx_no_route,
        ],
        gauges: [downstream_cx_rx_bytes_buffered, downstream_cx_tx_bytes_buffered]
    }
);

/// Counts a response status into the counter of its family, `[1xx, 2xx, 3xx, 4xx, 5xx]`; codes
/// outside 100..=499 count as 5xx.
fn count_class(families: [&AtomicU64; 5], code: u16) {
    let index = match code {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    };
    inc(families[index]);
}

/// `cluster.<name>.grpc.*`: what the `grpc_stats` filter counts for requests routed to the
/// cluster, without per-method names (`stats_for_all_methods: false`): a counter per
/// `grpc-status`, `success`, `failure`, `total`, and the messages each way. Shown once used, as
/// Envoy makes them on first use.
#[derive(Debug, Default)]
pub struct GrpcStats {
    /// By `grpc-status` 0 to 16.
    pub statuses: [AtomicU64; 17],
    pub success: AtomicU64,
    pub failure: AtomicU64,
    pub total: AtomicU64,
    pub request_message_count: AtomicU64,
    pub response_message_count: AtomicU64,
}

impl GrpcStats {
    /// (name under `grpc.`, value) of the stats used so far.
    pub fn seen(&self) -> Vec<(String, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out: Vec<(String, u64)> = self
            .statuses
            .iter()
            .enumerate()
            .filter(|(_, c)| get(c) > 0)
            .map(|(i, c)| (i.to_string(), get(c)))
            .collect();
        let used = get(&self.total) > 0;
        for (name, c, shown) in [
            ("success", &self.success, used),
            ("failure", &self.failure, used),
            ("total", &self.total, used),
            (
                "request_message_count",
                &self.request_message_count,
                get(&self.request_message_count) > 0,
            ),
            (
                "response_message_count",
                &self.response_message_count,
                get(&self.response_message_count) > 0,
            ),
        ] {
            if shown {
                out.push((name.to_string(), get(c)));
            }
        }
        out
    }
}

/// `upstream_rq_<code>`: a counter per status code, shown once it counted something (Envoy makes
/// these on first use).
#[derive(Debug)]
pub struct StatusCodes(Box<[AtomicU64]>);

impl Default for StatusCodes {
    fn default() -> Self {
        StatusCodes((100..600).map(|_| AtomicU64::new(0)).collect())
    }
}

impl StatusCodes {
    pub fn inc(&self, code: u16) {
        if let Some(c) = code
            .checked_sub(100)
            .and_then(|i| self.0.get(usize::from(i)))
        {
            inc(c);
        }
    }

    /// (code, count) of the codes seen.
    pub fn seen(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.0.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Ordering::Relaxed);
            (n > 0).then_some((i as u16 + 100, n))
        })
    }
}

impl ClusterStats {
    pub fn count_status(&self, code: u16) {
        self.codes.inc(code);
        let families = [
            &self.upstream_rq_1xx,
            &self.upstream_rq_2xx,
            &self.upstream_rq_3xx,
            &self.upstream_rq_4xx,
            &self.upstream_rq_5xx,
        ];
        count_class(families, code);
    }
}

stat_block!(
    /// `http.<prefix>.fault.*`
    FaultStats {
        counters: [aborts_injected, delays_injected, faults_overflow],
        gauges: [active_faults]
    }
);

impl HttpStats {
    pub fn count_status(&self, code: u16) {
        let families = [
            &self.downstream_rq_1xx,
            &self.downstream_rq_2xx,
            &self.downstream_rq_3xx,
            &self.downstream_rq_4xx,
            &self.downstream_rq_5xx,
        ];
        count_class(families, code);
    }
}

/// Envoy's default histogram bucket bounds, in milliseconds.
pub const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A latency histogram in Envoy's buckets (values in microseconds internally).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 19],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, elapsed: std::time::Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let ms = us as f64 / 1000.0;
        if let Some(i) = BUCKETS_MS.iter().position(|b| ms <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Prometheus text lines for `name` (cumulative buckets, sum in ms as Envoy exports).
    pub fn prometheus(&self, name: &str, labels: &str, out: &mut String) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum_ms = self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum_ms}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}
