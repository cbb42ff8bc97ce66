//! Outlier detection (`outlier_detection`): passive health checking from what requests meet.
//! Envoy's rules: consecutive 5xx, consecutive gateway errors (502/503/504) and, when
//! `split_external_local_origin_errors` keeps them apart, consecutive local-origin failures
//! (connect failures, timeouts, resets) eject a host when their count reaches the threshold;
//! every `interval`, success-rate and failure-percentage statistics eject the hosts that fall
//! behind, and ejected hosts whose time is up come back. An ejection lasts
//! `base_ejection_time` × the host's ejection count (capped by `max_ejection_time`), and the
//! count falls again while the host stays healthy.
//!
//! Counting happens on the data path with relaxed atomics on the host; the rare decisions
//! (eject, return) take the detector's lock and republish the cluster's host set, so that the
//! load balancer never sees an ejected host.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// `outlier_detection`, with Envoy's defaults. Percentages are 0–100.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub enforcing_consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    /// One host may be ejected even when that is more than `max_ejection_percent`.
    pub always_eject_one_host: bool,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    /// Divided by 1000, as in Envoy.
    pub success_rate_stdev_factor: u32,
    pub enforcing_success_rate: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub failure_percentage_threshold: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            always_eject_one_host: false,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
        }
    }
}

/// What one attempt met, as the detector is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// The connection could not be made, or was reset before an answer.
    ConnectFailed,
    /// No answer in time.
    Timeout,
}

/// Why a host was ejected; the names of Envoy's `ejections_*` counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    SuccessRate,
    LocalOriginSuccessRate,
    FailurePercentage,
    FailurePercentageLocalOrigin,
}

impl Ejection {
    fn index(self) -> usize {
        self as usize
    }

    pub const ALL: [(Ejection, &'static str); 7] = [
        (Ejection::Consecutive5xx, "consecutive_5xx"),
        (
            Ejection::ConsecutiveGatewayFailure,
            "consecutive_gateway_failure",
        ),
        (
            Ejection::ConsecutiveLocalOriginFailure,
            "consecutive_local_origin_failure",
        ),
        (Ejection::SuccessRate, "success_rate"),
        (
            Ejection::LocalOriginSuccessRate,
            "local_origin_success_rate",
        ),
        (Ejection::FailurePercentage, "failure_percentage"),
        (
            Ejection::FailurePercentageLocalOrigin,
            "failure_percentage_local_origin",
        ),
    ];
}

/// `cluster.<name>.outlier_detection.*`
#[derive(Debug, Default)]
pub struct OutlierStats {
    pub ejections_active: AtomicU64,
    pub ejections_overflow: AtomicU64,
    pub ejections_enforced_total: AtomicU64,
    pub ejections_detected: [AtomicU64; 7],
    pub ejections_enforced: [AtomicU64; 7],
}

impl OutlierStats {
    /// (name, value, is_counter)
    pub fn entries(&self) -> Vec<(String, u64, bool)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = vec![
            (
                "ejections_active".to_string(),
                get(&self.ejections_active),
                false,
            ),
            (
                "ejections_overflow".to_string(),
                get(&self.ejections_overflow),
                true,
            ),
            (
                "ejections_enforced_total".to_string(),
                get(&self.ejections_enforced_total),
                true,
            ),
        ];
        for (kind, name) in Ejection::ALL {
            out.push((
                format!("ejections_detected_{name}"),
                get(&self.ejections_detected[kind.index()]),
                true,
            ));
            out.push((
                format!("ejections_enforced_{name}"),
                get(&self.ejections_enforced[kind.index()]),
                true,
            ));
        }
        out
    }
}

/// What the detector keeps about one host.
#[derive(Debug, Default)]
pub struct HostMonitor {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Requests and successes in the current interval, external and local origin.
    external_total: AtomicU64,
    external_success: AtomicU64,
    local_total: AtomicU64,
    local_success: AtomicU64,
    ejected: AtomicBool,
    /// Guarded by the detector's lock.
    state: Mutex<EjectionState>,
}

#[derive(Debug, Default)]
struct EjectionState {
    ejected_at: Option<Instant>,
    returned_at: Option<Instant>,
    /// The multiplier of `base_ejection_time`.
    backoff: u32,
    /// Success rates of the last interval, for `/clusters` (-1 when not computed).
    success_rate: Option<f64>,
    local_success_rate: Option<f64>,
}

impl HostMonitor {
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// The last interval's success rates (external, local origin), when computed.
    pub fn success_rates(&self) -> (Option<f64>, Option<f64>) {
        match self.state.lock() {
            Ok(s) => (s.success_rate, s.local_success_rate),
            Err(_) => (None, None),
        }
    }

    /// Counts an outcome; returns the ejection it calls for, if any. A count fires when it
    /// reaches its threshold exactly, as in Envoy, and starts again after a detection.
    pub fn record(&self, config: &OutlierConfig, outcome: Outcome) -> Option<Ejection> {
        let split = config.split_external_local_origin_errors;
        let status = match (outcome, split) {
            (Outcome::Status(code), _) => code,
            (Outcome::ConnectFailed, false) => 503,
            (Outcome::Timeout, false) => 504,
            (Outcome::ConnectFailed | Outcome::Timeout, true) => {
                self.local_total.fetch_add(1, Ordering::Relaxed);
                let n = self.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
                if n == config.consecutive_local_origin_failure {
                    self.consecutive_local.store(0, Ordering::Relaxed);
                    return Some(Ejection::ConsecutiveLocalOriginFailure);
                }
                return None;
            }
        };
        if split {
            // The connection was made: local origin is fine.
            self.local_total.fetch_add(1, Ordering::Relaxed);
            self.local_success.fetch_add(1, Ordering::Relaxed);
            self.consecutive_local.store(0, Ordering::Relaxed);
        }
        self.external_total.fetch_add(1, Ordering::Relaxed);
        if !(500..600).contains(&status) {
            self.external_success.fetch_add(1, Ordering::Relaxed);
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            return None;
        }
        let mut found = None;
        if matches!(status, 502..=504) {
            let n = self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
            if n == config.consecutive_gateway_failure {
                self.consecutive_gateway.store(0, Ordering::Relaxed);
                found = Some(Ejection::ConsecutiveGatewayFailure);
            }
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        if n == config.consecutive_5xx {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            found = Some(Ejection::Consecutive5xx);
        }
        found
    }

    /// Back in the load balancer's view, with nothing counted against it.
    pub fn forget(&self) {
        self.ejected.store(false, Ordering::Relaxed);
        self.reset_consecutive();
        if let Ok(mut state) = self.state.lock() {
            *state = EjectionState::default();
        }
    }

    fn reset_consecutive(&self) {
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        self.consecutive_local.store(0, Ordering::Relaxed);
    }

    /// The interval's (total, successes), external and local, starting the next interval.
    fn take_interval(&self) -> ((u64, u64), (u64, u64)) {
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        (
            (take(&self.external_total), take(&self.external_success)),
            (take(&self.local_total), take(&self.local_success)),
        )
    }
}

/// A cluster's detector: its config, counters, and the lock its decisions take.
#[derive(Debug)]
pub struct Detector {
    pub config: OutlierConfig,
    pub stats: std::sync::Arc<OutlierStats>,
    decisions: Mutex<Instant>,
}

/// Whether a roll against an `enforcing_*` percentage says to act.
fn enforced(percent: u32) -> bool {
    crate::http::filter::fault::rolls(percent.min(100) * 10_000)
}

impl Detector {
    pub fn new(config: OutlierConfig, stats: std::sync::Arc<OutlierStats>) -> Self {
        Detector {
            config,
            stats,
            decisions: Mutex::new(Instant::now()),
        }
    }

    fn enforcing(&self, kind: Ejection) -> u32 {
        let c = &self.config;
        match kind {
            Ejection::Consecutive5xx => c.enforcing_consecutive_5xx,
            Ejection::ConsecutiveGatewayFailure => c.enforcing_consecutive_gateway_failure,
            Ejection::ConsecutiveLocalOriginFailure => c.enforcing_consecutive_local_origin_failure,
            Ejection::SuccessRate => c.enforcing_success_rate,
            Ejection::LocalOriginSuccessRate => c.enforcing_local_origin_success_rate,
            Ejection::FailurePercentage => c.enforcing_failure_percentage,
            Ejection::FailurePercentageLocalOrigin => c.enforcing_failure_percentage_local_origin,
        }
    }

    /// Ejects `host` for `kind` if the enforcing roll and `max_ejection_percent` allow.
    /// `hosts` are all the cluster's monitors. Returns whether the host set must change.
    pub fn eject(&self, host: &HostMonitor, hosts: &[&HostMonitor], kind: Ejection) -> bool {
        let Ok(_decisions) = self.decisions.lock() else {
            return false;
        };
        self.eject_locked(host, hosts, kind, Instant::now())
    }

    fn eject_locked(
        &self,
        host: &HostMonitor,
        hosts: &[&HostMonitor],
        kind: Ejection,
        now: Instant,
    ) -> bool {
        let s = &self.stats;
        if host.is_ejected() {
            return false;
        }
        s.ejections_detected[kind.index()].fetch_add(1, Ordering::Relaxed);
        let active = hosts.iter().filter(|h| h.is_ejected()).count();
        let percent = 100.0 * (active + 1) as f64 / hosts.len().max(1) as f64;
        let first_anyway = self.config.always_eject_one_host && active == 0;
        if !first_anyway && percent > f64::from(self.config.max_ejection_percent.min(100)) {
            s.ejections_overflow.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !enforced(self.enforcing(kind)) {
            return false;
        }
        s.ejections_enforced[kind.index()].fetch_add(1, Ordering::Relaxed);
        s.ejections_enforced_total.fetch_add(1, Ordering::Relaxed);
        s.ejections_active.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut state) = host.state.lock() {
            state.ejected_at = Some(now);
            let cap = self.config.max_ejection_time.as_millis();
            let base = self.config.base_ejection_time.as_millis().max(1);
            if u128::from(state.backoff) * base < cap {
                state.backoff += 1;
            }
        }
        host.ejected.store(true, Ordering::Relaxed);
        true
    }

    /// The interval's work, when an interval has passed since the last: hosts whose ejection is
    /// over come back, then the statistics eject those that fall behind. Returns whether the
    /// host set must change.
    /// Whether an interval has passed since the last `tick`.
    pub fn due(&self) -> bool {
        self.decisions
            .lock()
            .is_ok_and(|last| last.elapsed() >= self.config.interval)
    }

    pub fn tick(&self, hosts: &[&HostMonitor]) -> bool {
        let now = Instant::now();
        let Ok(mut last) = self.decisions.lock() else {
            return false;
        };
        if now.duration_since(*last) < self.config.interval {
            return false;
        }
        *last = now;
        let mut changed = false;
        for h in hosts {
            changed |= self.maybe_return(h, now);
        }
        let sample: Vec<((u64, u64), (u64, u64))> =
            hosts.iter().map(|h| h.take_interval()).collect();
        let external: Vec<(u64, u64)> = sample.iter().map(|s| s.0).collect();
        let local: Vec<(u64, u64)> = sample.iter().map(|s| s.1).collect();
        let split = self.config.split_external_local_origin_errors;
        let rates = self.success_rate(hosts, &external, now, Ejection::SuccessRate);
        changed |= rates.1;
        let local_rates = if split {
            let r = self.success_rate(hosts, &local, now, Ejection::LocalOriginSuccessRate);
            changed |= r.1;
            r.0
        } else {
            vec![None; hosts.len()]
        };
        changed |= self.failure_percentage(hosts, &external, now, Ejection::FailurePercentage);
        if split {
            changed |=
                self.failure_percentage(hosts, &local, now, Ejection::FailurePercentageLocalOrigin);
        }
        for (i, h) in hosts.iter().enumerate() {
            if let Ok(mut state) = h.state.lock() {
                state.success_rate = rates.0[i];
                state.local_success_rate = local_rates[i];
            }
        }
        changed
    }

    fn maybe_return(&self, host: &HostMonitor, now: Instant) -> bool {
        let Ok(mut state) = host.state.lock() else {
            return false;
        };
        let base = self.config.base_ejection_time;
        if !host.is_ejected() {
            // Healthy for a whole ejection time: the next ejection is shorter again.
            if let Some(back) = state.returned_at
                && now.duration_since(back) >= base
                && state.backoff > 0
            {
                state.backoff -= 1;
                state.returned_at = Some(now);
            }
            return false;
        }
        let span = base
            .saturating_mul(state.backoff.max(1))
            .min(self.config.max_ejection_time.max(base));
        let due = state
            .ejected_at
            .is_none_or(|at| now.duration_since(at) >= span);
        if !due {
            return false;
        }
        state.ejected_at = None;
        state.returned_at = Some(now);
        host.ejected.store(false, Ordering::Relaxed);
        host.reset_consecutive();
        let _ =
            self.stats
                .ejections_active
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        true
    }

    /// Success-rate ejection over `counts` (total, successes) per host: each host's rate, and
    /// whether an ejection happened.
    fn success_rate(
        &self,
        hosts: &[&HostMonitor],
        counts: &[(u64, u64)],
        now: Instant,
        kind: Ejection,
    ) -> (Vec<Option<f64>>, bool) {
        let c = &self.config;
        let rates: Vec<Option<f64>> = counts
            .iter()
            .map(|&(total, ok)| {
                (total >= u64::from(c.success_rate_request_volume) && total > 0)
                    .then(|| 100.0 * ok as f64 / total as f64)
            })
            .collect();
        let known: Vec<f64> = rates.iter().flatten().copied().collect();
        if known.len() < c.success_rate_minimum_hosts as usize || known.is_empty() {
            return (rates, false);
        }
        let mean = known.iter().sum::<f64>() / known.len() as f64;
        let variance = known.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / known.len() as f64;
        let threshold = mean - variance.sqrt() * (f64::from(c.success_rate_stdev_factor) / 1000.0);
        let mut changed = false;
        for (h, rate) in hosts.iter().zip(&rates) {
            if rate.is_some_and(|r| r < threshold) {
                changed |= self.eject_locked(h, hosts, kind, now);
            }
        }
        (rates, changed)
    }

    fn failure_percentage(
        &self,
        hosts: &[&HostMonitor],
        counts: &[(u64, u64)],
        now: Instant,
        kind: Ejection,
    ) -> bool {
        let c = &self.config;
        let volume = u64::from(c.failure_percentage_request_volume);
        let eligible = counts
            .iter()
            .filter(|(t, _)| *t >= volume && *t > 0)
            .count();
        if eligible < c.failure_percentage_minimum_hosts as usize {
            return false;
        }
        let mut changed = false;
        for (h, &(total, ok)) in hosts.iter().zip(counts) {
            if total < volume || total == 0 {
                continue;
            }
            let failed = 100 * (total - ok) / total;
            if failed >= u64::from(c.failure_percentage_threshold) {
                changed |= self.eject_locked(h, hosts, kind, now);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 2,
            ..OutlierConfig::default()
        }
    }

    #[test]
    fn consecutive_5xx_fire_at_the_threshold_and_a_success_starts_over() {
        let c = config();
        let h = HostMonitor::default();
        assert_eq!(h.record(&c, Outcome::Status(503)), None);
        assert_eq!(h.record(&c, Outcome::Status(200)), None);
        assert_eq!(h.record(&c, Outcome::Status(500)), None);
        assert_eq!(
            h.record(&c, Outcome::Status(500)),
            Some(Ejection::Consecutive5xx)
        );
        // Without a split, a connect failure is a 503.
        assert_eq!(h.record(&c, Outcome::ConnectFailed), None);
        assert_eq!(
            h.record(&c, Outcome::Timeout),
            Some(Ejection::Consecutive5xx)
        );
    }

    #[test]
    fn split_errors_count_local_origin_apart() {
        let c = OutlierConfig {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failure: 2,
            consecutive_5xx: 100,
            ..OutlierConfig::default()
        };
        let h = HostMonitor::default();
        assert_eq!(h.record(&c, Outcome::ConnectFailed), None);
        assert_eq!(
            h.record(&c, Outcome::Timeout),
            Some(Ejection::ConsecutiveLocalOriginFailure)
        );
        assert_eq!(h.record(&c, Outcome::ConnectFailed), None);
        // An answer, even a 503, means the connection worked.
        assert_eq!(h.record(&c, Outcome::Status(503)), None);
        assert_eq!(h.record(&c, Outcome::ConnectFailed), None);
    }

    #[test]
    fn at_most_max_ejection_percent_unless_one_host_may_always_go() {
        let strict = Detector::new(
            OutlierConfig {
                max_ejection_percent: 10,
                ..config()
            },
            Default::default(),
        );
        let only = HostMonitor::default();
        assert!(!strict.eject(&only, &[&only], Ejection::Consecutive5xx));
        assert_eq!(strict.stats.ejections_overflow.load(Ordering::Relaxed), 1);
        let d = Detector::new(
            OutlierConfig {
                max_ejection_percent: 0,
                always_eject_one_host: true,
                ..config()
            },
            Default::default(),
        );
        let (a, b) = (HostMonitor::default(), HostMonitor::default());
        let all = [&a, &b];
        assert!(d.eject(&a, &all, Ejection::Consecutive5xx));
        assert!(!d.eject(&b, &all, Ejection::Consecutive5xx));
        assert_eq!(d.stats.ejections_overflow.load(Ordering::Relaxed), 1);
        assert_eq!(d.stats.ejections_active.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn failure_percentage_ejects_the_failing_host_at_the_interval() {
        let d = Detector::new(
            OutlierConfig {
                interval: Duration::ZERO,
                enforcing_failure_percentage: 100,
                failure_percentage_minimum_hosts: 2,
                failure_percentage_request_volume: 10,
                consecutive_5xx: 1000,
                max_ejection_percent: 100,
                ..config()
            },
            Default::default(),
        );
        let (good, bad) = (HostMonitor::default(), HostMonitor::default());
        for _ in 0..20 {
            good.record(&d.config, Outcome::Status(200));
            bad.record(&d.config, Outcome::Status(500));
        }
        assert!(d.tick(&[&good, &bad]));
        assert!(bad.is_ejected() && !good.is_ejected());
    }
}
