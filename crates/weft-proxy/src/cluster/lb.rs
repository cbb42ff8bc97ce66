//! Host selection: Envoy's priority levels (with the 1.4 overprovisioning factor and the 50 %
//! panic threshold), then round robin, least request (power of two choices; or its peak EWMA
//! variant, `peak_ewma.rs`) or random within a level. Everything here is lock-free: a host set is immutable and replaced whole.

use super::hash::{self, Table};
use super::{Health, Host, LbPolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const OVERPROVISIONING: u64 = 140;
/// Envoy's `healthy_panic_threshold` default.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;
/// Largest smooth weighted round robin schedule precomputed; beyond it, weighted random.
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
pub struct HostSet {
    levels: Vec<Level>,
    policy: LbPolicy,
    /// Below this share of healthy hosts (percent) a level ignores health; 0 never panics.
    panic_threshold: f64,
}

#[derive(Debug)]
struct Level {
    hosts: Vec<Arc<Host>>,
    /// Indices of healthy hosts (degraded hosts count as healthy).
    healthy: Vec<usize>,
    /// Round robin order over `healthy` (or over all hosts in panic), weights applied.
    schedule_healthy: Vec<usize>,
    schedule_all: Vec<usize>,
    cursor: AtomicUsize,
    /// RING_HASH / MAGLEV tables over the healthy hosts and over all (for panic).
    table_healthy: Option<Table>,
    table_all: Option<Table>,
}

impl HostSet {
    pub fn new(hosts: Vec<Arc<Host>>, policy: LbPolicy) -> Self {
        Self::with_panic_threshold(hosts, policy, DEFAULT_PANIC_THRESHOLD, false)
    }

    /// A host set whose levels panic below `panic_threshold` percent of healthy hosts; with
    /// `active_hc`, hosts failing their health checks count as unhealthy.
    pub fn with_panic_threshold(
        mut hosts: Vec<Arc<Host>>,
        policy: LbPolicy,
        panic_threshold: f64,
        active_hc: bool,
    ) -> Self {
        hosts.sort_by_key(|h| h.priority);
        let mut levels: Vec<Level> = Vec::new();
        let mut current: Vec<Arc<Host>> = Vec::new();
        let mut priority = None;
        for host in hosts {
            if priority.is_some_and(|p| p != host.priority) {
                levels.push(Level::new(std::mem::take(&mut current), policy, active_hc));
            }
            priority = Some(host.priority);
            current.push(host);
        }
        if !current.is_empty() {
            levels.push(Level::new(current, policy, active_hc));
        }
        HostSet {
            levels,
            policy,
            panic_threshold,
        }
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(|l| l.hosts.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn healthy_count(&self) -> usize {
        self.levels.iter().map(|l| l.healthy.len()).sum()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Host>> {
        self.levels.iter().flat_map(|l| l.hosts.iter())
    }

    /// Picks a host, or `None` when the cluster has no host at all (Envoy's "no healthy upstream").
    pub fn choose(&self) -> Option<&Arc<Host>> {
        self.choose_hashed(None)
    }

    /// `choose`, with the request's hash for RING_HASH and MAGLEV. Without one those pick at
    /// random, as Envoy does.
    pub fn choose_hashed(&self, request_hash: Option<u64>) -> Option<&Arc<Host>> {
        let level = self.pick_level()?;
        let panic =
            (level.healthy.len() as f64) * 100.0 < self.panic_threshold * level.hosts.len() as f64;
        // Not in panic (a threshold of 0 turns panic off, as Istio does) and nobody healthy:
        // Envoy's "no healthy upstream".
        if !panic && level.healthy.is_empty() {
            return None;
        }
        if self.policy.is_hashing() {
            let table = if panic {
                &level.table_all
            } else {
                &level.table_healthy
            };
            let h = request_hash.unwrap_or_else(|| fastrand::u64(..));
            return table
                .as_ref()
                .and_then(|t| t.choose(h))
                .and_then(|i| level.hosts.get(i));
        }
        let (candidates, schedule): (&[usize], &[usize]) = if panic {
            (&[], &level.schedule_all)
        } else {
            (&level.healthy, &level.schedule_healthy)
        };
        let pick = |i: usize| -> usize {
            if candidates.is_empty() {
                i
            } else {
                candidates[i]
            }
        };
        let n = if candidates.is_empty() {
            level.hosts.len()
        } else {
            candidates.len()
        };
        if n == 0 {
            return None;
        }
        let index = match self.policy {
            LbPolicy::RoundRobin => {
                let turn = level.cursor.fetch_add(1, Ordering::Relaxed);
                schedule[turn % schedule.len()]
            }
            // The schedule holds each host weight/gcd times: a uniform slot is a weighted pick.
            // (Hashing policies returned above.)
            LbPolicy::Random | LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. } => {
                schedule[fastrand::usize(..schedule.len())]
            }
            LbPolicy::LeastRequest => {
                let a = pick(fastrand::usize(..n));
                let b = pick(fastrand::usize(..n));
                let score = |i: usize| {
                    let h = &level.hosts[i];
                    // Active-request weighting: weight / (active + 1), compared without division.
                    (
                        h.active_requests.load(Ordering::Relaxed) + 1,
                        u64::from(h.weight),
                    )
                };
                let ((ra, wa), (rb, wb)) = (score(a), score(b));
                if rb * wa < ra * wb { b } else { a }
            }
            LbPolicy::PeakEwma { decay } => {
                // Two distinct hosts, so the slower of two is never the only choice.
                let a = fastrand::usize(..n);
                let b = match n {
                    1 => a,
                    _ => (a + 1 + fastrand::usize(..n - 1)) % n,
                };
                let cost = |i: usize| {
                    let h = &level.hosts[pick(i)];
                    h.latency
                        .cost(h.active_requests.load(Ordering::Relaxed), h.weight, decay)
                };
                if cost(b) < cost(a) { pick(b) } else { pick(a) }
            }
        };
        level.hosts.get(index)
    }

    /// Envoy's priority load: each level takes min(100, 1.4 × healthy share) of the traffic, in
    /// order, until 100 % is placed; what no level can take is spread by normalising.
    fn pick_level(&self) -> Option<&Level> {
        match self.levels.len() {
            0 => return None,
            1 => return self.levels.first(),
            _ => {}
        }
        let health: Vec<u64> = self
            .levels
            .iter()
            .map(|l| {
                if l.hosts.is_empty() {
                    0
                } else {
                    (OVERPROVISIONING * l.healthy.len() as u64 / l.hosts.len() as u64).min(100)
                }
            })
            .collect();
        let total: u64 = health.iter().sum::<u64>().min(100);
        if total == 0 {
            return self.levels.first();
        }
        let mut remaining = 100u64;
        let mut loads = Vec::with_capacity(health.len());
        for h in &health {
            let scaled = h * 100 / total;
            let take = scaled.min(remaining);
            loads.push(take);
            remaining -= take;
        }
        if let (Some(first), true) = (loads.first_mut(), remaining > 0) {
            *first += remaining;
        }
        let mut roll = fastrand::u64(..100);
        for (level, load) in self.levels.iter().zip(loads) {
            if roll < load {
                return Some(level);
            }
            roll -= load;
        }
        self.levels.first()
    }
}

impl Level {
    fn new(hosts: Vec<Arc<Host>>, policy: LbPolicy, active_hc: bool) -> Self {
        let healthy: Vec<usize> = (0..hosts.len())
            .filter(|&i| {
                let h = &hosts[i];
                h.health != Health::Unhealthy
                    && !h.outlier.is_ejected()
                    && !(active_hc && h.health_check_failed())
            })
            .collect();
        let all: Vec<usize> = (0..hosts.len()).collect();
        let schedule_healthy = schedule(&hosts, &healthy);
        let schedule_all = schedule(&hosts, &all);
        // Start each level at a random place, as Envoy does, so that many proxies do not all
        // send their first request to the same host.
        let start = if hosts.is_empty() {
            0
        } else {
            fastrand::usize(..hosts.len())
        };
        let table = |members: &[usize]| match policy {
            LbPolicy::RingHash { min_size, max_size } => {
                Some(hash::ring(&hosts, members, min_size, max_size))
            }
            LbPolicy::Maglev { table_size } => Some(hash::maglev(&hosts, members, table_size)),
            _ => None,
        };
        let table_healthy = table(&healthy);
        let table_all = table(&all);
        Level {
            hosts,
            healthy,
            schedule_healthy,
            schedule_all,
            cursor: AtomicUsize::new(start),
            table_healthy,
            table_all,
        }
    }
}

/// Smooth weighted round robin over `members`: each host appears `weight / gcd` times, spread out.
fn schedule(hosts: &[Arc<Host>], members: &[usize]) -> Vec<usize> {
    if members.is_empty() {
        return Vec::new();
    }
    let weights: Vec<u64> = members
        .iter()
        .map(|&i| u64::from(hosts[i].weight))
        .collect();
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_SCHEDULE {
        // Too long to precompute: a weighted sample of MAX_SCHEDULE slots keeps proportions.
        return (0..MAX_SCHEDULE)
            .map(|slot| {
                let mut target = slot * total / MAX_SCHEDULE;
                for (k, w) in weights.iter().enumerate() {
                    if target < *w {
                        return members[k];
                    }
                    target -= w;
                }
                members[members.len() - 1]
            })
            .collect();
    }
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for k in 0..weights.len() {
            current[k] += weights[k] as i64;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total as i64;
        order.push(members[best]);
    }
    order
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{EndpointAddress, EndpointConfig};

    fn host(port: u16, weight: u32, health: Health, priority: u32) -> Arc<Host> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let e = EndpointConfig {
            address: EndpointAddress::Ip(addr),
            weight,
            health,
            hostname: String::new(),
        };
        Arc::new(Host::new(addr, &e, priority))
    }

    fn counts(set: &HostSet, n: usize) -> std::collections::BTreeMap<u16, usize> {
        let mut m = std::collections::BTreeMap::new();
        for _ in 0..n {
            let h = set.choose().unwrap();
            *m.entry(h.address.port()).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn weighted_round_robin_is_exact_over_a_cycle() {
        let set = HostSet::new(
            vec![
                host(1, 1, Health::Healthy, 0),
                host(2, 3, Health::Healthy, 0),
            ],
            LbPolicy::RoundRobin,
        );
        assert_eq!(
            counts(&set, 400),
            [(1, 100), (2, 300)].into_iter().collect()
        );
    }

    #[test]
    fn unhealthy_hosts_are_skipped_until_panic() {
        let set = HostSet::new(
            vec![
                host(1, 1, Health::Healthy, 0),
                host(2, 1, Health::Healthy, 0),
                host(3, 1, Health::Unhealthy, 0),
            ],
            LbPolicy::RoundRobin,
        );
        assert_eq!(counts(&set, 100).get(&3), None);
        // One healthy host of three is below the 50 % panic threshold: all three get traffic.
        let panic = HostSet::new(
            vec![
                host(1, 1, Health::Healthy, 0),
                host(2, 1, Health::Unhealthy, 0),
                host(3, 1, Health::Unhealthy, 0),
            ],
            LbPolicy::RoundRobin,
        );
        assert_eq!(counts(&panic, 99).len(), 3);
    }

    #[test]
    fn failover_to_the_next_priority_follows_the_overprovisioning_factor() {
        // Priority 0 is half healthy: 1.4 × 50 % = 70 % stays there, 30 % goes to priority 1.
        let set = HostSet::new(
            vec![
                host(1, 1, Health::Healthy, 0),
                host(2, 1, Health::Unhealthy, 0),
                host(3, 1, Health::Healthy, 1),
            ],
            LbPolicy::RoundRobin,
        );
        let c = counts(&set, 10_000);
        let p1 = *c.get(&3).unwrap_or(&0) as f64 / 10_000.0;
        assert!((p1 - 0.30).abs() < 0.03, "priority 1 share {p1}");
    }

    #[test]
    fn least_request_prefers_the_idle_host() {
        let busy = host(1, 1, Health::Healthy, 0);
        busy.active_requests.store(100, Ordering::Relaxed);
        let set = HostSet::new(
            vec![busy, host(2, 1, Health::Healthy, 0)],
            LbPolicy::LeastRequest,
        );
        let c = counts(&set, 1000);
        // The busy host wins only when both random choices land on it: about a quarter.
        let busy_share = *c.get(&1).unwrap_or(&0) as f64 / 1000.0;
        assert!(busy_share < 0.35, "busy host share {busy_share}");
    }

    #[test]
    fn no_hosts_means_none() {
        let set = HostSet::new(Vec::new(), LbPolicy::RoundRobin);
        assert!(set.choose().is_none());
    }
}
