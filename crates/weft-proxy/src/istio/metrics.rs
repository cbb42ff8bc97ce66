//! Istio's standard metrics (`istio_requests_total` and friends), counted per label set and
//! printed on `/stats/prometheus` as istio-proxy prints them: the same names, label names,
//! label order, values and histogram buckets.
//!
//! Cardinality: a series is one combination of (stats filter, peer workload, destination
//! service, principals, protocol, response code, gRPC status, response flags, mTLS). Peers and
//! services come from the mesh's own config and exchange, response codes and flags from small
//! fixed sets; nothing a client can make up freely (paths, header values, addresses) becomes a
//! label unless a Telemetry override asks for it. A request from outside the mesh carries no
//! peer metadata and so counts under `unknown`.
//!
//! Counting: a request's key is built from `Arc`s it already holds (no string is copied), and
//! added to one of a few shards picked by thread, so two workers rarely meet on a lock; label
//! strings are only made when the metrics are scraped.

use super::{LocalNode, Workload};
use http::HeaderValue;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

/// Envoy's default histogram buckets, which istio-proxy's metrics use.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

const SHARDS: usize = 8;

/// Istio's TCP metrics, in the order `Values::tcp` keeps them.
const TCP_METRICS: [&str; 4] = [
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
];

/// `istio.stats` as a network filter before a `tcp_proxy`: its config, and how often a
/// long-lived connection reports (`tcp_reporting_duration`, 5 s by default).
#[derive(Debug)]
pub struct TcpStatsFilter {
    pub config: Arc<StatsConfig>,
    pub registry: Arc<Registry>,
    pub reporting: std::time::Duration,
}

/// The cluster's `filter_metadata.istio.services[0]`: the service a request went to.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct ServiceLabels {
    pub host: String,
    pub name: String,
    pub namespace: String,
}

/// Where `destination_service` comes from for one request.
#[derive(Debug, Clone)]
pub enum Destination {
    None,
    /// The cluster's service metadata.
    Cluster(Arc<ServiceLabels>),
    /// Outbound without service metadata: the Host header names it.
    Host(HeaderValue),
    /// Passthrough and black hole clusters: the service name is the cluster's, the host the
    /// Host header's (when the fallback is on).
    Special(&'static str, Option<HeaderValue>),
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Destination::None, Destination::None) => true,
            (Destination::Cluster(a), Destination::Cluster(b)) => Arc::ptr_eq(a, b),
            (Destination::Host(a), Destination::Host(b)) => a == b,
            (Destination::Special(a, x), Destination::Special(b, y)) => a == b && x == y,
            _ => false,
        }
    }
}

impl Hash for Destination {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Destination::None => {}
            Destination::Cluster(a) => Arc::as_ptr(a).hash(state),
            Destination::Host(h) => h.hash(state),
            Destination::Special(n, h) => {
                n.hash(state);
                h.hash(state);
            }
        }
    }
}

/// The other side's SPIFFE identity: from its certificate (server side), or as it announced
/// itself over an mTLS connection (client side).
#[derive(Debug, Clone)]
pub enum Principal {
    None,
    Cert(Arc<crate::rbac::PeerIdentity>),
    Announced(Arc<Workload>),
}

impl Principal {
    pub fn as_str(&self) -> &str {
        match self {
            Principal::None => "",
            Principal::Cert(p) => p.uris.first().map_or("", String::as_str),
            Principal::Announced(w) => &w.identity,
        }
    }
}

/// What one stats filter was told (its `PluginConfig`), shared by the series it counts.
#[derive(Debug, Default)]
pub struct StatsConfig {
    /// Inbound listener: `reporter="destination"`.
    pub server: bool,
    pub disable_host_header_fallback: bool,
    /// By metric name without `istio_` (`requests_total`); `""` for every metric.
    pub overrides: Vec<(String, MetricOverride)>,
    /// The request attributes the overrides' tags read, each once.
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Default, Clone)]
pub struct MetricOverride {
    pub drop: bool,
    pub remove: Vec<String>,
    /// Tag to its value: replaces a standard tag in place, or is added at the end.
    pub dimensions: Vec<(String, Dimension)>,
}

/// A tag's value from a Telemetry override: a literal, or an attribute of the request
/// (`StatsConfig::attributes[i]`, its value in `Key::attributes[i]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    Literal(String),
    Attribute(usize),
}

/// The request attributes a tag may name (Istio's attribute vocabulary, the part a proxy
/// knows of a finished request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    RequestHost,
    RequestMethod,
    RequestPath,
    RequestUrlPath,
    RequestScheme,
    RequestProtocol,
    RequestHeader(http::HeaderName),
    ResponseCode,
    DestinationPort,
    SourceAddress,
}

impl Attribute {
    /// `request.host`, `request.headers['x-user']`, `string(destination.port)`...
    pub fn parse(expr: &str) -> Option<Attribute> {
        let e = expr.trim();
        let e = e
            .strip_prefix("string(")
            .and_then(|r| r.strip_suffix(')'))
            .map_or(e, str::trim);
        Some(match e {
            "request.host" => Attribute::RequestHost,
            "request.method" => Attribute::RequestMethod,
            "request.path" => Attribute::RequestPath,
            "request.url_path" => Attribute::RequestUrlPath,
            "request.scheme" => Attribute::RequestScheme,
            "request.protocol" => Attribute::RequestProtocol,
            "response.code" => Attribute::ResponseCode,
            "destination.port" => Attribute::DestinationPort,
            "source.address" => Attribute::SourceAddress,
            other => {
                let name = other
                    .strip_prefix("request.headers[")?
                    .strip_suffix(']')?
                    .trim();
                let name = name
                    .strip_prefix('\'')
                    .and_then(|n| n.strip_suffix('\''))
                    .or_else(|| name.strip_prefix('"').and_then(|n| n.strip_suffix('"')))?;
                Attribute::RequestHeader(http::HeaderName::from_bytes(name.as_bytes()).ok()?)
            }
        })
    }
}

/// One series: everything its labels are made of.
#[derive(Debug, Clone)]
pub struct Key {
    pub config: Arc<StatsConfig>,
    pub peer: Option<Arc<Workload>>,
    pub destination: Destination,
    pub peer_principal: Principal,
    pub local_principal: Option<Arc<str>>,
    /// A TCP connection's series (`request_protocol="tcp"`, no response code).
    pub tcp: bool,
    pub grpc: bool,
    pub code: u16,
    pub grpc_status: Option<u16>,
    pub flags: u32,
    /// The values of `config.attributes` for this request (only when overrides read any:
    /// what a client sends then becomes a label, as the override asked).
    pub attributes: Option<Box<[Box<str>]>>,
}

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.config, &o.config)
            && match (&self.peer, &o.peer) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                (None, None) => true,
                _ => false,
            }
            && self.destination == o.destination
            && self.peer_principal.as_str() == o.peer_principal.as_str()
            && self.local_principal == o.local_principal
            && self.tcp == o.tcp
            && self.grpc == o.grpc
            && self.code == o.code
            && self.grpc_status == o.grpc_status
            && self.flags == o.flags
            && self.attributes == o.attributes
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.config).hash(state);
        self.peer.as_deref().map(|p| &p.workload).hash(state);
        self.destination.hash(state);
        self.peer_principal.as_str().hash(state);
        self.code.hash(state);
        self.flags.hash(state);
        self.attributes.hash(state);
    }
}

/// Counts per bucket, each value in the first bucket whose bound it is at or under (made
/// cumulative when printed): one increment per value.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn record(&mut self, v: f64) {
        let i = BUCKETS.partition_point(|b| *b < v);
        if let Some(slot) = self.buckets.get_mut(i) {
            *slot += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    fn add(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
    }
}

#[derive(Debug, Default, Clone)]
struct Values {
    requests: u64,
    /// gRPC messages each way, for requests the `grpc_stats` filter counted.
    messages: Option<(u64, u64)>,
    /// TCP: connections opened and closed, bytes sent and received.
    tcp: [u64; 4],
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// One finished request, as the stats filter measured it.
pub struct Sample {
    /// Whole milliseconds, as Envoy's histograms take them.
    pub duration_ms: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// A gRPC request's messages (request, response), from the `grpc_stats` filter's state.
    pub messages: Option<(u64, u64)>,
}

/// Every series of one proxy.
#[derive(Debug, Default)]
pub struct Registry {
    local: OnceLock<LocalNode>,
    /// foldhash, not SipHash: a request's key is hashed on every request, and foldhash's
    /// per-process seed still keeps a caller from choosing colliding keys ahead of time.
    shards: [Mutex<foldhash::HashMap<Key, Values>>; SHARDS],
}

impl Registry {
    /// Who this proxy is; set once, from the bootstrap's node.
    pub fn set_local(&self, node: &serde_json::Value) {
        let _ = self.local.set(LocalNode::from_node(node));
    }

    pub fn local(&self) -> &LocalNode {
        static EMPTY: OnceLock<LocalNode> = OnceLock::new();
        self.local
            .get()
            .unwrap_or_else(|| EMPTY.get_or_init(LocalNode::default))
    }

    /// Adds a TCP connection's news: `opened`/`closed` (0 or 1) and bytes since the last report.
    pub fn record_tcp(&self, key: Key, opened: u64, closed: u64, sent: u64, received: u64) {
        let shard = crate::server::thread_index() % SHARDS;
        let mut map = crate::server::lock(&self.shards[shard]);
        let v = map.entry(key).or_default();
        for (slot, n) in v.tcp.iter_mut().zip([opened, closed, sent, received]) {
            *slot += n;
        }
    }

    pub fn record(&self, key: Key, sample: &Sample) {
        let shard = crate::server::thread_index() % SHARDS;
        let mut map = crate::server::lock(&self.shards[shard]);
        let v = map.entry(key).or_default();
        v.requests += 1;
        if let Some((rq, rs)) = sample.messages {
            let m = v.messages.get_or_insert((0, 0));
            m.0 += rq;
            m.1 += rs;
        }
        v.duration.record(sample.duration_ms as f64);
        v.request_bytes.record(sample.request_bytes as f64);
        v.response_bytes.record(sample.response_bytes as f64);
    }

    /// The metrics in Prometheus' text format, as Envoy prints them.
    pub fn prometheus(&self, out: &mut String) {
        let local = self.local();
        let mut requests: BTreeMap<String, u64> = BTreeMap::new();
        let mut messages: [BTreeMap<String, u64>; 2] = Default::default();
        let mut tcp: [BTreeMap<String, u64>; 4] = Default::default();
        let mut histograms: [BTreeMap<String, Histogram>; 3] = Default::default();
        for shard in &self.shards {
            let map = crate::server::lock(shard);
            for (key, v) in map.iter() {
                let base = labels(key, local);
                let add = |metric: &str| -> Option<String> {
                    let mut l = base.clone();
                    for (name, o) in &key.config.overrides {
                        if !name.is_empty() && name != metric {
                            continue;
                        }
                        if o.drop {
                            return None;
                        }
                        l.retain(|(k, _)| !o.remove.iter().any(|r| r == k));
                        for (tag, value) in &o.dimensions {
                            let value = match value {
                                Dimension::Literal(v) => v.clone(),
                                Dimension::Attribute(i) => key
                                    .attributes
                                    .as_ref()
                                    .and_then(|a| a.get(*i))
                                    .map_or_else(|| "unknown".to_string(), |v| v.to_string()),
                            };
                            match l.iter_mut().find(|(k, _)| k == tag) {
                                Some(slot) => slot.1 = value.clone(),
                                None => l.push((tag.clone(), value.clone())),
                            }
                        }
                    }
                    Some(render_labels(&l))
                };
                if key.tcp {
                    for (i, (metric, n)) in TCP_METRICS.iter().zip(v.tcp).enumerate() {
                        if let Some(l) = add(metric.trim_start_matches("istio_")) {
                            *tcp[i].entry(l).or_default() += n;
                        }
                    }
                    continue;
                }
                if let Some(l) = add("requests_total") {
                    *requests.entry(l).or_default() += v.requests;
                }
                if let Some((rq, rs)) = v.messages {
                    for (i, (metric, n)) in [
                        ("request_messages_total", rq),
                        ("response_messages_total", rs),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        if let Some(l) = add(metric) {
                            *messages[i].entry(l).or_default() += n;
                        }
                    }
                }
                let hists = [
                    ("request_duration_milliseconds", &v.duration),
                    ("request_bytes", &v.request_bytes),
                    ("response_bytes", &v.response_bytes),
                ];
                for (i, (metric, h)) in hists.into_iter().enumerate() {
                    if let Some(l) = add(metric) {
                        histograms[i].entry(l).or_default().add(h);
                    }
                }
            }
        }
        if !requests.is_empty() {
            let _ = writeln!(out, "# TYPE istio_requests_total counter");
            for (l, n) in &requests {
                let _ = writeln!(out, "istio_requests_total{{{l}}} {n}");
            }
        }
        for (name, series) in [
            "istio_request_messages_total",
            "istio_response_messages_total",
        ]
        .iter()
        .chain(TCP_METRICS.iter())
        .zip(messages.iter().chain(tcp.iter()))
        {
            if series.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# TYPE {name} counter");
            for (l, n) in series {
                let _ = writeln!(out, "{name}{{{l}}} {n}");
            }
        }
        let names = [
            "istio_request_duration_milliseconds",
            "istio_request_bytes",
            "istio_response_bytes",
        ];
        for (name, series) in names.iter().zip(histograms.iter()) {
            if series.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (l, h) in series {
                let mut cumulative = 0;
                for (b, n) in BUCKETS.iter().zip(h.buckets.iter()) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
            }
        }
    }
}

fn render_labels(l: &[(String, String)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s
}

fn or(v: &str, default: &str) -> String {
    if v.is_empty() {
        default.to_string()
    } else {
        v.to_string()
    }
}

/// The `/ns/<namespace>/` of a SPIFFE identity.
fn spiffe_namespace(id: &str) -> Option<&str> {
    let rest = id.split_once("/ns/")?.1;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// A series' standard labels, in istio-proxy's order, with its values and defaults.
fn labels(key: &Key, local: &LocalNode) -> Vec<(String, String)> {
    let me = &local.workload;
    let empty = Workload::default();
    let peer = key.peer.as_deref().unwrap_or(&empty);
    let peer_principal = key.peer_principal.as_str();
    let local_principal = key.local_principal.as_deref().unwrap_or("");
    let peer_namespace = spiffe_namespace(peer_principal)
        .map(str::to_string)
        .unwrap_or_else(|| peer.namespace.clone());
    let (service_host, service_name, service_namespace) = match &key.destination {
        Destination::None => (String::new(), String::new(), String::new()),
        Destination::Cluster(s) => {
            let name = if s.name.is_empty() {
                s.host.split('.').next().unwrap_or_default().to_string()
            } else {
                s.name.clone()
            };
            (s.host.clone(), name, s.namespace.clone())
        }
        Destination::Host(h) => {
            let h = String::from_utf8_lossy(h.as_bytes()).into_owned();
            (h.clone(), h, String::new())
        }
        Destination::Special(name, host) => (
            host.as_ref()
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                .unwrap_or_default(),
            (*name).to_string(),
            String::new(),
        ),
    };
    let u = "unknown";
    let server = key.config.server;
    let peer_side = |p: &Workload, principal: &str, ns: &str| {
        [
            or(&p.workload, u),
            or(&p.canonical_service, u),
            or(&p.canonical_revision, "latest"),
            or(ns, u),
            or(principal, u),
            or(&p.app, u),
            or(&p.version, u),
            or(&p.cluster, u),
        ]
    };
    let mut l: Vec<(String, String)> = Vec::with_capacity(24);
    let mut put = |k: &str, v: String| l.push((k.to_string(), v));
    put(
        "reporter",
        if server { "destination" } else { "source" }.into(),
    );
    let source = if server {
        peer_side(peer, peer_principal, &peer_namespace)
    } else {
        [
            me.workload.clone(),
            me.canonical_service.clone(),
            me.canonical_revision.clone(),
            me.namespace.clone(),
            or(local_principal, u),
            me.app.clone(),
            me.version.clone(),
            me.cluster.clone(),
        ]
    };
    for (k, v) in [
        "source_workload",
        "source_canonical_service",
        "source_canonical_revision",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
    ]
    .into_iter()
    .zip(source)
    {
        put(k, v);
    }
    if server {
        put("destination_workload", me.workload.clone());
        put("destination_workload_namespace", me.namespace.clone());
        put("destination_principal", or(local_principal, u));
        put("destination_app", me.app.clone());
        put("destination_version", me.version.clone());
        put(
            "destination_service",
            or(&service_host, &me.canonical_service),
        );
        put(
            "destination_canonical_service",
            me.canonical_service.clone(),
        );
        put(
            "destination_canonical_revision",
            me.canonical_revision.clone(),
        );
        put(
            "destination_service_name",
            or(&service_name, &me.canonical_service),
        );
        put("destination_service_namespace", me.namespace.clone());
        put("destination_cluster", me.cluster.clone());
    } else {
        put("destination_workload", or(&peer.workload, u));
        put("destination_workload_namespace", or(&peer_namespace, u));
        put("destination_principal", or(peer_principal, u));
        put("destination_app", or(&peer.app, u));
        put("destination_version", or(&peer.version, u));
        put("destination_service", or(&service_host, u));
        put(
            "destination_canonical_service",
            or(&peer.canonical_service, u),
        );
        put(
            "destination_canonical_revision",
            or(&peer.canonical_revision, "latest"),
        );
        put("destination_service_name", or(&service_name, u));
        put(
            "destination_service_namespace",
            or(&or(&service_namespace, &peer_namespace), u),
        );
        put("destination_cluster", or(&peer.cluster, u));
    }
    if key.tcp {
        put("request_protocol", "tcp".into());
    } else {
        put(
            "request_protocol",
            if key.grpc { "grpc" } else { "http" }.into(),
        );
        put("response_code", key.code.to_string());
        put(
            "grpc_response_status",
            match (key.grpc, key.grpc_status) {
                (true, Some(s)) => s.to_string(),
                _ => String::new(),
            },
        );
    }
    put(
        "response_flags",
        crate::access_log::flags::render(key.flags),
    );
    put(
        "connection_security_policy",
        if !server {
            "unknown"
        } else if !peer_principal.is_empty() && !local_principal.is_empty() {
            "mutual_tls"
        } else {
            "none"
        }
        .into(),
    );
    l
}
