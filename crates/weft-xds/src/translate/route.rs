//! Route tables: virtual hosts by host name, each with the routes of the VirtualService that
//! claims the host or a default route to the service. A sidecar has one table per HTTP port
//! (named by the port, `80`), and `http_proxy` for applications that use it as their HTTP proxy;
//! a gateway has one per listening port (`http.8080`).

use super::cluster::{PASSTHROUGH, outbound_name};
use super::config::{Obj, Scope};
use super::http_route::{self, Context};
use super::pb;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, VirtualHost, route,
    route_action::ClusterSpecifier, virtual_host,
};
use std::collections::BTreeSet;
use weft_api::types::sidecar::OutboundTrafficPolicyMode;
use weft_api::types::virtual_service::VirtualService;
use weft_registry::{Protocol, Service, host};

pub fn is_http(p: Protocol) -> bool {
    matches!(
        p,
        Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
    )
}

/// Virtual hosts of one table, with each domain kept once (Envoy refuses a table that lists a
/// domain twice).
#[derive(Default)]
struct Table {
    virtual_hosts: Vec<VirtualHost>,
    domains: BTreeSet<String>,
}

impl Table {
    fn add(&mut self, name: String, domains: Vec<String>, routes: Vec<Route>) {
        self.push(name, domains, routes, false);
    }

    /// Adds a virtual host; with `require_tls`, one that sends plain requests to https (and
    /// that needs no routes to do so).
    fn push(&mut self, name: String, domains: Vec<String>, routes: Vec<Route>, require_tls: bool) {
        let domains: Vec<String> = domains
            .into_iter()
            .filter(|d| self.domains.insert(d.clone()))
            .collect();
        if domains.is_empty() || (routes.is_empty() && !require_tls) {
            return;
        }
        self.virtual_hosts.push(VirtualHost {
            name,
            domains,
            routes,
            require_tls: if require_tls {
                virtual_host::TlsRequirementType::All as i32
            } else {
                0
            },
            // istiod lets every upstream see which attempt it is serving.
            include_request_attempt_count: true,
            ..Default::default()
        });
    }

    fn into_config(self, name: &str) -> RouteConfiguration {
        RouteConfiguration {
            name: name.to_string(),
            virtual_hosts: self.virtual_hosts,
            validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
            ..Default::default()
        }
    }
}

/// The names a client may use for `hostname` on `port`, as istiod lists them: the name and
/// its shorter forms within the cluster domain (the bare service name only from its own
/// namespace), the service's addresses, each also with `:port`. `bare` adds the forms
/// without a port (a client omits the port it connects to when it is the default).
fn domains(
    hostname: &str,
    service: Option<&Service>,
    port: u16,
    namespace: &str,
    bare: bool,
) -> Vec<String> {
    let mut names = vec![hostname.to_string()];
    if let Some(s) = service
        && let Some(prefix) =
            hostname.strip_suffix(&format!(".svc.{}", super::config::DOMAIN_SUFFIX))
    {
        names.push(format!("{prefix}.svc"));
        names.push(prefix.to_string());
        if s.namespace == namespace
            && let Some((short, _)) = prefix.split_once('.')
        {
            names.push(short.to_string());
        }
    }
    if let Some(s) = service {
        names.extend(s.addresses.iter().cloned());
    }
    let mut out = Vec::new();
    for n in names {
        if bare {
            out.push(n.clone());
        }
        out.push(format!("{n}:{port}"));
    }
    out
}

#[allow(deprecated)]
fn default_route(cluster: String) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(http_route::route_match(None)),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
            timeout: Some(pb::millis(0)),
            max_grpc_timeout: Some(pb::millis(0)),
            retry_policy: http_route::retry_policy(None),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The routes of every `http` entry of a VirtualService, in order.
fn vs_routes(ctx: &Context<'_, '_>, vs: &Obj<VirtualService>) -> Vec<Route> {
    vs.spec
        .http
        .iter()
        .enumerate()
        .flat_map(|(i, h)| http_route::routes(ctx, vs, i, h))
        .collect()
}

/// A sidecar's virtual hosts for one port into `table`. `bare`: also the port-less names.
fn sidecar_port(scope: &Scope<'_>, port: u16, bare: bool, table: &mut Table) {
    let ctx = Context {
        scope,
        port,
        gateways: vec!["mesh".into()],
        tls: false,
    };
    let at_port: Vec<&Service> = scope
        .services
        .iter()
        .copied()
        .filter(|s| {
            s.ports
                .iter()
                .any(|p| p.number == port && is_http(p.protocol))
        })
        .collect();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    for (vs, hosts) in &scope.virtual_services {
        for h in hosts {
            let serving: Vec<&Service> = at_port
                .iter()
                .copied()
                .filter(|s| host::matches(h, &s.hostname))
                .collect();
            let known_anywhere = scope.services.iter().any(|s| host::matches(h, &s.hostname));
            if serving.is_empty() && (known_anywhere || port != 80) {
                continue;
            }
            if !claimed.insert(h.clone()) {
                scope.problem(format!(
                    "{}: host {h} is already claimed by another VirtualService; this one is ignored for it (conflicting VirtualServices)",
                    vs.label()
                ));
                continue;
            }
            covered.extend(serving.iter().map(|s| s.hostname.as_str()));
            let routes = vs_routes(&ctx, vs);
            let exact = serving.iter().copied().find(|s| s.hostname == *h);
            table.add(
                format!("{h}:{port}"),
                domains(h, exact, port, scope.namespace, bare),
                routes,
            );
        }
    }
    for s in at_port {
        if covered.contains(s.hostname.as_str()) {
            continue;
        }
        let cluster = outbound_name(port, "", &s.hostname);
        table.add(
            format!("{}:{port}", s.hostname),
            domains(&s.hostname, Some(s), port, scope.namespace, bare),
            vec![default_route(cluster)],
        );
    }
}

/// What a sidecar does with a host it does not know: pass it through (ALLOW_ANY) or answer
/// 502 (REGISTRY_ONLY), as istiod's `allow_any` and `block_all` virtual hosts do.
fn unknown_hosts(scope: &Scope<'_>, passthrough: bool, table: &mut Table) {
    match scope.outbound_policy {
        OutboundTrafficPolicyMode::AllowAny if passthrough => table.add(
            "allow_any".into(),
            vec!["*".into()],
            vec![default_route(PASSTHROUGH.into())],
        ),
        OutboundTrafficPolicyMode::RegistryOnly => table.add(
            "block_all".into(),
            vec!["*".into()],
            vec![Route {
                name: "block_all".into(),
                r#match: Some(http_route::route_match(None)),
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 502,
                    ..Default::default()
                })),
                ..Default::default()
            }],
        ),
        _ => {}
    }
}

/// A sidecar's table for one outbound HTTP port, named by the port.
pub fn sidecar(scope: &Scope<'_>, port: u16) -> RouteConfiguration {
    let mut table = Table::default();
    sidecar_port(scope, port, true, &mut table);
    unknown_hosts(scope, true, &mut table);
    table.into_config(&port.to_string())
}

/// `http_proxy`: every HTTP service on every port, for applications that send their requests to
/// the sidecar as their HTTP proxy. Only port 80 answers to port-less names.
pub fn http_proxy(scope: &Scope<'_>) -> RouteConfiguration {
    let mut ports: BTreeSet<u16> = BTreeSet::new();
    for s in &scope.services {
        ports.extend(
            s.ports
                .iter()
                .filter(|p| is_http(p.protocol))
                .map(|p| p.number),
        );
    }
    let mut table = Table::default();
    // Port 80 first, so that its port-less names win.
    if ports.remove(&80) {
        sidecar_port(scope, 80, true, &mut table);
    }
    for port in ports {
        sidecar_port(scope, port, false, &mut table);
    }
    unknown_hosts(scope, false, &mut table);
    table.into_config("http_proxy")
}

/// One HTTP server of a Gateway, bound to the port it listens on.
pub struct GatewayServer<'a> {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    pub gateway_namespace: &'a str,
    /// The server's `hosts` (`ns/host`, `*/host`, `host`).
    pub hosts: &'a [String],
    /// The server's port number (which VirtualService `port` matches see).
    pub port: u16,
    /// `tls.httpsRedirect`: the server's virtual hosts send plain requests to https.
    pub https_redirect: bool,
    /// The server terminates TLS (redirects default to https).
    pub tls: bool,
}

/// The domains of a gateway's virtual host for `host`, with any port.
fn gateway_domains(host: &str) -> Vec<String> {
    if host == "*" {
        vec!["*".to_string()]
    } else {
        vec![host.to_string(), format!("{host}:*")]
    }
}

/// Whether a server's host (`ns/host`) admits a VirtualService host of `namespace`.
fn server_admits(server_host: &str, gateway_ns: &str, vs_ns: &str, vs_host: &str) -> bool {
    let (ns, h) = server_host.split_once('/').unwrap_or(("*", server_host));
    let ns_ok = ns == "*" || (ns == "." && vs_ns == gateway_ns) || ns == vs_ns;
    ns_ok && (host::matches(h, vs_host) || host::matches(vs_host, h))
}

/// A gateway's table for one listening port: the VirtualServices bound to any of the servers.
pub fn gateway(scope: &Scope<'_>, name: &str, servers: &[GatewayServer<'_>]) -> RouteConfiguration {
    let mut table = Table::default();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    for server in servers {
        let ctx = Context {
            scope,
            port: server.port,
            gateways: vec![server.gateway.clone()],
            tls: server.tls,
        };
        for (vs, hosts) in &scope.virtual_services {
            if !ctx.binds(&vs.spec.gateways, &vs.namespace) {
                continue;
            }
            for h in hosts {
                if !server
                    .hosts
                    .iter()
                    .any(|sh| server_admits(sh, server.gateway_namespace, &vs.namespace, h))
                {
                    continue;
                }
                if !claimed.insert(h.clone()) {
                    scope.problem(format!(
                        "{}: host {h} on gateway {} is already claimed by another VirtualService; this one is ignored for it (conflicting VirtualServices)",
                        vs.label(),
                        server.gateway
                    ));
                    continue;
                }
                let routes = vs_routes(&ctx, vs);
                table.push(
                    format!("{h}:{}", server.port),
                    gateway_domains(h),
                    routes,
                    server.https_redirect,
                );
            }
        }
        // As istiod does: a redirecting server redirects its hosts even where no VirtualService
        // routes them.
        if server.https_redirect {
            for sh in server.hosts {
                let h = sh.split_once('/').map_or(sh.as_str(), |(_, h)| h);
                if claimed.insert(h.to_string()) {
                    let name = format!("{h}:{}", server.port);
                    table.push(name, gateway_domains(h), Vec::new(), true);
                }
            }
        }
    }
    table.into_config(name)
}
