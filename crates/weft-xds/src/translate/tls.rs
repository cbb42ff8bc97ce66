//! Traffic routed by SNI without being decrypted: a sidecar's TLS and HTTPS ports (one
//! `0.0.0.0_PORT` listener, a filter chain per host) and a gateway's PASSTHROUGH servers, with
//! VirtualService `tls` routes choosing the destination by `sniHosts`.

use super::cluster::outbound_name;
use super::config::{DOMAIN_SUFFIX, Obj, Scope};
use super::listener::{tcp_proxy, weighted_tcp_proxy};
use super::pb;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use weft_api::types::virtual_service::{TlsRoute, VirtualService};
use weft_registry::host;

pub fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pb::any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// A chain for connections whose SNI is one of `names`.
pub fn sni_chain(
    names: Vec<String>,
    filters: Vec<Filter>,
    provenance: Option<&str>,
) -> FilterChain {
    FilterChain {
        name: names.join(","),
        filter_chain_match: Some(FilterChainMatch {
            server_names: names,
            ..Default::default()
        }),
        filters,
        metadata: provenance.map(pb::provenance),
        ..Default::default()
    }
}

/// The weighted clusters of a `tls` route, hosts relative to the VirtualService.
pub fn destinations(vs: &Obj<VirtualService>, route: &TlsRoute, port: u16) -> Vec<(String, u32)> {
    weighted(vs, &route.route, port)
}

/// The weighted clusters of a `tls` or `tcp` route's destinations, hosts relative to the
/// VirtualService; one destination takes everything.
pub fn weighted(
    vs: &Obj<VirtualService>,
    route: &[weft_api::types::virtual_service::RouteDestination],
    port: u16,
) -> Vec<(String, u32)> {
    let single = route.len() == 1;
    route
        .iter()
        .filter_map(|d| {
            let dest = d.destination.as_ref()?;
            let h = host::fqdn(dest.host.as_deref()?, &vs.namespace, DOMAIN_SUFFIX);
            let p = dest
                .port
                .as_ref()
                .and_then(|p| p.number)
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or(port);
            let w = if single {
                100
            } else {
                d.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0)
            };
            Some((
                outbound_name(p, dest.subset.as_deref().unwrap_or(""), &h),
                w,
            ))
        })
        .collect()
}

/// The SNI names a `tls` route matches on `port` (its `sniHosts`, each relative to the
/// VirtualService), and whether it applies there at all.
pub fn route_names(
    vs: &Obj<VirtualService>,
    route: &TlsRoute,
    port: u16,
    gateway: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    for m in &route.matches {
        if m.port.is_some_and(|p| p != i64::from(port)) {
            continue;
        }
        if let Some(gw) = gateway
            && !m.gateways.is_empty()
            && !super::config::binds(&m.gateways, &vs.namespace, gw)
        {
            continue;
        }
        out.extend(
            m.sni_hosts
                .iter()
                .map(|h| host::fqdn(h, &vs.namespace, DOMAIN_SUFFIX)),
        );
    }
    out
}

/// A sidecar's chains for the TLS services on `port`: a VirtualService's `tls` routes where one
/// claims the host, else the service's own cluster.
pub fn sidecar_chains(scope: &Scope<'_>, port: u16) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for (vs, hosts) in &scope.virtual_services {
        for route in &vs.spec.tls {
            let names: Vec<String> = route_names(vs, route, port, None)
                .into_iter()
                .filter(|n| hosts.iter().any(|h| host::matches(h, n)) && !taken.contains(n))
                .collect();
            let clusters = destinations(vs, route, port);
            if names.is_empty() || clusters.is_empty() {
                continue;
            }
            taken.extend(names.iter().cloned());
            let prefix = format!("outbound|{port}||{}", names[0]);
            chains.push(sni_chain(
                names,
                vec![weighted_tcp_proxy(&prefix, clusters)],
                Some(&vs.config_path()),
            ));
        }
    }
    for s in &scope.services {
        let serves = s
            .ports
            .iter()
            .any(|p| p.number == port && is_tls(p.protocol));
        if !serves || taken.contains(&s.hostname) {
            continue;
        }
        taken.push(s.hostname.clone());
        let cluster = outbound_name(port, "", &s.hostname);
        chains.push(sni_chain(
            vec![s.hostname.clone()],
            vec![tcp_proxy(&cluster, &cluster)],
            None,
        ));
    }
    chains
}

pub fn is_tls(p: weft_registry::Protocol) -> bool {
    matches!(
        p,
        weft_registry::Protocol::Tls | weft_registry::Protocol::Https
    )
}
