//! State-of-the-world ADS: each response holds every requested resource of its type.

use super::{Snapshot, Tracker, nack_message};
use crate::type_url;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

/// One subscribed type on one stream.
struct Subscription {
    /// `None`: every resource of the type (the wildcard).
    names: Option<BTreeSet<String>>,
    /// What the last response held, to know whether a new snapshot changes anything.
    sent: Option<(String, Option<BTreeSet<String>>)>,
    nonce: String,
}

struct Stream<'a> {
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    tracker: &'a Tracker,
    id: u64,
    nonce: u64,
    subscriptions: BTreeMap<String, Subscription>,
}

pub(super) async fn serve(
    first: DiscoveryRequest,
    mut requests: Streaming<DiscoveryRequest>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    tracker: &Tracker,
    id: u64,
) {
    let mut stream = Stream {
        tx,
        tracker,
        id,
        nonce: 0,
        subscriptions: BTreeMap::new(),
    };
    let snapshot = snapshots.borrow_and_update().clone();
    if !stream.request(first, &snapshot).await {
        return;
    }
    loop {
        tokio::select! {
            request = requests.message() => {
                let Ok(Some(request)) = request else { return };
                let snapshot = snapshots.borrow().clone();
                if !stream.request(request, &snapshot).await {
                    return;
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                for type_url in type_url::ORDER {
                    if !stream.push(type_url, &snapshot, false).await {
                        return;
                    }
                }
            }
        }
    }
}

impl Stream<'_> {
    /// Handles one request; false when the stream is gone.
    async fn request(&mut self, request: DiscoveryRequest, snapshot: &Snapshot) -> bool {
        let type_url = request.type_url.clone();
        if type_url.is_empty() {
            return true;
        }
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let wants_all =
            names.contains("*") || (names.is_empty() && type_url::is_wildcard_type(&type_url));
        let names = if wants_all { None } else { Some(names) };
        let known = self.subscriptions.contains_key(&type_url);
        if known && !request.response_nonce.is_empty() {
            let Some(sub) = self.subscriptions.get_mut(&type_url) else {
                return true;
            };
            // A reply to an older response is superseded by the one in flight.
            if request.response_nonce != sub.nonce {
                return true;
            }
            if request.error_detail.is_some() {
                let message = nack_message(request.error_detail.as_ref());
                tracing::warn!(type_url = %type_url, error = %message, "proxy rejected configuration");
                self.tracker.type_status(self.id, &type_url, |s| {
                    s.nack = Some(message);
                });
            } else {
                let version = request.version_info.clone();
                self.tracker.type_status(self.id, &type_url, |s| {
                    s.acked = Some(version);
                    s.nack = None;
                });
            }
            if sub.names == names {
                return true;
            }
            sub.names = names;
            return self.push(&type_url, snapshot, true).await;
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
        self.push(&type_url, snapshot, true).await
    }

    /// Sends the type's resources if the proxy subscribed and they changed (or `force`).
    async fn push(&mut self, type_url: &str, snapshot: &Snapshot, force: bool) -> bool {
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        let empty = super::Resources::default();
        let resources = snapshot.resources(type_url).unwrap_or(&empty);
        let state = (resources.version.clone(), sub.names.clone());
        if !force && sub.sent.as_ref() == Some(&state) {
            return true;
        }
        let selected = resources
            .items
            .iter()
            .filter(|(name, _)| sub.names.as_ref().is_none_or(|n| n.contains(*name)))
            .map(|(_, any)| any.clone())
            .collect();
        self.nonce += 1;
        sub.nonce = self.nonce.to_string();
        sub.sent = Some(state);
        let response = DiscoveryResponse {
            version_info: resources.version.clone(),
            resources: selected,
            type_url: type_url.to_string(),
            nonce: sub.nonce.clone(),
            ..Default::default()
        };
        let version = resources.version.clone();
        self.tracker
            .type_status(self.id, type_url, |s| s.sent = version);
        self.tx.send(Ok(response)).await.is_ok()
    }
}
