//! The kinds Weft reads, by API group, version and kind, and the typed object for each.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::de::{Context, DeError, from_node};
use crate::path::FieldPath;
use crate::types::common::ObjectMeta;
use crate::types::destination_rule::DestinationRule;
use crate::types::envoy_filter::EnvoyFilter;
use crate::types::gateway::Gateway;
use crate::types::kube::{
    ConfigMap, EndpointSlice, Endpoints, GatewayApiObject, MetaOnly, Pod, Secret, Service, Workload,
};
use crate::types::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::types::service_entry::{ServiceEntry, WorkloadEntry, WorkloadGroup};
use crate::types::sidecar::Sidecar;
use crate::types::telemetry::Telemetry;
use crate::types::virtual_service::VirtualService;
use crate::yaml::Node;

/// An Istio custom resource: Kubernetes envelope around a typed `spec`.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioObject<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resource {
    VirtualService(Box<IstioObject<VirtualService>>),
    DestinationRule(Box<IstioObject<DestinationRule>>),
    Gateway(Box<IstioObject<Gateway>>),
    ServiceEntry(Box<IstioObject<ServiceEntry>>),
    Sidecar(Box<IstioObject<Sidecar>>),
    WorkloadEntry(Box<IstioObject<WorkloadEntry>>),
    WorkloadGroup(Box<IstioObject<WorkloadGroup>>),
    EnvoyFilter(Box<IstioObject<EnvoyFilter>>),
    PeerAuthentication(Box<IstioObject<PeerAuthentication>>),
    RequestAuthentication(Box<IstioObject<RequestAuthentication>>),
    AuthorizationPolicy(Box<IstioObject<AuthorizationPolicy>>),
    Telemetry(Box<IstioObject<Telemetry>>),
    Namespace(Box<MetaOnly>),
    ServiceAccount(Box<MetaOnly>),
    /// Read for its labels (topology), as analysis and locality read them.
    Node(Box<MetaOnly>),
    Service(Box<Service>),
    Endpoints(Box<Endpoints>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    /// Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob.
    Workload(Box<Workload>),
    ConfigMap(Box<ConfigMap>),
    Secret(Box<Secret>),
    /// Gateway API Gateway and HTTPRoute.
    GatewayApi(Box<GatewayApiObject>),
    /// A kind Weft does not serve (a webhook configuration, a CRD, a WasmPlugin...), kept with
    /// its envelope for analysis only: nothing translates it.
    Other(Box<MetaOnly>),
}

impl Resource {
    pub fn metadata(&self) -> &ObjectMeta {
        self.parts().2
    }

    /// apiVersion, kind and metadata: every variant carries the Kubernetes envelope.
    fn parts(&self) -> (&str, &str, &ObjectMeta) {
        match self {
            Resource::VirtualService(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::DestinationRule(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Gateway(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::ServiceEntry(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Sidecar(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::WorkloadEntry(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::WorkloadGroup(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::EnvoyFilter(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::PeerAuthentication(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::RequestAuthentication(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::AuthorizationPolicy(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Telemetry(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Namespace(o)
            | Resource::ServiceAccount(o)
            | Resource::Node(o)
            | Resource::Other(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Service(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Endpoints(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::EndpointSlice(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Pod(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Workload(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::ConfigMap(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::Secret(o) => (&o.api_version, &o.kind, &o.metadata),
            Resource::GatewayApi(o) => (&o.api_version, &o.kind, &o.metadata),
        }
    }

    /// For tools that place objects, as `istioctl analyze` gives namespace-less ones the
    /// selected namespace.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Resource::VirtualService(o) => &mut o.metadata,
            Resource::DestinationRule(o) => &mut o.metadata,
            Resource::Gateway(o) => &mut o.metadata,
            Resource::ServiceEntry(o) => &mut o.metadata,
            Resource::Sidecar(o) => &mut o.metadata,
            Resource::WorkloadEntry(o) => &mut o.metadata,
            Resource::WorkloadGroup(o) => &mut o.metadata,
            Resource::EnvoyFilter(o) => &mut o.metadata,
            Resource::PeerAuthentication(o) => &mut o.metadata,
            Resource::RequestAuthentication(o) => &mut o.metadata,
            Resource::AuthorizationPolicy(o) => &mut o.metadata,
            Resource::Telemetry(o) => &mut o.metadata,
            Resource::Namespace(o)
            | Resource::ServiceAccount(o)
            | Resource::Node(o)
            | Resource::Other(o) => &mut o.metadata,
            Resource::Service(o) => &mut o.metadata,
            Resource::Endpoints(o) => &mut o.metadata,
            Resource::EndpointSlice(o) => &mut o.metadata,
            Resource::Pod(o) => &mut o.metadata,
            Resource::Workload(o) => &mut o.metadata,
            Resource::ConfigMap(o) => &mut o.metadata,
            Resource::Secret(o) => &mut o.metadata,
            Resource::GatewayApi(o) => &mut o.metadata,
        }
    }

    /// The kind as written (`Deployment`, `VirtualService`...).
    pub fn kind(&self) -> &str {
        self.parts().1
    }

    pub fn api_version(&self) -> &str {
        self.parts().0
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// The namespace, `default` when unset (as `kubectl apply` would place it).
    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or("default")
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

type ParseFn = fn(&Node, &Context) -> Result<Resource, DeError>;

/// One kind Weft reads.
pub struct KindInfo {
    pub group: &'static str,
    pub kind: &'static str,
    pub versions: &'static [&'static str],
    parse: ParseFn,
}

/// Reads any object's envelope, for kinds Weft does not serve.
pub fn other(node: &Node) -> Result<Resource, DeError> {
    typed(node, &Context::default()).map(|o| Resource::Other(Box::new(o)))
}

impl KindInfo {
    pub fn parse(&self, node: &Node, ctx: &Context) -> Result<Resource, DeError> {
        (self.parse)(node, ctx)
    }
}

fn typed<T: DeserializeOwned>(node: &Node, ctx: &Context) -> Result<T, DeError> {
    from_node(node, FieldPath::root(), ctx)
}

const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY: &[&str] = &["v1", "v1beta1"];
const TELEMETRY: &[&str] = &["v1", "v1alpha1"];
const APPS: &[&str] = &["v1", "v1beta2", "v1beta1"];

macro_rules! kinds {
    ($($group:literal $kind:literal $versions:expr => $variant:ident;)*) => {
        /// Every kind Weft reads.
        pub static KINDS: &[KindInfo] = &[$(
            KindInfo {
                group: $group,
                kind: $kind,
                versions: $versions,
                parse: |n, c| typed(n, c).map(|o| Resource::$variant(Box::new(o))),
            },
        )*];
    };
}

kinds! {
    "networking.istio.io" "VirtualService" NETWORKING => VirtualService;
    "networking.istio.io" "DestinationRule" NETWORKING => DestinationRule;
    "networking.istio.io" "Gateway" NETWORKING => Gateway;
    "networking.istio.io" "ServiceEntry" NETWORKING => ServiceEntry;
    "networking.istio.io" "Sidecar" NETWORKING => Sidecar;
    "networking.istio.io" "WorkloadEntry" NETWORKING => WorkloadEntry;
    "networking.istio.io" "WorkloadGroup" NETWORKING => WorkloadGroup;
    "networking.istio.io" "EnvoyFilter" &["v1alpha3"] => EnvoyFilter;
    "security.istio.io" "PeerAuthentication" SECURITY => PeerAuthentication;
    "security.istio.io" "RequestAuthentication" SECURITY => RequestAuthentication;
    "security.istio.io" "AuthorizationPolicy" SECURITY => AuthorizationPolicy;
    "telemetry.istio.io" "Telemetry" TELEMETRY => Telemetry;
    "" "Namespace" &["v1"] => Namespace;
    "" "ServiceAccount" &["v1"] => ServiceAccount;
    "" "Node" &["v1"] => Node;
    "" "Service" &["v1"] => Service;
    "" "Endpoints" &["v1"] => Endpoints;
    "discovery.k8s.io" "EndpointSlice" &["v1", "v1beta1"] => EndpointSlice;
    "" "Pod" &["v1"] => Pod;
    "apps" "Deployment" APPS => Workload;
    "extensions" "Deployment" &["v1beta1"] => Workload;
    "apps" "StatefulSet" APPS => Workload;
    "apps" "DaemonSet" APPS => Workload;
    "extensions" "DaemonSet" &["v1beta1"] => Workload;
    "apps" "ReplicaSet" APPS => Workload;
    "batch" "Job" &["v1"] => Workload;
    "batch" "CronJob" &["v1", "v1beta1"] => Workload;
    "" "ConfigMap" &["v1"] => ConfigMap;
    "" "Secret" &["v1"] => Secret;
    "gateway.networking.k8s.io" "Gateway" &["v1", "v1beta1"] => GatewayApi;
    "gateway.networking.k8s.io" "HTTPRoute" &["v1", "v1beta1"] => GatewayApi;
}

/// Every kind Istio's CRDs define (`../shared/istio/crd`), by group: a kind in these groups that
/// is not one of them is a typo, not a kind someone else owns, so it is refused rather than
/// skipped.
pub static ISTIO_KINDS: &[(&str, &str)] = &[
    ("networking.istio.io", "VirtualService"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "Gateway"),
    ("networking.istio.io", "ServiceEntry"),
    ("networking.istio.io", "Sidecar"),
    ("networking.istio.io", "WorkloadEntry"),
    ("networking.istio.io", "WorkloadGroup"),
    ("networking.istio.io", "EnvoyFilter"),
    ("networking.istio.io", "ProxyConfig"),
    ("security.istio.io", "PeerAuthentication"),
    ("security.istio.io", "RequestAuthentication"),
    ("security.istio.io", "AuthorizationPolicy"),
    ("telemetry.istio.io", "Telemetry"),
    ("extensions.istio.io", "WasmPlugin"),
    ("extensions.istio.io", "TrafficExtension"),
];

/// Why an `apiVersion`/`kind` in one of Istio's groups names no Istio kind, with the kind that
/// was probably meant; `None` when the group is not Istio's or the kind exists.
pub fn unknown_istio_kind(api_version: &str, kind: &str) -> Option<String> {
    let (group, _) = split_api_version(api_version);
    if !ISTIO_KINDS.iter().any(|(g, _)| *g == group) {
        return None;
    }
    if ISTIO_KINDS.iter().any(|(g, k)| *g == group && *k == kind) {
        return None;
    }
    let lower = kind.to_ascii_lowercase();
    let best = ISTIO_KINDS
        .iter()
        .map(|(g, k)| (edit_distance(&lower, &k.to_ascii_lowercase()), *g, *k))
        .min();
    let hint = match best {
        Some((d, g, k)) if d <= 3 || lower == k.to_ascii_lowercase() => {
            if g == group {
                format!("; did you mean {k}?")
            } else {
                format!("; did you mean {k} (in {g})?")
            }
        }
        _ => String::new(),
    };
    let kinds: Vec<&str> = ISTIO_KINDS
        .iter()
        .filter(|(g, _)| *g == group)
        .map(|(_, k)| *k)
        .collect();
    Some(format!(
        "no kind {kind:?} is served in {group} (its kinds: {}){hint}",
        kinds.join(", ")
    ))
}

/// Levenshtein distance, for "did you mean" hints on short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// What an `apiVersion`/`kind` pair names.
pub enum Lookup {
    Known(&'static KindInfo),
    /// A kind Weft reads, in a version it does not serve.
    UnsupportedVersion(&'static KindInfo),
    /// Not a kind Weft reads: skipped, not an error.
    Unknown,
}

/// Splits `group/version` (`v1` alone is the core group).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

pub fn lookup(api_version: &str, kind: &str) -> Lookup {
    let (group, version) = split_api_version(api_version);
    let mut same_kind = None;
    for info in KINDS {
        if info.group == group && info.kind == kind {
            if info.versions.contains(&version) {
                return Lookup::Known(info);
            }
            same_kind = Some(info);
        }
    }
    same_kind.map_or(Lookup::Unknown, Lookup::UnsupportedVersion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_group_version_kind() {
        assert!(
            matches!(lookup("networking.istio.io/v1alpha3", "Gateway"), Lookup::Known(i) if i.group == "networking.istio.io")
        );
        assert!(
            matches!(lookup("gateway.networking.k8s.io/v1", "Gateway"), Lookup::Known(i) if i.group == "gateway.networking.k8s.io")
        );
        assert!(matches!(
            lookup("networking.istio.io/v2", "VirtualService"),
            Lookup::UnsupportedVersion(_)
        ));
        assert!(matches!(
            lookup("install.istio.io/v1alpha1", "IstioOperator"),
            Lookup::Unknown
        ));
        assert!(matches!(lookup("v1", "Service"), Lookup::Known(_)));
        let typo = unknown_istio_kind("networking.istio.io/v1", "VirtualServise");
        assert!(
            typo.as_deref()
                .is_some_and(|t| t.ends_with("did you mean VirtualService?")),
            "{typo:?}"
        );
        let moved = unknown_istio_kind("networking.istio.io/v1", "AuthorizationPolicy");
        assert!(
            moved.as_deref().is_some_and(
                |t| t.ends_with("did you mean AuthorizationPolicy (in security.istio.io)?")
            ),
            "{moved:?}"
        );
        assert_eq!(
            unknown_istio_kind("networking.istio.io/v1beta1", "ProxyConfig"),
            None
        );
        assert_eq!(
            unknown_istio_kind("install.istio.io/v1alpha1", "IstioOperator"),
            None
        );
        assert!(
            unknown_istio_kind("telemetry.istio.io/v1", "Widget")
                .is_some_and(|t| !t.contains("did you mean"))
        );
        assert!(matches!(
            lookup("apps/v1beta1", "Deployment"),
            Lookup::Known(_)
        ));
    }
}
