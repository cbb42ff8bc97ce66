//! AuthorizationPolicy → Envoy's RBAC filters, as istiod's authz builder
//! (`pilot/pkg/security/authz/builder`) writes them for a sidecar's inbound listeners and for
//! gateways: one filter per action (AUDIT, DENY, ALLOW, in that order), each a map of
//! `ns[NS]-policy[NAME]-rule[I]` policies; dry-run policies (`istio.io/dry-run`) in
//! `shadow_rules`. HTTP chains get `envoy.filters.http.rbac`, TCP chains
//! `envoy.filters.network.rbac` (where rules naming HTTP attributes match nothing under
//! ALLOW).

mod custom;
mod matcher;
mod model;

use super::config::Obj;
use super::pb;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{Policy, Rbac, rbac};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use std::collections::HashMap;
use weft_api::types::common::{Labels, WorkloadSelector};
use weft_api::types::security::{AuthorizationAction, AuthorizationPolicy, RequestAuthentication};

pub const HTTP_RBAC: &str = "envoy.filters.http.rbac";
pub const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
/// The annotation that makes a policy counted, never enforced.
pub const DRY_RUN: &str = "istio.io/dry-run";

/// One AuthorizationPolicy with what translation reads of its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    pub obj: Obj<AuthorizationPolicy>,
    pub dry_run: bool,
}

/// The RBAC filters of one proxy, for its HTTP and its TCP chains (empty: no policy applies).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub http: Vec<HttpFilter>,
    pub tcp: Vec<Filter>,
    /// What the TCP filters leave out of rules, said where a TCP chain uses them.
    pub tcp_problems: Vec<String>,
}

/// A security policy's attachment: its selector, and whether it names targets instead.
pub(super) trait Attached {
    fn selector(&self) -> Option<&WorkloadSelector>;
    fn names_targets(&self) -> bool;
}

impl Attached for AuthorizationPolicy {
    fn selector(&self) -> Option<&WorkloadSelector> {
        self.selector.as_ref()
    }
    fn names_targets(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

impl Attached for RequestAuthentication {
    fn selector(&self) -> Option<&WorkloadSelector> {
        self.selector.as_ref()
    }
    fn names_targets(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// The policies of `items` that apply to a workload of `namespace` with `labels`: the root
/// namespace's and its own, each without a selector or with one its labels satisfy. Policies
/// that name their targets (`targetRef`, `targetRefs`) are for Gateway API gateways and
/// waypoints, which this mesh has none of: istiod leaves them out for every other workload.
pub(super) fn applicable<'a, I, T: Attached + 'a>(
    inputs: &super::Inputs,
    items: &'a [I],
    obj: impl Fn(&'a I) -> &'a Obj<T>,
    namespace: &str,
    labels: &Labels,
    problem: &dyn Fn(String),
) -> Vec<&'a I> {
    let root = inputs.mesh.root_namespace.as_str();
    let mut namespaces = vec![root];
    if namespace != root {
        namespaces.push(namespace);
    }
    let mut out = Vec::new();
    for ns in namespaces {
        for item in items.iter().filter(|i| obj(i).namespace == ns) {
            let o = obj(item);
            if o.spec.names_targets() {
                problem(format!(
                    "{}: targetRef(s) attach a policy to Gateway API gateways and waypoints only, which this mesh does not run; as in Istio, it applies to no sidecar or Istio gateway",
                    o.label()
                ));
                continue;
            }
            if o.spec
                .selector()
                .is_none_or(|s| weft_registry::selects(&s.match_labels, labels))
            {
                out.push(item);
            }
        }
    }
    out
}

/// The server-side security filters of a workload of `namespace` with `labels`: JWT
/// authentication (RequestAuthentication), then RBAC, for a listener where each
/// `(policy port, listener port)` of `ports` stands in for the policy's port.
pub fn filters(
    inputs: &super::Inputs,
    namespace: &str,
    labels: &Labels,
    gateway: bool,
    ports: &[(u16, u16)],
    problem: &dyn Fn(String),
) -> Filters {
    let mut out = Filters::default();
    let policies = applicable(
        inputs,
        &inputs.config.authorization_policies,
        |a| &a.obj,
        namespace,
        labels,
        problem,
    );
    let mut trust_domains = vec![inputs.mesh.trust_domain.clone()];
    trust_domains.extend(inputs.mesh.trust_domain_aliases.iter().cloned());
    // istiod's order: CUSTOM, then JWT authentication, then AUDIT, DENY and ALLOW.
    out.http.extend(custom::http_filters(
        inputs,
        &policies,
        &trust_domains,
        ports,
        problem,
    ));
    out.http.extend(super::authn::jwt_filter(
        inputs, namespace, labels, gateway, problem,
    ));
    if policies.is_empty() {
        return out;
    }
    for tcp in [false, true] {
        for action in [
            AuthorizationAction::Audit,
            AuthorizationAction::Deny,
            AuthorizationAction::Allow,
        ] {
            let tcp_problems = std::cell::RefCell::new(Vec::new());
            let collect = |m: String| tcp_problems.borrow_mut().push(m);
            let report: &dyn Fn(String) = if tcp { &collect } else { problem };
            let built = build(&policies, action, tcp, &trust_domains, ports, report);
            out.tcp_problems.extend(tcp_problems.into_inner());
            let Some((rules, shadow)) = built else {
                continue;
            };
            let shadow_prefix = match shadow.as_ref().map(|s| s.action) {
                None => "istio_dry_run_allow_",
                Some(a) if a == rbac::Action::Allow as i32 => "istio_dry_run_allow_",
                Some(a) if a == rbac::Action::Deny as i32 => "istio_dry_run_deny_",
                Some(_) => "",
            }
            .to_string();
            if tcp {
                out.tcp.push(Filter {
                    name: NETWORK_RBAC.into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pb::any(&NetworkRbac {
                        rules,
                        shadow_rules: shadow,
                        stat_prefix: "tcp.".into(),
                        shadow_rules_stat_prefix: shadow_prefix,
                        ..Default::default()
                    }))),
                });
            } else {
                out.http.push(HttpFilter {
                    name: HTTP_RBAC.into(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(pb::any(&HttpRbac {
                        rules,
                        shadow_rules: shadow,
                        shadow_rules_stat_prefix: shadow_prefix,
                        ..Default::default()
                    }))),
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// The enforced and the dry-run rules of one action; `None` when no policy has it.
#[allow(clippy::type_complexity)]
fn build(
    policies: &[&Authorization],
    action: AuthorizationAction,
    tcp: bool,
    trust_domains: &[String],
    ports: &[(u16, u16)],
    problem: &dyn Fn(String),
) -> Option<(Option<Rbac>, Option<Rbac>)> {
    let mut enforced: Option<HashMap<String, Policy>> = None;
    let mut shadow: Option<HashMap<String, Policy>> = None;
    let rbac_action = match action {
        AuthorizationAction::Allow => rbac::Action::Allow,
        AuthorizationAction::Deny => rbac::Action::Deny,
        _ => rbac::Action::Log,
    };
    for a in policies {
        let spec = &a.obj.spec;
        let own = spec.action.unwrap_or_default();
        // On HTTP chains CUSTOM has filters of its own (`custom`). On TCP ones the proxies
        // cannot ask a provider (no network ext_authz yet): its rules deny, as istiod denies
        // for a provider it cannot use.
        let custom = own == AuthorizationAction::Custom && tcp;
        if !(own == action || custom && action == AuthorizationAction::Deny) {
            continue;
        }
        if custom {
            problem(format!(
                "{}: CUSTOM (provider {:?}) is not applied to TCP ports yet: what its rules match there is denied",
                a.obj.label(),
                spec.provider
                    .as_ref()
                    .and_then(|p| p.name.as_deref())
                    .unwrap_or("")
            ));
        }
        let map = if a.dry_run {
            shadow.get_or_insert_with(HashMap::new)
        } else {
            enforced.get_or_insert_with(HashMap::new)
        };
        let base = format!("ns[{}]-policy[{}]", a.obj.namespace, a.obj.name);
        let suffix = if custom {
            "-deny-due-to-bad-CUSTOM-action"
        } else {
            ""
        };
        let rules = spec.rules.as_deref().unwrap_or_default();
        if rules.is_empty() {
            map.insert(format!("{base}-rule[0]{suffix}"), model::never());
            continue;
        }
        let target = model::Target {
            tcp,
            strict: action == AuthorizationAction::Allow,
            namespace: &a.obj.namespace,
            trust_domains,
            ports,
        };
        for (i, rule) in rules.iter().enumerate() {
            let mut skipped = Vec::new();
            match model::policy(rule, target, &mut skipped) {
                Ok(p) => {
                    map.insert(format!("{base}-rule[{i}]{suffix}"), p);
                }
                Err(skip) => skipped.push(skip),
            }
            for s in skipped {
                let (model::Skip::HttpOnly(why) | model::Skip::Invalid(why)) = &s;
                let effect = if target.strict {
                    "the rule is left out there (it allows nothing)"
                } else {
                    "that part of the rule is left out there (it matches more)"
                };
                let place = if matches!(s, model::Skip::HttpOnly(_)) {
                    "is an HTTP attribute and this port is TCP"
                } else {
                    "cannot be matched"
                };
                problem(format!(
                    "{}: rules[{i}]: {why} {place}: {effect}",
                    a.obj.label()
                ));
            }
        }
    }
    if enforced.is_none() && shadow.is_none() {
        return None;
    }
    let rbac = |policies: HashMap<String, Policy>| Rbac {
        action: rbac_action as i32,
        policies,
        ..Default::default()
    };
    Some((enforced.map(rbac), shadow.map(rbac)))
}
