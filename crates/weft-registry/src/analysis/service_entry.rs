//! ServiceEntry analyzers: TCP ports without addresses (IST0134), and one host and port given
//! different protocols by different entries (IST0177).

use super::hosts::export_scopes;
use super::{Context, Findings};
use std::collections::{BTreeMap, BTreeSet};
use weft_api::Resource;
use weft_api::path::FieldPath;

/// `serviceentry.Analyzer`: a ServiceEntry without `addresses` (and none allocated in its
/// status) cannot be told apart for TCP, so each TCP or protocol-less port is reported, unless
/// the mesh's DNS proxy allocates addresses.
pub fn protocol_addresses(ctx: &Context, out: &mut Findings) {
    let metadata = ctx
        .mesh
        .default_config
        .as_ref()
        .and_then(|d| d.other.get("proxyMetadata"))
        .and_then(|m| m.as_object());
    let flag = |k: &str| metadata.and_then(|m| m.get(k)).and_then(|v| v.as_str()) == Some("true");
    let auto_allocated = flag("ISTIO_META_DNS_CAPTURE")
        && (flag("ISTIO_META_DNS_AUTO_ALLOCATE") || flag("PILOT_ENABLE_IP_AUTOALLOCATE"));
    if auto_allocated {
        return;
    }
    for o in &ctx.objects {
        let Resource::ServiceEntry(se) = &o.resource else {
            continue;
        };
        let allocated = se
            .status
            .as_ref()
            .and_then(|s| s.get("addresses"))
            .and_then(|a| a.as_array())
            .is_some_and(|a| !a.is_empty());
        if !se.spec.addresses.is_empty() || allocated {
            continue;
        }
        for (i, p) in se.spec.ports.iter().enumerate() {
            let protocol = p.protocol.as_deref().unwrap_or("");
            if protocol.is_empty() || protocol.eq_ignore_ascii_case("tcp") {
                let at = FieldPath::root().key("spec").key("ports").index(i);
                out.add(o, &at, "IST0134", &[]);
            }
        }
    }
}

/// `serviceentry.ConflictingServiceEntryProtocolAnalyzer`: entries that see each other (by
/// `exportTo`) and give one host and port different protocols are each reported once.
pub fn conflicting_protocols(ctx: &Context, out: &mut Findings) {
    type Key = (String, String, i64);
    let mut index: BTreeMap<Key, Vec<(String, usize)>> = BTreeMap::new();
    for (i, o) in ctx.objects.iter().enumerate() {
        let Resource::ServiceEntry(se) = &o.resource else {
            continue;
        };
        let ns = Context::namespace(o);
        let scopes = export_scopes(&se.spec.export_to, ns);
        for scope in &scopes {
            for h in &se.spec.hosts {
                for p in &se.spec.ports {
                    let key = (scope.clone(), h.clone(), p.number.unwrap_or(0));
                    let protocol = p.protocol.clone().unwrap_or_default().to_ascii_uppercase();
                    index.entry(key).or_default().push((protocol, i));
                }
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, host, port), entries) in &index {
        let mut all = entries.clone();
        if scope != "*"
            && let Some(shared) = index.get(&("*".to_string(), host.clone(), *port))
        {
            all.extend(shared.iter().cloned());
        }
        let protocols: BTreeSet<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = all
            .iter()
            .map(|(_, i)| Context::full_name(&ctx.objects[*i]))
            .collect();
        let names = names.into_iter().collect::<Vec<_>>().join(", ");
        let protocols = protocols.into_iter().collect::<Vec<_>>().join(", ");
        for (_, i) in &all {
            if reported.insert(*i) {
                let args = [
                    names.clone(),
                    host.clone(),
                    port.to_string(),
                    protocols.clone(),
                ];
                out.add(
                    &ctx.objects[*i],
                    &FieldPath::root().key("spec"),
                    "IST0177",
                    &args,
                );
            }
        }
    }
}
