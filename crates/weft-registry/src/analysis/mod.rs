//! `istioctl analyze` in Weft: Istio's analyzers, by their istioctl names, over a set of
//! objects, with Istio's message codes, levels and templates. What validation of one object
//! cannot see (a reference to a host nobody serves, two gateways on one port) is found here.
//!
//! Objects without a namespace take the selected one, as istioctl places file input; Istio's
//! own analyzer tests select `""`, and so does the corpus test.

mod annotations;
mod authn;
mod authz;
pub mod catalog;
mod conditions;
mod deployment;
mod deprecation;
mod destination_rule;
mod envoy_filter;
mod format;
mod gateway;
mod gateway_secret;
mod hosts;
mod injection;
mod json;
mod jwt_claim_route;
mod k8s_gateway;
mod label_selector;
mod live;
mod mesh_networks;
mod multicluster;
mod schema;
mod schema_kinds;
mod service;
mod service_entry;
mod telemetry;
mod virtual_service;
mod webhook;

use catalog::MessageType;
pub use format::go_format;
use std::fmt;
use weft_api::load::{LoadResult, Loaded, Problem, Severity};
use weft_api::path::FieldPath;
use weft_api::types::mesh::MeshConfig;

/// A message's severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    /// istioctl's level names, without regard to case.
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Some(Level::Info),
            "warning" => Some(Level::Warning),
            "error" => Some(Level::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }
}

/// The object a message is about: `Kind namespace/name`, or `Kind name` without a namespace
/// (istio's `Origin.FriendlyName`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResourceId {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub message_type: &'static MessageType,
    pub resource: ResourceId,
    /// `file:line` of the object or of the field the message is about, when it came from a file.
    pub reference: Option<String>,
    pub text: String,
    /// The same finding as `weft up` and `weft validate` report problems: at the field, with
    /// the code after the text. `None` when the object came from no file.
    pub problem: Option<Problem>,
}

impl fmt::Display for Message {
    /// istioctl's log format: `Level [CODE] (Kind ns/name file:line) text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] ({}",
            self.message_type.level.as_str(),
            self.message_type.code,
            self.resource
        )?;
        if let Some(r) = &self.reference {
            write!(f, " {r}")?;
        }
        write!(f, ") {}", self.text)
    }
}

/// What the analyzers read: the objects (namespaced ones placed in a namespace) and the mesh
/// config.
pub struct Context {
    pub objects: Vec<Loaded>,
    pub mesh: MeshConfig,
    /// The mesh networks (`meshNetworks` in Istio's values), as written.
    pub mesh_networks: Option<serde_json::Value>,
    /// For a multi-cluster analysis, the cluster each input file came from; a file not listed
    /// belongs to no remote cluster.
    pub cluster_by_file: std::collections::BTreeMap<String, String>,
    pub domain_suffix: String,
    /// A running mesh (`weft up`, `weft validate`), whose validation already reports what the
    /// schema analyzers would.
    pub live: bool,
}

/// Kinds without a namespace: they keep none when placed.
fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "Node"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
            | "CustomResourceDefinition"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "GatewayClass"
            | "PersistentVolume"
            | "StorageClass"
            | "PriorityClass"
            | "APIService"
    )
}

/// Istio's default resources for file input (`AddDefaultResources`): a stand-in ingress gateway
/// Pod and Service in the Istio namespace, unless the mesh turns the ingress controller off.
const DEFAULT_RESOURCES: &str = include_str!("default_resources.yaml");

impl Context {
    /// The objects a running mesh serves, as `weft up` holds them, with the Pods it runs for
    /// them in place of Istio's stand-in resources.
    pub fn live(objects: Vec<Loaded>, mesh: MeshConfig) -> Context {
        let mut ctx = Context::build(objects, "default", mesh, false);
        ctx.live = true;
        let pods = live::pods(&ctx.objects);
        ctx.objects.extend(pods);
        ctx
    }

    /// Objects read from files, as `istioctl analyze` takes them: `default_namespace` goes to
    /// every namespaced object that has none, and Istio's default resources are added.
    pub fn new(objects: Vec<Loaded>, default_namespace: &str, mesh: MeshConfig) -> Context {
        Context::build(objects, default_namespace, mesh, true)
    }

    fn build(
        objects: Vec<Loaded>,
        default_namespace: &str,
        mesh: MeshConfig,
        defaults: bool,
    ) -> Context {
        let mut objects = objects;
        let ingress_off = !defaults
            || mesh
                .other
                .get("ingressControllerMode")
                .and_then(|v| v.as_str())
                .is_some_and(|m| m.eq_ignore_ascii_case("OFF"));
        if !ingress_off {
            let mut defaults = LoadResult::default();
            defaults.load_str("<default resources>", DEFAULT_RESOURCES);
            for mut d in defaults.objects {
                // No file: istioctl prints no reference for them.
                d.origin.file.clear();
                objects.push(d);
            }
        }
        // istioctl leaves Kubernetes' own namespaces out (inject.IgnoredNamespaces).
        objects.retain(|o| {
            !matches!(
                o.resource.metadata().namespace.as_deref(),
                Some("kube-system" | "kube-public" | "kube-node-lease" | "local-path-storage")
            )
        });
        for o in &mut objects {
            if !cluster_scoped(o.resource.kind()) {
                o.resource
                    .metadata_mut()
                    .namespace
                    .get_or_insert_with(|| default_namespace.to_string());
            }
        }
        Context {
            objects,
            mesh,
            mesh_networks: None,
            cluster_by_file: std::collections::BTreeMap::new(),
            live: false,
            // istiod's DOMAIN_SUFFIX; the mesh config does not carry it.
            domain_suffix: "cluster.local".to_string(),
        }
    }

    /// The object as written, for fields Weft's types do not carry.
    pub fn json(o: &Loaded) -> serde_json::Value {
        o.raw.to_json()
    }

    /// The namespace an object is in (`""` only under Istio's test harness).
    pub fn namespace(o: &Loaded) -> &str {
        o.resource.metadata().namespace.as_deref().unwrap_or("")
    }

    /// `ns/name`, or `name` without a namespace (Istio's `FullName.String()`), as messages
    /// name objects in their text.
    pub fn full_name(o: &Loaded) -> String {
        let ns = Self::namespace(o);
        if ns.is_empty() {
            o.resource.name().to_string()
        } else {
            format!("{ns}/{}", o.resource.name())
        }
    }

    pub fn resource_id(o: &Loaded) -> ResourceId {
        ResourceId {
            kind: o.resource.kind().to_string(),
            namespace: Self::namespace(o).to_string(),
            name: o.resource.name().to_string(),
        }
    }
}

/// Where analyzers put what they find.
pub struct Findings {
    pub messages: Vec<Message>,
}

impl Findings {
    /// A message of type `code` about `o`, at the line of `path` in it, with the template's
    /// arguments.
    pub fn add(&mut self, o: &Loaded, path: &FieldPath, code: &str, args: &[String]) {
        let Some(t) = catalog::by_code(code) else {
            return;
        };
        let text = go_format(t.template, args);
        let problem = (!o.origin.file.is_empty()).then(|| {
            // Every finding is a warning to `weft up`: the object applies all the same, as
            // istiod applies it; Istio's level is in the code.
            let mut p = o.problem(
                Severity::Warning,
                path.clone(),
                format!("{text} [{} {}]", t.code, t.level.as_str()),
            );
            if p.line == 0 {
                p.line = o.origin.line;
            }
            p
        });
        self.messages.push(Message {
            message_type: t,
            resource: Context::resource_id(o),
            reference: problem.as_ref().map(|p| format!("{}:{}", p.file, p.line)),
            text,
            problem,
        });
    }
}

impl Findings {
    /// A message about something that is no object of the input (Istio's pseudo-resource
    /// `MeshNetworks istio-system/meshnetworks`): no file, no line.
    pub fn add_pseudo(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        code: &str,
        args: &[String],
    ) {
        let Some(t) = catalog::by_code(code) else {
            return;
        };
        self.messages.push(Message {
            message_type: t,
            resource: ResourceId {
                kind: kind.into(),
                namespace: namespace.into(),
                name: name.into(),
            },
            reference: None,
            text: go_format(t.template, args),
            problem: None,
        });
    }
}

/// One analyzer, as istioctl names it.
pub struct Analyzer {
    pub name: &'static str,
    pub description: &'static str,
    pub run: fn(&Context, &mut Findings),
}

/// Every analyzer Weft has, by istioctl's names.
pub static ANALYZERS: &[Analyzer] = &[
    Analyzer {
        name: "annotations.K8sAnalyzer",
        description: "Checks for misplaced and invalid Istio annotations in Kubernetes resources",
        run: annotations::misplaced_and_invalid,
    },
    Analyzer {
        name: "annotations.AlphaAnalyzer",
        description: "Checks for alpha Istio annotations in Kubernetes resources",
        run: annotations::alpha_annotations,
    },
    Analyzer {
        name: "auth.AuthorizationPoliciesAnalyzer",
        description: "Checks the validity of authorization policies",
        run: authz::authorization_policies,
    },
    Analyzer {
        name: "applicationUID.Analyzer",
        description: "Checks invalid application UID",
        run: deployment::application_uid,
    },
    Analyzer {
        name: "authn.BlockedCIDRsAnalyzer",
        description: "Checks that BLOCKED_CIDRS_IN_JWKS_URIS is configured on istiod when RequestAuthentication resources exist",
        run: authn::blocked_cidrs,
    },
    Analyzer {
        name: "conditions.ConditionAnalyzer",
        description: "Checks for negative status conditions on resources",
        run: conditions::negative_conditions,
    },
    Analyzer {
        name: "deprecation.DeprecationAnalyzer",
        description: "Checks for deprecated Istio types and fields",
        run: deprecation::deprecated_fields,
    },
    Analyzer {
        name: "deployment.MultiServiceAnalyzer",
        description: "Checks association between services and pods",
        run: deployment::multiple_services,
    },
    Analyzer {
        name: "destinationrule.CaCertificateAnalyzer",
        description: "Checks if gateway instance is using TLS without a CA certificate to verify the server",
        run: destination_rule::ca_certificates,
    },
    Analyzer {
        name: "destinationrule.SubsetSelectPodAnalyzer",
        description: "Checks that each DestinationRule subset selects pods and each host exists",
        run: destination_rule::subsets_select_pods,
    },
    Analyzer {
        name: "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
        description: "Checks if multiple virtual services associated with the mesh gateway have conflicting hosts",
        run: virtual_service::conflicting_mesh_gateway_hosts,
    },
    Analyzer {
        name: "virtualservice.JWTClaimRouteAnalyzer",
        description: "Checks the VirtualService using JWT claim based routing has corresponding RequestAuthentication",
        run: jwt_claim_route::jwt_claim_routes,
    },
    Analyzer {
        name: "virtualservice.DestinationHostAnalyzer",
        description: "Checks the destination hosts associated with each virtual service",
        run: virtual_service::destination_hosts,
    },
    Analyzer {
        name: "virtualservice.DestinationRuleAnalyzer",
        description: "Checks the destination rules associated with each virtual service",
        run: virtual_service::destination_rules,
    },
    Analyzer {
        name: "virtualservice.GatewayAnalyzer",
        description: "Checks the gateways associated with each virtual service",
        run: virtual_service::gateways,
    },
    Analyzer {
        name: "envoyfilter.EnvoyPatchAnalyzer",
        description: "Checks an envoyFilters ",
        run: envoy_filter::patches,
    },
    Analyzer {
        name: "externalcontrolplane.ExternalControlPlaneAnalyzer",
        description: "Checks that the remote IstioOperator resources reference an external control plane",
        run: webhook::external_control_plane,
    },
    Analyzer {
        name: "gateway.SecretAnalyzer",
        description: "Checks a gateway's referenced secrets for correctness",
        run: gateway_secret::secrets,
    },
    Analyzer {
        name: "gateway.CertificateAnalyzer",
        description: "Checks a gateway certificate",
        run: gateway::duplicate_certificates,
    },
    Analyzer {
        name: "gateway.ConflictingGatewayAnalyzer",
        description: "Checks a gateway's selector, port number and hosts",
        run: gateway::conflicting_gateways,
    },
    Analyzer {
        name: "gateway.IngressGatewayPortAnalyzer",
        description: "Checks a gateway's ports against the gateway's Kubernetes service ports",
        run: gateway::ingress_gateway_ports,
    },
    Analyzer {
        name: "sidecar.SelectorAnalyzer",
        description: "Validates that sidecars that define a workload selector match at least one pod, and that there aren't multiple sidecar resources that select overlapping pods",
        run: gateway::sidecar_selectors,
    },
    Analyzer {
        name: "injection.Analyzer",
        description: "Checks conditions related to Istio sidecar injection",
        run: injection::namespaces_and_pods,
    },
    Analyzer {
        name: "injection.ImageAnalyzer",
        description: "Checks the image of auto-injection configured with the running proxies on pods",
        run: injection::proxy_images,
    },
    Analyzer {
        name: "injection.ImageAutoAnalyzer",
        description: "Makes sure that Pods and Deployments with `image: auto` are going to be injected",
        run: injection::image_auto,
    },
    Analyzer {
        name: "k8sgateway.SelectorAnalyzer",
        description: "Check that selectors are effective for Kubernetes gateway",
        run: k8s_gateway::selectors,
    },
    Analyzer {
        name: "k8sgateway.CRDVersionAnalyzer",
        description: "Checks Gateway API CRDs are at the minimum version required by this Istio version",
        run: k8s_gateway::crd_versions,
    },
    Analyzer {
        name: "meshnetworks.MeshNetworksAnalyzer",
        description: "Check the validity of MeshNetworks in the cluster",
        run: mesh_networks::mesh_networks,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.AuthorizationPolicy",
        description: "Runs schema validation as an analyzer on 'AuthorizationPolicy' resources",
        run: schema_kinds::authorization_policy,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.DestinationRule",
        description: "Runs schema validation as an analyzer on 'DestinationRule' resources",
        run: schema_kinds::destination_rule,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.Gateway",
        description: "Runs schema validation as an analyzer on 'Gateway' resources",
        run: schema_kinds::gateway,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.PeerAuthentication",
        description: "Runs schema validation as an analyzer on 'PeerAuthentication' resources",
        run: schema_kinds::peer_authentication,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.RequestAuthentication",
        description: "Runs schema validation as an analyzer on 'RequestAuthentication' resources",
        run: schema_kinds::request_authentication,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.ServiceEntry",
        description: "Runs schema validation as an analyzer on 'ServiceEntry' resources",
        run: schema_kinds::service_entry,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.Sidecar",
        description: "Runs schema validation as an analyzer on 'Sidecar' resources",
        run: schema_kinds::sidecar,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.Telemetry",
        description: "Runs schema validation as an analyzer on 'Telemetry' resources",
        run: schema_kinds::telemetry,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.VirtualService",
        description: "Runs schema validation as an analyzer on 'VirtualService' resources",
        run: schema::virtual_services,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.WorkloadEntry",
        description: "Runs schema validation as an analyzer on 'WorkloadEntry' resources",
        run: schema_kinds::workload_entry,
    },
    Analyzer {
        name: "schema.ValidationAnalyzer.WorkloadGroup",
        description: "Runs schema validation as an analyzer on 'WorkloadGroup' resources",
        run: schema_kinds::workload_group,
    },
    Analyzer {
        name: "service.PortNameAnalyzer",
        description: "Checks the port names associated with each service",
        run: service::port_names,
    },
    Analyzer {
        name: "serviceentry.Analyzer",
        description: "Checks that ServiceEntries for TCP ports have addresses",
        run: service_entry::protocol_addresses,
    },
    Analyzer {
        name: "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
        description: "Checks that ServiceEntries do not give one host and port different protocols",
        run: service_entry::conflicting_protocols,
    },
    Analyzer {
        name: "services.MultiClusterServiceAnalyzer",
        description: "Check the validity of services in the multi-cluster environment",
        run: multicluster::inconsistent_services,
    },
    Analyzer {
        name: "telemetry.ProviderAnalyzer",
        description: "Validates that providers in telemetry resource is valid",
        run: telemetry::providers,
    },
    Analyzer {
        name: "telemetry.SelectorAnalyzer",
        description: "Validates that telemetries that define a selector match at least one pod, and that there aren't multiple telemetry resources that select overlapping pods",
        run: telemetry::selectors,
    },
    Analyzer {
        name: "telemetry.DefaultSelectorAnalyzer",
        description: "Validates that there aren't multiple telemetry resources that have no selector",
        run: telemetry::default_selectors,
    },
    Analyzer {
        name: "telemetry.LightstepAnalyzer",
        description: "Validates that lightstep provider is still used",
        run: telemetry::lightstep,
    },
    Analyzer {
        name: "webhook.Analyzer",
        description: "Checks the validity of Istio webhooks",
        run: webhook::webhooks,
    },
];

/// Analyzers Istio runs only when selected by name (`skip_all`): alpha annotations are
/// legitimate, so flagging them is opt-in.
pub const NOT_IN_DEFAULT: &[&str] = &["annotations.AlphaAnalyzer"];

/// Analyzers about a cluster's machinery that `weft up` does not have: injection webhooks and
/// the injector's images (`weft up` gives every workload its proxy), istiod's Deployment, and
/// CRD versions.
pub const NOT_LIVE: &[&str] = &[
    "authn.BlockedCIDRsAnalyzer",
    "externalcontrolplane.ExternalControlPlaneAnalyzer",
    "injection.Analyzer",
    "injection.ImageAnalyzer",
    "injection.ImageAutoAnalyzer",
    "k8sgateway.CRDVersionAnalyzer",
    "webhook.Analyzer",
];

pub fn analyzer(name: &str) -> Option<&'static Analyzer> {
    ANALYZERS.iter().find(|a| a.name == name)
}

/// Every analyzer's findings on the objects of a running mesh, as problems: warnings at the
/// field, the code after the text.
pub fn live_problems(objects: &[&Loaded], mesh: &MeshConfig) -> Vec<Problem> {
    let owned = objects.iter().map(|o| (*o).clone()).collect();
    let ctx = Context::live(owned, mesh.clone());
    let selected: Vec<&'static Analyzer> = ANALYZERS
        .iter()
        .filter(|a| !NOT_IN_DEFAULT.contains(&a.name) && !NOT_LIVE.contains(&a.name))
        .collect();
    analyze(&ctx, &selected)
        .into_iter()
        .filter_map(|m| m.problem)
        .collect()
}

/// Runs `selected` analyzers (all when empty), then drops what the objects' own
/// `galley.istio.io/analyze-suppress` annotations suppress.
pub fn analyze(ctx: &Context, selected: &[&'static Analyzer]) -> Vec<Message> {
    let mut findings = Findings {
        messages: Vec::new(),
    };
    let all: Vec<&Analyzer> = if selected.is_empty() {
        ANALYZERS
            .iter()
            .filter(|a| !NOT_IN_DEFAULT.contains(&a.name))
            .collect()
    } else {
        selected.to_vec()
    };
    for a in all {
        (a.run)(ctx, &mut findings);
    }
    let mut messages = findings.messages;
    messages.retain(|m| !suppressed_by_annotation(ctx, m));
    // istioctl prints messages sorted by resource and code, each once.
    messages.sort_by(|a, b| {
        (&a.resource, a.message_type.code, &a.text, &a.reference).cmp(&(
            &b.resource,
            b.message_type.code,
            &b.text,
            &b.reference,
        ))
    });
    messages.dedup();
    messages
}

const SUPPRESS_ANNOTATION: &str = "galley.istio.io/analyze-suppress";

/// The annotation lists codes, comma-separated; `*` suppresses every code on the object.
fn suppressed_by_annotation(ctx: &Context, m: &Message) -> bool {
    ctx.objects.iter().any(|o| {
        Context::resource_id(o) == m.resource
            && o.resource
                .metadata()
                .annotations
                .get(SUPPRESS_ANNOTATION)
                .is_some_and(|codes| {
                    codes
                        .split(',')
                        .map(str::trim)
                        .any(|c| c == "*" || c == m.message_type.code)
                })
    })
}

/// `--suppress CODE=Kind name`: the resource is `Kind ns/name` or istioctl's older
/// `Kind name.ns`, and `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppression {
    pub code: String,
    pub resource: String,
}

impl Suppression {
    pub fn parse(s: &str) -> Result<Suppression, String> {
        match s.split('=').collect::<Vec<_>>().as_slice() {
            [code, resource] => Ok(Suppression {
                code: code.to_string(),
                resource: resource.to_string(),
            }),
            _ => Err(format!(
                "{s} is not a valid suppression value. See weft analyze --help"
            )),
        }
    }

    pub fn matches(&self, m: &Message) -> bool {
        if self.code != m.message_type.code {
            return false;
        }
        let r = &m.resource;
        let slash = r.to_string();
        let dotted = if r.namespace.is_empty() {
            format!("{} {}", r.kind, r.name)
        } else {
            format!("{} {}.{}", r.kind, r.name, r.namespace)
        };
        glob(&self.resource, &slash) || glob(&self.resource, &dotted)
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressions_take_both_resource_forms_and_wildcards() {
        let m = Message {
            message_type: catalog::by_code("IST0103").unwrap_or(&catalog::CATALOG[0]),
            resource: ResourceId {
                kind: "Pod".into(),
                namespace: "testing".into(),
                name: "mypod".into(),
            },
            reference: None,
            text: String::new(),
            problem: None,
        };
        for (s, hit) in [
            ("IST0103=Pod mypod.testing", true),
            ("IST0103=Pod testing/mypod", true),
            ("IST0103=Pod *.testing", true),
            ("IST0103=Pod *", true),
            ("IST0102=Pod mypod.testing", false),
            ("IST0103=Pod other.testing", false),
        ] {
            assert_eq!(Suppression::parse(s).map(|x| x.matches(&m)), Ok(hit), "{s}");
        }
        assert!(Suppression::parse("IST0103").is_err());
    }
}
