//! A gateway's listeners: the servers of every Gateway whose `selector` picks the gateway's
//! labels, grouped by the port the gateway listens on. Plain HTTP servers share a route table
//! (`0.0.0.0_8080`, routes `http.8080`); HTTPS servers terminate TLS on a filter chain of their
//! own, chosen by SNI, with a route table each (`https.443.https.NAME.NAMESPACE`, as istiod
//! names them); TLS PASSTHROUGH servers route by SNI with the VirtualServices' `tls` routes.

use super::config::{Obj, Scope};
use super::listener::{Routes, http_connection_manager};
use super::pb;
use super::proxy::Proxy;
use super::route::{self, GatewayServer};
use super::tls;
use super::{Generated, Inputs, gateway_tls};
use envoy_types::pb::envoy::config::core::v3::{TrafficDirection, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use std::collections::BTreeMap;
use weft_api::types::gateway::{Gateway, ServerTlsMode};
use weft_registry::{Protocol, host};

/// A PASSTHROUGH server: its Gateway and hosts.
struct Passthrough<'a> {
    gateway: &'a Obj<Gateway>,
    hosts: &'a [String],
    port: u16,
}

/// An HTTPS server that terminates TLS: its routes' source and its transport socket.
struct Https<'a> {
    server: GatewayServer<'a>,
    route_name: String,
    tls: TransportSocket,
    provenance: String,
}

pub fn listeners(inputs: &Inputs, scope: &Scope<'_>, proxy: &Proxy, out: &mut Generated) {
    let mut http: BTreeMap<u16, Vec<GatewayServer<'_>>> = BTreeMap::new();
    let mut passthrough: BTreeMap<u16, Vec<Passthrough<'_>>> = BTreeMap::new();
    let mut https: BTreeMap<u16, Vec<Https<'_>>> = BTreeMap::new();
    // AUTO_PASSTHROUGH servers: their hosts and Gateway, by listening port.
    let mut auto: BTreeMap<u16, Vec<(&[String], String)>> = BTreeMap::new();
    // Plain TCP servers: their Gateway, by listening port, with the server's port.
    let mut tcp: BTreeMap<u16, Vec<(String, u16)>> = BTreeMap::new();
    let mut provenance: BTreeMap<u16, String> = BTreeMap::new();
    for gw in &inputs.config.gateways {
        let selector = &gw.spec.selector;
        if selector.is_empty() || !weft_registry::selects(selector, &proxy.labels) {
            continue;
        }
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let field = format!("{}: servers[{i}]", gw.label());
            let Some(port) = server.port.as_ref() else {
                continue;
            };
            let Some(number) = port.number.and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let protocol = Protocol::for_istio_port(
                port.protocol.as_deref(),
                port.name.as_deref().unwrap_or(""),
            );
            let listen = proxy.gateway_port(number);
            let mode = server.tls.as_ref().and_then(|t| t.mode);
            let plain_http = matches!(
                protocol,
                Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
            );
            let tls = server.tls.as_ref();
            if plain_http && mode.is_none() {
                provenance.entry(listen).or_insert_with(|| gw.config_path());
                http.entry(listen).or_default().push(GatewayServer {
                    gateway: format!("{}/{}", gw.namespace, gw.name),
                    gateway_namespace: &gw.namespace,
                    hosts: &server.hosts,
                    port: number,
                    https_redirect: tls.and_then(|t| t.https_redirect) == Some(true),
                    tls: false,
                });
            } else if matches!(
                protocol,
                Protocol::Tcp | Protocol::Mongo | Protocol::Redis | Protocol::Mysql
            ) && mode.is_none()
            {
                provenance.entry(listen).or_insert_with(|| gw.config_path());
                tcp.entry(listen)
                    .or_default()
                    .push((format!("{}/{}", gw.namespace, gw.name), number));
            } else if tls::is_tls(protocol) && mode == Some(ServerTlsMode::Passthrough) {
                provenance.entry(listen).or_insert_with(|| gw.config_path());
                passthrough.entry(listen).or_default().push(Passthrough {
                    gateway: gw,
                    hosts: &server.hosts,
                    port: number,
                });
            } else if tls::is_tls(protocol) && mode == Some(ServerTlsMode::AutoPassthrough) {
                provenance.entry(listen).or_insert_with(|| gw.config_path());
                auto.entry(listen)
                    .or_default()
                    .push((&server.hosts, gw.config_path()));
            } else if protocol == Protocol::Https
                && let Some(tls) = tls
            {
                let mut secrets = Vec::new();
                let socket =
                    gateway_tls::transport_socket(tls, inputs, &proxy.namespace, &mut secrets);
                for secret in secrets {
                    out.secrets.insert(secret.name.clone(), secret);
                }
                match socket {
                    Ok(socket) => {
                        provenance.entry(listen).or_insert_with(|| gw.config_path());
                        https.entry(listen).or_default().push(Https {
                            route_name: format!(
                                "https.{number}.{}.{}.{}",
                                port.name.as_deref().unwrap_or(""),
                                gw.name,
                                gw.namespace
                            ),
                            server: GatewayServer {
                                gateway: format!("{}/{}", gw.namespace, gw.name),
                                gateway_namespace: &gw.namespace,
                                hosts: &server.hosts,
                                port: number,
                                https_redirect: false,
                                tls: true,
                            },
                            tls: socket,
                            provenance: gw.config_path(),
                        });
                    }
                    Err(reason) => {
                        scope.problem(format!("{field}: {reason}; this server is left out"))
                    }
                }
            } else {
                scope.problem(format!(
                    "{field}: port.protocol {}{}: not translated yet (plain HTTP and TCP, HTTPS with tls.mode SIMPLE, MUTUAL, OPTIONAL_MUTUAL or ISTIO_MUTUAL, and TLS PASSTHROUGH or AUTO_PASSTHROUGH are); this server is left out",
                    port.protocol.as_deref().unwrap_or("(unset)"),
                    mode.map(|m| format!(" with tls.mode {}", pb::istio_name(&m))).unwrap_or_default(),
                ));
            }
        }
    }
    let http_ports: std::collections::BTreeSet<u16> = http.keys().copied().collect();
    for (listen, servers) in http {
        if passthrough.contains_key(&listen)
            || https.contains_key(&listen)
            || auto.contains_key(&listen)
        {
            scope.problem(format!(
                "gateway port {listen}: plain HTTP and TLS servers on one port are not translated; the TLS servers are left out"
            ));
            passthrough.remove(&listen);
            https.remove(&listen);
            auto.remove(&listen);
        }
        let route_name = format!("http.{listen}");
        out.routes.insert(
            route_name.clone(),
            route::gateway(scope, &route_name, &servers),
        );
        let hcm = http_connection_manager(
            inputs,
            scope,
            format!("outbound_0.0.0.0_{listen}"),
            Routes::Rds(route_name),
            true,
            &scope.authz.http,
        );
        let chain = FilterChain {
            filters: vec![hcm],
            ..Default::default()
        };
        insert(
            out,
            proxy,
            listen,
            vec![chain],
            provenance.get(&listen),
            false,
        );
    }
    for (listen, servers) in tcp {
        if http_ports.contains(&listen)
            || passthrough.contains_key(&listen)
            || https.contains_key(&listen)
            || auto.contains_key(&listen)
        {
            scope.problem(format!(
                "gateway port {listen}: TCP and HTTP or TLS servers on one port are not translated; the TCP servers are left out"
            ));
            continue;
        }
        match tcp_chain(scope, &servers) {
            Some(chain) => insert(out, proxy, listen, vec![chain], provenance.get(&listen), false),
            None => scope.problem(format!(
                "gateway port {listen}: no VirtualService bound to its Gateway has a tcp route for port {}; nothing is forwarded from it",
                servers[0].1
            )),
        }
    }
    let tls_ports: std::collections::BTreeSet<u16> = passthrough
        .keys()
        .chain(https.keys())
        .chain(auto.keys())
        .copied()
        .collect();
    for listen in tls_ports {
        let mut taken = Vec::new();
        let mut chains = Vec::new();
        for server in https.remove(&listen).unwrap_or_default() {
            chains.extend(https_chain(inputs, scope, server, listen, &mut taken, out));
        }
        let servers = passthrough.remove(&listen).unwrap_or_default();
        chains.extend(passthrough_chains(scope, &servers, &mut taken));
        let servers = auto.remove(&listen).unwrap_or_default();
        chains.extend(super::sni_dnat::chains(scope, &servers, &mut taken, out));
        insert(out, proxy, listen, chains, provenance.get(&listen), true);
    }
}

/// The chain of a port's plain TCP servers (istiod's `buildGatewayNetworkFiltersFromTCPRoutes`):
/// the first `tcp` route of a VirtualService bound to one of their Gateways whose match takes
/// the server's port (and names the Gateway, when it names any).
fn tcp_chain(scope: &Scope<'_>, servers: &[(String, u16)]) -> Option<FilterChain> {
    for (gw, port) in servers {
        for (vs, _) in &scope.virtual_services {
            if !super::config::binds(&vs.spec.gateways, &vs.namespace, gw) {
                continue;
            }
            for route in &vs.spec.tcp {
                let applies = route.matches.is_empty()
                    || route.matches.iter().any(|m| {
                        m.port.is_none_or(|p| p == i64::from(*port))
                            && (m.gateways.is_empty()
                                || super::config::binds(&m.gateways, &vs.namespace, gw))
                    });
                if !applies {
                    continue;
                }
                let clusters = tls::weighted(vs, &route.route, *port);
                let Some((first, _)) = clusters.first() else {
                    continue;
                };
                let prefix = first.clone();
                return Some(FilterChain {
                    filters: super::listener::authorized_tcp(
                        scope,
                        &scope.authz,
                        super::listener::weighted_tcp_proxy(&prefix, clusters),
                    ),
                    ..Default::default()
                });
            }
        }
    }
    None
}

/// The filter chain of an HTTPS server: TLS terminated for the SNI names of its hosts (any
/// name when a host is `*`), then its own route table.
fn https_chain(
    inputs: &Inputs,
    scope: &Scope<'_>,
    https: Https<'_>,
    listen: u16,
    taken: &mut Vec<String>,
    out: &mut Generated,
) -> Option<FilterChain> {
    let hosts: Vec<&str> = https
        .server
        .hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h))
        .collect();
    let names: Vec<String> = if hosts.contains(&"*") {
        Vec::new()
    } else {
        hosts.iter().map(|h| h.to_string()).collect()
    };
    // One chain per name: a second server claiming a name (or a second catch-all) would make a
    // listener Envoy refuses.
    let key = if names.is_empty() {
        vec!["*".to_string()]
    } else {
        names.clone()
    };
    if key.iter().any(|n| taken.contains(n)) {
        scope.problem(format!(
            "{}: gateway port {listen}: SNI {} is already served by another server; this server is left out",
            https.server.gateway,
            key.join(",")
        ));
        return None;
    }
    taken.extend(key);
    out.routes.insert(
        https.route_name.clone(),
        route::gateway(scope, &https.route_name, &[https.server]),
    );
    let hcm = http_connection_manager(
        inputs,
        scope,
        format!("outbound_0.0.0.0_{listen}"),
        Routes::Rds(https.route_name.clone()),
        true,
        &scope.authz.http,
    );
    let mut chain = tls::sni_chain(names, vec![hcm], Some(&https.provenance));
    chain.name = https.route_name;
    chain.transport_socket = Some(https.tls);
    Some(chain)
}

fn insert(
    out: &mut Generated,
    proxy: &Proxy,
    listen: u16,
    filter_chains: Vec<FilterChain>,
    provenance: Option<&String>,
    sni: bool,
) {
    let name = format!("0.0.0.0_{listen}");
    out.listeners.insert(
        name.clone(),
        Listener {
            name,
            address: Some(pb::socket(&proxy.gateway_address, listen)),
            listener_filters: if sni {
                vec![tls::tls_inspector()]
            } else {
                Vec::new()
            },
            filter_chains,
            traffic_direction: TrafficDirection::Outbound as i32,
            metadata: provenance.map(|p| pb::provenance(p)),
            ..Default::default()
        },
    );
}

/// One chain per SNI name a bound VirtualService's `tls` route claims (its `sniHosts`, which
/// the server's hosts must admit).
fn passthrough_chains(
    scope: &Scope<'_>,
    servers: &[Passthrough<'_>],
    taken: &mut Vec<String>,
) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    for server in servers {
        let gw = format!("{}/{}", server.gateway.namespace, server.gateway.name);
        for (vs, _) in &scope.virtual_services {
            if !super::config::binds(&vs.spec.gateways, &vs.namespace, &gw) {
                continue;
            }
            for route in &vs.spec.tls {
                let names: Vec<String> = tls::route_names(vs, route, server.port, Some(&gw))
                    .into_iter()
                    .filter(|n| {
                        server.hosts.iter().any(|h| {
                            let h = h.split_once('/').map_or(h.as_str(), |(_, h)| h);
                            host::matches(h, n)
                        }) && !taken.contains(n)
                    })
                    .collect();
                let clusters = tls::destinations(vs, route, server.port);
                if names.is_empty() || clusters.is_empty() {
                    continue;
                }
                taken.extend(names.iter().cloned());
                let prefix = format!("outbound|{}||{}", server.port, names[0]);
                chains.push(tls::sni_chain(
                    names,
                    super::listener::authorized_tcp(
                        scope,
                        &scope.authz,
                        super::listener::weighted_tcp_proxy(&prefix, clusters),
                    ),
                    Some(&vs.config_path()),
                ));
            }
        }
    }
    chains
}
