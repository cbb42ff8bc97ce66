//! VirtualService analyzers: gateways that do not exist or do not serve the service's hosts
//! (IST0101, IST0132, IST0165), destinations no service defines or whose port is ambiguous
//! (IST0101, IST0112), subsets an ingress route bypasses (IST0140), subsets no DestinationRule
//! defines (IST0101), and hosts two mesh VirtualServices both claim (IST0109).

use super::hosts::{HostMap, export_scopes, fqdn};
use super::{Context, Findings};
use std::collections::{BTreeMap, BTreeSet};
use weft_api::Resource;
use weft_api::load::Loaded;
use weft_api::path::FieldPath;
use weft_api::resource::IstioObject;
use weft_api::types::virtual_service::{Destination, VirtualService};

fn virtual_services(
    ctx: &Context,
) -> impl Iterator<Item = (&Loaded, &IstioObject<VirtualService>)> {
    ctx.objects.iter().filter_map(|o| match &o.resource {
        Resource::VirtualService(vs) => Some((o, vs.as_ref())),
        _ => None,
    })
}

/// A destination and where its host is written (messages point there, as Istio's
/// `util.DestinationHost` and `MirrorHost` do); `None` for `route: - {}`, which Istio still
/// checks.
struct Dest<'a> {
    at: FieldPath,
    destination: Option<&'a Destination>,
}

impl Dest<'_> {
    fn host(&self) -> &str {
        self.destination
            .and_then(|d| d.host.as_deref())
            .unwrap_or("")
    }
    fn subset(&self) -> &str {
        self.destination
            .and_then(|d| d.subset.as_deref())
            .unwrap_or("")
    }
    fn port(&self) -> Option<i64> {
        self.destination
            .and_then(|d| d.port.as_ref())
            .map(|p| p.number.unwrap_or(0))
    }
}

/// The destination of route `j` of rule `i` of `kind` (`http`, `tcp`, `tls`), where its host is
/// written.
fn route_dest<'a>(
    kind: &str,
    i: usize,
    j: usize,
    destination: Option<&'a Destination>,
) -> Dest<'a> {
    let at = FieldPath::root()
        .key("spec")
        .key(kind)
        .index(i)
        .key("route")
        .index(j)
        .key("destination")
        .key("host");
    Dest { at, destination }
}

/// Route destinations in Istio's order: tcp, tls, then http.
fn routes(vs: &VirtualService) -> Vec<Dest<'_>> {
    let mut out = Vec::new();
    for (i, r) in vs.tcp.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            out.push(route_dest("tcp", i, j, d.destination.as_ref()));
        }
    }
    for (i, r) in vs.tls.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            out.push(route_dest("tls", i, j, d.destination.as_ref()));
        }
    }
    out.extend(http_routes(vs));
    out
}

fn http_routes(vs: &VirtualService) -> Vec<Dest<'_>> {
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        for (j, d) in r.route.iter().flatten().enumerate() {
            out.push(route_dest("http", i, j, d.destination.as_ref()));
        }
    }
    out
}

fn mirrors(vs: &VirtualService) -> Vec<Dest<'_>> {
    let spec = FieldPath::root().key("spec");
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        if let Some(m) = &r.mirror {
            let at = spec.key("http").index(i).key("mirror").key("host");
            out.push(Dest {
                at,
                destination: Some(m),
            });
        }
        for (j, m) in r.mirrors.iter().flatten().enumerate() {
            let at = spec
                .key("http")
                .index(i)
                .key("mirrors")
                .index(j)
                .key("destination")
                .key("host");
            out.push(Dest {
                at,
                destination: m.destination.as_ref(),
            });
        }
    }
    out
}

/// `virtualservice.DestinationHostAnalyzer`.
pub fn destination_hosts(ctx: &Context, out: &mut Findings) {
    let hosts = HostMap::new(ctx);
    for (o, vs) in virtual_services(ctx) {
        let ns = Context::namespace(o);
        for (what, dests) in [
            ("host", routes(&vs.spec)),
            ("mirror host", mirrors(&vs.spec)),
        ] {
            for d in dests {
                let host = d.host();
                let Some(entry) = hosts.lookup(ns, &vs.spec.export_to, host, &ctx.domain_suffix)
                else {
                    out.add(o, &d.at, "IST0101", &[what.into(), host.into()]);
                    continue;
                };
                match d.port() {
                    None if entry.ports.len() > 1 => {
                        let ports: Vec<String> = entry.ports.iter().map(i64::to_string).collect();
                        let args = [host.to_string(), super::format::go_list(&ports)];
                        out.add(o, &d.at, "IST0112", &args);
                    }
                    Some(p) if !entry.ports.contains(&p) => {
                        let args = ["host:port".to_string(), format!("{host}:{p}")];
                        out.add(o, &d.at, "IST0101", &args);
                    }
                    _ => {}
                }
            }
        }
    }
    // IST0140: a route through a gateway without a subset, to a host another VirtualService
    // splits by subset, skips those subsets' rules.
    let mut subset_dests: Vec<(String, String)> = Vec::new();
    for (o, vs) in virtual_services(ctx) {
        for d in http_routes(&vs.spec) {
            if !d.subset().is_empty() {
                for h in vs.spec.hosts.iter().filter(|h| h.as_str() == d.host()) {
                    subset_dests.push((Context::full_name(o), h.clone()));
                }
            }
        }
    }
    for (o, vs) in virtual_services(ctx) {
        if vs.spec.gateways.is_empty() {
            continue;
        }
        for d in http_routes(&vs.spec) {
            if !d.subset().is_empty() {
                continue;
            }
            for (other, host) in &subset_dests {
                if host == d.host() {
                    out.add(o, &d.at, "IST0140", &[other.clone(), Context::full_name(o)]);
                }
            }
        }
    }
}

/// Istio's `GetResourceNameFromHost`: `name.ns.svc.cluster.local` names a Service; anything
/// else is taken as written, in the referring namespace.
fn resource_name(ns: &str, host: &str, suffix: &str) -> (String, String) {
    if let Some(rest) = host.strip_suffix(&format!(".svc.{suffix}"))
        && let Some((name, svc_ns)) = rest.rsplit_once('.')
        && !name.is_empty()
        && !svc_ns.is_empty()
    {
        return (svc_ns.to_string(), name.to_string());
    }
    (ns.to_string(), host.to_string())
}

/// `virtualservice.DestinationRuleAnalyzer`.
pub fn destination_rules(ctx: &Context, out: &mut Findings) {
    let mut defined = BTreeSet::new();
    for o in &ctx.objects {
        if let Resource::DestinationRule(dr) = &o.resource {
            let key = resource_name(
                Context::namespace(o),
                dr.spec.host.as_deref().unwrap_or(""),
                &ctx.domain_suffix,
            );
            for s in &dr.spec.subsets {
                defined.insert((key.clone(), s.name.clone().unwrap_or_default()));
            }
        }
    }
    for (o, vs) in virtual_services(ctx) {
        let ns = Context::namespace(o);
        for (what, dests) in [
            ("host+subset in destinationrule", routes(&vs.spec)),
            ("mirror+subset in destinationrule", mirrors(&vs.spec)),
        ] {
            for d in dests {
                if d.subset().is_empty() {
                    continue;
                }
                let key = resource_name(ns, d.host(), &ctx.domain_suffix);
                if !defined.contains(&(key, d.subset().to_string())) {
                    let args = [what.to_string(), format!("{}+{}", d.host(), d.subset())];
                    out.add(o, &d.at, "IST0101", &args);
                }
            }
        }
    }
}

/// Istio's `host.Name.Matches`: equal, or one's `*` suffix covers the other. Symmetric and
/// case-sensitive, unlike `crate::host::matches`, which asks whether a pattern covers a host.
fn host_matches(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(x), Some(y)) => {
            if a.len() < b.len() {
                y.ends_with(x)
            } else {
                x.ends_with(y)
            }
        }
        (Some(x), None) => b.ends_with(x),
        (None, Some(y)) => a.ends_with(y),
        (None, None) => a == b,
    }
}

/// `ns/name` or `name` in the default namespace (Istio's `NewShortOrFullName`).
fn short_or_full(default_ns: &str, s: &str) -> (String, String) {
    match s.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (default_ns.to_string(), s.to_string()),
    }
}

/// `virtualservice.GatewayAnalyzer`.
pub fn gateways(ctx: &Context, out: &mut Findings) {
    // Each Istio Gateway's server hosts, `./h` made `ns/h` and `*/h` made `h` (`*/*` is `*`).
    let mut istio: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    // Kubernetes Gateways' listener hostnames; `None` when a listener takes any host.
    let mut kube: BTreeMap<(String, String), Option<Vec<String>>> = BTreeMap::new();
    for o in &ctx.objects {
        let key = (
            Context::namespace(o).to_string(),
            o.resource.name().to_string(),
        );
        match &o.resource {
            Resource::Gateway(gw) => {
                let hosts = istio.entry(key.clone()).or_default();
                for server in &gw.spec.servers {
                    let mut server_hosts = Vec::new();
                    for h in &server.hosts {
                        match h.split_once('/') {
                            Some((".", rest)) => server_hosts.push(format!("{}/{rest}", key.0)),
                            Some(("*", "*")) => {
                                server_hosts = vec!["*".to_string()];
                                break;
                            }
                            Some(("*", rest)) => server_hosts.push(rest.to_string()),
                            _ => server_hosts.push(h.clone()),
                        }
                    }
                    hosts.extend(server_hosts);
                }
            }
            Resource::GatewayApi(g) if g.kind == "Gateway" => {
                let listeners = g
                    .spec
                    .as_ref()
                    .and_then(|s| s.get("listeners"))
                    .and_then(|l| l.as_array())
                    .cloned()
                    .unwrap_or_default();
                let mut names = Some(Vec::new());
                for l in listeners {
                    match l
                        .get("hostname")
                        .and_then(|h| h.as_str())
                        .filter(|h| !h.is_empty())
                    {
                        Some(h) => {
                            if let Some(n) = names.as_mut() {
                                n.push(h.to_string());
                            }
                        }
                        None => names = None,
                    }
                }
                kube.insert(key, names);
            }
            _ => {}
        }
    }
    for (o, vs) in virtual_services(ctx) {
        let ns = Context::namespace(o);
        for (i, gw) in vs.spec.gateways.iter().enumerate() {
            if gw == "mesh" {
                continue;
            }
            let at = FieldPath::root().key("spec").key("gateways").index(i);
            let name_part = gw.split_once('/').map_or(gw.as_str(), |(_, n)| n);
            if name_part.contains("~istio-autogenerated-k8s-gateway~") {
                out.add(o, &at, "IST0165", &[Context::full_name(o), gw.clone()]);
                continue;
            }
            let key = short_or_full(ns, gw);
            let matched = match (istio.get(&key), kube.get(&key)) {
                (Some(hosts), _) => {
                    // Hosts scoped to a namespace count only for VirtualServices there.
                    let visible = hosts.iter().filter_map(|h| match h.split_once('/') {
                        Some((scope, host)) if scope == ns || scope == "*" => Some(host),
                        Some(_) => None,
                        None => Some(h.as_str()),
                    });
                    let visible: Vec<&str> = visible.collect();
                    visible
                        .iter()
                        .any(|g| vs.spec.hosts.iter().any(|v| host_matches(g, v)))
                }
                (None, Some(None)) => true,
                (None, Some(Some(hosts))) => hosts
                    .iter()
                    .any(|g| vs.spec.hosts.iter().any(|v| host_matches(g, v))),
                (None, None) => {
                    out.add(o, &at, "IST0101", &["gateway".into(), gw.clone()]);
                    false
                }
            };
            if !matched {
                let gw_full = if key.0.is_empty() {
                    key.1.clone()
                } else {
                    format!("{}/{}", key.0, key.1)
                };
                let args = [
                    super::format::go_list(&vs.spec.hosts),
                    Context::full_name(o),
                    gw_full,
                ];
                out.add(o, &at, "IST0132", &args);
            }
        }
    }
}

/// `virtualservice.ConflictingMeshGatewayHostsAnalyzer`: VirtualServices bound to the mesh that
/// claim one host in one scope; each reported once.
pub fn conflicting_mesh_gateway_hosts(ctx: &Context, out: &mut Findings) {
    let mut by_host: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, o) in ctx.objects.iter().enumerate() {
        let Resource::VirtualService(vs) = &o.resource else {
            continue;
        };
        let mesh = vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
        if !mesh {
            continue;
        }
        let ns = Context::namespace(o);
        let scopes = export_scopes(&vs.spec.export_to, ns);
        for scope in scopes {
            for h in &vs.spec.hosts {
                let key = (scope.clone(), fqdn(ns, h, &ctx.domain_suffix));
                by_host.entry(key).or_default().push(i);
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, host), list) in &by_host {
        let mut all = list.clone();
        if scope != "*" {
            for ((s2, h2), l2) in &by_host {
                if s2 == "*" && host_matches(host, h2) {
                    all.extend(l2.iter().copied());
                }
            }
        }
        if all.len() < 2 {
            continue;
        }
        let names: Vec<String> = all
            .iter()
            .map(|i| Context::full_name(&ctx.objects[*i]))
            .collect();
        let names = names.join(",");
        for i in &all {
            if reported.insert(*i) {
                let args = [names.clone(), format!("{scope}/{host}")];
                out.add(
                    &ctx.objects[*i],
                    &FieldPath::root().key("spec").key("hosts"),
                    "IST0109",
                    &args,
                );
            }
        }
    }
}
