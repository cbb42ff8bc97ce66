//! Delta ADS: a response carries only the resources the proxy does not have in their current
//! version, and the names of those that went away.

use super::names::Names;
use super::wire::{Encoded, Prepared};
use super::{Protocol, Snapshot, Stream};
use crate::type_url;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

struct Subscription {
    wildcard: bool,
    names: Names,
    /// What the proxy has, as far as this server knows.
    has: Has,
    /// Nonce → the type's version it carried, to report what an ACK accepted.
    in_flight: HashMap<String, String>,
}

/// The resources a proxy has. After the first response that is a snapshot's resources as the
/// subscription selected them then: a reference to what every stream of the snapshot shares,
/// instead of a map of names and versions per stream (which held ~200 MB for a thousand
/// sidecars in the scale benchmark).
enum Has {
    /// Versions the proxy named when it (re)connected, until the first response.
    Listed(HashMap<String, u64>),
    Sent {
        resources: Arc<BTreeMap<String, Encoded>>,
        wildcard: bool,
        names: Names,
    },
}

impl Has {
    /// The version of `name` the proxy has.
    fn version(&self, name: &str) -> Option<u64> {
        match self {
            Has::Listed(versions) => versions.get(name).copied(),
            Has::Sent {
                resources,
                wildcard,
                names,
            } => (*wildcard || names.contains(name))
                .then(|| resources.get(name).map(|e| e.hash))
                .flatten(),
        }
    }

    /// Every name the proxy has.
    fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Has::Listed(versions) => Box::new(versions.keys().map(String::as_str)),
            Has::Sent {
                resources,
                wildcard: true,
                ..
            } => Box::new(resources.keys().map(String::as_str)),
            Has::Sent {
                resources, names, ..
            } => Box::new(
                names
                    .iter()
                    .map(String::as_str)
                    .filter(|n| resources.contains_key(*n)),
            ),
        }
    }
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
                names: stream.names.empty(),
                has: Has::Listed(
                    request
                        .initial_resource_versions
                        .iter()
                        .map(|(name, v)| (name.clone(), u64::from_str_radix(v, 16).unwrap_or(0)))
                        .collect(),
                ),
                in_flight: HashMap::new(),
            });
        let named = |n: &String| n != "*";
        if request.resource_names_subscribe.iter().any(named)
            || request.resource_names_unsubscribe.iter().any(named)
        {
            let mut names = (*sub.names).clone();
            names.extend(
                request
                    .resource_names_subscribe
                    .iter()
                    .filter(|n| named(n))
                    .cloned(),
            );
            for name in request
                .resource_names_unsubscribe
                .iter()
                .filter(|n| named(n))
            {
                names.remove(name);
                if let Has::Listed(versions) = &mut sub.has {
                    versions.remove(name);
                }
            }
            sub.names = stream.names.intern(names);
        }
        if request.resource_names_subscribe.iter().any(|n| n == "*") {
            sub.wildcard = true;
        }
        if request.resource_names_unsubscribe.iter().any(|n| n == "*") {
            sub.wildcard = false;
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
        let encoded = resources.encoded_shared();
        if let Has::Sent {
            resources,
            wildcard,
            names,
        } = &sub.has
            && Arc::ptr_eq(resources, encoded)
            && *wildcard == sub.wildcard
            && Arc::ptr_eq(names, &sub.names)
            && !force
        {
            return None;
        }
        let subscribed = |name: &str| sub.wildcard || sub.names.contains(name);
        let changed: Vec<bytes::Bytes> = encoded
            .iter()
            .filter(|(name, e)| subscribed(name) && sub.has.version(name) != Some(e.hash))
            .map(|(_, e)| e.delta.clone())
            .collect();
        // What the proxy has and still wants, that is gone. (Names it stopped wanting need no
        // word: the proxy dropped them itself.)
        let removed: Vec<String> = sub
            .has
            .names()
            .filter(|name| subscribed(name) && !encoded.contains_key(*name))
            .map(str::to_string)
            .collect();
        sub.has = Has::Sent {
            resources: encoded.clone(),
            wildcard: sub.wildcard,
            names: sub.names.clone(),
        };
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
