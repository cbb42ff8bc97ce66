//! The fault injection filter (`envoy.filters.http.fault`): a fixed delay and an abort, each
//! for a fraction of requests, from the filter's own config or the route's (a route's or
//! virtual host's `typed_per_filter_config` replaces the filter's whole). Counted as Envoy
//! counts them, `http.<prefix>.fault.*`, with `max_active_faults` as the cap.

use crate::stats::{self, FaultStats};
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status, answered as a trailers-only gRPC reply.
    Grpc(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultPolicy {
    /// A fixed delay and the share of requests, per million, that get it.
    pub delay: Option<(Duration, u32)>,
    pub abort: Option<(Abort, u32)>,
    /// `max_active_faults`: requests with a fault in progress beyond which no more are made.
    pub max_active: Option<u64>,
}

/// What the filter does to one request.
pub struct Injected {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
    /// Holds the request's place in `active_faults` until dropped.
    _active: Option<ActiveFault>,
}

pub struct ActiveFault(Arc<FaultStats>);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        stats::dec(&self.0.active_faults);
    }
}

pub(crate) fn rolls(per_million: u32) -> bool {
    per_million >= 1_000_000 || fastrand::u32(..1_000_000) < per_million
}

impl FaultPolicy {
    /// Rolls the dice for one request; `None` when it gets no fault.
    pub fn inject(&self, stats: &Arc<FaultStats>) -> Option<Injected> {
        let delay = self
            .delay
            .filter(|(_, share)| rolls(*share))
            .map(|(d, _)| d);
        let abort = self
            .abort
            .filter(|(_, share)| rolls(*share))
            .map(|(a, _)| a);
        if delay.is_none() && abort.is_none() {
            return None;
        }
        if let Some(max) = self.max_active
            && stats
                .active_faults
                .load(std::sync::atomic::Ordering::Relaxed)
                >= max
        {
            stats::inc(&stats.faults_overflow);
            return None;
        }
        stats::inc(&stats.active_faults);
        if delay.is_some() {
            stats::inc(&stats.delays_injected);
        }
        if abort.is_some() {
            stats::inc(&stats.aborts_injected);
        }
        Some(Injected {
            delay,
            abort,
            _active: Some(ActiveFault(stats.clone())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_the_active_cap_hold() {
        let stats = Arc::new(FaultStats::default());
        let policy = FaultPolicy {
            delay: None,
            abort: Some((Abort::Http(StatusCode::SERVICE_UNAVAILABLE), 300_000)),
            max_active: None,
        };
        let hits = (0..20_000)
            .filter(|_| policy.inject(&stats).is_some())
            .count();
        // 30 % of 20,000 within 5 standard deviations (324).
        assert!((hits as i64 - 6_000).abs() < 324, "{hits}");
        assert_eq!(
            stats
                .active_faults
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );

        let capped = FaultPolicy {
            delay: Some((Duration::from_secs(1), 1_000_000)),
            abort: None,
            max_active: Some(1),
        };
        let held = capped.inject(&stats);
        assert!(held.is_some());
        assert!(
            capped.inject(&stats).is_none(),
            "the second is over max_active_faults"
        );
        assert_eq!(
            stats
                .faults_overflow
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        drop(held);
        assert!(capped.inject(&stats).is_some());
    }
}
