//! The cluster manager: one place that owns the timed work of every cluster the current config
//! holds, whatever brought it (the bootstrap, CDS, EDS): DNS resolution, active health checks and
//! outlier detection's interval. It runs on the control runtime and reads the published snapshot
//! on each tick, so a cluster that arrives, changes or leaves over xDS is picked up, replaced or
//! dropped with no bookkeeping of its own.
//!
//! New DNS clusters are warmed (first answer) before they are published: at start-up before the
//! listeners open, and for CDS before the update is applied, as Envoy warms them.

use super::Cluster;
use crate::server::ServerState;
use std::sync::Arc;
use std::time::Duration;

/// How often the manager looks at every cluster. Finer timers (ejection times, health check
/// intervals, DNS refresh) are honoured to this resolution.
const TICK: Duration = Duration::from_millis(100);

/// How long warming waits for a DNS answer before the cluster is published without one.
const DNS_WARMING_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the manager on the current (control) runtime.
pub fn spawn(shared: Arc<ServerState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = tokio::time::Instant::now();
            let snapshot = shared.snapshot.load();
            for cluster in snapshot.clusters.values() {
                maintain(cluster, now);
            }
        }
    });
}

/// One tick's work for one cluster.
fn maintain(cluster: &Arc<Cluster>, now: tokio::time::Instant) {
    cluster.outlier_tick();
    if cluster.health_round_due() {
        tokio::spawn(super::health_check::round(cluster.clone()));
    }
    if cluster.dns_due(now) {
        let cluster = cluster.clone();
        tokio::spawn(async move { super::dns::resolve(&cluster).await });
    }
}

/// Resolves the DNS clusters among `clusters` that have not been resolved yet, all at once, each
/// within the warming timeout.
pub async fn warm<'a>(clusters: impl Iterator<Item = &'a Arc<Cluster>>) {
    let now = tokio::time::Instant::now();
    let lookups = clusters.filter(|c| c.dns_due(now)).map(|c| async move {
        if tokio::time::timeout(DNS_WARMING_TIMEOUT, super::dns::resolve(c))
            .await
            .is_err()
        {
            tracing::warn!(cluster = %c.config.name, "no DNS answer while warming; the cluster serves without hosts until one comes");
            c.dns_retry_now();
        }
    });
    futures::future::join_all(lookups).await;
}
