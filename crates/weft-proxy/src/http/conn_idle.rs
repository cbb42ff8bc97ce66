//! The connection manager's `common_http_protocol_options.idle_timeout`: a downstream
//! connection with no request in progress for that long is closed, counted as
//! `downstream_cx_idle_timeout`. Envoy's default is one hour. As in Envoy, a connection that
//! never carried a request is closed at once, and one that did first drains for the connection
//! manager's drain timeout (5 s).
//!
//! Requests hold an [`Active`] for as long as they run (until their response's last byte); the
//! connection's watcher sleeps until the earliest moment it could be idle long enough and
//! looks again, so requests never touch a timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Tracker {
    origin: Instant,
    active: AtomicU64,
    /// When the last request ended, in milliseconds since `origin`.
    last_ms: AtomicU64,
    /// A request was ever made on the connection.
    used: std::sync::atomic::AtomicBool,
}

/// Envoy's `drain_timeout` default: how long an idle connection that carried requests drains.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One request in progress on the connection.
#[derive(Debug)]
pub struct Active(Arc<Tracker>);

impl Drop for Active {
    fn drop(&mut self) {
        let t = &self.0;
        t.last_ms
            .store(t.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        t.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tracker {
    pub fn new() -> Arc<Self> {
        Arc::new(Tracker {
            origin: Instant::now(),
            active: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            used: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
        Active(self.clone())
    }

    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Resolves once no request has been in progress for `timeout`.
    pub async fn expired(&self, timeout: Duration) {
        loop {
            let at = if self.active.load(Ordering::Relaxed) > 0 {
                // Busy: it cannot be idle long enough before `timeout` from now.
                Instant::now() + timeout
            } else {
                self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout
            };
            tokio::time::sleep_until(at).await;
            let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.active.load(Ordering::Relaxed) == 0 && Instant::now() >= last + timeout {
                return;
            }
        }
    }
}
