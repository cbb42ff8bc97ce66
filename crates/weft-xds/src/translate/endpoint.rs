//! Load assignments: a service port's ready endpoints, those of a subset picked by its labels,
//! grouped by locality as Envoy wants them.

use super::pb;
use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use std::collections::BTreeMap;
use weft_api::types::common::Labels;
use weft_registry::Service;

/// The endpoints of `service` serving `port`, only those whose labels carry every subset label.
pub fn assignment(
    cluster: &str,
    service: &Service,
    port: u16,
    subset: Option<&Labels>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<String, Vec<LbEndpoint>> = BTreeMap::new();
    for e in &service.endpoints {
        if e.service_port != port || !e.ready {
            continue;
        }
        if let Some(labels) = subset
            && !weft_registry::selects(labels, &e.labels)
        {
            continue;
        }
        by_locality
            .entry(e.locality.clone().unwrap_or_default())
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(pb::socket(&e.address, e.port)),
                    ..Default::default()
                })),
                load_balancing_weight: (e.weight != 1).then_some(UInt32Value { value: e.weight }),
                ..Default::default()
            });
    }
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, lb_endpoints)| LocalityLbEndpoints {
                locality: locality_of(&locality),
                lb_endpoints,
                ..Default::default()
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
