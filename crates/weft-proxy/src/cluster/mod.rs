//! Clusters: the upstream hosts of a named service, how they are found (STATIC, STRICT_DNS,
//! LOGICAL_DNS) and how one is picked per request (`lb`).

pub mod circuit;
pub mod dns;
pub mod hash;
pub mod health_check;
pub mod lb;
pub mod manager;
pub mod outlier;
pub mod peak_ewma;

use crate::stats::ClusterStats;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    Static,
    StrictDns,
    LogicalDns,
    /// Endpoints pushed by the control plane (`ClusterLoadAssignment`s).
    Eds,
    /// ORIGINAL_DST: the host is where the client was going (its restored destination, or
    /// `x-envoy-original-dst-host` when allowed). Hosts are made on first use.
    OriginalDst,
}

/// `original_dst_lb_config`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OriginalDstConfig {
    /// `use_http_header`: the header that may name the destination (`http_header_name`, by
    /// default `x-envoy-original-dst-host`).
    pub http_header: Option<http::HeaderName>,
    pub port_override: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash {
        min_size: u64,
        max_size: u64,
    },
    Maglev {
        table_size: u64,
    },
    /// LEAST_REQUEST's latency-aware variant (Weft's own, chosen by cluster metadata).
    PeakEwma {
        decay: std::time::Duration,
    },
}

impl LbPolicy {
    /// Whether the route's `hash_policy` is evaluated for this cluster.
    pub fn is_hashing(self) -> bool {
        matches!(self, LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. })
    }
}

/// Which HTTP version to speak to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// `use_downstream_protocol_config`: the version the client used.
    Downstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
    Degraded,
}

/// Where an endpoint is: an IP address, or a name that DNS turns into addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    Ip(SocketAddr),
    Dns { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    pub address: EndpointAddress,
    pub weight: u32,
    pub health: Health,
    pub hostname: String,
    /// Which locality of the assignment it is in (its index), and that locality's
    /// `load_balancing_weight` (0 when unset), for locality weighted balancing.
    pub locality: u32,
    pub locality_weight: u32,
    /// `metadata.filter_metadata["envoy.transport_socket_match"]`, as (key, value) pairs: what
    /// the cluster's `transport_socket_matches` pick the endpoint's transport socket by.
    pub socket_match: Arc<[(String, String)]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityConfig {
    pub priority: u32,
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub name: String,
    /// `alt_stat_name` or the name: the key of `cluster.<stat_name>.*` stats.
    pub stat_name: String,
    pub discovery: Discovery,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub protocol: UpstreamProtocol,
    pub h2_max_concurrent_streams: Option<u32>,
    pub dns_family: DnsFamily,
    /// `dns_refresh_rate`: how often a DNS cluster resolves again.
    pub dns_refresh_rate: Duration,
    /// `respect_dns_ttl`: resolve again when the answers' TTL runs out instead.
    pub respect_dns_ttl: bool,
    pub localities: Vec<LocalityConfig>,
    /// The `ClusterLoadAssignment` an EDS cluster takes: `eds_cluster_config.service_name`, or
    /// the cluster's name.
    pub eds_service_name: String,
    /// How long a new EDS cluster waits (warming) for its first assignment:
    /// `eds_config.initial_fetch_timeout`, 15 s by default, none when 0.
    pub eds_initial_fetch_timeout: Option<Duration>,
    pub original_dst: OriginalDstConfig,
    /// `transport_socket` TLS.
    pub tls: Option<Arc<crate::upstream::tls::UpstreamTls>>,
    /// `metadata.filter_metadata.istio.services[0]`: the service Istio's metrics name.
    pub istio_service: Option<Arc<crate::istio::metrics::ServiceLabels>>,
    /// `filters`' `istio.metadata_exchange`: on TLS connections that agreed on its protocol,
    /// this proxy's header is written and the peer's read.
    pub exchange: Option<crate::istio::exchange::ExchangeConfig>,
    /// `transport_socket_matches`, in order: the first whose criteria an endpoint's metadata
    /// all carry gives its transport socket; one matching none gets `tls`.
    pub tls_matches: Vec<TransportSocketMatch>,
    pub circuit_breakers: circuit::CircuitBreakers,
    /// `common_http_protocol_options.max_requests_per_connection`.
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.idle_timeout`: how long a pooled connection may sit idle
    /// (Envoy's default is an hour).
    pub idle_timeout: Option<Duration>,
    pub outlier_detection: Option<outlier::OutlierConfig>,
    /// `health_checks` (one).
    pub health_check: Option<health_check::HealthCheckConfig>,
    /// `common_lb_config.healthy_panic_threshold`, percent.
    pub healthy_panic_threshold: f64,
    /// `common_lb_config.locality_weighted_lb_config`: pick a locality by its weight first.
    pub locality_weighted: bool,
}

/// One of a cluster's `transport_socket_matches`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportSocketMatch {
    pub name: String,
    pub criteria: Vec<(String, String)>,
    /// None: `raw_buffer`, plaintext.
    pub tls: Option<Arc<crate::upstream::tls::UpstreamTls>>,
}

/// One upstream host as the load balancer sees it.
#[derive(Debug)]
pub struct Host {
    pub address: SocketAddr,
    pub hostname: String,
    pub weight: u32,
    pub health: Health,
    pub priority: u32,
    /// Its locality (index in the assignment) and that locality's weight (0: none).
    pub locality: u32,
    pub locality_weight: u32,
    /// Requests in flight, for LEAST_REQUEST and `/clusters`.
    pub active_requests: AtomicU64,
    pub stats: HostStats,
    /// What outlier detection knows of the host.
    pub outlier: outlier::HostMonitor,
    /// What active health checking knows of the host (read only when the cluster checks).
    pub active_health: health_check::HostHealth,
    /// Its response latency, for the peak EWMA balancer (kept only under that policy).
    pub latency: peak_ewma::Latency,
    pub socket_match: Arc<[(String, String)]>,
}

#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_total: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_success: AtomicU64,
    pub rq_error: AtomicU64,
}

impl Host {
    pub fn health_check_failed(&self) -> bool {
        self.active_health.is_failed()
    }

    pub fn new(address: SocketAddr, endpoint: &EndpointConfig, priority: u32) -> Self {
        Host {
            address,
            hostname: endpoint.hostname.clone(),
            weight: endpoint.weight.max(1),
            health: endpoint.health,
            priority,
            locality: endpoint.locality,
            locality_weight: endpoint.locality_weight,
            active_requests: AtomicU64::new(0),
            stats: HostStats::default(),
            outlier: outlier::HostMonitor::default(),
            active_health: health_check::HostHealth::default(),
            latency: peak_ewma::Latency::default(),
            socket_match: endpoint.socket_match.clone(),
        }
    }
}

/// A cluster as the data path uses it: its config, its current hosts (replaced whole when DNS
/// answers change) and its stats.
#[derive(Debug)]
pub struct Cluster {
    pub config: ClusterConfig,
    pub hosts: ArcSwap<lb::HostSet>,
    /// Shared with the cluster's next version when the control plane changes it, as Envoy's
    /// stats outlive a cluster update.
    pub stats: Arc<ClusterStats>,
    /// `cluster.<name>.upstream_rq_time`
    pub rq_time: Arc<crate::stats::Histogram>,
    /// What the circuit breakers count, shared with the cluster's next version.
    pub breakers: Arc<circuit::Breakers>,
    pub outlier: Option<outlier::Detector>,
    pub health_check: Option<(
        health_check::HealthCheckConfig,
        Arc<health_check::HealthCheckStats>,
    )>,
    /// When the next DNS resolution is due (STRICT_DNS, LOGICAL_DNS).
    dns: dns::Schedule,
    /// Where connections come from instead of the network, for tests (`testing`).
    pub connector: OnceLock<Arc<dyn crate::upstream::Connector>>,
    /// Who resolves the cluster's names instead of the system, for tests (`testing`).
    pub resolver: OnceLock<Arc<dyn dns::Resolver>>,
    /// Rounds of health checks.
    health_rounds: Rounds,
    /// Held while a new host set is built and published, so that two changes at once (an
    /// ejection on each of two workers, an EDS update) cannot publish a set missing the other.
    publishing: std::sync::Mutex<()>,
    /// ORIGINAL_DST: the hosts made so far, by address. Replaced whole on insert (rare), read
    /// without a lock.
    original_dst_hosts: ArcSwap<HashMap<SocketAddr, Arc<Host>>>,
}

/// A test's hook (`testing`) stays with the cluster's next version.
fn inherit<T: ?Sized>(previous: Option<&OnceLock<Arc<T>>>) -> OnceLock<Arc<T>> {
    previous
        .and_then(|p| p.get().cloned())
        .map(OnceLock::from)
        .unwrap_or_default()
}

/// When a cluster's next round of periodic work (health checks, DNS resolution) is due, and
/// whether one is running: the cluster manager starts a round only when it is due and none runs.
#[derive(Debug, Default)]
pub struct Rounds(std::sync::Mutex<(Option<tokio::time::Instant>, bool)>);

impl Rounds {
    /// Whether a round should start at `now` (at once for a new cluster); if so it is marked
    /// running until `next_at`.
    pub fn take_due(&self, now: tokio::time::Instant) -> bool {
        let Ok(mut r) = self.0.lock() else {
            return false;
        };
        let due = !r.1 && r.0.is_none_or(|at| now >= at);
        if due {
            r.1 = true;
        }
        due
    }

    /// The round ended (or was given up): the next is due at `at`.
    pub fn next_at(&self, at: tokio::time::Instant) {
        if let Ok(mut r) = self.0.lock() {
            *r = (Some(at), false);
        }
    }
}

/// ORIGINAL_DST hosts kept before unused ones are dropped (Envoy drops them on its
/// `cleanup_interval`).
const ORIGINAL_DST_HOSTS_KEPT: usize = 1024;

impl Cluster {
    /// The transport socket for `host`: TLS, or None for plaintext.
    pub fn tls_for(&self, host: &Host) -> Option<&Arc<crate::upstream::tls::UpstreamTls>> {
        if self.config.tls_matches.is_empty() {
            return self.config.tls.as_ref();
        }
        self.config
            .tls_matches
            .iter()
            .find(|m| {
                m.criteria
                    .iter()
                    .all(|c| host.socket_match.iter().any(|h| h == c))
            })
            .map_or(self.config.tls.as_ref(), |m| m.tls.as_ref())
    }

    /// Takes a place under `max_requests` for one request (a client's or a mirror's), or counts
    /// it as dropped (`upstream_rq_active_overflow`, and completed) when there is none.
    pub fn admit_request(&self, priority: circuit::Priority) -> bool {
        let limits = self.config.circuit_breakers.thresholds(priority);
        if circuit::Resources::try_take(&self.breakers.at(priority).requests, limits.max_requests) {
            return true;
        }
        crate::stats::inc(&self.stats.upstream_rq_active_overflow);
        crate::stats::inc(&self.stats.upstream_rq_completed);
        false
    }

    /// Gives back the place `admit_request` took.
    pub fn release_request(&self, priority: circuit::Priority) {
        circuit::Resources::give(&self.breakers.at(priority).requests);
    }

    pub fn new(config: ClusterConfig) -> Arc<Self> {
        Self::succeeding(config, None)
    }

    /// A cluster that takes the place of `previous` (same name, new config): it keeps the
    /// stats, and the hosts too when the endpoints come from elsewhere (DNS, EDS).
    pub fn succeeding(config: ClusterConfig, previous: Option<&Cluster>) -> Arc<Self> {
        let keep_hosts = previous.is_some_and(|p| {
            config.discovery != Discovery::Static
                && p.config.discovery == config.discovery
                && p.config.localities == config.localities
                && p.config.eds_service_name == config.eds_service_name
        });
        let set = match previous {
            Some(p) if keep_hosts => p.hosts.load().all().cloned().collect(),
            _ => ip_hosts(&config.localities, None),
        };
        if config.outlier_detection.is_none() {
            // Outlier detection turned off: nobody stays ejected.
            for h in &set {
                h.outlier.forget();
            }
        }
        let cluster = Cluster {
            hosts: ArcSwap::from_pointee(lb::HostSet::new(Vec::new(), LbPolicy::RoundRobin)),
            stats: previous.map(|p| p.stats.clone()).unwrap_or_default(),
            rq_time: previous.map(|p| p.rq_time.clone()).unwrap_or_default(),
            breakers: previous.map(|p| p.breakers.clone()).unwrap_or_default(),
            outlier: config.outlier_detection.clone().map(|c| {
                let stats = previous
                    .and_then(|p| p.outlier.as_ref())
                    .map(|d| d.stats.clone())
                    .unwrap_or_default();
                outlier::Detector::new(c, stats)
            }),
            publishing: std::sync::Mutex::new(()),
            health_check: config.health_check.clone().map(|c| {
                let stats = previous
                    .and_then(|p| p.health_check.as_ref())
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default();
                (c, stats)
            }),
            health_rounds: Rounds::default(),
            dns: dns::Schedule::default(),
            connector: inherit(previous.map(|p| &p.connector)),
            resolver: inherit(previous.map(|p| &p.resolver)),
            original_dst_hosts: ArcSwap::default(),
            config,
        };
        cluster.publish(set);
        Arc::new(cluster)
    }

    /// ORIGINAL_DST: where this request goes. The header wins when the cluster allows it and
    /// the request has one; a header that is not `IP:port` gives no host, as in Envoy.
    pub fn original_destination(
        &self,
        headers: Option<&http::HeaderMap>,
        restored: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        let od = &self.config.original_dst;
        let from_header = od
            .http_header
            .as_ref()
            .zip(headers)
            .and_then(|(name, h)| h.get(name));
        let mut destination = match from_header {
            Some(v) => v.to_str().ok()?.trim().parse().ok()?,
            None => restored?,
        };
        if let Some(port) = od.port_override {
            destination.set_port(port);
        }
        Some(destination)
    }

    /// ORIGINAL_DST: the host for `destination`, made on first use so that its pool and
    /// counters carry over between requests.
    pub fn original_dst_host(&self, destination: SocketAddr) -> Arc<Host> {
        if let Some(h) = self.original_dst_hosts.load().get(&destination) {
            return h.clone();
        }
        let endpoint = EndpointConfig {
            address: EndpointAddress::Ip(destination),
            weight: 1,
            health: Health::Healthy,
            hostname: String::new(),
            locality: 0,
            locality_weight: 0,
            socket_match: Arc::from([]),
        };
        let host = Arc::new(Host::new(destination, &endpoint, 0));
        let mut chosen = host.clone();
        self.original_dst_hosts.rcu(|current| {
            let mut next = HashMap::clone(current);
            if next.len() >= ORIGINAL_DST_HOSTS_KEPT {
                // Hosts nobody holds: no request in flight, no connection checked out.
                next.retain(|_, h| Arc::strong_count(h) > 1);
            }
            chosen = next
                .entry(destination)
                .or_insert_with(|| host.clone())
                .clone();
            next
        });
        let s = &self.stats;
        let n = self.original_dst_hosts.load().len() as u64;
        s.membership_total.store(n, Ordering::Relaxed);
        s.membership_healthy.store(n, Ordering::Relaxed);
        chosen
    }

    /// Replaces the hosts after a DNS answer, keeping the hosts (and their counters) that stay.
    pub fn set_resolved(&self, resolved: Vec<(SocketAddr, EndpointConfig, u32)>) {
        let current = self.hosts.load();
        let hosts: Vec<Arc<Host>> = resolved
            .into_iter()
            .map(|(addr, endpoint, priority)| reuse(&current, addr, &endpoint, priority))
            .collect();
        self.publish(hosts);
    }

    /// Replaces the hosts with a `ClusterLoadAssignment` from EDS.
    pub fn set_endpoints(&self, localities: &[LocalityConfig]) {
        let current = self.hosts.load();
        let hosts = ip_hosts(localities, Some(&current));
        self.publish(hosts);
    }

    /// Makes `hosts` the cluster's hosts, with the membership gauges that describe them.
    fn publish(&self, hosts: Vec<Arc<Host>>) {
        let _publishing = self.publishing.lock();
        let set = lb::HostSet::with_options(
            hosts,
            lb::Options {
                policy: self.config.lb_policy,
                panic_threshold: self.config.healthy_panic_threshold,
                active_hc: self.config.health_check.is_some(),
                locality_weighted: self.config.locality_weighted,
            },
        );
        let s = &self.stats;
        s.membership_total
            .store(set.len() as u64, Ordering::Relaxed);
        s.membership_healthy
            .store(set.healthy_count() as u64, Ordering::Relaxed);
        self.hosts.store(Arc::new(set));
    }

    /// Tells outlier detection what an attempt on `host` met; ejects the host if that calls for
    /// it.
    pub fn report(&self, host: &Host, outcome: outlier::Outcome) {
        let Some(detector) = &self.outlier else {
            return;
        };
        let Some(kind) = host.outlier.record(&detector.config, outcome) else {
            return;
        };
        let set = self.hosts.load_full();
        let monitors: Vec<&outlier::HostMonitor> = set.all().map(|h| &h.outlier).collect();
        if detector.eject(&host.outlier, &monitors, kind) {
            tracing::debug!(cluster = %self.config.name, host = %host.address, ?kind, "outlier ejected");
            self.republish();
        }
    }

    /// Builds the host set again from the same hosts, whose health changed.
    pub fn republish(&self) {
        let hosts = self.hosts.load().all().cloned().collect();
        self.publish(hosts);
    }

    /// Whether a round of health checks is due now; if so it is marked as running until
    /// `health_round_done`.
    pub fn health_round_due(&self) -> bool {
        if self.health_check.is_none() {
            return false;
        }
        self.health_rounds.take_due(tokio::time::Instant::now())
    }

    /// A round ended: the next is an interval away, or `no_traffic_interval` while no request
    /// has been routed to the cluster (decided now, as Envoy arms its timer).
    pub fn health_round_done(&self) {
        let Some((config, _)) = &self.health_check else {
            return;
        };
        let interval = if self.stats.upstream_rq_total.load(Ordering::Relaxed) == 0 {
            config.no_traffic_interval
        } else {
            config.interval
        };
        self.health_rounds
            .next_at(tokio::time::Instant::now() + interval);
    }

    /// Outlier detection's interval work, when its interval has passed.
    pub fn outlier_tick(&self) {
        // Called every 100 ms for every cluster: nothing is gathered until an interval is due.
        let Some(detector) = self.outlier.as_ref().filter(|d| d.due()) else {
            return;
        };
        let set = self.hosts.load_full();
        let monitors: Vec<&outlier::HostMonitor> = set.all().map(|h| &h.outlier).collect();
        if detector.tick(&monitors) {
            self.republish();
        }
    }

    /// Endpoints that DNS must resolve, with their priority.
    pub fn dns_endpoints(&self) -> Vec<(String, u16, EndpointConfig, u32)> {
        let mut out = Vec::new();
        for locality in &self.config.localities {
            for endpoint in &locality.endpoints {
                if let EndpointAddress::Dns { host, port } = &endpoint.address {
                    out.push((host.clone(), *port, endpoint.clone(), locality.priority));
                }
            }
        }
        out
    }
}

/// The hosts of IP endpoints, reusing those of `current` that stay (same address, priority,
/// weight and health), so that their counters and in-flight counts carry over.
fn ip_hosts(localities: &[LocalityConfig], current: Option<&lb::HostSet>) -> Vec<Arc<Host>> {
    let mut hosts = Vec::new();
    for locality in localities {
        for endpoint in &locality.endpoints {
            if let EndpointAddress::Ip(addr) = endpoint.address {
                hosts.push(match current {
                    Some(current) => reuse(current, addr, endpoint, locality.priority),
                    None => Arc::new(Host::new(addr, endpoint, locality.priority)),
                });
            }
        }
    }
    hosts
}

fn reuse(
    current: &lb::HostSet,
    addr: SocketAddr,
    endpoint: &EndpointConfig,
    priority: u32,
) -> Arc<Host> {
    current
        .all()
        .find(|h| {
            h.address == addr
                && h.priority == priority
                && h.weight == endpoint.weight.max(1)
                && h.health == endpoint.health
                && h.locality == endpoint.locality
                && h.locality_weight == endpoint.locality_weight
                && h.socket_match == endpoint.socket_match
        })
        .cloned()
        .unwrap_or_else(|| Arc::new(Host::new(addr, endpoint, priority)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_round_is_not_started_twice() {
        let r = Rounds::default();
        let now = tokio::time::Instant::now();
        assert!(
            r.take_due(now),
            "a new cluster's first round starts at once"
        );
        assert!(!r.take_due(now), "not while one runs");
        r.next_at(now + Duration::from_secs(5));
        assert!(!r.take_due(now + Duration::from_secs(4)));
        assert!(r.take_due(now + Duration::from_secs(5)));
    }
}
