//! State-of-the-world ADS: each response holds every requested resource of its type.

use super::wire::Prepared;
use super::{Protocol, Snapshot, Stream};
use crate::type_url;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use std::collections::{BTreeMap, BTreeSet};

/// One subscribed type on one stream.
struct Subscription {
    /// `None`: every resource of the type (the wildcard).
    names: Option<BTreeSet<String>>,
    /// What the last response held (the version, and a hash of the names asked for), to know
    /// whether a new snapshot changes anything. A hash, not a copy: a sidecar asks for
    /// thousands of endpoint names, and a control plane serves thousands of sidecars.
    sent: Option<(String, Option<u64>)>,
    nonce: String,
}

/// The subscriptions of one state-of-the-world stream.
#[derive(Default)]
pub(super) struct Sotw {
    subscriptions: BTreeMap<String, Subscription>,
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    const DELTA: bool = false;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn on_request(
        &mut self,
        request: DiscoveryRequest,
        snapshot: &Snapshot,
        stream: &mut Stream<'_>,
    ) -> Option<Prepared> {
        let type_url = request.type_url.clone();
        if type_url.is_empty() {
            return None;
        }
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let wants_all =
            names.contains("*") || (names.is_empty() && type_url::is_wildcard_type(&type_url));
        let names = if wants_all { None } else { Some(names) };
        if !request.response_nonce.is_empty()
            && let Some(sub) = self.subscriptions.get_mut(&type_url)
        {
            // A reply to an older response is superseded by the one in flight.
            if request.response_nonce != sub.nonce {
                return None;
            }
            stream.answered(
                &type_url,
                Some(request.version_info.clone()),
                request.error_detail.as_ref(),
            );
            if sub.names == names {
                return None;
            }
            sub.names = names;
            return self.push(&type_url, snapshot, true, stream);
        }
        // A first request, or the first on a new stream after a reconnect.
        self.subscriptions.insert(
            type_url.clone(),
            Subscription {
                names,
                sent: None,
                nonce: String::new(),
            },
        );
        self.push(&type_url, snapshot, true, stream)
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

impl Sotw {
    /// The type's resources if the proxy subscribed and they changed (or `force`).
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
        let state = (
            resources.version.clone(),
            sub.names.as_ref().map(names_hash),
        );
        if !force && sub.sent.as_ref() == Some(&state) {
            return None;
        }
        sub.nonce = stream.next_nonce(type_url, &resources.version);
        sub.sent = Some(state);
        let encoded = resources.encoded();
        let selected: Box<dyn Iterator<Item = &bytes::Bytes>> = match &sub.names {
            None => Box::new(encoded.values().map(|e| &e.sotw)),
            Some(names) => Box::new(names.iter().filter_map(|n| encoded.get(n)).map(|e| &e.sotw)),
        };
        Some(Prepared::sotw(
            &resources.version,
            selected,
            type_url,
            &sub.nonce,
        ))
    }
}

fn names_hash(names: &BTreeSet<String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    names.hash(&mut h);
    h.finish()
}
