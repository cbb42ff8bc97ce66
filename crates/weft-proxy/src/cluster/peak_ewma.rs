//! Latency-aware balancing, opt-in beyond Envoy: LEAST_REQUEST's "peak EWMA" variant, as
//! Linkerd and Finagle balance. Each host keeps a moving average of its response latency that
//! jumps up at once to a slower answer (the peak) and moves down only gradually; a host's cost
//! is that estimate times its requests in flight plus one, over its weight, and two distinct
//! hosts drawn at random go to the cheaper. The estimate also decays while a host is not
//! answered, so a host that was slow is tried again once its record has aged.
//!
//! Chosen per cluster with `lb_policy: LEAST_REQUEST` and the cluster metadata
//! `filter_metadata: { weft: { least_request: peak_ewma } }` (optionally `peak_ewma_decay`,
//! 10 s by default). Envoy ignores that metadata, so the same config stays valid there.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
// tokio's clock, so that tests can pause it (in a build without tokio's test-util it is the
// system's monotonic clock).
use tokio::time::Instant;

/// The estimate of a host nothing is known about yet (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// Nanoseconds since the first call: timestamps that fit an atomic.
fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A host's latency estimate. Updates race benignly: two responses landing at once may lose
/// one sample, which an average over seconds does not miss.
#[derive(Debug)]
pub struct Latency {
    /// The estimate in nanoseconds, as f64 bits.
    estimate: AtomicU64,
    /// When it was last set (`now_ns`).
    stamp: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            estimate: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(now_ns()),
        }
    }
}

impl Latency {
    /// The estimate decayed by the time since it was set: weight e^(-elapsed / decay).
    fn decayed(&self, now: u64, decay: Duration) -> f64 {
        let estimate = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        estimate * (-elapsed / decay.as_nanos().max(1) as f64).exp()
    }

    /// A response came back `rtt` after the request went out.
    pub fn observe(&self, rtt: Duration, decay: Duration) {
        let now = now_ns();
        let rtt = rtt.as_nanos() as f64;
        let current = self.decayed(now, decay);
        let next = if rtt > current {
            rtt
        } else {
            let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
            let w = (-elapsed / decay.as_nanos().max(1) as f64).exp();
            current * w + rtt * (1.0 - w)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// What sending one more request to the host is expected to cost.
    pub fn cost(&self, active: u64, weight: u32, decay: Duration) -> f64 {
        self.decayed(now_ns(), decay) * (active + 1) as f64 / f64::from(weight.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_answer_raises_the_estimate_at_once_and_fast_ones_lower_it_gradually() {
        let decay = Duration::from_secs(10);
        let l = Latency::default();
        l.observe(Duration::from_millis(200), decay);
        let peak = l.cost(0, 1, decay);
        assert!(peak > 190e6 && peak <= 200e6, "{peak}");
        // Fast answers right after hardly move it: they arrive within a tiny part of `decay`.
        l.observe(Duration::from_millis(1), decay);
        assert!(l.cost(0, 1, decay) > 150e6);
        // Requests in flight multiply the cost; weight divides it.
        let one = l.cost(0, 1, decay);
        assert!((l.cost(3, 1, decay) / one - 4.0).abs() < 0.01);
        assert!((l.cost(3, 4, decay) / one - 1.0).abs() < 0.01);
    }

    #[tokio::test(start_paused = true)]
    async fn an_estimate_decays_while_the_host_is_not_answered() {
        let l = Latency::default();
        l.observe(Duration::from_millis(100), Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(150)).await;
        // e^-1.5 of 100 ms is about 22 ms.
        let cost = l.cost(0, 1, Duration::from_millis(100));
        assert!(cost < 30e6, "{cost}");
    }
}
