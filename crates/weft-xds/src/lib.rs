//! The control plane side of xDS (DESIGN.md §2). Translation from Istio config lands here with
//! the control plane; what exists so far is the part every proxy talks to: a cache of Envoy
//! resources per node and the ADS server that streams them, state-of-the-world and delta.

pub mod ads;
pub mod control;
pub mod metrics;
pub mod translate;

/// Type URLs of the resources ADS carries.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    /// Envoy's push order: clusters before their endpoints, listeners before their routes, so
    /// that nothing refers to what the proxy does not have yet.
    pub const ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

    /// Types whose state-of-the-world responses carry every resource, so that a name missing from
    /// one means the resource was removed.
    pub fn is_wildcard_type(type_url: &str) -> bool {
        type_url == LISTENER || type_url == CLUSTER
    }
}
