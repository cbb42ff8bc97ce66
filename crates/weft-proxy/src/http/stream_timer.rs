//! The connection manager's per-stream timers: `stream_idle_timeout` (no bytes either way for
//! that long) and `request_timeout` (the whole request has not arrived in time).
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
use std::time::{Duration, Instant};
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

    /// Resolves when one of the timers expires; never, when both are off.
    pub async fn expired(&self, idle: Option<Duration>, request: Option<Duration>) -> Expired {
        loop {
            let request_at = request
                .filter(|_| !self.request_complete())
                .map(|t| self.origin + t);
            let idle_at = idle.map(|t| self.idle_expiry(t));
            let next = match (request_at, idle_at) {
                (Some(r), Some(i)) => r.min(i),
                (Some(r), None) => r,
                (None, Some(i)) => i,
                (None, None) => return std::future::pending().await,
            };
            tokio::time::sleep_until(next.into()).await;
            let now = Instant::now();
            if request_at.is_some_and(|r| now >= r) && !self.request_complete() {
                return Expired::Request;
            }
            if idle.is_some_and(|t| now >= self.idle_expiry(t)) {
                return Expired::Idle;
            }
        }
    }
}

/// The idle timer of a response body: polled only while the body waits for the upstream.
pub struct IdleTimer {
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    stats: Arc<HttpStats>,
}

impl IdleTimer {
    pub fn new(activity: Arc<Activity>, timeout: Duration, stats: Arc<HttpStats>) -> Self {
        let at = activity.idle_expiry(timeout);
        IdleTimer {
            activity,
            timeout,
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
            stats,
        }
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// True once the stream has seen no bytes either way for the timeout; otherwise the task
    /// is woken when that could next be so.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let at = self.activity.idle_expiry(self.timeout);
            if Instant::now() >= at {
                stats::inc(&self.stats.downstream_rq_idle_timeout);
                return true;
            }
            self.sleep.as_mut().reset(at.into());
        }
    }
}
