//! The xDS client: one ADS stream to the control plane, state of the world or delta, carrying
//! clusters, endpoints, listeners and routes. Each response is applied whole or refused
//! (`state`), and answered with an ACK or with a NACK whose `error_detail` names the resource
//! and field. When the stream breaks, the proxy keeps serving what it has and reconnects with
//! backoff; on the new stream it says what it holds, so that nothing is lost or sent twice.

mod delta;
mod sotw;
pub mod state;
mod warming;

use crate::server::ServerState;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use state::DynamicConfig;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Type URLs of the resources the proxy subscribes to.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// Envoy's retry policy for a broken xDS stream: 500 ms doubling up to 30 s, with jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AdsConfig {
    /// `http://host:port` of the ADS server.
    pub uri: String,
    pub delta: bool,
    pub node: Node,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("stream closed by the control plane")]
    Closed,
}

/// What a stream last asked RDS and EDS for. Both follow what the accepted listeners and
/// clusters name, so they change after LDS and CDS updates.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    routes: BTreeSet<String>,
    endpoints: BTreeSet<String>,
    secrets: BTreeSet<String>,
}

impl Followed {
    /// The follow-up types whose names changed: (type, names asked for before), the new names
    /// being recorded and readable through `names`.
    pub(crate) fn update(
        &mut self,
        dynamic: &DynamicConfig,
    ) -> Vec<(&'static str, BTreeSet<String>)> {
        let mut changed = Vec::new();
        for (type_url, wanted) in [
            (type_url::ENDPOINT, dynamic.endpoint_names()),
            (type_url::ROUTE, dynamic.route_names()),
            (type_url::SECRET, dynamic.secret_names()),
        ] {
            let current = match type_url {
                type_url::ROUTE => &mut self.routes,
                type_url::SECRET => &mut self.secrets,
                _ => &mut self.endpoints,
            };
            if *current != wanted {
                changed.push((type_url, std::mem::replace(current, wanted)));
            }
        }
        changed
    }

    /// The names asked for of a type; empty for the wildcard types.
    pub(crate) fn names(&self, type_url: &str) -> &BTreeSet<String> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        match type_url {
            type_url::ROUTE => &self.routes,
            type_url::ENDPOINT => &self.endpoints,
            type_url::SECRET => &self.secrets,
            _ => &NONE,
        }
    }
}

/// A NACK's `error_detail`: INVALID_ARGUMENT with the reason, as Envoy sends it.
pub(crate) fn nack(message: String) -> RpcStatus {
    RpcStatus {
        code: 3,
        message,
        details: Vec::new(),
    }
}

/// Counts an update as `cluster_manager.cds.update_success` and its siblings do in Envoy.
pub(crate) fn count(shared: &ServerState, type_url: &str, accepted: bool) {
    let s = &shared.xds;
    let (ok, rejected) = match type_url {
        type_url::CLUSTER => (&s.cds_update_success, &s.cds_update_rejected),
        type_url::LISTENER => (&s.lds_update_success, &s.lds_update_rejected),
        type_url::ROUTE => (&s.rds_update_success, &s.rds_update_rejected),
        type_url::ENDPOINT => (&s.eds_update_success, &s.eds_update_rejected),
        // Envoy counts SDS per secret (`sds.NAME.update_success`), which is not kept here.
        _ => return,
    };
    if accepted {
        ok.fetch_add(1, Ordering::Relaxed);
    } else {
        rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// The next response of a stream. While waiting for it, resources whose warming fetch timeout
/// runs out are let serve.
pub(crate) async fn next_response<T>(
    responses: &mut tonic::Streaming<T>,
    dynamic: &mut DynamicConfig,
) -> Result<Option<T>, tonic::Status> {
    loop {
        let timeout = async {
            match dynamic.warming_deadline() {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = responses.message() => return r,
            () = timeout => dynamic.warming_expired(),
        }
    }
}

/// Runs the client until shutdown: connect, stream, and on failure wait and connect again.
pub async fn run(config: AdsConfig, mut dynamic: DynamicConfig, shared: Arc<ServerState>) {
    let mut attempt = 0u32;
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let mut established = false;
        let session = async {
            if config.delta {
                delta::session(&config, &mut dynamic, &shared, &mut established).await
            } else {
                sotw::session(&config, &mut dynamic, &shared, &mut established).await
            }
        };
        let result = tokio::select! {
            r = session => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        shared.xds.connected_state.store(0, Ordering::Relaxed);
        if established {
            attempt = 0;
        }
        let ceiling = BACKOFF_BASE
            .saturating_mul(1u32 << attempt.min(6))
            .min(BACKOFF_MAX);
        attempt = attempt.saturating_add(1);
        // Full jitter, so that proxies do not come back in step after an outage.
        let wait = ceiling.mul_f64(fastrand::f64().max(0.1));
        if let Err(e) = result {
            tracing::warn!(uri = %config.uri, error = %e, retry_in = ?wait, "xDS stream ended");
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

pub(crate) async fn connect(
    config: &AdsConfig,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(config.uri.clone())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect()
        .await
}
