//! Active health checking (`health_checks`): every `interval` each host is probed, over TCP (a
//! connection that opens) or HTTP/1.1 (a GET whose status is expected), within `timeout`.
//! `unhealthy_threshold` failures in a row take a host out of the load balancer's view and
//! `healthy_threshold` successes bring it back; a host starts out failed until its first check
//! passes, and an HTTP 503 fails it at once, as in Envoy. Until the cluster has had a request
//! routed to it, rounds come every `no_traffic_interval` instead.
//!
//! Probes run on the control thread, so workers never wait for them; a host's state is atomics
//! and a change republishes the cluster's host set.

use super::{Cluster, Host};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp,
    Http {
        path: String,
        /// `host`, or the cluster's name.
        authority: String,
        /// `[start, end)` ranges; by default `[200, 201)`.
        expected: Vec<(u16, u16)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub timeout: Duration,
    pub interval: Duration,
    /// The interval while the cluster has never had a request routed to it (60 s by default).
    pub no_traffic_interval: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub probe: Probe,
}

/// `cluster.<name>.health_check.*`
#[derive(Debug, Default)]
pub struct HealthCheckStats {
    pub attempt: AtomicU64,
    pub success: AtomicU64,
    pub failure: AtomicU64,
    pub network_failure: AtomicU64,
    pub healthy: AtomicU64,
}

impl HealthCheckStats {
    pub fn entries(&self) -> [(&'static str, u64, bool); 5] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("attempt", get(&self.attempt), true),
            ("success", get(&self.success), true),
            ("failure", get(&self.failure), true),
            ("network_failure", get(&self.network_failure), true),
            ("healthy", get(&self.healthy), false),
        ]
    }
}

/// What active health checking knows of one host.
#[derive(Debug)]
pub struct HostHealth {
    failed: AtomicBool,
    /// Whether any check has finished yet.
    checked: AtomicBool,
    successes: AtomicU32,
    failures: AtomicU32,
}

impl Default for HostHealth {
    fn default() -> Self {
        // Failed until the first check passes.
        HostHealth {
            failed: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }
}

impl HostHealth {
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Counts one result; returns whether the host changed state.
    fn record(&self, config: &HealthCheckConfig, result: Checked) -> bool {
        let first = !self.checked.swap(true, Ordering::Relaxed);
        match result {
            Checked::Healthy => {
                self.failures.store(0, Ordering::Relaxed);
                let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
                // A host's very first check needs one success, as in Envoy.
                if self.is_failed() && (first || n >= config.healthy_threshold) {
                    self.failed.store(false, Ordering::Relaxed);
                    return true;
                }
                false
            }
            Checked::Unhealthy { immediately } => {
                self.successes.store(0, Ordering::Relaxed);
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.is_failed() && (immediately || n >= config.unhealthy_threshold) {
                    self.failed.store(true, Ordering::Relaxed);
                    return true;
                }
                false
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    Healthy,
    Unhealthy { immediately: bool },
}

/// Probes one host once.
async fn probe(cluster: &Cluster, host: &Host, config: &HealthCheckConfig) -> (Checked, bool) {
    let attempt = async {
        let stream = crate::upstream::open(cluster, host, crate::upstream::Purpose::Tcp)
            .await
            .ok()?;
        let Probe::Http {
            path,
            authority,
            expected,
        } = &config.probe
        else {
            return Some(Checked::Healthy);
        };
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let request = http::Request::get(path.as_str())
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "Envoy/HC")
            .body(crate::http::body::ProxyBody::Empty)
            .ok()?;
        let resp = sender.send_request(request).await.ok()?;
        let status = resp.status().as_u16();
        let ok = expected.iter().any(|(lo, hi)| (*lo..*hi).contains(&status));
        Some(if ok {
            Checked::Healthy
        } else {
            Checked::Unhealthy {
                immediately: status == 503,
            }
        })
    };
    match tokio::time::timeout(config.timeout, attempt).await {
        Ok(Some(c)) => (c, false),
        // No connection, no answer, or none in time: a network failure.
        _ => (Checked::Unhealthy { immediately: false }, true),
    }
}

/// One round of checks over every host of `cluster`, concurrently; republishes the host set if a
/// host changed state.
pub async fn round(cluster: Arc<Cluster>) {
    let Some((config, stats)) = &cluster.health_check else {
        return;
    };
    struct Done<'a>(&'a Cluster);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.health_round_done();
        }
    }
    let _done = Done(&cluster);
    let hosts: Vec<Arc<Host>> = cluster.hosts.load().all().cloned().collect();
    let checks = hosts.iter().map(|h| {
        let cluster = &cluster;
        async move {
            stats.attempt.fetch_add(1, Ordering::Relaxed);
            let (result, network) = probe(cluster, h, config).await;
            match (result, network) {
                (Checked::Healthy, _) => stats.success.fetch_add(1, Ordering::Relaxed),
                (_, true) => stats.network_failure.fetch_add(1, Ordering::Relaxed),
                (_, false) => stats.failure.fetch_add(1, Ordering::Relaxed),
            };
            h.active_health.record(config, result)
        }
    });
    let changed = futures::future::join_all(checks).await;
    let healthy = hosts
        .iter()
        .filter(|h| !h.active_health.is_failed())
        .count();
    stats.healthy.store(healthy as u64, Ordering::Relaxed);
    if changed.into_iter().any(|c| c) {
        tracing::debug!(cluster = %cluster.config.name, healthy, "health check changed a host");
        cluster.republish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HealthCheckConfig {
        HealthCheckConfig {
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            no_traffic_interval: Duration::from_secs(60),
            unhealthy_threshold: 2,
            healthy_threshold: 3,
            probe: Probe::Tcp,
        }
    }

    #[test]
    fn thresholds_move_a_host_out_and_back() {
        let c = config();
        let h = HostHealth::default();
        assert!(h.is_failed(), "failed until checked");
        assert!(h.record(&c, Checked::Healthy), "one success the first time");
        assert!(!h.record(&c, Checked::Unhealthy { immediately: false }));
        assert!(h.record(&c, Checked::Unhealthy { immediately: false }));
        assert!(h.is_failed());
        assert!(!h.record(&c, Checked::Healthy));
        assert!(!h.record(&c, Checked::Healthy));
        assert!(
            h.record(&c, Checked::Healthy),
            "back after healthy_threshold"
        );
        assert!(
            h.record(&c, Checked::Unhealthy { immediately: true }),
            "503 at once"
        );
    }
}
