//! AUTO_PASSTHROUGH Gateway servers, as istiod builds them (`builtAutoPassthroughFilterChains`,
//! `buildOutboundSniDnatClusters`): the gateway does not terminate the mesh's mTLS, it reads the
//! SNI a client sidecar sends (`outbound_.PORT_.SUBSET_.HOST`, the name of the cluster it
//! means) and passes the connection through to that cluster, whose endpoints' sidecars
//! terminate it. One chain per service port the server's hosts admit and per subset, each
//! matching Istio's mTLS ALPN values; one SNI-DNAT cluster per chain: the `outbound|…` cluster
//! renamed, with no TLS of its own, and only the endpoints that take the mesh's mTLS.

use super::cluster::istio_mtls_sni;
use super::config::Scope;
use super::listener::tcp_proxy;
use super::peer_authn::ISTIO_ALPNS;
use super::{Generated, pb};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use weft_registry::{Protocol, host};

/// The chains of the AUTO_PASSTHROUGH servers of one gateway port (hosts of each server, and
/// the config path of its Gateway), adding their clusters and assignments to `out`. The
/// `outbound|…` clusters must already be in `out`.
pub fn chains(
    scope: &Scope<'_>,
    servers: &[(&[String], String)],
    taken: &mut Vec<String>,
    out: &mut Generated,
) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    for (hosts, provenance) in servers {
        for service in &scope.services {
            let admitted = hosts.iter().any(|h| {
                let h = h.split_once('/').map_or(h.as_str(), |(_, h)| h);
                host::matches(h, &service.hostname)
            });
            if service.mesh_external || !admitted {
                continue;
            }
            for port in &service.ports {
                if port.protocol == Protocol::Udp {
                    continue;
                }
                let prefix = format!("outbound|{}|", port.number);
                let suffix = format!("|{}", service.hostname);
                let outbound: Vec<String> = out
                    .clusters
                    .keys()
                    .filter(|n| n.starts_with(&prefix) && n.ends_with(&suffix))
                    .cloned()
                    .collect();
                for name in outbound {
                    let sni = istio_mtls_sni(&name);
                    if taken.contains(&sni) {
                        continue;
                    }
                    taken.push(sni.clone());
                    sni_dnat_cluster(&name, &sni, out);
                    chains.push(FilterChain {
                        name: sni.clone(),
                        filter_chain_match: Some(FilterChainMatch {
                            server_names: vec![sni.clone()],
                            application_protocols: ISTIO_ALPNS
                                .iter()
                                .map(|a| (*a).to_string())
                                .collect(),
                            ..Default::default()
                        }),
                        filters: vec![tcp_proxy(&sni, &sni)],
                        metadata: Some(pb::provenance(provenance)),
                        ..Default::default()
                    });
                }
            }
        }
    }
    chains
}

/// The SNI-DNAT twin of cluster `from`: the same service and policy under the SNI's name, with
/// no TLS of its own (the client's passes through), and only the endpoints that take mTLS.
fn sni_dnat_cluster(from: &str, name: &str, out: &mut Generated) {
    let Some(mut c) = out.clusters.get(from).cloned() else {
        return;
    };
    c.name = name.to_string();
    c.transport_socket = None;
    c.transport_socket_matches.clear();
    if let Some(la) = c.load_assignment.as_mut() {
        la.cluster_name = name.to_string();
    }
    let eds =
        c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
    if eds {
        if let Some(e) = c.eds_cluster_config.as_mut() {
            e.service_name = name.to_string();
        }
        if let Some(mut cla) = out.endpoints.get(from).cloned() {
            cla.cluster_name = name.to_string();
            for group in &mut cla.endpoints {
                group.lb_endpoints.retain(|e| {
                    e.metadata.as_ref().is_some_and(|m| {
                        m.filter_metadata
                            .contains_key("envoy.transport_socket_match")
                    })
                });
            }
            cla.endpoints.retain(|g| !g.lb_endpoints.is_empty());
            out.endpoints.insert(name.to_string(), cla);
        }
    }
    out.clusters.insert(name.to_string(), c);
}
