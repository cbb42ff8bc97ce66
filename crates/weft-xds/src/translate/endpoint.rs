//! Load assignments: a service port's ready endpoints, those of a subset picked by its labels,
//! grouped by locality as Envoy wants them.

use super::locality::Plan;
use super::pb;
use envoy_types::pb::envoy::config::core::v3::{Locality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use std::collections::BTreeMap;
use weft_api::types::common::Labels;
use weft_registry::Service;

/// The endpoints of `service` serving `port`, only those whose labels carry every subset label,
/// grouped by locality and placed by the proxy's locality `plan`. Each locality weighs the sum
/// of its endpoints' weights, as istiod writes it (Envoy reads it only under
/// `locality_weighted_lb_config`).
pub fn assignment(
    cluster: &str,
    service: &Service,
    port: u16,
    subset: Option<&Labels>,
    plan: Option<&Plan>,
    mtls_ready: &dyn Fn(&weft_registry::Endpoint) -> bool,
) -> ClusterLoadAssignment {
    let mut groups: BTreeMap<(String, u32), (u32, Vec<LbEndpoint>)> = BTreeMap::new();
    for e in &service.endpoints {
        if e.service_port != port || !e.ready {
            continue;
        }
        if let Some(labels) = subset
            && !weft_registry::selects(labels, &e.labels)
        {
            continue;
        }
        let Some(priority) = plan.map_or(Some(0), |p| p.priority(e)) else {
            continue;
        };
        let group = groups
            .entry((e.locality.clone().unwrap_or_default(), priority))
            .or_default();
        group.0 = group.0.saturating_add(e.weight.max(1));
        group.1.push(LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(pb::socket(&e.address, e.port)),
                ..Default::default()
            })),
            load_balancing_weight: (e.weight != 1).then_some(UInt32Value { value: e.weight }),
            // What auto mTLS picks the endpoint's transport socket by (istiod's
            // `AppendLbEndpointMetadata`).
            metadata: mtls_ready(e).then(|| Metadata {
                filter_metadata: [(
                    "envoy.transport_socket_match".to_string(),
                    pb::struct_of([("tlsMode", pb::string("istio"))]),
                )]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // Priorities run 0..N without gaps, as Envoy wants them.
    let used: std::collections::BTreeSet<u32> = groups.keys().map(|(_, p)| *p).collect();
    let rank = |p: u32| u32::try_from(used.range(..p).count()).unwrap_or(u32::MAX);
    let weights: Vec<(String, u32)> = groups
        .iter()
        .map(|((l, _), (w, _))| (l.clone(), *w))
        .collect();
    let placed = match plan {
        Some(p) => p.weights(&weights),
        None => weights.iter().map(|(_, w)| Some(*w)).collect(),
    };
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: groups
            .into_iter()
            .zip(placed)
            .filter_map(|(((locality, priority), (_, lb_endpoints)), weight)| {
                Some(LocalityLbEndpoints {
                    locality: locality_of(&locality),
                    lb_endpoints,
                    load_balancing_weight: Some(UInt32Value { value: weight? }),
                    priority: rank(priority),
                    ..Default::default()
                })
            })
            .collect(),
        ..Default::default()
    }
}

/// One address.
pub fn single(cluster: &str, address: &str, port: u16) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(pb::socket(address, port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `region/zone/subzone`.
fn locality_of(l: &str) -> Option<Locality> {
    if l.is_empty() {
        return None;
    }
    let mut parts = l.splitn(3, '/');
    Some(Locality {
        region: parts.next().unwrap_or_default().to_string(),
        zone: parts.next().unwrap_or_default().to_string(),
        sub_zone: parts.next().unwrap_or_default().to_string(),
    })
}
