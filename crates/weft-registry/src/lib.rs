//! The service registry: which services exist, on which ports and protocols, and which
//! endpoints serve them. Built from loaded objects — Kubernetes Services with their
//! EndpointSlices, Endpoints or Pods, and Istio ServiceEntries with their inline endpoints or
//! the WorkloadEntries and Pods their `workloadSelector` picks — with no I/O, so that
//! translation can be tested on plain values.

pub mod analysis;
pub mod host;
mod kube;
pub mod protocol;
pub mod references;
mod service_entry;
pub mod source;

pub use protocol::Protocol;

use std::collections::BTreeMap;
use weft_api::Resource;
use weft_api::types::common::Labels;

/// Mesh-wide settings the registry needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster's DNS suffix: `cluster.local` unless the mesh config says otherwise.
    pub domain_suffix: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            domain_suffix: "cluster.local".into(),
        }
    }
}

/// The object something in the registry came from, for `weft proxy-config` and error messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// How clients find a service's endpoints, in Istio's terms (and the Envoy cluster type each
/// becomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Endpoints known to the control plane, sent over EDS.
    ClientSideLb,
    /// Every endpoint name resolved and balanced over (STRICT_DNS).
    DnsLb,
    /// One name resolved, its answers rotated (LOGICAL_DNS).
    DnsRoundRobin,
    /// The client's original destination (ORIGINAL_DST).
    Passthrough,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub number: u16,
    pub protocol: Protocol,
}

/// A service: one host name in one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub hostname: String,
    pub namespace: String,
    /// Virtual IPs (a Kubernetes cluster IP, a ServiceEntry's `addresses`).
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    /// A ServiceEntry with `location: MESH_EXTERNAL` (its default): no sidecar on the other side.
    pub mesh_external: bool,
    /// `exportTo` (`*` when unset: visible to every namespace).
    pub export_to: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    pub origin: Origin,
    /// Which endpoints clients prefer when no DestinationRule sets locality balancing.
    pub traffic_distribution: TrafficDistribution,
    /// Identities the service declares for secure naming besides its endpoints' accounts: a
    /// ServiceEntry's `subjectAltNames`, as written.
    pub service_accounts: Vec<String>,
}

/// A Kubernetes Service's `trafficDistribution`, or Istio's `networking.istio.io/traffic-distribution`
/// annotation (the way to set it on a ServiceEntry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficDistribution {
    #[default]
    Any,
    /// `PreferSameZone`, or `PreferClose` (its older name).
    PreferSameZone,
    PreferSameNode,
}

const TRAFFIC_DISTRIBUTION: &str = "networking.istio.io/traffic-distribution";

/// istiod's `GetTrafficDistribution`: the spec's value if it is one Kubernetes defines, else the
/// annotation's, compared without case; any other annotation value means no preference, which
/// is reported rather than passed over.
pub(crate) fn traffic_distribution(
    spec: Option<&str>,
    annotations: &BTreeMap<String, String>,
    origin: &Origin,
    problems: &mut Vec<String>,
) -> TrafficDistribution {
    match spec {
        Some("PreferSameZone" | "PreferClose") => return TrafficDistribution::PreferSameZone,
        Some("PreferSameNode") => return TrafficDistribution::PreferSameNode,
        _ => {}
    }
    let Some(value) = annotations.get(TRAFFIC_DISTRIBUTION) else {
        return TrafficDistribution::Any;
    };
    match value.to_ascii_lowercase().as_str() {
        "preferclose" | "prefersamezone" => TrafficDistribution::PreferSameZone,
        "prefersamenode" => TrafficDistribution::PreferSameNode,
        "" => TrafficDistribution::Any,
        _ => {
            problems.push(format!(
                "{origin}: metadata.annotations[{TRAFFIC_DISTRIBUTION}]: {value:?} is not PreferClose, PreferSameZone or PreferSameNode; as in Istio, no preference applies"
            ));
            TrafficDistribution::Any
        }
    }
}

/// One address serving one port of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// An IP, or a DNS name for DNS resolution.
    pub address: String,
    /// The service port this endpoint serves.
    pub service_port: u16,
    /// Where to connect on `address`.
    pub port: u16,
    pub labels: Labels,
    /// `region/zone/subzone`.
    pub locality: Option<String>,
    pub weight: u32,
    pub service_account: Option<String>,
    pub network: Option<String>,
    /// Not ready endpoints are known but not sent traffic.
    pub ready: bool,
    pub origin: Origin,
    /// Without capture (`weft up`), where the workload's application listens when its sidecar
    /// fronts it: `address:port` above is then the sidecar's inbound listener, the one the
    /// mesh sends to.
    pub application: Option<(String, u16)>,
}

/// Everything the registry found, and what it could not use.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Sorted by host name, then namespace.
    pub services: Vec<Service>,
    /// Objects (or parts) that could not be used, each naming the object and the reason.
    pub problems: Vec<String>,
}

impl Registry {
    pub fn build(resources: &[Resource], options: &Options) -> Registry {
        let index = Index::new(resources);
        let mut registry = Registry::default();
        for r in resources {
            match r {
                Resource::Service(s) => kube::service(s, &index, options, &mut registry),
                Resource::ServiceEntry(se) => service_entry::services(se, &index, &mut registry),
                _ => {}
            }
        }
        registry
            .services
            .sort_by(|a, b| (&a.hostname, &a.namespace).cmp(&(&b.hostname, &b.namespace)));
        registry
    }

    /// Services of that host name, in every namespace that defines it.
    pub fn by_host<'a, 'h>(&'a self, hostname: &'h str) -> impl Iterator<Item = &'a Service> + 'h
    where
        'a: 'h,
    {
        self.services.iter().filter(move |s| s.hostname == hostname)
    }
}

/// The objects services draw their endpoints from, by namespace.
pub(crate) struct Index<'a> {
    pub pods: Vec<&'a weft_api::types::kube::Pod>,
    pub slices: Vec<&'a weft_api::types::kube::EndpointSlice>,
    pub endpoints: Vec<&'a weft_api::types::kube::Endpoints>,
    pub workload_entries: Vec<(
        &'a weft_api::types::common::ObjectMeta,
        &'a weft_api::types::service_entry::WorkloadEntry,
    )>,
}

impl<'a> Index<'a> {
    fn new(resources: &'a [Resource]) -> Index<'a> {
        let mut index = Index {
            pods: Vec::new(),
            slices: Vec::new(),
            endpoints: Vec::new(),
            workload_entries: Vec::new(),
        };
        for r in resources {
            match r {
                Resource::Pod(p) => index.pods.push(p),
                Resource::EndpointSlice(s) => index.slices.push(s),
                Resource::Endpoints(e) => index.endpoints.push(e),
                Resource::WorkloadEntry(w) => index.workload_entries.push((&w.metadata, &w.spec)),
                _ => {}
            }
        }
        index
    }
}

/// An endpoint with nothing known of its workload (an address from DNS, an Endpoints object
/// without a Pod).
pub(crate) fn endpoint(address: String, service_port: u16, port: u16, origin: &Origin) -> Endpoint {
    Endpoint {
        address,
        service_port,
        port,
        labels: Labels::new(),
        locality: None,
        weight: 1,
        service_account: None,
        network: None,
        ready: true,
        origin: origin.clone(),
        application: None,
    }
}

/// Labels, locality and service account of the Pod an address belongs to.
pub(crate) fn with_pod(mut e: Endpoint, pod: Option<&weft_api::types::kube::Pod>) -> Endpoint {
    if let Some(pod) = pod {
        e.labels = pod.metadata.labels.clone();
        e.locality = locality(&e.labels);
        e.service_account = Some(
            pod.spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        );
    }
    e
}

/// A Pod's IP, once it has one.
pub(crate) fn pod_ip(pod: &weft_api::types::kube::Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

pub(crate) fn pod_origin(pod: &weft_api::types::kube::Pod) -> Origin {
    Origin {
        kind: "Pod",
        namespace: namespace(&pod.metadata),
        name: pod.metadata.name.clone().unwrap_or_default(),
    }
}

/// A namespace as written, or Kubernetes' `default`.
pub(crate) fn namespace(meta: &weft_api::types::common::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

/// Whether `labels` has every pair of `selector` (an empty selector selects everything).
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A workload's `region/zone/subzone` from its labels, as istiod reads them: the topology
/// labels (`topology.kubernetes.io/region`, `.../zone`, `topology.istio.io/subzone`) when any is
/// there, else `topology.istio.io/locality` or the older `istio-locality` (`region.zone.subzone`,
/// dots for slashes).
pub fn locality(labels: &Labels) -> Option<String> {
    let topology = [
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.istio.io/subzone",
    ];
    if topology.iter().any(|k| labels.contains_key(*k)) {
        let part = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        return Some(format!(
            "{}/{}/{}",
            part(topology[0]),
            part(topology[1]),
            part(topology[2])
        ));
    }
    labels
        .get("topology.istio.io/locality")
        .or_else(|| labels.get("istio-locality"))
        .map(|l| l.replace('.', "/"))
        .filter(|l| !l.is_empty())
}

pub(crate) fn port_number(n: Option<i64>) -> Option<u16> {
    n.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0)
}

pub(crate) fn export_to(annotations: &BTreeMap<String, String>) -> Vec<String> {
    match annotations.get("networking.istio.io/exportTo") {
        Some(v) => v
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => vec!["*".into()],
    }
}
