//! Which proxies a folder calls for, and the bootstrap each starts from.

use anyhow::Context as _;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use weft_api::Resource;
use weft_api::types::common::Labels;

/// Sidecar or gateway, as the status file and Istio's node ids name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Sidecar,
    Gateway,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sidecar => "sidecar",
            Kind::Gateway => "gateway",
        }
    }
}

/// One proxy the folder calls for. Two plans that compare equal run the same proxy: a change
/// to any field restarts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPlan {
    /// `sidecar default/web-v1`, `gateway istio=ingressgateway`: the key a proxy is known by
    /// across edits.
    pub label: String,
    pub kind: Kind,
    pub node_id: String,
    pub namespace: String,
    /// The WorkloadEntry or Pod (sidecars), the gateway's name (gateways).
    pub workload: String,
    pub labels: Labels,
    /// `region/zone/subzone`: the WorkloadEntry's `locality`, else its topology labels.
    pub locality: Option<String>,
    /// Gateways: (Gateway server port, listening port).
    pub gateway_ports: Vec<(u16, u16)>,
    /// The service account the proxy's identity names (`default` when the workload names none;
    /// Istio's ingress gateway account for gateways).
    pub service_account: String,
}

/// The ports a running proxy was given; they stay with its label across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyPorts {
    pub admin: u16,
    /// Istio's 15090: `/stats/prometheus`, what Prometheus scrapes.
    pub stats: u16,
    /// Sidecars: the HTTP proxy port applications use.
    pub http_proxy: Option<u16>,
}

/// Ports handed out one after another from `base`, skipping those in use; when `base` is 0, free
/// ports between 20000 and the kernel's ephemeral range (a port from bind(0) can become the
/// local port of an outgoing connection before the proxy binds it). Never one twice.
pub struct Ports {
    next: u16,
    given: std::collections::HashSet<u16>,
}

impl Ports {
    pub fn from_base(base: u16) -> Self {
        Self {
            next: base,
            given: Default::default(),
        }
    }

    pub fn take(&mut self) -> anyhow::Result<u16> {
        if self.next == 0 {
            return self.take_any();
        }
        while self.next < u16::MAX {
            let p = self.next;
            self.next += 1;
            if bindable(p) && self.given.insert(p) {
                return Ok(p);
            }
        }
        anyhow::bail!("no free port left above the port base")
    }

    /// Ports from 20000 up to the ephemeral range, walked from an offset of this process's
    /// own (its pid), so that two `weft up`s picking at once rarely meet; below 20000 is left
    /// to test harnesses that pick ports for `weft up`'s flags.
    fn take_any(&mut self) -> anyhow::Result<u16> {
        const LOW: u16 = 20_000;
        let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        if ephemeral_start <= LOW + 1000 {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            return Ok(l.local_addr()?.port());
        }
        let span = u32::from(ephemeral_start - LOW);
        let offset = std::process::id().wrapping_mul(7919) % span;
        for step in 0..span {
            let port = LOW + u16::try_from((offset + step) % span).unwrap_or(0);
            if bindable(port) && self.given.insert(port) {
                return Ok(port);
            }
        }
        anyhow::bail!("no free port found")
    }

    pub fn for_plan(&mut self, plan: &ProxyPlan) -> anyhow::Result<ProxyPorts> {
        Ok(ProxyPorts {
            admin: self.take()?,
            stats: self.take()?,
            http_proxy: match plan.kind {
                Kind::Sidecar => Some(self.take()?),
                Kind::Gateway => None,
            },
        })
    }
}

/// The ports sidecars front their workloads on (`Inputs::front_workloads`): one per workload
/// and application address, given the first time the control plane sees the endpoint and kept
/// while `weft up` runs, so that an edit never moves a workload's mesh port.
pub struct Fronts {
    ports: std::sync::Arc<std::sync::Mutex<Ports>>,
    given: std::sync::Mutex<BTreeMap<FrontKey, u16>>,
}

/// (namespace, workload, application address, application port).
type FrontKey = (String, String, String, u16);

impl Fronts {
    pub fn new(ports: std::sync::Arc<std::sync::Mutex<Ports>>) -> Fronts {
        Fronts {
            ports,
            given: Default::default(),
        }
    }

    /// The sidecar port for an endpoint of a workload, given now if it has none yet.
    pub fn port(&self, e: &weft_registry::Endpoint) -> Option<u16> {
        let key = front_key(e);
        let mut given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(port) = given.get(&key) {
            return Some(*port);
        }
        let taken = self.ports.lock().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Ok(port) => {
                given.insert(key, port);
                Some(port)
            }
            Err(err) => {
                let (ns, name, address, port) = &key;
                tracing::error!(
                    "{ns}/{name}: no port for its sidecar to front {address}:{port} on ({err:#}); the mesh sends to the application directly"
                );
                None
            }
        }
    }

    /// The sidecar port an endpoint was given, if it was.
    pub fn given(&self, e: &weft_registry::Endpoint) -> Option<u16> {
        let given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        given.get(&front_key(e)).copied()
    }

    /// A workload's fronted ports: (application address, application port) → sidecar port.
    pub fn of(&self, namespace: &str, workload: &str) -> Vec<(String, u16, u16)> {
        let given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        given
            .iter()
            .filter(|((ns, name, _, _), _)| ns == namespace && name == workload)
            .map(|((_, _, address, port), sidecar)| (address.clone(), *port, *sidecar))
            .collect()
    }
}

fn front_key(e: &weft_registry::Endpoint) -> FrontKey {
    (
        e.origin.namespace.clone(),
        e.origin.name.clone(),
        e.address.clone(),
        e.port,
    )
}

pub fn parse_port_map(pairs: &[String]) -> anyhow::Result<BTreeMap<u16, u16>> {
    pairs
        .iter()
        .map(|p| {
            let (a, b) = p
                .split_once('=')
                .with_context(|| format!("--gateway-port {p}: expected PORT=PORT"))?;
            Ok((a.trim().parse()?, b.trim().parse()?))
        })
        .collect()
}

/// The proxies the folder calls for: a sidecar per WorkloadEntry and Pod, a gateway per
/// distinct Gateway selector.
pub fn plan(resources: &[Resource], port_map: &BTreeMap<u16, u16>) -> Vec<ProxyPlan> {
    let mut out = Vec::new();
    let mut selectors: BTreeMap<Vec<(String, String)>, Vec<u16>> = BTreeMap::new();
    for r in resources {
        let (name, ns) = (r.name().to_string(), r.namespace().to_string());
        let workload = match r {
            Resource::WorkloadEntry(w) => Some((
                w.spec.address.clone().unwrap_or_else(|| "127.0.0.1".into()),
                w.spec.labels.clone(),
                w.spec
                    .locality
                    .clone()
                    .filter(|l| !l.is_empty())
                    .or_else(|| weft_registry::locality(&w.spec.labels)),
                w.spec.service_account.clone(),
            )),
            Resource::Pod(p) => Some((
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_else(|| "127.0.0.1".into()),
                p.metadata.labels.clone(),
                weft_registry::locality(&p.metadata.labels),
                p.spec.as_ref().and_then(|s| s.service_account_name.clone()),
            )),
            Resource::Gateway(g) => {
                let key: Vec<(String, String)> = g.spec.selector.clone().into_iter().collect();
                let entry = selectors.entry(key).or_default();
                for s in &g.spec.servers {
                    if let Some(n) = s.port.as_ref().and_then(|p| p.number) {
                        entry.push(u16::try_from(n).unwrap_or(0));
                    }
                }
                None
            }
            _ => None,
        };
        if let Some((ip, labels, locality, account)) = workload {
            out.push(ProxyPlan {
                label: format!("sidecar {ns}/{name}"),
                kind: Kind::Sidecar,
                node_id: format!("sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local"),
                namespace: ns,
                workload: name,
                labels,
                locality,
                gateway_ports: Vec::new(),
                service_account: account
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| "default".into()),
            });
        }
    }
    for (i, (selector, mut server_ports)) in selectors.into_iter().enumerate() {
        if selector.is_empty() {
            continue;
        }
        server_ports.sort_unstable();
        server_ports.dedup();
        let name = selector
            .iter()
            .find(|(k, _)| k == "istio")
            .map_or_else(|| format!("gateway-{i}"), |(_, v)| format!("istio-{v}"));
        let shown: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(ProxyPlan {
            label: format!("gateway {}", shown.join(",")),
            kind: Kind::Gateway,
            node_id: format!("router~127.0.0.1~{name}.istio-system~istio-system.svc.cluster.local"),
            namespace: "istio-system".into(),
            workload: name,
            labels: selector.into_iter().collect(),
            locality: None,
            gateway_ports: server_ports
                .into_iter()
                .map(|p| (p, port_map.get(&p).copied().unwrap_or(p)))
                .collect(),
            service_account: "istio-ingressgateway-service-account".into(),
        });
    }
    out
}

/// The bootstrap a proxy starts from: its identity, its admin port, and ADS at the control
/// plane. Envoy and `weft proxy` both take it.
pub fn bootstrap(
    p: &ProxyPlan,
    ports: ProxyPorts,
    xds: SocketAddr,
    gateway_address: &str,
    sds_socket: Option<&std::path::Path>,
) -> serde_json::Value {
    let mut metadata = json!({
        "NAME": p.workload,
        "NAMESPACE": p.namespace,
        "WORKLOAD_NAME": p.workload,
        "SERVICE_ACCOUNT": p.service_account,
        "CLUSTER_ID": CLUSTER_ID,
        "LABELS": canonical_labels(p),
        "INTERCEPTION_MODE": "NONE",
    });
    if let Some(port) = ports.http_proxy {
        metadata["HTTP_PROXY_PORT"] = json!(port.to_string());
    }
    if !p.gateway_ports.is_empty() {
        let map: Vec<String> = p
            .gateway_ports
            .iter()
            .map(|(a, b)| format!("{a}={b}"))
            .collect();
        metadata["WEFT_GATEWAY_PORTS"] = json!(map.join(","));
        metadata["WEFT_GATEWAY_ADDRESS"] = json!(gateway_address);
    }
    let mut node =
        json!({ "id": p.node_id, "cluster": p.label.replace(' ', "-"), "metadata": metadata });
    if let Some(l) = &p.locality {
        let mut parts = l.splitn(3, '/');
        node["locality"] = json!({
            "region": parts.next().unwrap_or(""),
            "zone": parts.next().unwrap_or(""),
            "sub_zone": parts.next().unwrap_or(""),
        });
    }
    let mut clusters = vec![
        prometheus_stats_cluster(ports.admin),
        grpc_cluster(
            "xds-grpc",
            json!({ "socket_address": { "address": xds.ip().to_string(), "port_value": xds.port() } }),
        ),
    ];
    // Istio's `sds-grpc`: where Envoy reads secrets `default` and `ROOTCA` from its agent.
    if let Some(socket) = sds_socket {
        clusters.push(grpc_cluster(
            "sds-grpc",
            json!({ "pipe": { "path": socket.display().to_string() } }),
        ));
    }
    json!({
        "node": node,
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": ports.admin } } },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [ { "envoy_grpc": { "cluster_name": "xds-grpc" } } ]
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" }
        },
        "static_resources": {
            "listeners": [prometheus_stats_listener(ports.stats)],
            "clusters": clusters
        }
    })
}

/// Istio's cluster id when there is one cluster: what `source_cluster` and
/// `destination_cluster` say.
pub const CLUSTER_ID: &str = "Kubernetes";

/// The workload's labels with the canonical service and revision Istio's injector adds: the
/// labels if set, else the app's name and version labels, else the workload's name and
/// `latest`.
fn canonical_labels(p: &ProxyPlan) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = p.labels.clone().into_iter().collect();
    let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let name = first(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| p.workload.clone());
    let revision = first(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".into());
    labels.insert("service.istio.io/canonical-name".into(), name);
    labels.insert("service.istio.io/canonical-revision".into(), revision);
    labels
}

/// Istio's `prometheus_stats` listener (15090): `/stats/prometheus` from the admin, and
/// nothing else of it, as Istio's bootstrap has it.
fn prometheus_stats_listener(port: u16) -> serde_json::Value {
    json!({
        "name": "prometheus_stats",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [ { "filters": [ {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "stats",
                "route_config": { "virtual_hosts": [ {
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [ {
                        "match": { "prefix": "/stats/prometheus" },
                        "route": { "cluster": "prometheus_stats" }
                    } ]
                } ] },
                "http_filters": [ {
                    "name": "envoy.filters.http.router",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
                } ]
            }
        } ] } ]
    })
}

fn prometheus_stats_cluster(admin: u16) -> serde_json::Value {
    json!({
        "name": "prometheus_stats",
        "type": "STATIC",
        "connect_timeout": "0.250s",
        "load_assignment": { "cluster_name": "prometheus_stats", "endpoints": [ { "lb_endpoints": [ {
            "endpoint": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin } } }
        } ] } ] }
    })
}

/// A static cluster of one gRPC server (HTTP/2) at `address`.
fn grpc_cluster(name: &str, address: serde_json::Value) -> serde_json::Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }
        },
        "load_assignment": { "cluster_name": name, "endpoints": [ { "lb_endpoints": [ {
            "endpoint": { "address": address }
        } ] } ] }
    })
}

/// Free on every address, as a listener on 0.0.0.0 needs it.
fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}
