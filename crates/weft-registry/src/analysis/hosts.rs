//! Which service a host names, as Istio's analyzers look it up (`util.InitServiceEntryHostMap`,
//! `util.GetDestinationHost`): keys are `scope/fqdn`, the scope being the namespace a definition
//! is exported to, or `*`.

use super::Context;
use std::collections::{BTreeMap, BTreeSet};
use weft_api::Resource;
use weft_api::types::common::Labels;

/// What a host resolves to: a ServiceEntry's workload selector, or none for a Kubernetes
/// Service (whose own selector the analyzers do not use).
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub workload_selector: Option<Labels>,
    /// Port numbers: a ServiceEntry's `ports`, a Service's `port`s.
    pub ports: Vec<i64>,
}

pub struct HostMap {
    by_key: BTreeMap<(String, String), HostEntry>,
}

/// A short name is a Kubernetes Service in `ns`; a name with a dot, or a wildcard, is as written.
/// Not `crate::host::fqdn`: the analyzers' `ConvertHostToFQDN` keeps an empty namespace as
/// `name..svc.<suffix>`, which their test cases depend on.
pub fn fqdn(ns: &str, host: &str, domain_suffix: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{ns}.svc.{domain_suffix}")
    }
}

/// The scopes an object in `ns` with `exportTo` is visible in: `*` when it is exported to all
/// (no `exportTo`, or `*` among them), else each entry, `.` meaning its own namespace.
pub fn export_scopes(export_to: &[String], ns: &str) -> BTreeSet<String> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return BTreeSet::from(["*".to_string()]);
    }
    export_to
        .iter()
        .map(|e| if e == "." { ns.to_string() } else { e.clone() })
        .collect()
}

impl HostMap {
    pub fn new(ctx: &Context) -> HostMap {
        let mut by_key = BTreeMap::new();
        for o in &ctx.objects {
            if let Resource::ServiceEntry(se) = &o.resource {
                let ns = Context::namespace(o);
                let entry = HostEntry {
                    workload_selector: se.spec.workload_selector.as_ref().map(|w| w.labels.clone()),
                    ports: se
                        .spec
                        .ports
                        .iter()
                        .map(|p| p.number.unwrap_or(0))
                        .collect(),
                };
                for scope in export_scopes(&se.spec.export_to, ns) {
                    for h in &se.spec.hosts {
                        let key = (scope.clone(), fqdn(ns, h, &ctx.domain_suffix));
                        by_key.insert(key, entry.clone());
                    }
                }
            }
        }
        // Services after ServiceEntries: a Service wins a key both define.
        for o in &ctx.objects {
            if let Resource::Service(svc) = &o.resource {
                let ns = Context::namespace(o);
                let export: Vec<String> = svc
                    .metadata
                    .annotations
                    .get("networking.istio.io/exportTo")
                    .filter(|a| !a.is_empty())
                    .map(|a| a.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                let host = fqdn(ns, o.resource.name(), &ctx.domain_suffix);
                let ports: Vec<i64> = svc
                    .spec
                    .iter()
                    .flat_map(|s| s.ports.iter().map(|p| p.port.unwrap_or(0)))
                    .collect();
                for scope in export_scopes(&export, ns) {
                    by_key.insert(
                        (scope, host.clone()),
                        HostEntry {
                            workload_selector: None,
                            ports: ports.clone(),
                        },
                    );
                }
            }
        }
        HostMap { by_key }
    }

    /// The definition `host`, referred to from `ns` by an object exported to `export_to`,
    /// resolves to: exported to all, then to the lookup scopes, then a wildcard definition.
    pub fn lookup(
        &self,
        ns: &str,
        export_to: &[String],
        host: &str,
        suffix: &str,
    ) -> Option<&HostEntry> {
        let full = fqdn(ns, host, suffix);
        if let Some(e) = self.by_key.get(&("*".to_string(), full.clone())) {
            return Some(e);
        }
        let lookup_scopes: Vec<String> = if export_to.is_empty() {
            vec![ns.to_string()]
        } else {
            export_to
                .iter()
                .map(|e| if e == "." { ns.to_string() } else { e.clone() })
                .collect()
        };
        for s in lookup_scopes {
            if let Some(e) = self.by_key.get(&(s, full.clone())) {
                return Some(e);
            }
        }
        // Go's TrimPrefix: one leading `*`.
        let bare = host.strip_prefix('*').unwrap_or(host);
        self.by_key
            .iter()
            .find(|((scope, defined), _)| {
                (scope == "*" || scope == ns)
                    && defined
                        .strip_prefix('*')
                        .is_some_and(|suffix| bare.ends_with(suffix))
            })
            .map(|(_, e)| e)
    }
}
