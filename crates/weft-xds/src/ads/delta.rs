//! Delta ADS: a response carries only the resources the proxy does not have in their current
//! version, and the names of those that went away.

use super::wire::Prepared;
use super::{Protocol, Snapshot, Stream};
use crate::type_url;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Resource name → the version the proxy has (as far as this server knows).
    /// Versions as the hash they print (`resource_version`), to keep the map small.
    known: HashMap<Arc<str>, u64>,
    /// Nonce → the type's version it carried, to report what an ACK accepted.
    in_flight: HashMap<String, String>,
}

/// The subscriptions of one delta stream.
#[derive(Default)]
pub(super) struct Delta {
    subscriptions: BTreeMap<String, Subscription>,
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    const DELTA: bool = true;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &Snapshot,
        stream: &mut Stream<'_>,
    ) -> Option<Prepared> {
        let type_url = request.type_url.clone();
        if type_url.is_empty() {
            return None;
        }
        let first = !self.subscriptions.contains_key(&type_url);
        let sub = self
            .subscriptions
            .entry(type_url.clone())
            .or_insert_with(|| Subscription {
                // An empty first subscription to listeners or clusters is the wildcard.
                wildcard: request.resource_names_subscribe.is_empty()
                    && type_url::is_wildcard_type(&type_url),
                names: BTreeSet::new(),
                known: request
                    .initial_resource_versions
                    .iter()
                    .map(|(name, v)| {
                        (
                            Arc::from(name.as_str()),
                            u64::from_str_radix(v, 16).unwrap_or(0),
                        )
                    })
                    .collect(),
                in_flight: HashMap::new(),
            });
        for name in &request.resource_names_subscribe {
            if name == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(name);
                sub.known.remove(name.as_str());
            }
        }
        if !request.response_nonce.is_empty() {
            let version = sub.in_flight.remove(&request.response_nonce);
            stream.answered(&type_url, version, request.error_detail.as_ref());
        }
        let subscribed = first
            || !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty();
        if !subscribed {
            return None;
        }
        self.push(&type_url, snapshot, first, stream)
    }

    fn on_change(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        stream: &mut Stream<'_>,
    ) -> Option<Prepared> {
        self.push(type_url, snapshot, false, stream)
    }
}

impl Delta {
    /// What the proxy lacks of one type; with `force`, even an empty response (a proxy waits
    /// for the first one before it finishes initializing).
    fn push(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        force: bool,
        stream: &mut Stream<'_>,
    ) -> Option<Prepared> {
        let sub = self.subscriptions.get_mut(type_url)?;
        let empty = super::Resources::default();
        let resources = snapshot.resources(type_url).unwrap_or(&empty);
        let mut changed = Vec::new();
        for (name, encoded) in resources.encoded() {
            if !sub.wildcard && !sub.names.contains(name) {
                continue;
            }
            if sub.known.get(name.as_str()) == Some(&encoded.hash) {
                continue;
            }
            sub.known.insert(encoded.name.clone(), encoded.hash);
            changed.push(encoded.delta.clone());
        }
        let removed: Vec<String> = sub
            .known
            .keys()
            .filter(|name| !resources.items.contains_key(&***name))
            .map(|name| name.to_string())
            .collect();
        for name in &removed {
            sub.known.remove(name.as_str());
        }
        if changed.is_empty() && removed.is_empty() && !force {
            return None;
        }
        let nonce = stream.next_nonce(type_url, &resources.version);
        sub.in_flight
            .insert(nonce.clone(), resources.version.clone());
        Some(Prepared::delta(
            &resources.version,
            changed,
            type_url,
            &removed,
            &nonce,
        ))
    }
}
