//! Which service a host names, as Istio's analyzers look it up (`util.InitServiceEntryHostMap`,
//! `util.GetDestinationHost`): keys are `scope/fqdn`, the scope being the namespace a definition
//! is exported to, or `*`.

use super::Context;
use std::collections::BTreeMap;
use weft_api::Resource;
use weft_api::types::common::Labels;

/// What a host resolves to: a ServiceEntry's workload selector, or none for a Kubernetes
/// Service (whose own selector the analyzers do not use).
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub workload_selector: Option<Labels>,
}

pub struct HostMap {
    by_key: BTreeMap<(String, String), HostEntry>,
}

/// A short name is a Kubernetes Service in `ns`; a name with a dot, or a wildcard, is as written.
pub fn fqdn(ns: &str, host: &str, domain_suffix: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{ns}.svc.{domain_suffix}")
    }
}

fn scopes(export_to: &[String], ns: &str) -> Vec<String> {
    if export_to.is_empty() {
        return vec!["*".into()];
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
                };
                for scope in scopes(&se.spec.export_to, ns) {
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
                for scope in scopes(&export, ns) {
                    by_key.insert(
                        (scope, host.clone()),
                        HostEntry {
                            workload_selector: None,
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
        let bare = host.trim_start_matches('*');
        self.by_key
            .iter()
            .find(|((scope, defined), _)| {
                defined.starts_with('*')
                    && (scope == "*" || scope == ns)
                    && bare.ends_with(defined.trim_start_matches('*'))
            })
            .map(|(_, e)| e)
    }
}
