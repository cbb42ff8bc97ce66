//! Clusters: the upstream hosts of a named service, how they are found (STATIC, STRICT_DNS,
//! LOGICAL_DNS) and how one is picked per request (`lb`).

pub mod lb;

use crate::stats::ClusterStats;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    Static,
    StrictDns,
    LogicalDns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
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
    V4Preferred,
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
    pub localities: Vec<LocalityConfig>,
}

/// One upstream host as the load balancer sees it.
#[derive(Debug)]
pub struct Host {
    pub address: SocketAddr,
    pub hostname: String,
    pub weight: u32,
    pub health: Health,
    pub priority: u32,
    /// Requests in flight, for LEAST_REQUEST and `/clusters`.
    pub active_requests: AtomicU64,
    pub stats: HostStats,
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
    pub fn new(address: SocketAddr, endpoint: &EndpointConfig, priority: u32) -> Self {
        Host {
            address,
            hostname: endpoint.hostname.clone(),
            weight: endpoint.weight.max(1),
            health: endpoint.health,
            priority,
            active_requests: AtomicU64::new(0),
            stats: HostStats::default(),
        }
    }
}

/// A cluster as the data path uses it: its config, its current hosts (replaced whole when DNS
/// answers change) and its stats.
#[derive(Debug)]
pub struct Cluster {
    pub config: ClusterConfig,
    pub hosts: ArcSwap<lb::HostSet>,
    pub stats: ClusterStats,
    /// `cluster.<name>.upstream_rq_time`
    pub rq_time: crate::stats::Histogram,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Arc<Self> {
        let mut hosts = Vec::new();
        for locality in &config.localities {
            for endpoint in &locality.endpoints {
                if let EndpointAddress::Ip(addr) = endpoint.address {
                    hosts.push(Arc::new(Host::new(addr, endpoint, locality.priority)));
                }
            }
        }
        let set = lb::HostSet::new(hosts, config.lb_policy);
        let cluster = Cluster {
            config,
            hosts: ArcSwap::from_pointee(lb::HostSet::new(Vec::new(), LbPolicy::RoundRobin)),
            stats: ClusterStats::default(),
            rq_time: Default::default(),
        };
        cluster.publish(set);
        Arc::new(cluster)
    }

    /// Replaces the hosts after a DNS answer, keeping the hosts (and their counters) that stay.
    pub fn set_resolved(&self, resolved: Vec<(SocketAddr, EndpointConfig, u32)>) {
        let current = self.hosts.load();
        let hosts: Vec<Arc<Host>> = resolved
            .into_iter()
            .map(|(addr, endpoint, priority)| {
                current
                    .all()
                    .find(|h| h.address == addr && h.priority == priority)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Host::new(addr, &endpoint, priority)))
            })
            .collect();
        self.publish(lb::HostSet::new(hosts, self.config.lb_policy));
    }

    /// Makes `set` the cluster's hosts, with the membership gauges that describe it.
    fn publish(&self, set: lb::HostSet) {
        let s = &self.stats;
        s.membership_total
            .store(set.len() as u64, Ordering::Relaxed);
        s.membership_healthy
            .store(set.healthy_count() as u64, Ordering::Relaxed);
        self.hosts.store(Arc::new(set));
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
