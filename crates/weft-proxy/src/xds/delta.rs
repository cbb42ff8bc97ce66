//! A delta ADS stream: subscriptions change by difference, responses carry only changes.

use super::state::{DynamicConfig, Update};
use super::{AdsConfig, Followed, StreamError, connect, count, nack, type_url};
use crate::server::ServerState;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct Requests {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    followed: Followed,
    node: Option<envoy_types::pb::envoy::config::core::v3::Node>,
}

impl Requests {
    async fn send(&mut self, mut request: DeltaDiscoveryRequest) -> Result<(), StreamError> {
        // The node goes with the first request of a stream only.
        request.node = self.node.take();
        self.tx.send(request).await.map_err(|_| StreamError::Closed)
    }

    /// Subscribes RDS and EDS to what the listeners and clusters now name, and unsubscribes
    /// what they no longer do.
    async fn follow(&mut self, dynamic: &DynamicConfig, first: bool) -> Result<(), StreamError> {
        for (type_url, before) in self.followed.update(dynamic) {
            let now = self.followed.names(type_url);
            let subscribe: Vec<String> = now.difference(&before).cloned().collect();
            let unsubscribe: Vec<String> = before.difference(now).cloned().collect();
            let request = DeltaDiscoveryRequest {
                type_url: type_url.to_string(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                initial_resource_versions: if first {
                    dynamic.resource_versions(type_url)
                } else {
                    Default::default()
                },
                ..Default::default()
            };
            self.send(request).await?;
        }
        Ok(())
    }
}

pub(super) async fn session(
    config: &AdsConfig,
    dynamic: &mut DynamicConfig,
    shared: &ServerState,
    established: &mut bool,
) -> Result<(), StreamError> {
    let mut client = AggregatedDiscoveryServiceClient::new(connect(config).await?);
    let (tx, rx) = mpsc::channel(16);
    let mut requests = Requests {
        tx,
        followed: Followed::default(),
        node: Some(config.node.clone()),
    };
    // Wildcard subscriptions to clusters and listeners, telling the server what is held so
    // that a reconnect sends only what changed meanwhile.
    for type_url in [type_url::CLUSTER, type_url::LISTENER] {
        let request = DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            initial_resource_versions: dynamic.resource_versions(type_url),
            ..Default::default()
        };
        requests.send(request).await?;
    }
    requests.follow(dynamic, true).await?;
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    shared.xds.connected_state.store(1, Ordering::Relaxed);
    tracing::info!(uri = %config.uri, "xDS stream established (delta)");
    while let Some(response) = super::next_response(&mut responses, dynamic).await? {
        *established = true;
        let type_url = response.type_url.as_str();
        let mut resources = Vec::new();
        let mut missing = Vec::new();
        for r in &response.resources {
            match &r.resource {
                Some(any) => resources.push((Some(r.name.as_str()), r.version.as_str(), any)),
                None => missing.push(r.name.as_str()),
            }
        }
        let result = if missing.is_empty() {
            dynamic
                .apply(&Update {
                    type_url,
                    version: &response.system_version_info,
                    resources,
                    removed: response
                        .removed_resources
                        .iter()
                        .map(String::as_str)
                        .collect(),
                    complete: false,
                })
                .await
        } else {
            Err(format!("resources without a body: {}", missing.join(", ")))
        };
        count(shared, type_url, result.is_ok());
        let error_detail = match result {
            Ok(()) => None,
            Err(message) => {
                tracing::warn!(type_url, error = %message, "xDS update rejected");
                Some(nack(message))
            }
        };
        requests
            .send(DeltaDiscoveryRequest {
                type_url: type_url.to_string(),
                response_nonce: response.nonce.clone(),
                error_detail,
                ..Default::default()
            })
            .await?;
        requests.follow(dynamic, false).await?;
    }
    Err(StreamError::Closed)
}
