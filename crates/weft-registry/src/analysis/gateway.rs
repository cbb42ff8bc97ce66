//! Gateway and Sidecar selector analyzers: gateways that select no workload or listen where no
//! Service reaches (IST0101, IST0162), that claim one host and port on one workload (IST0145) or
//! one certificate (IST0138); Sidecars that select nothing or select a pod with another
//! (IST0101, IST0110, IST0111, IST0167).

use super::json::selector_string;
use super::{Context, Findings};
use crate::selects;
use std::collections::{BTreeMap, BTreeSet};
use weft_api::Resource;
use weft_api::load::Loaded;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;
use weft_api::types::kube::IntOrString;

/// A server's port number as the conflict check keys it (`0` when unset).
fn server_port(server: &weft_api::types::gateway::Server) -> String {
    server
        .port
        .as_ref()
        .and_then(|p| p.number)
        .unwrap_or(0)
        .to_string()
}

/// IST0101 for a selector no pod matches.
fn no_pod_selected(o: &Loaded, selector: String, out: &mut Findings) {
    let at = FieldPath::root().key("spec").key("selector");
    out.add(o, &at, "IST0101", &["selector".into(), selector]);
}

/// Pods: (namespace, name, labels, annotations).
fn pods(ctx: &Context) -> Vec<(&str, &str, &Labels, &Labels)> {
    ctx.objects
        .iter()
        .filter_map(|o| match &o.resource {
            Resource::Pod(p) => Some((
                Context::namespace(o),
                o.resource.name(),
                &p.metadata.labels,
                &p.metadata.annotations,
            )),
            _ => None,
        })
        .collect()
}

/// `gateway.ConflictingGatewayAnalyzer`: servers of gateways on the same workload (equal
/// selectors, or one's selector text inside the other's and a pod matching both) and port that
/// share a host and bind, compared as strings as Istio compares them.
pub fn conflicting_gateways(ctx: &Context, out: &mut Findings) {
    let pods = pods(ctx);
    // selector~port -> gateway -> host -> bind. A gateway's later server on a port replaces
    // the earlier, as in Istio.
    type HostsBind = BTreeMap<String, String>;
    let mut by_key: BTreeMap<(String, String), Vec<(String, HostsBind)>> = BTreeMap::new();
    for o in &ctx.objects {
        let Resource::Gateway(gw) = &o.resource else {
            continue;
        };
        let sel = selector_string(&gw.spec.selector);
        for server in &gw.spec.servers {
            let port = server_port(server);
            let bind = server.bind.clone().unwrap_or_default();
            let hb: HostsBind = server
                .hosts
                .iter()
                .map(|h| (h.clone(), bind.clone()))
                .collect();
            let entries = by_key.entry((sel.clone(), port)).or_default();
            match entries
                .iter_mut()
                .find(|(n, _)| *n == Context::full_name(o))
            {
                Some(e) => e.1 = hb,
                None => entries.push((Context::full_name(o), hb)),
            }
        }
    }
    for o in &ctx.objects {
        let Resource::Gateway(gw) = &o.resource else {
            continue;
        };
        let name = Context::full_name(o);
        let sel = selector_string(&gw.spec.selector);
        let hit: Vec<&(String, String)> = by_key
            .keys()
            .filter(|(other_sel, _)| {
                *other_sel == sel
                    || ((other_sel.contains(&sel) || sel.contains(other_sel.as_str()))
                        && pods.iter().any(|(_, _, labels, _)| {
                            selects(&gw.spec.selector, labels)
                                && selects(&parse_selector(other_sel), labels)
                        }))
            })
            .collect();
        if !sel.is_empty() && hit.is_empty() {
            no_pod_selected(o, sel, out);
            continue;
        }
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let port = server_port(server);
            let bind = server.bind.clone().unwrap_or_default();
            let mut conflicts = Vec::new();
            for key in hit.iter().filter(|(_, p)| *p == port) {
                for (other, hosts) in by_key.get(*key).into_iter().flatten() {
                    if *other != name && server.hosts.iter().any(|h| hosts.get(h) == Some(&bind)) {
                        conflicts.push(other.clone());
                    }
                }
            }
            if !conflicts.is_empty() {
                conflicts.sort();
                let args = [
                    conflicts.join(","),
                    sel.clone(),
                    port,
                    server.hosts.join(","),
                ];
                let at = FieldPath::root().key("spec").key("servers").index(i);
                out.add(o, &at, "IST0145", &args);
            }
        }
    }
}

/// Istio's `parseSelectorFromString`: `k=v` pairs separated by commas.
fn parse_selector(s: &str) -> Labels {
    s.split(',')
        .filter_map(|kv| match kv.split('=').collect::<Vec<_>>().as_slice() {
            [k, v] => Some((k.to_string(), v.to_string())),
            _ => None,
        })
        .collect()
}

/// `gateway.IngressGatewayPortAnalyzer`: a gateway that selects no pod (IST0101), and each server
/// port that no TCP port (`port` or numeric `targetPort`) of a Service of its pods carries.
pub fn ingress_gateway_ports(ctx: &Context, out: &mut Findings) {
    let pods = pods(ctx);
    let services: Vec<(&str, &Labels, Vec<i64>)> = ctx
        .objects
        .iter()
        .filter_map(|o| match &o.resource {
            Resource::Service(s) => {
                let spec = s.spec.as_ref()?;
                let mut ports = Vec::new();
                for p in spec
                    .ports
                    .iter()
                    .filter(|p| p.protocol.as_deref() == Some("TCP"))
                {
                    ports.push(p.port.unwrap_or(0));
                    let target = match &p.target_port {
                        Some(IntOrString::Int(n)) => *n,
                        Some(IntOrString::String(s)) => s.parse().unwrap_or(0),
                        None => 0,
                    };
                    if target != 0 {
                        ports.push(target);
                    }
                }
                static NONE: std::sync::LazyLock<Labels> = std::sync::LazyLock::new(Labels::new);
                Some((
                    Context::namespace(o),
                    spec.selector.as_ref().unwrap_or(&NONE),
                    ports,
                ))
            }
            _ => None,
        })
        .collect();
    for o in &ctx.objects {
        let Resource::Gateway(gw) = &o.resource else {
            continue;
        };
        let mut ports = BTreeSet::new();
        let mut matched = false;
        for (ns, _, labels, _) in &pods {
            if !selects(&gw.spec.selector, labels) {
                continue;
            }
            matched = true;
            for (svc_ns, selector, svc_ports) in &services {
                if svc_ns == ns && selects(selector, labels) {
                    ports.extend(svc_ports.iter().copied());
                }
            }
        }
        let sel = selector_string(&gw.spec.selector);
        if !matched {
            no_pod_selected(o, sel, out);
            continue;
        }
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let Some(number) = server.port.as_ref().map(|p| p.number.unwrap_or(0)) else {
                continue;
            };
            if !ports.contains(&number) {
                let at = FieldPath::root()
                    .key("spec")
                    .key("servers")
                    .index(i)
                    .key("port");
                out.add(o, &at, "IST0162", &[number.to_string(), sel.clone()]);
            }
        }
    }
}

/// `gateway.CertificateAnalyzer`: a gateway whose workloads include another's (its selector a
/// subset of the other's) and that serves the same certificate: clients reusing an HTTP/2
/// connection may get 404s.
pub fn duplicate_certificates(ctx: &Context, out: &mut Findings) {
    let key = |tls: &weft_api::types::gateway::ServerTlsSettings| {
        format!(
            "{}-{}-{}",
            tls.credential_name.as_deref().unwrap_or(""),
            tls.server_certificate.as_deref().unwrap_or(""),
            tls.private_key.as_deref().unwrap_or("")
        )
    };
    let gateways: Vec<(
        &Loaded,
        &weft_api::resource::IstioObject<weft_api::types::gateway::Gateway>,
    )> = ctx
        .objects
        .iter()
        .filter_map(|o| match &o.resource {
            Resource::Gateway(gw) => Some((o, gw.as_ref())),
            _ => None,
        })
        .collect();
    let mut index: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (_, gw)) in gateways.iter().enumerate() {
        for s in &gw.spec.servers {
            if let Some(tls) = &s.tls {
                index.entry(key(tls)).or_default().push(i);
            }
        }
    }
    for (i, (o, gw)) in gateways.iter().enumerate() {
        for (si, s) in gw.spec.servers.iter().enumerate() {
            let Some(tls) = &s.tls else { continue };
            for j in index.get(&key(tls)).into_iter().flatten() {
                let (other_o, other) = gateways[*j];
                if *j == i || Context::full_name(other_o) == Context::full_name(o) {
                    continue;
                }
                let subset = gw
                    .spec
                    .selector
                    .iter()
                    .all(|(k, v)| other.spec.selector.get(k) == Some(v));
                if subset {
                    let args = [format!(
                        "[{} {}]",
                        Context::full_name(o),
                        Context::full_name(other_o)
                    )];
                    let at = FieldPath::root()
                        .key("spec")
                        .key("servers")
                        .index(si)
                        .key("tls");
                    out.add(o, &at, "IST0138", &args);
                }
            }
        }
    }
}

/// `sidecar.SelectorAnalyzer`.
pub fn sidecar_selectors(ctx: &Context, out: &mut Findings) {
    let pods = pods(ctx);
    let mut by_pod: BTreeMap<(String, String), Vec<&Loaded>> = BTreeMap::new();
    let mut ambient_pod: BTreeMap<(String, String), bool> = BTreeMap::new();
    let mut unselected: BTreeMap<String, Vec<&Loaded>> = BTreeMap::new();
    for o in &ctx.objects {
        let Resource::Sidecar(sc) = &o.resource else {
            continue;
        };
        let ns = Context::namespace(o);
        let selector = sc
            .spec
            .workload_selector
            .as_ref()
            .map(|w| &w.labels)
            .filter(|l| !l.is_empty());
        let Some(selector) = selector else {
            unselected.entry(ns.to_string()).or_default().push(o);
            continue;
        };
        let mut found = false;
        for (pod_ns, name, labels, annotations) in &pods {
            if *pod_ns == ns && selects(selector, labels) {
                found = true;
                let key = (pod_ns.to_string(), name.to_string());
                by_pod.entry(key.clone()).or_default().push(o);
                let ambient = annotations
                    .get("ambient.istio.io/redirection")
                    .is_some_and(|v| v == "enabled");
                ambient_pod.insert(key, ambient);
            }
        }
        if !found {
            let at = FieldPath::root().key("spec").key("workloadSelector");
            out.add(
                o,
                &at,
                "IST0101",
                &["selector".into(), selector_string(selector)],
            );
        }
    }
    let namespaces: BTreeMap<&str, &Labels> = ctx
        .objects
        .iter()
        .filter_map(|o| match &o.resource {
            Resource::Namespace(n) => Some((o.resource.name(), &n.metadata.labels)),
            _ => None,
        })
        .collect();
    let spec = FieldPath::root().key("spec");
    let mut reported = BTreeSet::new();
    for (pod, list) in &by_pod {
        let ambient = ambient_pod.get(pod).copied().unwrap_or(false);
        if list.len() == 1 && !ambient {
            continue;
        }
        let names: Vec<&str> = list.iter().map(|o| o.resource.name()).collect();
        for o in list {
            if ambient {
                if reported.insert(Context::full_name(o)) {
                    let why = "selected workload is in ambient mode, the policy has no impact";
                    out.add(o, &spec, "IST0167", &[why.into()]);
                }
                continue;
            }
            let args = [super::format::go_list(&names), pod.0.clone(), pod.1.clone()];
            out.add(o, &spec.key("workloadSelector"), "IST0110", &args);
        }
    }
    for (ns, list) in &unselected {
        let ambient = namespaces.get(ns.as_str()).is_some_and(|l| {
            l.get("istio-injection").is_none_or(|v| v != "enabled")
                && l.get("istio.io/rev").is_none_or(String::is_empty)
                && l.get("istio.io/dataplane-mode")
                    .is_some_and(|v| v == "ambient")
        });
        if ambient {
            for o in list {
                if reported.insert(Context::full_name(o)) {
                    let why = "namespace is in ambient mode, the policy has no impact";
                    out.add(o, &spec, "IST0167", &[why.into()]);
                }
            }
            continue;
        }
        if list.len() > 1 {
            let names: Vec<&str> = list.iter().map(|o| o.resource.name()).collect();
            for o in list {
                let args = [super::format::go_list(&names), ns.clone()];
                out.add(o, &spec, "IST0111", &args);
            }
        }
    }
}
