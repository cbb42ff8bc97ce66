//! Host selection: Envoy's priority levels (with the 1.4 overprovisioning factor and the 50 %
//! panic threshold), then, under `locality_weighted_lb_config`, a locality by its weight times
//! its availability, then round robin, least request (power of two choices; or its peak EWMA
//! variant, `peak_ewma.rs`) or random within a level or locality. Everything here is lock-free: a host set is immutable and replaced whole.

use super::hash::{self, Table};
use super::{Health, Host, LbPolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const OVERPROVISIONING: u64 = 140;
/// Envoy's `healthy_panic_threshold` default.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;
/// Largest smooth weighted round robin schedule precomputed; beyond it, weighted random.
const MAX_SCHEDULE: u64 = 4096;

/// How a host set balances.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub policy: LbPolicy,
    /// Below this share of healthy hosts (percent) a level ignores health; 0 never panics.
    pub panic_threshold: f64,
    /// Hosts failing their active health checks count as unhealthy.
    pub active_hc: bool,
    /// `locality_weighted_lb_config`: localities with a weight are picked by it first.
    pub locality_weighted: bool,
}

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
    /// Under locality weighted balancing: each weighted locality of the level as a level of
    /// its own, with its weight.
    localities: Vec<(u32, Level)>,
}

impl HostSet {
    pub fn new(hosts: Vec<Arc<Host>>, policy: LbPolicy) -> Self {
        Self::with_options(
            hosts,
            Options {
                policy,
                panic_threshold: DEFAULT_PANIC_THRESHOLD,
                active_hc: false,
                locality_weighted: false,
            },
        )
    }

    pub fn with_options(mut hosts: Vec<Arc<Host>>, o: Options) -> Self {
        hosts.sort_by_key(|h| h.priority);
        let mut levels: Vec<Level> = Vec::new();
        let mut current: Vec<Arc<Host>> = Vec::new();
        let mut priority = None;
        for host in hosts {
            if priority.is_some_and(|p| p != host.priority) {
                levels.push(Level::with_localities(std::mem::take(&mut current), o));
            }
            priority = Some(host.priority);
            current.push(host);
        }
        if !current.is_empty() {
            levels.push(Level::with_localities(current, o));
        }
        HostSet {
            levels,
            policy: o.policy,
            panic_threshold: o.panic_threshold,
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
        // In panic every host of the level is a candidate, whatever its locality, as in Envoy.
        let level = match level.pick_locality() {
            Some(locality) if !panic => locality,
            _ => level,
        };
        self.choose_in(level, panic, request_hash)
    }

    /// A host of `level` (or of one of its localities) by the policy.
    fn choose_in<'a>(
        &self,
        level: &'a Level,
        panic: bool,
        request_hash: Option<u64>,
    ) -> Option<&'a Arc<Host>> {
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
    /// A level, with its weighted localities as levels of their own when balancing by
    /// locality. Hashing policies ignore localities, as Envoy's ring hash and Maglev do.
    fn with_localities(hosts: Vec<Arc<Host>>, o: Options) -> Self {
        let mut localities = Vec::new();
        if o.locality_weighted && !o.policy.is_hashing() {
            let mut by_locality: std::collections::BTreeMap<u32, (u32, Vec<Arc<Host>>)> =
                std::collections::BTreeMap::new();
            for h in &hosts {
                let entry = by_locality.entry(h.locality).or_default();
                entry.0 = h.locality_weight;
                entry.1.push(h.clone());
            }
            localities = by_locality
                .into_values()
                .filter(|(weight, _)| *weight > 0)
                .map(|(weight, members)| (weight, Level::new(members, o.policy, o.active_hc)))
                .collect();
        }
        let mut level = Level::new(hosts, o.policy, o.active_hc);
        level.localities = localities;
        level
    }

    /// Envoy's locality pick: each weighted locality in proportion to its weight times its
    /// availability, min(1, 1.4 × its healthy share). `None` when no locality is weighted or
    /// none has a healthy host: then the level's hosts are picked from as a whole.
    fn pick_locality(&self) -> Option<&Level> {
        if self.localities.is_empty() {
            return None;
        }
        let effective: Vec<f64> = self
            .localities
            .iter()
            .map(|(weight, l)| {
                if l.hosts.is_empty() {
                    return 0.0;
                }
                let share = l.healthy.len() as f64 / l.hosts.len() as f64;
                f64::from(*weight) * (OVERPROVISIONING as f64 / 100.0 * share).min(1.0)
            })
            .collect();
        let total: f64 = effective.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let mut roll = fastrand::f64() * total;
        for ((_, l), w) in self.localities.iter().zip(&effective) {
            if roll < *w {
                return Some(l);
            }
            roll -= w;
        }
        self.localities
            .iter()
            .rev()
            .find(|(_, l)| !l.healthy.is_empty())
            .map(|(_, l)| l)
    }

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
            localities: Vec::new(),
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
            locality: 0,
            locality_weight: 0,
            socket_match: Arc::from([]),
        };
        Arc::new(Host::new(addr, &e, priority))
    }

    fn in_locality(port: u16, health: Health, locality: u32, weight: u32) -> Arc<Host> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let e = EndpointConfig {
            address: EndpointAddress::Ip(addr),
            weight: 1,
            health,
            hostname: String::new(),
            locality,
            locality_weight: weight,
            socket_match: Arc::from([]),
        };
        Arc::new(Host::new(addr, &e, 0))
    }

    #[test]
    fn localities_take_their_weight_times_their_availability() {
        let options = |locality_weighted| Options {
            policy: LbPolicy::RoundRobin,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            active_hc: false,
            locality_weighted,
        };
        let hosts = || {
            vec![
                in_locality(1, Health::Healthy, 0, 3),
                in_locality(2, Health::Healthy, 0, 3),
                in_locality(3, Health::Healthy, 1, 1),
                in_locality(4, Health::Healthy, 1, 1),
            ]
        };
        let n = 20_000;
        let share = |c: &std::collections::BTreeMap<u16, usize>, ports: &[u16]| {
            ports
                .iter()
                .map(|p| c.get(p).copied().unwrap_or(0))
                .sum::<usize>() as f64
                / n as f64
        };
        let weighted = HostSet::with_options(hosts(), options(true));
        let c = counts(&weighted, n);
        assert!((share(&c, &[1, 2]) - 0.75).abs() < 0.02, "{c:?}");
        // Without locality_weighted_lb_config the weights are not read: round robin over all.
        let plain = HostSet::with_options(hosts(), options(false));
        assert!((share(&counts(&plain, n), &[1, 2]) - 0.5).abs() < 0.02);
        // Half of locality 0 down: availability min(1, 1.4 × 0.5) = 0.7, so 2.1 : 1.
        let mut half = hosts();
        half[1] = in_locality(2, Health::Unhealthy, 0, 3);
        let c = counts(&HostSet::with_options(half, options(true)), n);
        assert!((share(&c, &[1]) - 2.1 / 3.1).abs() < 0.02, "{c:?}");
        assert_eq!(c.get(&2), None, "an unhealthy host gets nothing");
        // A locality without weight gets nothing while a weighted one can take traffic.
        let mut unweighted = hosts();
        unweighted[2] = in_locality(3, Health::Healthy, 1, 0);
        unweighted[3] = in_locality(4, Health::Healthy, 1, 0);
        let c = counts(&HostSet::with_options(unweighted, options(true)), n);
        assert_eq!(share(&c, &[1, 2]), 1.0, "{c:?}");
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
