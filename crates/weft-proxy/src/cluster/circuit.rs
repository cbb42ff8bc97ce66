//! Circuit breaking (`circuit_breakers.thresholds`): cluster-wide limits on connections, requests
//! waiting for a connection, requests in flight, retries in flight and connection pools, one set
//! per routing priority. A request past a limit is not queued anywhere: it is answered 503 with
//! flag UO at once, which is what protects a struggling upstream.
//!
//! The counts are plain atomics shared by every worker (Envoy's resource manager is per cluster,
//! not per worker), checked then taken without a lock: like Envoy, a burst may overshoot a limit
//! by the few requests that raced past the check.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// `RoutingPriority`, as a route asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    #[default]
    Default,
    High,
}

/// `circuit_breakers.thresholds[]` for one priority, with Envoy's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub max_connections: u64,
    pub max_pending_requests: u64,
    pub max_requests: u64,
    pub max_retries: u64,
    /// Unlimited unless set.
    pub max_connection_pools: u64,
    /// Replaces `max_retries` when set.
    pub retry_budget: Option<RetryBudget>,
    /// `track_remaining`: publish `remaining_*` gauges (istiod turns it on everywhere).
    pub track_remaining: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            max_connection_pools: u64::MAX,
            retry_budget: None,
            track_remaining: false,
        }
    }
}

/// `retry_budget`: retries in flight may be `percent` of the requests in flight and waiting, and
/// never fewer than `min_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub percent: f64,
    pub min_concurrency: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20.0,
            min_concurrency: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CircuitBreakers {
    pub default: Thresholds,
    pub high: Thresholds,
}

impl CircuitBreakers {
    pub fn thresholds(&self, priority: Priority) -> &Thresholds {
        match priority {
            Priority::Default => &self.default,
            Priority::High => &self.high,
        }
    }
}

/// What is in use at one priority.
#[derive(Debug, Default)]
pub struct Resources {
    pub connections: AtomicU64,
    pub pending: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub pools: AtomicU64,
    /// Woken when a connection is given back or closes, for requests waiting for one.
    pub released: Notify,
}

impl Resources {
    /// Takes one of `counter` unless `max` are taken already.
    pub fn try_take(counter: &AtomicU64, max: u64) -> bool {
        if counter.load(Ordering::Relaxed) >= max {
            return false;
        }
        counter.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub fn give(counter: &AtomicU64) {
        // Never below zero, even if a give races a successor cluster's reset.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// How many retries may be in flight: the budget's share of what is in flight and waiting,
    /// or `max_retries`.
    pub fn max_retries(&self, t: &Thresholds) -> u64 {
        match t.retry_budget {
            None => t.max_retries,
            Some(b) => {
                let active =
                    self.requests.load(Ordering::Relaxed) + self.pending.load(Ordering::Relaxed);
                let share = (b.percent / 100.0 * active as f64) as u64;
                share.max(b.min_concurrency)
            }
        }
    }

    /// Wakes requests waiting for a connection, if any wait.
    pub fn wake(&self) {
        if self.pending.load(Ordering::Relaxed) > 0 {
            self.released.notify_waiters();
        }
    }
}

/// The resources of a cluster, per priority. Shared by a cluster's successive versions, as the
/// connections and requests they count outlive a config change.
#[derive(Debug, Default)]
pub struct Breakers {
    default: Resources,
    high: Resources,
}

impl Breakers {
    pub fn at(&self, priority: Priority) -> &Resources {
        match priority {
            Priority::Default => &self.default,
            Priority::High => &self.high,
        }
    }

    /// `circuit_breakers.<priority>.*` gauges, as Envoy shows them: 1 while a limit is reached.
    pub fn open_gauges(&self, cb: &CircuitBreakers) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (name, priority) in [("default", Priority::Default), ("high", Priority::High)] {
            let r = self.at(priority);
            let t = cb.thresholds(priority);
            let open = |c: &AtomicU64, max: u64| u64::from(c.load(Ordering::Relaxed) >= max);
            out.push((
                format!("circuit_breakers.{name}.cx_open"),
                open(&r.connections, t.max_connections),
            ));
            out.push((
                format!("circuit_breakers.{name}.rq_pending_open"),
                open(&r.pending, t.max_pending_requests),
            ));
            out.push((
                format!("circuit_breakers.{name}.rq_open"),
                open(&r.requests, t.max_requests),
            ));
            out.push((
                format!("circuit_breakers.{name}.rq_retry_open"),
                open(&r.retries, r.max_retries(t)),
            ));
            out.push((
                format!("circuit_breakers.{name}.cx_pool_open"),
                open(&r.pools, t.max_connection_pools),
            ));
            if t.track_remaining {
                let left = |c: &AtomicU64, max: u64| max.saturating_sub(c.load(Ordering::Relaxed));
                out.extend([
                    (
                        format!("circuit_breakers.{name}.remaining_cx"),
                        left(&r.connections, t.max_connections),
                    ),
                    (
                        format!("circuit_breakers.{name}.remaining_pending"),
                        left(&r.pending, t.max_pending_requests),
                    ),
                    (
                        format!("circuit_breakers.{name}.remaining_rq"),
                        left(&r.requests, t.max_requests),
                    ),
                    (
                        format!("circuit_breakers.{name}.remaining_retries"),
                        left(&r.retries, r.max_retries(t)),
                    ),
                    (
                        format!("circuit_breakers.{name}.remaining_cx_pools"),
                        left(&r.pools, t.max_connection_pools),
                    ),
                ]);
            }
        }
        out
    }
}

/// A retry in flight: counted until dropped.
pub struct RetrySlot<'a>(&'a Resources);

impl<'a> RetrySlot<'a> {
    /// A slot unless the limit (or the budget) is reached.
    pub fn take(resources: &'a Resources, t: &Thresholds) -> Option<Self> {
        let max = resources.max_retries(t);
        // `then`, not `then_some`: a slot made and dropped would give back a retry never taken.
        Resources::try_take(&resources.retries, max).then(|| RetrySlot(resources))
    }
}

impl Drop for RetrySlot<'_> {
    fn drop(&mut self) {
        Resources::give(&self.0.retries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_share_of_active_requests_and_never_less_than_its_minimum() {
        let r = Resources::default();
        let t = Thresholds {
            retry_budget: Some(RetryBudget {
                percent: 25.0,
                min_concurrency: 2,
            }),
            ..Thresholds::default()
        };
        assert_eq!(r.max_retries(&t), 2);
        r.requests.store(40, Ordering::Relaxed);
        r.pending.store(8, Ordering::Relaxed);
        assert_eq!(r.max_retries(&t), 12);
        let plain = Thresholds::default();
        assert_eq!(r.max_retries(&plain), 3);
    }

    #[test]
    fn retry_slots_stop_at_the_limit_and_come_back_when_dropped() {
        let r = Resources::default();
        let t = Thresholds {
            max_retries: 2,
            ..Thresholds::default()
        };
        let a = RetrySlot::take(&r, &t);
        let b = RetrySlot::take(&r, &t);
        assert!(a.is_some() && b.is_some());
        assert!(RetrySlot::take(&r, &t).is_none());
        assert_eq!(
            r.retries.load(Ordering::Relaxed),
            2,
            "a refused take gives nothing back"
        );
        drop(a);
        assert!(RetrySlot::take(&r, &t).is_some());
        drop(b);
        assert_eq!(r.retries.load(Ordering::Relaxed), 0);
    }
}
