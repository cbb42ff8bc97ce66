//! DestinationRule analyzers: TLS origination that verifies no server (IST0128, IST0129), and
//! hosts and subsets that select nothing (IST0174, IST0173).

use super::hosts::HostMap;
use super::{Context, Findings};
use crate::selects;
use std::collections::BTreeMap;
use weft_api::Resource;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;
use weft_api::types::destination_rule::{ClientTlsMode, ClientTlsSettings};

/// `destinationrule.CaCertificateAnalyzer`: SIMPLE or MUTUAL TLS without `caCertificates`, unless
/// the certificate comes from `credentialName` for a rule scoped by `workloadSelector`. Only the
/// rule's top-level traffic policy is read, as Istio reads it.
pub fn ca_certificates(ctx: &Context, out: &mut Findings) {
    for o in &ctx.objects {
        let Resource::DestinationRule(dr) = &o.resource else {
            continue;
        };
        let ns = Context::namespace(o).to_string();
        let name = Context::full_name(o);
        let host = dr.spec.host.clone().unwrap_or_default();
        let selected = dr.spec.workload_selector.is_some();
        let unverified = |tls: &ClientTlsSettings| -> Option<&'static str> {
            let mode = match tls.mode {
                Some(ClientTlsMode::Simple) => "SIMPLE",
                Some(ClientTlsMode::Mutual) => "MUTUAL",
                _ => return None,
            };
            let has_ca = tls
                .ca_certificates
                .as_deref()
                .is_some_and(|c| !c.is_empty());
            let from_credential = tls
                .credential_name
                .as_deref()
                .is_some_and(|c| !c.is_empty())
                && selected;
            (!has_ca && !from_credential).then_some(mode)
        };
        let Some(policy) = &dr.spec.traffic_policy else {
            continue;
        };
        let at = FieldPath::root().key("spec").key("trafficPolicy");
        if let Some(mode) = policy.tls.as_ref().and_then(unverified) {
            let args = [name.clone(), ns.clone(), mode.to_string(), host.clone()];
            out.add(o, &at.key("tls"), "IST0128", &args);
        }
        for (i, p) in policy.port_level_settings.iter().enumerate() {
            if let Some(mode) = p.tls.as_ref().and_then(unverified) {
                let port = p.port.as_ref().and_then(|p| p.number).unwrap_or(0);
                let args = [
                    name.clone(),
                    ns.clone(),
                    mode.to_string(),
                    host.clone(),
                    format!("number:{port}"),
                ];
                let pat = at.key("portLevelSettings").index(i).key("tls");
                out.add(o, &pat, "IST0129", &args);
            }
        }
    }
}

/// `destinationrule.SubsetSelectPodAnalyzer`: a rule for a host no service defines (IST0174),
/// and each subset whose labels (over a ServiceEntry's workload selector) match no Pod in any
/// namespace (IST0173). Pods carry their Node's topology labels and `kubernetes.io/hostname`.
pub fn subsets_select_pods(ctx: &Context, out: &mut Findings) {
    let hosts = HostMap::new(ctx);
    let nodes: BTreeMap<&str, &Labels> = ctx
        .objects
        .iter()
        .filter_map(|o| match &o.resource {
            Resource::Node(n) => {
                Some((n.metadata.name.as_deref().unwrap_or(""), &n.metadata.labels))
            }
            _ => None,
        })
        .collect();
    let pods: Vec<Labels> = ctx
        .objects
        .iter()
        .filter_map(|o| match &o.resource {
            Resource::Pod(p) => Some(p),
            _ => None,
        })
        .map(|p| {
            let mut labels = p.metadata.labels.clone();
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.rest.get("nodeName"))
                .and_then(|n| n.as_str())
                .unwrap_or("");
            if let Some(n) = nodes.get(node) {
                let region = n
                    .get("topology.kubernetes.io/region")
                    .cloned()
                    .unwrap_or_default();
                let zone = n
                    .get("topology.kubernetes.io/zone")
                    .cloned()
                    .unwrap_or_default();
                let subzone = n
                    .get("topology.istio.io/subzone")
                    .cloned()
                    .unwrap_or_default();
                // istiod's LocalityToString then AugmentLabels: a level is set only if it and
                // the levels above it are non-empty.
                if !region.is_empty() {
                    labels.insert("topology.kubernetes.io/region".into(), region);
                    if !zone.is_empty() {
                        labels.insert("topology.kubernetes.io/zone".into(), zone);
                        if !subzone.is_empty() {
                            labels.insert("topology.istio.io/subzone".into(), subzone);
                        }
                    }
                }
            }
            if !node.is_empty() {
                labels.insert("kubernetes.io/hostname".into(), node.to_string());
            }
            labels
        })
        .collect();
    for o in &ctx.objects {
        let Resource::DestinationRule(dr) = &o.resource else {
            continue;
        };
        let ns = Context::namespace(o);
        let host = dr.spec.host.as_deref().unwrap_or("");
        let spec = FieldPath::root().key("spec");
        let Some(entry) = hosts.lookup(ns, &dr.spec.export_to, host, &ctx.domain_suffix) else {
            out.add(o, &spec.key("host"), "IST0174", &[host.to_string()]);
            continue;
        };
        // Subsets by name: a repeated name is one subset, the last definition winning.
        let mut by_name: BTreeMap<&str, (usize, Labels)> = BTreeMap::new();
        for (i, s) in dr.spec.subsets.iter().enumerate() {
            let mut selector = entry.workload_selector.clone().unwrap_or_default();
            selector.extend(s.labels.clone());
            by_name.insert(s.name.as_deref().unwrap_or(""), (i, selector));
        }
        for (name, (i, selector)) in by_name {
            if !pods.iter().any(|p| selects(&selector, p)) {
                let at = spec.key("subsets").index(i);
                out.add(o, &at, "IST0173", &[name.to_string()]);
            }
        }
    }
}
