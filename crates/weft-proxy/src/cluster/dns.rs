//! STRICT_DNS and LOGICAL_DNS: a cluster's named endpoints become hosts by resolution, every
//! `dns_refresh_rate` (5 s by default, as in Envoy), keeping the last good answer when a lookup
//! fails. The families kept follow `dns_lookup_family` with Envoy's meaning: AUTO prefers IPv6
//! and falls back to IPv4, V4_PREFERRED the other way round, ALL keeps both.

use super::{Cluster, Discovery, DnsFamily};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Envoy's `dns_refresh_rate` when none is given.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// A DNS cluster's rounds of resolution, and whether a missing TTL has been said.
#[derive(Debug, Default)]
pub struct Schedule {
    rounds: super::Rounds,
    said_no_ttl: std::sync::atomic::AtomicBool,
}

impl Schedule {
    /// `respect_dns_ttl` met an answer without a TTL (the system's resolver gives none): said
    /// once per cluster, since the refresh then falls back to `dns_refresh_rate`.
    fn say_no_ttl_once(&self, cluster: &str) {
        if !self
            .said_no_ttl
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                cluster,
                "respect_dns_ttl: the system resolver reports no TTL; this cluster resolves again every dns_refresh_rate"
            );
        }
    }
}

/// The addresses of one lookup that `family` keeps, in the order Envoy would use them.
pub fn keep(family: DnsFamily, found: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut all: Vec<SocketAddr> = Vec::new();
    for a in found {
        if !all.contains(&a) {
            all.push(a);
        }
    }
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = all.into_iter().partition(|a| a.is_ipv4());
    match family {
        DnsFamily::V4Only => v4,
        DnsFamily::V6Only => v6,
        DnsFamily::Auto if !v6.is_empty() => v6,
        DnsFamily::Auto => v4,
        DnsFamily::V4Preferred if !v4.is_empty() => v4,
        DnsFamily::V4Preferred => v6,
        DnsFamily::All => v4.into_iter().chain(v6).collect(),
    }
}

impl Cluster {
    pub fn is_dns(&self) -> bool {
        matches!(
            self.config.discovery,
            Discovery::StrictDns | Discovery::LogicalDns
        )
    }

    /// A resolution that was given up (warming ran out of time): the next may start at once.
    pub fn dns_retry_now(&self) {
        self.dns.rounds.next_at(Instant::now());
    }

    /// A DNS cluster whose refresh is due: marked running, to be resolved by the caller.
    pub fn dns_due(&self, now: Instant) -> bool {
        self.is_dns() && self.dns.rounds.take_due(now)
    }
}

/// What a lookup found: the addresses, and the answer's TTL when the resolver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addresses: Vec<SocketAddr>,
    pub ttl: Option<Duration>,
}

/// Where a cluster's names are resolved when not by the system: a test's own answers
/// (`testing`).
pub trait Resolver: Send + Sync + std::fmt::Debug {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Answer>;
}

/// The addresses of a name. `localhost` and names under it are the loopback addresses of both
/// families without asking anyone (RFC 6761), as c-ares (Envoy's resolver) answers them; the
/// system's resolver may know only one of them.
///
/// The system's resolver reports no TTL.
async fn lookup(host: &str, port: u16) -> std::io::Result<Answer> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    let addresses = if lower == "localhost" || lower.ends_with(".localhost") {
        vec![
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ]
    } else {
        tokio::net::lookup_host((host, port)).await?.collect()
    };
    Ok(Answer {
        addresses,
        ttl: None,
    })
}

/// When the next resolution is due: with `respect_dns_ttl`, the shortest TTL of the answers
/// when every answer had one above zero, as Envoy takes it; else `dns_refresh_rate`.
fn next_refresh(respect_ttl: bool, ttls: &[Option<Duration>], refresh: Duration) -> Duration {
    if !respect_ttl || ttls.is_empty() {
        return refresh;
    }
    let known: Option<Vec<Duration>> = ttls.iter().map(|t| t.filter(|t| !t.is_zero())).collect();
    known.and_then(|k| k.into_iter().min()).unwrap_or(refresh)
}

/// Resolves every named endpoint of `cluster` and publishes the hosts. A lookup that fails, or
/// finds no address of the families kept, leaves the last good hosts in place (as Envoy keeps
/// them); the next attempt is a refresh interval away either way.
pub async fn resolve(cluster: &Arc<Cluster>) {
    let refresh = cluster.config.dns_refresh_rate;
    crate::stats::inc(&cluster.stats.update_attempt);
    let mut resolved = Vec::new();
    let mut failed = false;
    let mut ttls = Vec::new();
    for (host, port, endpoint, priority) in cluster.dns_endpoints() {
        let found = match cluster.resolver.get() {
            Some(r) => r.resolve(&host, port),
            None => lookup(&host, port).await,
        };
        match found {
            Ok(found) => {
                ttls.push(found.ttl);
                let mut addrs = keep(cluster.config.dns_family, found.addresses.into_iter());
                if cluster.config.discovery == Discovery::LogicalDns {
                    addrs.truncate(1);
                }
                if addrs.is_empty() {
                    failed = true;
                }
                for a in addrs {
                    resolved.push((a, endpoint.clone(), priority));
                }
            }
            Err(e) => {
                tracing::warn!(cluster = %cluster.config.name, %host, error = %e, "DNS resolution failed");
                failed = true;
            }
        }
    }
    if failed {
        crate::stats::inc(&cluster.stats.update_failure);
    } else {
        crate::stats::inc(&cluster.stats.update_success);
        cluster.set_resolved(resolved);
    }
    let next = next_refresh(cluster.config.respect_dns_ttl, &ttls, refresh);
    if cluster.config.respect_dns_ttl && ttls.iter().any(Option::is_none) {
        cluster.dns.say_no_ttl_once(&cluster.config.name);
    }
    cluster.dns.rounds.next_at(Instant::now() + next);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn families_are_kept_with_envoys_preferences() {
        let both = addrs(&["[::1]:80", "127.0.0.1:80", "127.0.0.1:80"]);
        let v4 = addrs(&["127.0.0.1:80"]);
        let v6 = addrs(&["[::1]:80"]);
        let k = |f, list: &Vec<SocketAddr>| keep(f, list.iter().copied());
        assert_eq!(k(DnsFamily::Auto, &both), v6, "AUTO prefers IPv6");
        assert_eq!(k(DnsFamily::Auto, &v4), v4, "and falls back to IPv4");
        assert_eq!(k(DnsFamily::V4Preferred, &both), v4);
        assert_eq!(k(DnsFamily::V4Preferred, &v6), v6);
        assert_eq!(k(DnsFamily::V4Only, &v6), Vec::<SocketAddr>::new());
        assert_eq!(k(DnsFamily::V6Only, &both), v6);
        assert_eq!(
            k(DnsFamily::All, &both),
            addrs(&["127.0.0.1:80", "[::1]:80"])
        );
    }

    #[test]
    fn respect_dns_ttl_takes_the_shortest_ttl_when_every_answer_has_one() {
        let s = Duration::from_secs;
        let rate = s(60);
        assert_eq!(next_refresh(false, &[Some(s(5))], rate), rate);
        assert_eq!(next_refresh(true, &[Some(s(5)), Some(s(3))], rate), s(3));
        assert_eq!(next_refresh(true, &[Some(s(5)), None], rate), rate);
        assert_eq!(
            next_refresh(true, &[Some(s(0))], rate),
            rate,
            "a zero TTL is no TTL"
        );
        assert_eq!(next_refresh(true, &[], rate), rate);
    }
}
