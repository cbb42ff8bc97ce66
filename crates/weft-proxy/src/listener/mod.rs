//! Listeners: where connections arrive, and which filter chain takes each one.

pub mod accept;
pub mod manager;

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
    pub stats: Arc<ListenerStats>,
    /// Set when this version of the listener is removed or replaced: its connections finish
    /// what they are doing and close (HTTP/1.1 `connection: close`, HTTP/2 GOAWAY), and are
    /// closed outright after the drain time.
    pub drain: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug)]
pub struct FilterChain {
    pub name: String,
    pub matcher: FilterChainMatch,
    pub filter: NetworkFilter,
}

#[derive(Debug)]
pub enum NetworkFilter {
    Http(Arc<HttpConnectionManager>),
    Tcp(Arc<TcpProxy>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<Cidr>,
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

    /// Envoy's filter chain selection, most specific criterion first: a chain naming the
    /// destination port beats one that does not; then the longest matching destination prefix.
    pub fn filter_chain(&self, destination: SocketAddr) -> Option<&FilterChain> {
        let port = destination.port();
        let by_port: Vec<&FilterChain> = {
            let exact: Vec<_> = self
                .filter_chains
                .iter()
                .filter(|c| c.matcher.destination_port == Some(port))
                .collect();
            if exact.is_empty() {
                self.filter_chains
                    .iter()
                    .filter(|c| c.matcher.destination_port.is_none())
                    .collect()
            } else {
                exact
            }
        };
        let mut best: Option<(&FilterChain, i32)> = None;
        for chain in by_port {
            let specificity = if chain.matcher.prefix_ranges.is_empty() {
                -1
            } else {
                match chain
                    .matcher
                    .prefix_ranges
                    .iter()
                    .filter(|c| c.contains(destination.ip()))
                    .map(|c| i32::from(c.len))
                    .max()
                {
                    Some(len) => len,
                    None => continue,
                }
            };
            if best.is_none_or(|(_, s)| specificity > s) {
                best = Some((chain, specificity));
            }
        }
        best.map(|(c, _)| c)
    }
}
