//! The connection manager's per-stream timers: `stream_idle_timeout` (no bytes either way for
//! that long), `request_timeout` (the whole request has not arrived in time), and the stream's
//! maximum duration (`max_stream_duration`, or the client's `grpc-timeout` where the route
//! honours it).
//!
//! Bodies record activity with a relaxed store of "milliseconds since the stream began"; the
//! timers sleep until the earliest possible expiry and look again, so a busy stream costs no
//! timer resets.

use crate::stats::{self, HttpStats};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Context;
use std::time::Duration;
// tokio's clock (the system's unless a test pauses it), as the timers sleep on it.
use tokio::time::Instant;
use tokio::time::Sleep;

#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    request_complete: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// `stream_idle_timeout`: Envoy's flag SI.
    Idle,
    /// `request_timeout`.
    Request,
    /// `max_stream_duration` or `grpc-timeout`.
    MaxDuration,
}

impl Activity {
    pub fn new(request_complete: bool) -> Self {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            request_complete: AtomicBool::new(request_complete),
        }
    }

    pub fn touch(&self) {
        self.last_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn complete_request(&self) {
        self.request_complete.store(true, Ordering::Relaxed);
        self.touch();
    }

    pub fn request_complete(&self) -> bool {
        self.request_complete.load(Ordering::Relaxed)
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// When the stream will have been idle for `idle`, unless something moves first.
    fn idle_expiry(&self, idle: Duration) -> Instant {
        self.last() + idle
    }

    /// Resolves when one of the timers expires; never, when all are off.
    pub async fn expired(
        &self,
        idle: Option<Duration>,
        request: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Expired {
        loop {
            let request_at = request
                .filter(|_| !self.request_complete())
                .map(|t| self.origin + t);
            let idle_at = idle.map(|t| self.idle_expiry(t));
            let Some(next) = [request_at, idle_at, deadline].into_iter().flatten().min() else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Expired::MaxDuration;
            }
            if request_at.is_some_and(|r| now >= r) && !self.request_complete() {
                return Expired::Request;
            }
            if idle.is_some_and(|t| now >= self.idle_expiry(t)) {
                return Expired::Idle;
            }
        }
    }
}

/// The timers of a response body, polled only while the body waits for the upstream: the idle
/// timeout, and the end of the stream's allowed duration.
pub struct ResponseTimer {
    activity: Arc<Activity>,
    idle: Option<Duration>,
    deadline: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    stats: Arc<HttpStats>,
}

impl ResponseTimer {
    /// `None` when neither timer is on.
    pub fn new(
        activity: Arc<Activity>,
        idle: Option<Duration>,
        deadline: Option<Instant>,
        stats: Arc<HttpStats>,
    ) -> Option<Self> {
        let at = Self::next(&activity, idle, deadline)?;
        Some(ResponseTimer {
            activity,
            idle,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(at)),
            stats,
        })
    }

    fn next(
        activity: &Activity,
        idle: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Option<Instant> {
        [idle.map(|t| activity.idle_expiry(t)), deadline]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Which timer expired, counted; otherwise the task is woken when one next could.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<Expired> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                stats::inc(&self.stats.downstream_rq_max_duration_reached);
                return Some(Expired::MaxDuration);
            }
            if self
                .idle
                .is_some_and(|t| now >= self.activity.idle_expiry(t))
            {
                stats::inc(&self.stats.downstream_rq_idle_timeout);
                return Some(Expired::Idle);
            }
            let at = Self::next(&self.activity, self.idle, self.deadline)?;
            self.sleep.as_mut().reset(at);
        }
    }
}
