//! ADS test support: Envoy resources written as JSON, snapshots for Weft's own ADS server
//! (weft-xds) on a runtime of its own, and proxies (Envoy or Weft) that subscribe to it.

use super::{Kind, Proxy, Req, Resp, try_request};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_xds::ads::{AdsServer, Cache, ConnectionStatus, Resources, Snapshot};
use weft_xds::type_url;

/// The bootstrap both proxies start from: an admin port, and ADS at {XDS}.
pub const BOOTSTRAP: &str = r#"
node: { id: NODE_ID, cluster: weft-test }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {ADMIN} } }
dynamic_resources:
  ads_config:
    api_type: API_TYPE
    transport_api_version: V3
    grpc_services: [ { envoy_grpc: { cluster_name: xds } } ]
  cds_config: { ads: {}, resource_api_version: V3 }
  lds_config: { ads: {}, resource_api_version: V3 }
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {XDS} } } }
"#;

/// A named Envoy resource.
pub type Named = (String, Any);

/// An Envoy resource written in its JSON form, encoded as it travels.
pub fn any(message: &str, value: Value) -> Named {
    let name = value
        .get("name")
        .or_else(|| value.get("cluster_name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let dynamic = weft_proxy::config::bootstrap::from_json(message, value)
        .unwrap_or_else(|e| panic!("{message}: {e}"));
    let any = Any {
        type_url: format!("type.googleapis.com/{message}"),
        value: dynamic.encode_to_vec(),
    };
    (name, any)
}

pub fn listener(name: &str, port: u16, routes: &str) -> Named {
    listener_with_source(
        name,
        port,
        routes,
        json!({"ads": {}, "resource_api_version": "V3"}),
    )
}

/// A listener whose RDS subscription has the given `config_source`.
pub fn listener_with_source(name: &str, port: u16, routes: &str, source: Value) -> Named {
    any(
        "envoy.config.listener.v3.Listener",
        json!({
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "rds": {"route_config_name": routes, "config_source": source},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                }
            }]}]
        }),
    )
}

/// A route table: (path prefix, cluster) in order, plus `extra` merged into the first route.
pub fn routes(name: &str, table: &[(&str, &str)], extra: Value) -> Named {
    let mut list: Vec<Value> = table
        .iter()
        .map(
            |(prefix, cluster)| json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}}),
        )
        .collect();
    if let (Some(first), Value::Object(extra)) = (list.first_mut(), extra) {
        for (k, v) in extra {
            first[&k] = v;
        }
    }
    any(
        "envoy.config.route.v3.RouteConfiguration",
        json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": list}]}),
    )
}

pub fn eds_cluster(name: &str) -> Named {
    any(
        "envoy.config.cluster.v3.Cluster",
        json!({"name": name, "type": "EDS", "connect_timeout": "1s",
               "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}),
    )
}

pub fn static_cluster(name: &str, upstream: SocketAddr) -> Named {
    any(
        "envoy.config.cluster.v3.Cluster",
        json!({"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": upstream.port()}}}}]}]}}),
    )
}

pub fn endpoints(cluster: &str, upstreams: &[SocketAddr]) -> Named {
    let lb: Vec<Value> = upstreams
        .iter()
        .map(|u| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": u.port()}}}}))
        .collect();
    any(
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        json!({"cluster_name": cluster, "endpoints": [{"lb_endpoints": lb}]}),
    )
}

/// A snapshot at `version` holding the given resources, sorted by type.
pub fn snapshot(version: &str, resources: Vec<Named>) -> Snapshot {
    let mut s = Snapshot::default();
    for t in [
        type_url::LISTENER,
        type_url::ROUTE,
        type_url::CLUSTER,
        type_url::ENDPOINT,
    ] {
        s.types
            .insert(t.to_string(), Resources::new(version, BTreeMap::new()));
    }
    for (name, r) in resources {
        let entry = s.types.get_mut(&r.type_url).unwrap();
        entry.items.insert(name, r);
    }
    s
}

/// The ADS server on a runtime of its own, so that stopping it drops every stream at once, as a
/// control plane process that goes away.
pub struct ControlPlane {
    pub server: AdsServer,
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ControlPlane {
    pub async fn start(port: u16, cache: Arc<Cache>) -> ControlPlane {
        let server = AdsServer::new(cache);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = server.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = weft_xds::ads::serve(serving, listener, std::future::pending()).await;
        });
        ControlPlane {
            server,
            addr,
            runtime: Some(runtime),
        }
    }

    pub async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub fn status(&self, node: &str) -> Option<ConnectionStatus> {
        self.server.status().into_iter().find(|c| c.node == node)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Waits until `check` holds, or fails with what it last saw.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    eventually_within(what, Duration::from_secs(15), check).await
}

/// `eventually` with a time limit of its own, and what `check` found when it held.
pub async fn eventually_within<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Which upstream answered `path` on `addr`, or the status if it was not a 200.
pub async fn upstream(addr: SocketAddr, path: &str) -> Result<String, String> {
    let r: Resp = try_request(addr, &Req::get("test.local", path)).await?;
    if r.status != 200 {
        return Ok(format!("status {}", r.status));
    }
    let json = r.json().ok_or("not JSON")?;
    Ok(json["upstream"].as_str().unwrap_or("?").to_string())
}

pub async fn serves(addr: SocketAddr, path: &str, expected: &str) -> Result<(), String> {
    match upstream(addr, path).await {
        Ok(u) if u == expected => Ok(()),
        other => Err(format!("{path} gave {other:?}, want {expected}")),
    }
}

pub async fn start_proxy(kind: Kind, api: &str, node: &str, xds: u16, args: &[&str]) -> Proxy {
    let template = BOOTSTRAP.replace("API_TYPE", api).replace("NODE_ID", node);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proxy::start_with(kind, &template, &[("XDS", xds)], &args)
    })
    .await
    .unwrap()
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The last response of `type_url` that `node` rejected, if it did.
pub fn nack(cp: &ControlPlane, node: &str, type_url: &str) -> Option<String> {
    cp.status(node)?.types.get(type_url)?.nack.clone()
}

pub fn acked(cp: &ControlPlane, node: &str, type_url: &str, version: &str) -> Result<(), String> {
    let status = cp.status(node).ok_or("not connected")?;
    let s = status.types.get(type_url).ok_or("not subscribed")?;
    if s.acked.as_deref() == Some(version) && s.nack.is_none() {
        Ok(())
    } else {
        Err(format!("{node} {type_url}: {s:?}"))
    }
}
