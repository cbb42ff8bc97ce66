//! Translation: Istio configuration plus the service registry, for one proxy, into the Envoy v3
//! resources that proxy should have (DESIGN.md §2). Pure functions over plain values: no I/O,
//! no clock, no randomness, so that the output is a function of the input and is golden-tested.
//!
//! The names are Istio's, so that what `istioctl proxy-config` users know carries over:
//! clusters `outbound|PORT|SUBSET|HOST` and `inbound|PORT||`, listeners `virtualOutbound`,
//! `virtualInbound`, `0.0.0.0_PORT`, route tables named by port (`80`) or `http.PORT` for
//! gateways. Every resource carries, in `metadata.filter_metadata["istio"]["config"]`, the
//! Istio objects it came from.

mod access_log;
mod authn;
mod authz;
mod cluster;
mod config;
mod credential;
mod delegate;
mod endpoint;
mod gateway;
mod gateway_tls;
mod http_route;
mod listener;
mod locality;
mod pb;
mod peer_authn;
mod proxy;
mod route;
mod sni_dnat;
mod telemetry;
mod tls;
mod tracing;
mod upstream_tls;

pub(crate) use config::find_sidecar;
pub use config::{ConfigIndex, Inputs, fronting_host};
pub use proxy::{Interception, Proxy, ProxyKind};

use crate::ads::Snapshot;
use crate::type_url;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use std::collections::BTreeMap;

/// Everything one proxy should have, and what could not be translated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub listeners: BTreeMap<String, Listener>,
    pub routes: BTreeMap<String, RouteConfiguration>,
    pub clusters: BTreeMap<String, Cluster>,
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// SDS secrets served over ADS (a gateway's `credentialName`).
    pub secrets: BTreeMap<String, Secret>,
    /// Each names the Istio object, the field and the reason; the rest of the config is still
    /// generated, as istiod does.
    pub problems: Vec<String>,
    /// Listeners that conflicted (istiod's `pilot_conflict_*` metric, and the listener's
    /// address): one of them was left out.
    pub conflicts: Vec<(&'static str, String)>,
}

/// istiod's conflict gauges (`pilot/pkg/model/push_context.go`).
pub const CONFLICT_INBOUND: &str = "pilot_conflict_inbound_listener";
pub const CONFLICT_TCP_OVER_HTTP: &str = "pilot_conflict_outbound_listener_tcp_over_current_http";
pub const CONFLICT_METRICS: [&str; 4] = [
    CONFLICT_INBOUND,
    "pilot_conflict_outbound_listener_http_over_current_tcp",
    CONFLICT_TCP_OVER_HTTP,
    "pilot_conflict_outbound_listener_tcp_over_current_tcp",
];

impl Generated {
    /// The resources as an ADS snapshot, every type at `version`.
    pub fn snapshot(&self, version: &str) -> Snapshot {
        let mut s = Snapshot::default();
        s.set(type_url::CLUSTER, version, self.clusters.clone())
            .set(type_url::ENDPOINT, version, self.endpoints.clone())
            .set(type_url::LISTENER, version, self.listeners.clone())
            .set(type_url::ROUTE, version, self.routes.clone());
        if !self.secrets.is_empty() {
            s.set(type_url::SECRET, version, self.secrets.clone());
        }
        s
    }
}

/// The resources for `proxy` under `inputs`.
pub fn generate(inputs: &Inputs, proxy: &Proxy) -> Generated {
    let mut out = Generated::default();
    let scope = config::Scope::new(inputs, proxy);
    cluster::outbound(inputs, &scope, &mut out);
    match proxy.kind {
        ProxyKind::Sidecar => {
            listener::sidecar(inputs, &scope, proxy, &mut out);
        }
        ProxyKind::Router => {
            gateway::listeners(inputs, &scope, proxy, &mut out);
        }
    }
    access_log::tcp_access_logs(
        inputs,
        &scope.logging,
        scope.namespace,
        proxy.kind == ProxyKind::Router,
        &mut out,
        &|m| scope.problem(m),
    );
    if proxy.istio_extensions {
        telemetry::tcp(&scope.metrics, proxy.kind == ProxyKind::Router, &mut out);
    }
    out.problems.extend(scope.problems.into_inner());
    out.conflicts = scope.conflicts.into_inner();
    out.conflicts.sort();
    out.conflicts.dedup();
    for secret in scope.secrets.into_inner() {
        out.secrets.insert(secret.name.clone(), secret);
    }
    out.problems.sort();
    out.problems.dedup();
    out
}
