//! The inputs of translation, indexed once per config version, and what one proxy can see of
//! them: exportTo, the Sidecar resource that applies to it, and the DestinationRule for a host.

use super::proxy::{Proxy, ProxyKind};
use std::cell::RefCell;
use weft_api::Resource;
use weft_api::types::common::Labels;
use weft_api::types::destination_rule::DestinationRule;
use weft_api::types::gateway::Gateway;
use weft_api::types::mesh::Mesh;
use weft_api::types::security::{PeerAuthentication, RequestAuthentication};
use weft_api::types::sidecar::{OutboundTrafficPolicyMode, Sidecar};
use weft_api::types::virtual_service::VirtualService;
use weft_registry::{Endpoint, Registry, Service, host, selects};

/// The cluster's DNS suffix. Istio lets it be changed; Weft does not yet.
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// An Istio object of one kind, with where it lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj<T> {
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    pub spec: T,
}

impl<T> Obj<T> {
    /// Istio's provenance path (`/apis/networking.istio.io/v1/namespaces/NS/virtual-service/NAME`),
    /// the form istiod writes into `metadata.filter_metadata.istio.config`.
    pub fn config_path(&self) -> String {
        let plural = match self.kind {
            "VirtualService" => "virtual-service",
            "DestinationRule" => "destination-rule",
            "Gateway" => "gateway",
            "Sidecar" => "sidecar",
            "ServiceEntry" => "service-entry",
            "PeerAuthentication" => "peer-authentication",
            _ => "object",
        };
        format!(
            "/apis/networking.istio.io/v1/namespaces/{}/{plural}/{}",
            self.namespace, self.name
        )
    }

    /// `Kind namespace/name`, as problems name objects.
    pub fn label(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The networking objects translation reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigIndex {
    pub virtual_services: Vec<Obj<VirtualService>>,
    pub destination_rules: Vec<Obj<DestinationRule>>,
    pub gateways: Vec<Obj<Gateway>>,
    pub sidecars: Vec<Obj<Sidecar>>,
    pub peer_authentications: Vec<Obj<PeerAuthentication>>,
    pub authorization_policies: Vec<super::authz::Authorization>,
    pub request_authentications: Vec<Obj<RequestAuthentication>>,
    pub telemetries: Vec<Obj<weft_api::types::telemetry::Telemetry>>,
    /// Kubernetes Secrets by (namespace, name), decoded, for `credentialName`.
    pub secrets:
        std::collections::BTreeMap<(String, String), Result<super::credential::SecretData, String>>,
}

/// Go's `strconv.ParseBool`, as istiod reads boolean annotations.
fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// One version of everything translation needs.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub mesh: Mesh,
    pub registry: Registry,
    pub config: ConfigIndex,
    /// Workloads have certificates from the mesh CA (the control plane serves it): the mesh
    /// can speak mTLS. Without, a STRICT port takes nothing and nothing originates mTLS on
    /// its own (auto mTLS).
    pub mesh_identity: bool,
    /// JWKS documents the control plane fetched, by `jwksUri`: the text, or why there is none.
    pub jwks: std::collections::BTreeMap<String, Result<String, String>>,
}

impl Inputs {
    pub fn new(resources: &[Resource], mesh: Mesh) -> Inputs {
        let registry = Registry::build(
            resources,
            &weft_registry::Options {
                domain_suffix: DOMAIN_SUFFIX.into(),
            },
        );
        fn obj<T: Clone>(kind: &'static str, r: &Resource, spec: &T) -> Obj<T> {
            Obj {
                kind,
                name: r.name().to_string(),
                namespace: r.namespace().to_string(),
                spec: spec.clone(),
            }
        }
        // Istio resolves conflicts by age, then by name; without creation times, by name.
        fn by_name<T>(objs: &mut [Obj<T>]) {
            objs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        }
        let mut config = ConfigIndex::default();
        for r in resources {
            match r {
                Resource::VirtualService(o) => {
                    config
                        .virtual_services
                        .push(obj("VirtualService", r, &o.spec));
                }
                Resource::DestinationRule(o) => {
                    config
                        .destination_rules
                        .push(obj("DestinationRule", r, &o.spec));
                }
                Resource::Gateway(o) => config.gateways.push(obj("Gateway", r, &o.spec)),
                Resource::Sidecar(o) => config.sidecars.push(obj("Sidecar", r, &o.spec)),
                Resource::PeerAuthentication(o) => {
                    config
                        .peer_authentications
                        .push(obj("PeerAuthentication", r, &o.spec))
                }
                Resource::RequestAuthentication(o) => {
                    config
                        .request_authentications
                        .push(obj("RequestAuthentication", r, &o.spec));
                }
                Resource::AuthorizationPolicy(o) => {
                    let dry_run = r
                        .metadata()
                        .annotations
                        .get(super::authz::DRY_RUN)
                        .is_some_and(|v| parse_bool(v));
                    config
                        .authorization_policies
                        .push(super::authz::Authorization {
                            obj: obj("AuthorizationPolicy", r, &o.spec),
                            dry_run,
                        });
                }
                Resource::Telemetry(o) => {
                    config.telemetries.push(obj("Telemetry", r, &o.spec));
                }
                Resource::Secret(o) => {
                    config.secrets.insert(
                        (r.namespace().to_string(), r.name().to_string()),
                        super::credential::decode(o),
                    );
                }
                _ => {}
            }
        }
        by_name(&mut config.virtual_services);
        by_name(&mut config.destination_rules);
        by_name(&mut config.gateways);
        by_name(&mut config.peer_authentications);
        by_name(&mut config.request_authentications);
        by_name(&mut config.telemetries);
        config
            .authorization_policies
            .sort_by(|a, b| (&a.obj.namespace, &a.obj.name).cmp(&(&b.obj.namespace, &b.obj.name)));
        Inputs {
            mesh,
            registry,
            config,
            mesh_identity: false,
            jwks: Default::default(),
        }
    }
}

impl Inputs {
    /// Puts each workload's sidecar in front of it, as a pod's capture does, for a mesh without
    /// capture (`weft up`): every endpoint of a WorkloadEntry or Pod is sent to its sidecar's
    /// inbound listener at `sidecar_port(endpoint)` instead, on the workload's own address when
    /// that is a loopback one (else on 127.0.0.1, where the sidecar runs), and the application's
    /// address is kept for the sidecar to hand the traffic to. A workload whose Sidecar resource
    /// has `ingress` listeners is left alone: there the mesh port and the application's
    /// `defaultEndpoint` are the user's own.
    pub fn front_workloads(&mut self, sidecar_port: &mut dyn FnMut(&Endpoint) -> Option<u16>) {
        let mut registry = std::mem::take(&mut self.registry);
        for s in &mut registry.services {
            for e in &mut s.endpoints {
                if !matches!(e.origin.kind, "WorkloadEntry" | "Pod") || e.application.is_some() {
                    continue;
                }
                if sidecar_of(self, &e.origin.namespace, &e.labels)
                    .is_some_and(|sc| !sc.spec.ingress.is_empty())
                {
                    continue;
                }
                let Some(port) = sidecar_port(e) else {
                    continue;
                };
                let address = fronting_host(&e.address).to_string();
                e.application = Some((std::mem::replace(&mut e.address, address), e.port));
                e.port = port;
            }
        }
        self.registry = registry;
    }
}

/// Where a workload's fronting sidecar listens (`Inputs::front_workloads`): on the workload's
/// own address when it is a loopback one, else on 127.0.0.1, where `weft up` runs the sidecar.
pub fn fronting_host(address: &str) -> &str {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_loopback() => address,
        _ => "127.0.0.1",
    }
}

/// Whether an object with `export_to`, living in `owner`, is visible from `namespace`.
pub fn exported(export_to: &[String], owner: &str, namespace: &str) -> bool {
    export_to.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => owner == namespace,
        "~" => false,
        ns => ns == namespace,
    })
}

/// Whether a `gateways` list written in an object of `namespace` names `gateway`
/// (`namespace/name`, or `mesh`): a short name is relative to the object's namespace.
pub fn binds(gateways: &[String], namespace: &str, gateway: &str) -> bool {
    gateways.iter().any(|g| {
        if g == "mesh" || g.contains('/') {
            g == gateway
        } else {
            format!("{namespace}/{g}") == gateway
        }
    })
}

/// What one proxy sees.
pub struct Scope<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
    /// The proxy's `region/zone/subzone`, if known.
    pub locality: Option<&'a str>,
    /// The Sidecar resource that applies to this proxy, if any.
    pub sidecar: Option<&'a Obj<Sidecar>>,
    /// `(namespace pattern, host pattern)` from the Sidecar's egress hosts; `*/*` without one.
    egress: Vec<(String, String)>,
    pub outbound_policy: OutboundTrafficPolicyMode,
    /// The proxy's address is IPv6: its DNS clusters look up IPv6 addresses only.
    pub ipv6_only: bool,
    /// Visible services, by host name then namespace.
    pub services: Vec<&'a Service>,
    /// VirtualServices that apply to this proxy, with their hosts as FQDNs.
    pub virtual_services: Vec<(&'a Obj<VirtualService>, Vec<String>)>,
    inputs: &'a Inputs,
    pub problems: RefCell<Vec<String>>,
    /// Listeners that conflicted: istiod's `pilot_conflict_*` metric, and the address.
    pub conflicts: RefCell<Vec<(&'static str, String)>>,
    /// SDS secrets the proxy's config names on the ADS stream (`credentialName`).
    pub secrets:
        RefCell<Vec<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>>,
    /// The RBAC filters of the AuthorizationPolicies that apply to this proxy.
    pub authz: super::authz::Filters,
    /// The stats filter's config for each side, from the Telemetry that applies.
    pub metrics: super::telemetry::Metrics,
    /// Telemetry's access logging for each side (the mesh's `accessLogFile` when silent).
    pub logging: super::access_log::Logging,
    /// The connection managers' `tracing`, for each side.
    pub tracing: super::tracing::Tracings,
}

impl<'a> Scope<'a> {
    pub fn new(inputs: &'a Inputs, proxy: &'a Proxy) -> Scope<'a> {
        let ns = proxy.namespace.as_str();
        let sidecar = match proxy.kind {
            ProxyKind::Router => None,
            ProxyKind::Sidecar => find_sidecar(inputs, proxy),
        };
        let mut egress = Vec::new();
        if let Some(sc) = sidecar {
            for listener in &sc.spec.egress {
                for h in &listener.hosts {
                    let (hns, hhost) = h.split_once('/').unwrap_or(("*", h.as_str()));
                    let hns = if hns == "." {
                        sc.namespace.clone()
                    } else {
                        hns.to_string()
                    };
                    egress.push((hns, hhost.to_string()));
                }
            }
        }
        if egress.is_empty() {
            egress.push(("*".into(), "*".into()));
        }
        let outbound_policy = sidecar
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
            .unwrap_or(inputs.mesh.outbound_traffic_policy);
        let mut scope = Scope {
            namespace: ns,
            labels: &proxy.labels,
            locality: proxy.locality.as_deref(),
            sidecar,
            egress,
            outbound_policy,
            ipv6_only: proxy.ip.parse::<std::net::Ipv6Addr>().is_ok(),
            services: Vec::new(),
            virtual_services: Vec::new(),
            inputs,
            problems: RefCell::new(Vec::new()),
            conflicts: RefCell::new(Vec::new()),
            secrets: RefCell::new(Vec::new()),
            authz: Default::default(),
            metrics: Default::default(),
            logging: Default::default(),
            tracing: Default::default(),
        };
        let authz = super::authz::filters(
            inputs,
            ns,
            &proxy.labels,
            proxy.kind == ProxyKind::Router,
            &[],
            &|m| scope.problem(m),
        );
        scope.authz = authz;
        scope.metrics = super::telemetry::metrics(inputs, ns, &proxy.labels, &|m| scope.problem(m));
        scope.logging =
            super::access_log::logging(inputs, ns, &proxy.labels, &|m| scope.problem(m));
        scope.tracing = super::tracing::tracings(inputs, ns, &proxy.labels, &proxy.name, &|m| {
            scope.problem(m)
        });
        scope.services = inputs
            .registry
            .services
            .iter()
            .filter(|s| exported(&s.export_to, &s.namespace, ns))
            .filter(|s| scope.egress_allows(&s.namespace, &s.hostname))
            .collect();
        for vs in &inputs.config.virtual_services {
            let export = if vs.spec.export_to.is_empty() {
                &inputs.mesh.default_virtual_service_export_to
            } else {
                &vs.spec.export_to
            };
            if !exported(export, &vs.namespace, ns) {
                continue;
            }
            let hosts: Vec<String> = vs
                .spec
                .hosts
                .iter()
                .map(|h| host::fqdn(h, &vs.namespace, DOMAIN_SUFFIX))
                .collect();
            if proxy.kind == ProxyKind::Sidecar {
                let for_mesh =
                    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
                if !for_mesh || !hosts.iter().any(|h| scope.egress_allows(&vs.namespace, h)) {
                    continue;
                }
            }
            scope.virtual_services.push((vs, hosts));
        }
        scope
    }

    /// Whether the Sidecar's egress hosts let this proxy reach `host` of `namespace`.
    pub fn egress_allows(&self, namespace: &str, hostname: &str) -> bool {
        self.egress.iter().any(|(ens, ehost)| {
            (ens == "*" || ens == namespace)
                && (host::matches(ehost, hostname) || host::matches(hostname, ehost))
        })
    }

    /// The visible service of a host name: the proxy's own namespace first, then any.
    pub fn service(&self, hostname: &str) -> Option<&'a Service> {
        let mut found = self.services.iter().filter(|s| s.hostname == hostname);
        let first = found.next()?;
        Some(
            std::iter::once(first)
                .chain(found)
                .find(|s| s.namespace == self.namespace)
                .unwrap_or(first),
        )
    }

    /// The DestinationRule for `hostname` (a service of `service_namespace`): Istio looks in the
    /// proxy's namespace, then the service's, then the root namespace, and within one takes the
    /// most specific host.
    pub fn destination_rule(
        &self,
        hostname: &str,
        service_namespace: &str,
    ) -> Option<&'a Obj<DestinationRule>> {
        let mesh = &self.inputs.mesh;
        let candidates: Vec<(&'a Obj<DestinationRule>, String)> = self
            .inputs
            .config
            .destination_rules
            .iter()
            .filter_map(|dr| {
                let h = host::fqdn(dr.spec.host.as_deref()?, &dr.namespace, DOMAIN_SUFFIX);
                host::matches(&h, hostname).then_some((dr, h))
            })
            .filter(|(dr, _)| {
                let export = if dr.spec.export_to.is_empty() {
                    &mesh.default_destination_rule_export_to
                } else {
                    &dr.spec.export_to
                };
                exported(export, &dr.namespace, self.namespace)
            })
            .filter(|(dr, _)| match &dr.spec.workload_selector {
                Some(sel) => {
                    dr.namespace == self.namespace && selects(&sel.match_labels, self.labels)
                }
                None => true,
            })
            .collect();
        for ns in [self.namespace, service_namespace, &mesh.root_namespace] {
            let best = candidates
                .iter()
                .filter(|(dr, _)| dr.namespace == ns)
                // An exact host beats a wildcard; a longer wildcard beats a shorter one.
                .max_by_key(|(dr, h)| {
                    (
                        !h.starts_with('*'),
                        h.len(),
                        dr.spec.workload_selector.is_some(),
                    )
                });
            if let Some((dr, _)) = best {
                return Some(dr);
            }
        }
        None
    }

    /// Every VirtualService, delegates included, whatever its visibility.
    pub fn all_virtual_services(&self) -> &'a [Obj<VirtualService>] {
        &self.inputs.config.virtual_services
    }

    pub fn problem(&self, message: String) {
        self.problems.borrow_mut().push(message);
    }

    /// A listener left out for another on the same address: reported, and counted under
    /// istiod's `metric`.
    pub fn conflict(&self, metric: &'static str, address: String, message: String) {
        self.problem(message);
        self.conflicts.borrow_mut().push((metric, address));
    }
}

/// The Sidecar resource of a workload: one in its namespace whose selector picks it, else its
/// namespace's one without selector, else the root namespace's.
pub(crate) fn find_sidecar<'a>(inputs: &'a Inputs, proxy: &Proxy) -> Option<&'a Obj<Sidecar>> {
    sidecar_of(inputs, &proxy.namespace, &proxy.labels)
}

fn sidecar_of<'a>(
    inputs: &'a Inputs,
    namespace: &str,
    labels: &Labels,
) -> Option<&'a Obj<Sidecar>> {
    let sidecars = &inputs.config.sidecars;
    let selecting = sidecars.iter().find(|s| {
        s.namespace == namespace
            && s.spec
                .workload_selector
                .as_ref()
                .is_some_and(|w| !w.labels.is_empty() && selects(&w.labels, labels))
    });
    let namespace_wide = |ns: &str| {
        sidecars
            .iter()
            .find(|s| s.namespace == ns && s.spec.workload_selector.is_none())
    };
    selecting
        .or_else(|| namespace_wide(namespace))
        .or_else(|| namespace_wide(&inputs.mesh.root_namespace))
}
