//! A gateway's listeners: the servers of every Gateway whose `selector` picks the gateway's
//! labels, grouped by the port the gateway listens on. Plain HTTP servers share a route table
//! (`0.0.0.0_8080`, routes `http.8080`); TLS PASSTHROUGH servers route by SNI with the
//! VirtualServices' `tls` routes.

use super::config::{Obj, Scope};
use super::listener::{Routes, http_connection_manager};
use super::pb;
use super::proxy::Proxy;
use super::route::{self, GatewayServer};
use super::tls;
use super::{Generated, Inputs};
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
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

pub fn listeners(inputs: &Inputs, scope: &Scope<'_>, proxy: &Proxy, out: &mut Generated) {
    let mut http: BTreeMap<u16, Vec<GatewayServer<'_>>> = BTreeMap::new();
    let mut passthrough: BTreeMap<u16, Vec<Passthrough<'_>>> = BTreeMap::new();
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
            if plain_http && mode.is_none() {
                if server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
                    scope.problem(format!(
                        "{field}: tls.httpsRedirect is not translated yet; the server answers plain HTTP"
                    ));
                }
                provenance.entry(listen).or_insert_with(|| gw.config_path());
                http.entry(listen).or_default().push(GatewayServer {
                    gateway: format!("{}/{}", gw.namespace, gw.name),
                    gateway_namespace: &gw.namespace,
                    hosts: &server.hosts,
                    port: number,
                });
            } else if tls::is_tls(protocol) && mode == Some(ServerTlsMode::Passthrough) {
                provenance.entry(listen).or_insert_with(|| gw.config_path());
                passthrough.entry(listen).or_default().push(Passthrough {
                    gateway: gw,
                    hosts: &server.hosts,
                    port: number,
                });
            } else {
                scope.problem(format!(
                    "{field}: port.protocol {}{}: not translated yet (plain HTTP and TLS PASSTHROUGH are); this server is left out",
                    port.protocol.as_deref().unwrap_or("(unset)"),
                    mode.map(|m| format!(" with tls.mode {}", pb::istio_name(&m))).unwrap_or_default(),
                ));
            }
        }
    }
    for (listen, servers) in http {
        if passthrough.contains_key(&listen) {
            scope.problem(format!(
                "gateway port {listen}: HTTP and TLS PASSTHROUGH servers on one port are not translated yet; the PASSTHROUGH servers are left out"
            ));
            passthrough.remove(&listen);
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
    for (listen, servers) in passthrough {
        let chains = passthrough_chains(scope, &servers);
        insert(out, proxy, listen, chains, provenance.get(&listen), true);
    }
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
fn passthrough_chains(scope: &Scope<'_>, servers: &[Passthrough<'_>]) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    let mut taken: Vec<String> = Vec::new();
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
                    super::listener::weighted_tcp_proxy(&prefix, clusters),
                    Some(&vs.config_path()),
                ));
            }
        }
    }
    chains
}
