//! A sidecar's listeners. Under iptables capture (REDIRECT): `virtualOutbound` on 15001 hands
//! each connection to the listener of its original destination (`0.0.0.0_PORT` for HTTP ports,
//! `VIP_PORT` for TCP services) or passes it through; `virtualInbound` on 15006 serves the
//! workload's own ports. Without capture (NONE): the HTTP proxy listener on 127.0.0.1, which
//! applications name in `HTTP_PROXY`.

use super::authz;
use super::cluster::{self, BLACK_HOLE, INBOUND_PASSTHROUGH, PASSTHROUGH};
use super::config::Scope;
use super::http_route::{CORS_FILTER, FAULT_FILTER};
use super::pb;
use super::peer_authn;
use super::proxy::{Interception, Proxy};
use super::route::{self, is_http};
use super::telemetry;
use super::{Generated, Inputs};
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route as envoy_route, route_action,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::{
    FilterConfig as GrpcStatsConfig, filter_config as grpc_stats_config,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use std::collections::{BTreeMap, BTreeSet};
use weft_api::types::sidecar::OutboundTrafficPolicyMode;
use weft_registry::host;

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
const GRPC_STATS_FILTER: &str = "envoy.filters.http.grpc_stats";

/// Where an HCM's routes come from.
pub enum Routes {
    Rds(String),
    Inline(Box<RouteConfiguration>),
}

/// Istio's HTTP connection manager: fault (when a route asks for it), CORS, router; websocket
/// upgrades allowed; the client address trusted only at gateways.
pub fn http_connection_manager(
    inputs: &Inputs,
    scope: &Scope<'_>,
    stat_prefix: String,
    routes: Routes,
    gateway: bool,
    authz: &[HttpFilter],
) -> Filter {
    let inbound = matches!(routes, Routes::Inline(_));
    let class = if gateway {
        telemetry::Class::Gateway
    } else if inbound {
        telemetry::Class::SidecarInbound
    } else {
        telemetry::Class::SidecarOutbound
    };
    // Metadata exchange before authorization (istio/istio#41066), which is the server side's:
    // a sidecar's inbound and gateways.
    let mut http_filters = vec![telemetry::metadata_exchange(class)];
    http_filters.extend_from_slice(authz);
    // Every connection manager counts gRPC messages and leaves the counts for `istio.stats`
    // (istiod's `xdsfilters.GrpcStats`, after authorization).
    http_filters.push(http_filter(
        GRPC_STATS_FILTER,
        pb::any(&GrpcStatsConfig {
            emit_filter_state: true,
            per_method_stat_specifier: Some(
                grpc_stats_config::PerMethodStatSpecifier::StatsForAllMethods(BoolValue {
                    value: false,
                }),
            ),
            ..Default::default()
        }),
    ));
    // Faults are injected by the client side (outbound and gateways), never inbound.
    let needs_fault = !inbound
        && scope
            .virtual_services
            .iter()
            .any(|(vs, _)| vs.spec.http.iter().any(|h| h.fault.is_some()));
    if needs_fault {
        http_filters.push(http_filter(FAULT_FILTER, pb::any(&HttpFault::default())));
    }
    http_filters.push(http_filter(CORS_FILTER, pb::any(&Cors {})));
    http_filters.extend(telemetry::stats(&scope.metrics, class));
    http_filters.push(http_filter(
        "envoy.filters.http.router",
        pb::any(&Router::default()),
    ));
    let route_specifier = match routes {
        Routes::Rds(name) => http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(pb::ads()),
            route_config_name: name,
        }),
        Routes::Inline(rc) => http_connection_manager::RouteSpecifier::RouteConfig(*rc),
    };
    let hcm = HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(route_specifier),
        http_filters,
        use_remote_address: Some(BoolValue { value: gateway }),
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        tracing: scope.tracing.for_class(class),
        access_log: super::access_log::access_logs(
            inputs,
            &scope.logging,
            class,
            scope.namespace,
            &|m| scope.problem(m),
        ),
        // A sidecar tells its application who called it over mTLS (istiod's
        // `buildSidecarInboundHTTPOpts`), a gateway who its mTLS client is, certificate included
        // (`buildGatewayConnectionManager`); a plaintext caller's own header is dropped.
        forward_client_cert_details: if inbound {
            http_connection_manager::ForwardClientCertDetails::AppendForward as i32
        } else if gateway {
            http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32
        } else {
            0
        },
        set_current_client_cert_details: (inbound || gateway).then(|| {
            http_connection_manager::SetCurrentClientCertDetails {
                subject: Some(BoolValue { value: true }),
                cert: gateway,
                dns: true,
                uri: true,
                ..Default::default()
            }
        }),
        ..Default::default()
    };
    network_filter(HCM, pb::any(&hcm))
}

fn http_filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn network_filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// A TCP proxy to one cluster.
pub fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Filter {
    weighted_tcp_proxy(stat_prefix, vec![(cluster.to_string(), 100)])
}

/// A TCP proxy to one cluster or, with several destinations, to weighted ones (those of
/// weight 0 left out).
pub fn weighted_tcp_proxy(stat_prefix: &str, clusters: Vec<(String, u32)>) -> Filter {
    let specifier = if let [(only, _)] = clusters.as_slice() {
        tcp_proxy::ClusterSpecifier::Cluster(only.clone())
    } else {
        tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: clusters
                .into_iter()
                .filter(|(_, w)| *w > 0)
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name,
                        weight,
                        ..Default::default()
                    },
                )
                .collect(),
        })
    };
    network_filter(
        TCP_PROXY,
        pb::any(&TcpProxy {
            stat_prefix: stat_prefix.to_string(),
            cluster_specifier: Some(specifier),
            ..Default::default()
        }),
    )
}

fn chain(
    name: &str,
    filters: Vec<Filter>,
    filter_chain_match: Option<FilterChainMatch>,
) -> FilterChain {
    FilterChain {
        name: name.to_string(),
        filter_chain_match,
        filters,
        ..Default::default()
    }
}

/// A sidecar's listeners, and the route tables and inbound clusters they name.
pub fn sidecar(inputs: &Inputs, scope: &Scope<'_>, proxy: &Proxy, out: &mut Generated) {
    if let Some(port) = proxy.http_proxy_port {
        let name = format!("127.0.0.1_{port}");
        let hcm = http_connection_manager(
            inputs,
            scope,
            name.clone(),
            Routes::Rds("http_proxy".into()),
            false,
            &[],
        );
        out.listeners.insert(
            name.clone(),
            Listener {
                name: name.clone(),
                address: Some(pb::socket("127.0.0.1", port)),
                filter_chains: vec![chain("", vec![hcm], None)],
                traffic_direction: TrafficDirection::Outbound as i32,
                ..Default::default()
            },
        );
        out.routes
            .insert("http_proxy".into(), route::http_proxy(scope));
    }
    if proxy.interception == Interception::None {
        ingress_listeners(inputs, scope, proxy, out);
        fronting_listeners(inputs, scope, proxy, out);
        egress_listeners(inputs, scope, out);
        return;
    }
    outbound(inputs, scope, out);
    inbound(inputs, scope, proxy, out);
}

fn outbound(inputs: &Inputs, scope: &Scope<'_>, out: &mut Generated) {
    let fallback = match scope.outbound_policy {
        OutboundTrafficPolicyMode::AllowAny => PASSTHROUGH,
        OutboundTrafficPolicyMode::RegistryOnly => BLACK_HOLE,
    };
    out.listeners.insert(
        VIRTUAL_OUTBOUND.into(),
        Listener {
            name: VIRTUAL_OUTBOUND.into(),
            address: Some(pb::socket("0.0.0.0", 15001)),
            use_original_dst: Some(BoolValue { value: true }),
            filter_chains: vec![chain(fallback, vec![tcp_proxy(fallback, fallback)], None)],
            traffic_direction: TrafficDirection::Outbound as i32,
            ..Default::default()
        },
    );
    let mut http_ports = BTreeSet::new();
    let mut tls_ports = BTreeSet::new();
    for s in &scope.services {
        for p in &s.ports {
            if is_http(p.protocol) {
                http_ports.insert(p.number);
            } else if super::tls::is_tls(p.protocol) {
                tls_ports.insert(p.number);
            } else if s.addresses.is_empty()
                && scope.services.iter().any(|o| {
                    o.ports
                        .iter()
                        .any(|q| q.number == p.number && is_http(q.protocol))
                })
            {
                // Without a virtual IP a TCP service needs the port's wildcard listener, which
                // is HTTP's: istiod keeps the HTTP listener and counts the TCP one.
                scope.conflict(
                    super::CONFLICT_TCP_OVER_HTTP,
                    format!("0.0.0.0:{}", p.number),
                    format!(
                        "{}: TCP port {} has no virtual IP and port {} is HTTP for another service; its connections reach the HTTP listener",
                        s.hostname, p.number, p.number
                    ),
                );
            } else if let Some(vip) = s.addresses.first() {
                // A TCP service is told apart by its virtual IP; without one it is reached
                // through the passthrough chain.
                let clusters = tcp_route(scope, &s.hostname, p.number).unwrap_or_else(|| {
                    vec![(cluster::outbound_name(p.number, "", &s.hostname), 100)]
                });
                let prefix = format!("outbound|{}||{}", p.number, s.hostname);
                let chains = vec![chain("", vec![weighted_tcp_proxy(&prefix, clusters)], None)];
                handoff(out, vip, p.number, Vec::new(), chains);
            }
        }
    }
    for port in tls_ports {
        let mut chains = super::tls::sidecar_chains(scope, port);
        chains.push(chain(fallback, vec![tcp_proxy(fallback, fallback)], None));
        handoff(
            out,
            "0.0.0.0",
            port,
            vec![super::tls::tls_inspector()],
            chains,
        );
    }
    for port in http_ports {
        let hcm = http_connection_manager(
            inputs,
            scope,
            format!("outbound_0.0.0.0_{port}"),
            Routes::Rds(port.to_string()),
            false,
            &[],
        );
        handoff(
            out,
            "0.0.0.0",
            port,
            Vec::new(),
            vec![chain("", vec![hcm], None)],
        );
        out.routes
            .insert(port.to_string(), route::sidecar(scope, port));
    }
}

/// An outbound listener `IP_PORT` that binds nothing: `virtualOutbound` hands it the
/// connections whose original destination it is.
fn handoff(
    out: &mut Generated,
    ip: &str,
    port: u16,
    listener_filters: Vec<ListenerFilter>,
    filter_chains: Vec<FilterChain>,
) {
    let name = format!("{ip}_{port}");
    out.listeners.insert(
        name.clone(),
        Listener {
            name,
            address: Some(pb::socket(ip, port)),
            bind_to_port: Some(BoolValue { value: false }),
            listener_filters,
            filter_chains,
            traffic_direction: TrafficDirection::Outbound as i32,
            ..Default::default()
        },
    );
}

/// The weighted clusters a VirtualService's first applicable `tcp` route sends a TCP service's
/// port to.
fn tcp_route(scope: &Scope<'_>, hostname: &str, port: u16) -> Option<Vec<(String, u32)>> {
    for (vs, hosts) in &scope.virtual_services {
        if !hosts.iter().any(|h| host::matches(h, hostname)) {
            continue;
        }
        for tcp in &vs.spec.tcp {
            let applies = tcp.matches.is_empty()
                || tcp
                    .matches
                    .iter()
                    .any(|m| m.port.is_none_or(|p| p == i64::from(port)));
            if !applies {
                continue;
            }
            let clusters = super::tls::weighted(vs, &tcp.route, port);
            return (!clusters.is_empty()).then_some(clusters);
        }
    }
    None
}

/// One port a sidecar serves its workload on.
struct InboundTarget<'a> {
    /// The workload's port as the mesh names it: the inbound cluster's, PeerAuthentication's.
    port: u16,
    /// Without capture, where the sidecar listens for it (`port` unless `weft up` fronts the
    /// workload, see `Inputs::front_workloads`).
    listen: u16,
    /// Where the application listens.
    address: String,
    target: u16,
    /// The port's protocol (`Unsupported` when no service says it).
    protocol: weft_registry::Protocol,
    /// Sidecar `ingress[].bind`: where a listener without capture binds.
    bind: Option<String>,
    /// The service whose endpoint the port is (none for a Sidecar `ingress` port).
    service: Option<&'a weft_registry::Service>,
}

/// The ports a sidecar serves: its Sidecar resource's `ingress` when it has one (each to its
/// `defaultEndpoint`), else every port of the services its workload is an endpoint of.
fn inbound_targets<'a>(
    inputs: &'a Inputs,
    scope: &Scope<'_>,
    proxy: &Proxy,
) -> Vec<InboundTarget<'a>> {
    let mut out = Vec::new();
    if let Some(sc) = scope.sidecar.filter(|s| !s.spec.ingress.is_empty()) {
        for (i, ingress) in sc.spec.ingress.iter().enumerate() {
            let field = format!("{}: ingress[{i}]", sc.label());
            let Some(port) = ingress.port.as_ref() else {
                continue;
            };
            let Some(number) = port.number.and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let protocol = weft_registry::Protocol::for_istio_port(
                port.protocol.as_deref(),
                port.name.as_deref().unwrap_or(""),
            );
            let endpoint = ingress.default_endpoint.as_deref().unwrap_or_default();
            let parsed = endpoint
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)));
            let Some((host, target)) = parsed.filter(|_| !endpoint.starts_with("unix://")) else {
                scope.problem(format!(
                    "{field}.defaultEndpoint: {endpoint:?} is not HOST:PORT (unix sockets are not supported yet); the port is left out"
                ));
                continue;
            };
            // 0.0.0.0 stands for the workload's own address, as in Istio.
            let address = if host == "0.0.0.0" {
                if proxy.ip.is_empty() {
                    "127.0.0.1".to_string()
                } else {
                    proxy.ip.clone()
                }
            } else {
                host
            };
            out.push(InboundTarget {
                port: number,
                listen: number,
                address,
                target,
                protocol,
                bind: ingress.bind.clone(),
                service: None,
            });
        }
        return out;
    }
    let mut seen: BTreeMap<u16, (weft_registry::Protocol, &str)> = BTreeMap::new();
    for s in &inputs.registry.services {
        for e in &s.endpoints {
            if !proxy.is_instance(e) {
                continue;
            }
            let protocol = s
                .ports
                .iter()
                .find(|p| p.number == e.service_port)
                .map_or(weft_registry::Protocol::Unsupported, |p| p.protocol);
            if let Some((first, by)) = seen.get(&e.port) {
                // istiod keeps the first service's protocol for the port and counts the rest.
                if is_http(*first) != is_http(protocol) {
                    scope.conflict(
                        super::CONFLICT_INBOUND,
                        format!("{}:{}", proxy.ip, e.port),
                        format!(
                            "{}: port {} of the workload is {:?} here but {:?} for {by}; the inbound listener keeps {by}'s",
                            s.hostname, e.port, protocol, first
                        ),
                    );
                }
                continue;
            }
            seen.insert(e.port, (protocol, s.hostname.as_str()));
            out.push(match &e.application {
                Some((address, app_port)) => InboundTarget {
                    port: *app_port,
                    listen: e.port,
                    address: address.clone(),
                    target: *app_port,
                    protocol,
                    bind: Some(e.address.clone()),
                    service: Some(s),
                },
                None => InboundTarget {
                    port: e.port,
                    listen: e.port,
                    address: "127.0.0.1".into(),
                    target: e.port,
                    protocol,
                    bind: None,
                    service: Some(s),
                },
            });
        }
    }
    out
}

/// The network filters that hand one inbound port to the application (authorization first,
/// for TCP), with the cluster they name.
#[allow(deprecated)]
fn inbound_filters(
    inputs: &Inputs,
    scope: &Scope<'_>,
    t: &InboundTarget,
    authz: &authz::Filters,
    out: &mut Generated,
) -> Vec<Filter> {
    let name = cluster::inbound_name(t.port);
    out.clusters.insert(
        name.clone(),
        cluster::inbound(inputs, t.port, &t.address, t.target, t.service, t.protocol),
    );
    if !is_http(t.protocol) {
        return authorized_tcp(scope, authz, tcp_proxy(&name, &name));
    }
    let rc = RouteConfiguration {
        name: name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{}", t.port),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(super::http_route::route_match(None)),
                action: Some(envoy_route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(name.clone())),
                    timeout: Some(pb::millis(0)),
                    max_grpc_timeout: Some(pb::millis(0)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    vec![http_connection_manager(
        inputs,
        scope,
        format!("inbound_0.0.0.0_{}", t.port),
        Routes::Inline(Box::new(rc)),
        false,
        &authz.http,
    )]
}

/// A server-side TCP chain's filters: the network RBAC filters, then `terminal`.
pub fn authorized_tcp(scope: &Scope<'_>, authz: &authz::Filters, terminal: Filter) -> Vec<Filter> {
    for p in &authz.tcp_problems {
        scope.problem(p.clone());
    }
    let mut filters = authz.tcp.clone();
    filters.push(terminal);
    filters
}

/// Without capture, a Sidecar's `ingress` ports are listeners of their own, bound where the
/// mesh sends the workload's traffic.
fn ingress_listeners(inputs: &Inputs, scope: &Scope<'_>, proxy: &Proxy, out: &mut Generated) {
    if scope.sidecar.is_none_or(|s| s.spec.ingress.is_empty()) {
        return;
    }
    bound_inbound(
        inputs,
        scope,
        proxy,
        inbound_targets(inputs, scope, proxy),
        out,
    );
}

/// Without capture and without a Sidecar's `ingress`, the listeners `weft up` fronts the
/// workload with: one per port of its application, where the mesh now sends that port.
fn fronting_listeners(inputs: &Inputs, scope: &Scope<'_>, proxy: &Proxy, out: &mut Generated) {
    if scope.sidecar.is_some_and(|s| !s.spec.ingress.is_empty()) {
        return;
    }
    let fronted = inbound_targets(inputs, scope, proxy)
        .into_iter()
        .filter(|t| t.bind.is_some())
        .collect();
    bound_inbound(inputs, scope, proxy, fronted, out);
}

fn bound_inbound(
    inputs: &Inputs,
    scope: &Scope<'_>,
    proxy: &Proxy,
    targets: Vec<InboundTarget>,
    out: &mut Generated,
) {
    let policy = peer_authn::policy(inputs, &proxy.namespace, &proxy.labels);
    for t in targets {
        let bind = t.bind.clone().unwrap_or_else(|| {
            if proxy.ip.is_empty() {
                "0.0.0.0".to_string()
            } else {
                proxy.ip.clone()
            }
        });
        let name = format!("{bind}_{}", t.listen);
        // The sidecar listens on a port of its own for the application's: what policy says of
        // the application's port is said of this one.
        let moved;
        let authz = if t.listen == t.port {
            &scope.authz
        } else {
            moved = authz::filters(
                inputs,
                &proxy.namespace,
                &proxy.labels,
                false,
                &[(t.port, t.listen)],
                &|_| {},
            );
            &moved
        };
        let filters = inbound_filters(inputs, scope, &t, authz, out);
        let Some(chains) = peer_authn::inbound_chains(
            inputs,
            policy.for_port(t.port),
            is_http(t.protocol),
            "",
            None,
            filters,
        ) else {
            strict_without_ca(scope, proxy, t.port);
            continue;
        };
        let listener_filters = if peer_authn::inspects_tls(&chains) {
            vec![super::tls::tls_inspector()]
        } else {
            Vec::new()
        };
        out.listeners.insert(
            name.clone(),
            Listener {
                name,
                address: Some(pb::socket(&bind, t.listen)),
                listener_filters,
                filter_chains: chains,
                traffic_direction: TrafficDirection::Inbound as i32,
                ..Default::default()
            },
        );
    }
}

fn strict_without_ca(scope: &Scope<'_>, proxy: &Proxy, port: u16) {
    scope.problem(format!(
        "workload {}/{} port {port}: PeerAuthentication makes it STRICT, and this mesh has no CA to give workloads certificates (start it with --secure-xds-address): the port refuses every connection",
        proxy.namespace, proxy.name
    ));
}

/// Without capture, a Sidecar's `egress` listeners that name a `port` are listeners of their
/// own on `bind` (127.0.0.1 by default, as istiod binds them without capture): an application
/// sending to `127.0.0.1:PORT` reaches that port's route table, or for TCP the port's service.
fn egress_listeners(inputs: &Inputs, scope: &Scope<'_>, out: &mut Generated) {
    let Some(sc) = scope.sidecar else { return };
    for (i, egress) in sc.spec.egress.iter().enumerate() {
        let field = format!("{}: egress[{i}]", sc.label());
        let Some(port) = egress.port.as_ref() else {
            continue;
        };
        let Some(number) = port.number.and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        let protocol = weft_registry::Protocol::for_istio_port(
            port.protocol.as_deref(),
            port.name.as_deref().unwrap_or(""),
        );
        let bind = egress
            .bind
            .clone()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        let name = format!("{bind}_{number}");
        let filter = if is_http(protocol) {
            let table = number.to_string();
            out.routes
                .entry(table.clone())
                .or_insert_with(|| route::sidecar(scope, number));
            http_connection_manager(inputs, scope, name.clone(), Routes::Rds(table), false, &[])
        } else {
            let serving: Vec<&weft_registry::Service> = scope
                .services
                .iter()
                .copied()
                .filter(|s| s.ports.iter().any(|p| p.number == number))
                .collect();
            let [service] = serving.as_slice() else {
                scope.problem(format!(
                    "{field}.port: a TCP port is told apart by destination, which needs capture;                      {} services listen on {number}, so this listener is left out",
                    serving.len()
                ));
                continue;
            };
            let clusters = tcp_route(scope, &service.hostname, number).unwrap_or_else(|| {
                vec![(cluster::outbound_name(number, "", &service.hostname), 100)]
            });
            weighted_tcp_proxy(&name, clusters)
        };
        out.listeners.insert(
            name.clone(),
            Listener {
                name,
                address: Some(pb::socket(&bind, number)),
                filter_chains: vec![chain("", vec![filter], None)],
                traffic_direction: TrafficDirection::Outbound as i32,
                ..Default::default()
            },
        );
    }
}

/// `virtualInbound`: one chain per port the workload serves, to the application, and a
/// passthrough chain for the rest.
fn inbound(inputs: &Inputs, scope: &Scope<'_>, proxy: &Proxy, out: &mut Generated) {
    let mut chains = Vec::new();
    let policy = peer_authn::policy(inputs, &proxy.namespace, &proxy.labels);
    for t in inbound_targets(inputs, scope, proxy) {
        let filters = inbound_filters(inputs, scope, &t, &scope.authz, out);
        let name = format!("0.0.0.0_{}", t.port);
        let mode = policy.for_port(t.port);
        match peer_authn::inbound_chains(
            inputs,
            mode,
            is_http(t.protocol),
            &name,
            Some(t.port),
            filters,
        ) {
            Some(c) => chains.extend(c),
            // No chain of its own would send the port to passthrough: one that closes instead.
            None => {
                strict_without_ca(scope, proxy, t.port);
                chains.push(chain(
                    &name,
                    vec![tcp_proxy(BLACK_HOLE, BLACK_HOLE)],
                    Some(FilterChainMatch {
                        destination_port: Some(UInt32Value {
                            value: u32::from(t.port),
                        }),
                        ..Default::default()
                    }),
                ));
            }
        }
    }
    let mut listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pb::any(
            &OriginalDst::default(),
        ))),
        ..Default::default()
    }];
    if peer_authn::inspects_tls(&chains) {
        listener_filters.push(super::tls::tls_inspector());
    }
    out.clusters.insert(
        INBOUND_PASSTHROUGH.into(),
        cluster::passthrough(inputs, INBOUND_PASSTHROUGH),
    );
    // Ports no service declares are still the workload's: policy applies to them too.
    chains.push(chain(
        INBOUND_PASSTHROUGH,
        authorized_tcp(
            scope,
            &scope.authz,
            tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH),
        ),
        None,
    ));
    out.listeners.insert(
        VIRTUAL_INBOUND.into(),
        Listener {
            name: VIRTUAL_INBOUND.into(),
            address: Some(pb::socket("0.0.0.0", 15006)),
            listener_filters,
            filter_chains: chains,
            traffic_direction: TrafficDirection::Inbound as i32,
            ..Default::default()
        },
    );
}
