//! Delta ADS: a response carries only the resources the proxy does not have in their current
//! version, and the names of those that went away.

use super::{Snapshot, Tracker, nack_message, resource_version};
use crate::type_url;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Resource name → the version the proxy has (as far as this server knows).
    known: HashMap<String, String>,
    /// Nonce → the type's version it carried, to report what an ACK accepted.
    in_flight: HashMap<String, String>,
}

struct Stream<'a> {
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    tracker: &'a Tracker,
    id: u64,
    nonce: u64,
    subscriptions: BTreeMap<String, Subscription>,
}

pub(super) async fn serve(
    first: DeltaDiscoveryRequest,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
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
    async fn request(&mut self, request: DeltaDiscoveryRequest, snapshot: &Snapshot) -> bool {
        let type_url = request.type_url.clone();
        if type_url.is_empty() {
            return true;
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
                known: request.initial_resource_versions.clone(),
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
                sub.known.remove(name);
            }
        }
        if !request.response_nonce.is_empty() {
            let version = sub.in_flight.remove(&request.response_nonce);
            if request.error_detail.is_some() {
                let message = nack_message(request.error_detail.as_ref());
                tracing::warn!(type_url = %type_url, error = %message, "proxy rejected configuration");
                self.tracker
                    .type_status(self.id, &type_url, |s| s.nack = Some(message));
            } else if let Some(version) = version {
                self.tracker.type_status(self.id, &type_url, |s| {
                    s.acked = Some(version);
                    s.nack = None;
                });
            }
        }
        let subscribed = first
            || !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty();
        if !subscribed {
            return true;
        }
        self.push(&type_url, snapshot, first).await
    }

    /// Sends what the proxy lacks of one type; with `force`, even an empty response (a proxy
    /// waits for the first one before it finishes initializing).
    async fn push(&mut self, type_url: &str, snapshot: &Snapshot, force: bool) -> bool {
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        let empty = super::Resources::default();
        let resources = snapshot.resources(type_url).unwrap_or(&empty);
        let mut changed = Vec::new();
        for (name, any) in &resources.items {
            if !sub.wildcard && !sub.names.contains(name) {
                continue;
            }
            let version = resource_version(any);
            if sub.known.get(name) == Some(&version) {
                continue;
            }
            sub.known.insert(name.clone(), version.clone());
            changed.push(Resource {
                name: name.clone(),
                version,
                resource: Some(any.clone()),
                ..Default::default()
            });
        }
        let removed: Vec<String> = sub
            .known
            .keys()
            .filter(|name| !resources.items.contains_key(*name))
            .cloned()
            .collect();
        for name in &removed {
            sub.known.remove(name);
        }
        if changed.is_empty() && removed.is_empty() && !force {
            return true;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        sub.in_flight
            .insert(nonce.clone(), resources.version.clone());
        let version = resources.version.clone();
        self.tracker
            .type_status(self.id, type_url, |s| s.sent = version);
        let response = DeltaDiscoveryResponse {
            system_version_info: resources.version.clone(),
            resources: changed,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        };
        self.tx.send(Ok(response)).await.is_ok()
    }
}
