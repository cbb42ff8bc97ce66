//! State-of-the-world ADS: each response holds every requested resource of its type.

use super::names::Names;
use super::wire::Prepared;
use super::{Protocol, Snapshot, Stream};
use crate::type_url;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use std::collections::{BTreeMap, BTreeSet};

/// One subscribed type on one stream.
struct Subscription {
    /// `None`: every resource of the type (the wildcard).
    names: Option<Names>,
    /// What the last response held (the version, and the names asked for), to know whether a
    /// new snapshot changes anything.
    sent: Option<(String, Option<Names>)>,
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
        let asked: BTreeSet<&str> = request.resource_names.iter().map(String::as_str).collect();
        let wants_all =
            asked.contains("*") || (asked.is_empty() && type_url::is_wildcard_type(&type_url));
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
            let same = match &sub.names {
                None => wants_all,
                Some(names) => {
                    !wants_all && names.iter().map(String::as_str).eq(asked.iter().copied())
                }
            };
            if same {
                return None;
            }
            sub.names = intern(wants_all, &asked, stream);
            return self.push(&type_url, snapshot, true, stream);
        }
        // A first request, or the first on a new stream after a reconnect.
        self.subscriptions.insert(
            type_url.clone(),
            Subscription {
                names: intern(wants_all, &asked, stream),
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

    fn after_clusters(&mut self, snapshot: &Snapshot, stream: &mut Stream<'_>) -> Option<Prepared> {
        // ENDPOINT comes right after CLUSTER in `ORDER`, so its own `on_change` then finds
        // these endpoints sent and sends nothing more.
        self.push(crate::type_url::ENDPOINT, snapshot, true, stream)
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
        let unchanged = sub.sent.as_ref().is_some_and(|(version, names)| {
            *version == resources.version
                && match (names, &sub.names) {
                    (None, None) => true,
                    (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
                    _ => false,
                }
        });
        if !force && unchanged {
            return None;
        }
        let state = (resources.version.clone(), sub.names.clone());
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

/// The names asked for, shared with the streams that ask for the same.
fn intern(wants_all: bool, asked: &BTreeSet<&str>, stream: &Stream<'_>) -> Option<Names> {
    (!wants_all).then(|| {
        stream
            .names
            .intern(asked.iter().map(|n| n.to_string()).collect())
    })
}
