//! Validation equivalent to Istio's admission webhook: every problem with the field path it
//! belongs to, errors and warnings kept apart, all of them reported rather than the first.

mod gateway;
pub mod rules;
mod security;
mod service_entry;
mod telemetry;
mod traffic;
mod virtual_service;

use crate::load::{Loaded, Problem, Severity};
use crate::path::FieldPath;
use crate::resource::Resource;
use crate::types::common::{LabelSelector, Labels, PolicyTargetReference, WorkloadSelector};

/// One finding about an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: FieldPath,
    pub message: String,
}

/// Collects findings while walking an object.
#[derive(Default)]
pub(crate) struct Findings {
    pub(crate) out: Vec<Diagnostic>,
    /// The object's namespace, for rules such as exportTo's `.`.
    pub(crate) namespace: String,
}

impl Findings {
    pub(crate) fn err(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.out.push(Diagnostic {
            severity: Severity::Error,
            path: path.clone(),
            message: message.into(),
        });
    }

    pub(crate) fn warn(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.out.push(Diagnostic {
            severity: Severity::Warning,
            path: path.clone(),
            message: message.into(),
        });
    }

    /// Records a rule's failure, if any.
    pub(crate) fn check(&mut self, path: &FieldPath, rule: rules::Rule) {
        if let Err(e) = rule {
            self.err(path, e);
        }
    }

    pub(crate) fn labels(&mut self, path: &FieldPath, labels: &Labels) {
        for e in rules::validate_labels(labels) {
            self.err(path, e);
        }
    }
}

/// Validates one object.
pub fn validate(resource: &Resource) -> Vec<Diagnostic> {
    let mut f = Findings {
        namespace: resource.namespace().to_string(),
        ..Findings::default()
    };
    metadata(&mut f, resource);
    let spec = FieldPath::root().key("spec");
    match resource {
        Resource::VirtualService(o) => virtual_service::validate(&mut f, &spec, &o.spec),
        Resource::DestinationRule(o) => traffic::validate_destination_rule(&mut f, &spec, &o.spec),
        Resource::Gateway(o) => gateway::validate_gateway(&mut f, &spec, &o.spec),
        Resource::Sidecar(o) => gateway::validate_sidecar(&mut f, &spec, &o.spec),
        Resource::ServiceEntry(o) => service_entry::validate_service_entry(&mut f, &spec, &o.spec),
        Resource::WorkloadEntry(o) => {
            service_entry::validate_workload_entry(&mut f, &spec, &o.spec, None, true)
        }
        Resource::WorkloadGroup(o) => {
            service_entry::validate_workload_group(&mut f, &spec, &o.spec)
        }
        Resource::EnvoyFilter(_) => f.warn(
            &FieldPath::root(),
            "EnvoyFilter is not supported by Weft: it is loaded but not applied to any proxy",
        ),
        Resource::PeerAuthentication(o) => security::validate_peer_authn(&mut f, &spec, &o.spec),
        Resource::RequestAuthentication(o) => {
            security::validate_request_authn(&mut f, &spec, &o.spec)
        }
        Resource::AuthorizationPolicy(o) => security::validate_authz(&mut f, &spec, &o.spec),
        Resource::Telemetry(o) => telemetry::validate(&mut f, &spec, &o.spec),
        Resource::Service(s) => {
            if let Some(spec_v) = &s.spec {
                for (i, p) in spec_v.ports.iter().enumerate() {
                    let pp = spec.key("ports").index(i);
                    match p.port {
                        Some(n) => f.check(&pp.key("port"), rules::validate_port(n)),
                        None => f.err(&pp.key("port"), "port is required"),
                    }
                    if let Some(name) = &p.name {
                        f.check(&pp.key("name"), rules::validate_port_name(name));
                    }
                }
            }
        }
        Resource::Namespace(_)
        | Resource::ServiceAccount(_)
        | Resource::Node(_)
        | Resource::Endpoints(_)
        | Resource::EndpointSlice(_)
        | Resource::Pod(_)
        | Resource::Workload(_)
        | Resource::ConfigMap(_)
        | Resource::Secret(_)
        | Resource::GatewayApi(_)
        | Resource::Other(_) => {}
    }
    f.out
}

/// Validation and unknown fields of a loaded object, as located problems. With `strict`,
/// unknown fields are errors (as `kubectl --validate=strict`); otherwise warnings, as the API
/// server prunes them with a warning.
pub fn check_loaded(obj: &Loaded, strict: bool) -> Vec<Problem> {
    let mut out: Vec<Problem> = obj
        .unknown_fields
        .iter()
        .map(|u| {
            let severity = if strict {
                Severity::Error
            } else {
                Severity::Warning
            };
            obj.problem(severity, u.path.clone(), "unknown field".to_string())
        })
        .collect();
    out.extend(
        validate(&obj.resource)
            .into_iter()
            .map(|d| obj.problem(d.severity, d.path, d.message)),
    );
    out.extend(crate::fidelity::not_applied(obj));
    out
}

fn metadata(f: &mut Findings, r: &Resource) {
    let meta = r.metadata();
    let p = FieldPath::root().key("metadata");
    match (&meta.name, &meta.generate_name) {
        (None, None) => f.err(&p.key("name"), "name is required"),
        (Some(n), _) if matches!(r, Resource::Gateway(_)) && !rules::is_k8s_dns1123_label(n) => {
            f.err(&p.key("name"), format!("invalid gateway name: {n:?}"));
        }
        (Some(n), _) if !rules::is_dns1123_subdomain(n) => f.err(
            &p.key("name"),
            format!("invalid name {n:?}: must be lower case alphanumerics, '-' or '.', starting and ending with an alphanumeric"),
        ),
        _ => {}
    }
    if let Some(ns) = &meta.namespace
        && !rules::is_k8s_dns1123_label(ns)
    {
        f.err(&p.key("namespace"), format!("invalid namespace {ns:?}"));
    }
    f.labels(&p.key("labels"), &meta.labels);
}

/// `exportTo`: `.`, `*`, `~` (ServiceEntry only) or namespaces, without duplicates.
pub(crate) fn export_to(
    f: &mut Findings,
    path: &FieldPath,
    export: &[String],
    service_entry: bool,
) {
    let ns = f.namespace.clone();
    let mut seen: Vec<&str> = Vec::new();
    for (i, e) in export.iter().enumerate() {
        let p = path.index(i);
        let key = if e == "." { ns.as_str() } else { e.as_str() };
        if seen.contains(&key) {
            if key != e {
                f.err(
                    &p,
                    format!("duplicate entries in exportTo: . and current namespace {ns}"),
                );
            } else {
                f.err(&p, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        let valid =
            e == "." || e == "*" || (e == "~" && service_entry) || rules::is_k8s_dns1123_label(e);
        if !valid {
            f.err(
                &p,
                format!(
                    "only .,*, or a valid DNS 1123 label is allowed as exportTo entry, found {e:?}"
                ),
            );
        } else {
            seen.push(key);
        }
    }
    if seen.contains(&"*") && export.len() > 1 {
        f.err(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.contains(&"~") && export.len() > 1 {
        f.err(
            path,
            "cannot export service entry to no one (~) and someone",
        );
    }
}

fn selector_labels(f: &mut Findings, path: &FieldPath, labels: &Labels) {
    for (k, v) in labels {
        if k.is_empty() {
            f.err(
                path,
                format!("empty key is not supported in selector: \"{k}={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            f.err(
                path,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
    if labels.is_empty() {
        f.warn(path, "workload selector specified without labels");
    }
}

/// `selector.matchLabels` (security and telemetry kinds, DestinationRule).
pub(crate) fn workload_selector(f: &mut Findings, path: &FieldPath, s: Option<&WorkloadSelector>) {
    if let Some(s) = s {
        selector_labels(f, &path.key("matchLabels"), &s.match_labels);
    }
}

/// `workloadSelector.labels` (ServiceEntry, Sidecar).
pub(crate) fn label_selector(f: &mut Findings, path: &FieldPath, s: Option<&LabelSelector>) {
    if let Some(s) = s {
        selector_labels(f, &path.key("labels"), &s.labels);
    }
}

/// `selector`, `targetRef` and `targetRefs` are alternatives; target references may name a
/// Service, ServiceEntry or Gateway API Gateway in the same namespace.
pub(crate) fn policy_target(
    f: &mut Findings,
    spec: &FieldPath,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        f.err(
            spec,
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    workload_selector(f, &spec.key("selector"), selector);
    let refs = target_ref
        .map(|r| (spec.key("targetRef"), r))
        .into_iter()
        .chain(
            target_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (spec.key("targetRefs").index(i), r)),
        );
    for (p, r) in refs {
        if r.name.as_deref().unwrap_or("").is_empty() {
            f.err(&p.key("name"), "targetRef name must be set");
        }
        if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            f.err(
                &p.key("namespace"),
                "targetRef namespace must not be set; cross namespace referencing is not supported",
            );
        }
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("");
        let allowed = matches!(
            (group, kind),
            ("" | "core", "Service")
                | ("networking.istio.io", "ServiceEntry")
                | ("gateway.networking.k8s.io", "Gateway")
        );
        if !allowed {
            f.err(
                &p,
                format!("targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway but was {group}/{kind}"),
            );
        }
    }
}
