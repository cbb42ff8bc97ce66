//! A gateway's listeners: the servers of every Gateway whose `selector` picks the gateway's
//! labels, grouped by the port the gateway listens on (`0.0.0.0_8080`, routes `http.8080`).

use super::config::Scope;
use super::listener::{Routes, http_connection_manager};
use super::pb;
use super::proxy::Proxy;
use super::route::{self, GatewayServer};
use super::{Generated, Inputs};
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use std::collections::BTreeMap;
use weft_registry::Protocol;

pub fn listeners(inputs: &Inputs, scope: &Scope<'_>, proxy: &Proxy, out: &mut Generated) {
    let mut by_port: BTreeMap<u16, Vec<GatewayServer<'_>>> = BTreeMap::new();
    let mut provenance: BTreeMap<u16, String> = BTreeMap::new();
    for gw in &inputs.config.gateways {
        let selector = &gw.spec.selector;
        if selector.is_empty() || !selector.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)) {
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
            let plain_http = matches!(
                protocol,
                Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
            );
            if !plain_http
                || server
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.https_redirect != Some(true) || t.mode.is_some())
            {
                scope.problem(format!(
                    "{field}: port.protocol {}: only plain HTTP servers are translated yet; this server is left out",
                    port.protocol.as_deref().unwrap_or("(unset)")
                ));
                continue;
            }
            let listen = proxy.gateway_port(number);
            provenance.entry(listen).or_insert_with(|| gw.config_path());
            by_port.entry(listen).or_default().push(GatewayServer {
                gateway: format!("{}/{}", gw.namespace, gw.name),
                gateway_namespace: &gw.namespace,
                hosts: &server.hosts,
                port: number,
            });
        }
    }
    for (listen, servers) in by_port {
        let route_name = format!("http.{listen}");
        out.routes.insert(
            route_name.clone(),
            route::gateway(scope, &route_name, &servers),
        );
        let name = format!("0.0.0.0_{listen}");
        let hcm = http_connection_manager(
            inputs,
            scope,
            format!("outbound_0.0.0.0_{listen}"),
            Routes::Rds(route_name),
            true,
        );
        out.listeners.insert(
            name.clone(),
            Listener {
                name,
                address: Some(pb::socket(&proxy.gateway_address, listen)),
                filter_chains: vec![FilterChain {
                    filters: vec![hcm],
                    ..Default::default()
                }],
                traffic_direction: TrafficDirection::Outbound as i32,
                metadata: provenance.get(&listen).map(|p| pb::provenance(p)),
                ..Default::default()
            },
        );
    }
}
