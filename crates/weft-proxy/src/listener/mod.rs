//! Listeners: where connections arrive, and which filter chain takes each one.

pub mod accept;
pub mod inspect;
pub mod manager;
pub mod rate_limit;
pub mod tls;

use crate::http::HttpConnectionManager;
use crate::stats::ListenerStats;
use crate::tcp::TcpProxy;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub filter_chains: Vec<FilterChain>,
    pub listener_filters: ListenerFilters,
    /// `use_original_dst`: a connection redirected here (iptables) goes to the listener of its
    /// original destination, when there is one.
    pub use_original_dst: bool,
    /// `bind_to_port: false`: the listener only takes connections handed over by another.
    pub bind_to_port: bool,
    pub stats: Arc<ListenerStats>,
    /// Set when a filter chain terminates TLS.
    pub ssl_stats: Option<Arc<crate::stats::SslStats>>,
    pub worker_stats: Arc<crate::stats::WorkerStats>,
    /// Set when this version of the listener is removed or replaced: its connections finish
    /// what they are doing and close (HTTP/1.1 `connection: close`, HTTP/2 GOAWAY), and are
    /// closed outright after the drain time.
    pub drain: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug)]
pub struct FilterChain {
    pub name: String,
    pub matcher: FilterChainMatch,
    /// `transport_socket`: TLS terminated before the network filter.
    pub tls: Option<Arc<tls::DownstreamTls>>,
    /// `envoy.filters.network.local_ratelimit` filters before the terminal one, in order.
    pub rate_limits: Vec<rate_limit::ConnectionRateLimit>,
    /// `envoy.filters.network.rbac` filters before the terminal one: a connection any of them
    /// denies is closed once its TLS (if any) is established, before anything is forwarded.
    pub rbac: Vec<Arc<crate::rbac::Enforcer>>,
    /// `istio.metadata_exchange`: the peer's header is read (and ours written) once TLS agreed
    /// on its protocol.
    pub exchange: Option<crate::istio::exchange::ExchangeConfig>,
    /// `istio.stats` before a `tcp_proxy`: Istio's TCP metrics.
    pub istio_stats: Option<Arc<crate::istio::metrics::TcpStatsFilter>>,
    pub filter: NetworkFilter,
}

#[derive(Debug)]
pub enum NetworkFilter {
    Http(Arc<HttpConnectionManager>),
    Tcp(Arc<TcpProxy>),
}

/// The listener filters of a listener, in the order Envoy runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFilters {
    /// `envoy.filters.listener.original_dst`: the connection's destination is the one it had
    /// before an iptables redirect (SO_ORIGINAL_DST).
    pub original_dst: bool,
    pub tls_inspector: bool,
    pub http_inspector: bool,
    /// `listener_filters_timeout` (15 s by default; `None` waits as long as it takes).
    pub timeout: Option<std::time::Duration>,
    /// `continue_on_listener_filters_timeout`: on timeout, pick a chain with what is known.
    pub continue_on_timeout: bool,
}

impl Default for ListenerFilters {
    fn default() -> Self {
        ListenerFilters {
            original_dst: false,
            tls_inspector: false,
            http_inspector: false,
            timeout: Some(std::time::Duration::from_secs(15)),
            continue_on_timeout: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<Cidr>,
    /// Exact names and `*.suffix` wildcards, lowercase.
    pub server_names: Vec<String>,
    pub transport_protocol: Option<String>,
    pub application_protocols: Vec<String>,
    pub source_prefix_ranges: Vec<Cidr>,
    pub source_ports: Vec<u16>,
}

/// What filter chain selection looks at for one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFacts<'a> {
    pub destination: SocketAddr,
    pub source: SocketAddr,
    pub detected: &'a inspect::Detected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let len = u32::from(self.len.min(32));
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let len = u32::from(self.len.min(128));
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl Listener {
    pub fn start_draining(&self) {
        self.drain.send_replace(true);
    }

    /// Envoy's filter chain selection. Criteria are taken in Envoy's order (destination port,
    /// destination IP, server name, transport protocol, application protocols, source IP,
    /// source port); at each, only the chains with the most specific match go on, and chains
    /// that do not set the criterion are the fallback. A level never falls back once a more
    /// specific match was found, as in Envoy.
    pub fn filter_chain(&self, facts: ConnectionFacts<'_>) -> Option<&FilterChain> {
        let mut candidates: Vec<&FilterChain> = self.filter_chains.iter().collect();
        let levels: [fn(&FilterChainMatch, &ConnectionFacts<'_>) -> Option<i64>; 7] = [
            |m, f| match m.destination_port {
                None => Some(0),
                Some(p) => (p == f.destination.port()).then_some(1),
            },
            |m, f| longest_prefix(&m.prefix_ranges, f.destination.ip()),
            |m, f| server_name_rank(&m.server_names, &f.detected.server_name),
            |m, f| match &m.transport_protocol {
                None => Some(0),
                Some(t) => (t == f.detected.transport_protocol).then_some(1),
            },
            |m, f| {
                if m.application_protocols.is_empty() {
                    return Some(0);
                }
                let hit = f
                    .detected
                    .application_protocols
                    .iter()
                    .any(|p| m.application_protocols.contains(p));
                hit.then_some(1)
            },
            |m, f| longest_prefix(&m.source_prefix_ranges, f.source.ip()),
            |m, f| {
                if m.source_ports.is_empty() {
                    return Some(0);
                }
                m.source_ports.contains(&f.source.port()).then_some(1)
            },
        ];
        for level in levels {
            let ranked: Vec<(&FilterChain, i64)> = candidates
                .iter()
                .filter_map(|c| level(&c.matcher, &facts).map(|r| (*c, r)))
                .collect();
            let best = ranked.iter().map(|(_, r)| *r).max()?;
            candidates = ranked
                .into_iter()
                .filter(|(_, r)| *r == best)
                .map(|(c, _)| c)
                .collect();
        }
        // Envoy refuses overlapping chains at load; the first of equals is the answer here.
        candidates.first().copied()
    }
}

/// The rank of a CIDR list: the longest prefix containing `ip`, -1 when the list is empty (a
/// chain for any address), no match otherwise.
fn longest_prefix(ranges: &[Cidr], ip: IpAddr) -> Option<i64> {
    if ranges.is_empty() {
        return Some(-1);
    }
    ranges
        .iter()
        .filter(|c| c.contains(ip))
        .map(|c| i64::from(c.len))
        .max()
}

/// Exact names beat wildcards, longer wildcards beat shorter, and chains without names come
/// last. A connection without SNI only reaches chains without names.
fn server_name_rank(names: &[String], sni: &str) -> Option<i64> {
    if names.is_empty() {
        return Some(0);
    }
    if sni.is_empty() {
        return None;
    }
    names
        .iter()
        .filter_map(|n| {
            if n == sni {
                Some(i64::MAX)
            } else {
                let suffix = n.strip_prefix('*')?;
                (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len() as i64)
            }
        })
        .max()
}
