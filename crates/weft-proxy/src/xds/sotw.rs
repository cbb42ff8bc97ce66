//! A state-of-the-world ADS stream.

use super::state::{DynamicConfig, Update};
use super::{AdsConfig, Followed, StreamError, connect, count, nack, type_url};
use crate::server::ServerState;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct Requests {
    tx: mpsc::Sender<DiscoveryRequest>,
    /// Type → the nonce of the last response, echoed in the next request of the type.
    nonces: HashMap<String, String>,
    followed: Followed,
    node_sent: bool,
    node: envoy_types::pb::envoy::config::core::v3::Node,
}

impl Requests {
    async fn send(
        &mut self,
        type_url: &str,
        version: String,
        names: Vec<String>,
        error: Option<String>,
    ) -> Result<(), StreamError> {
        let request = DiscoveryRequest {
            version_info: version,
            // The node goes with the first request of a stream only.
            node: (!self.node_sent).then(|| self.node.clone()),
            resource_names: names,
            type_url: type_url.to_string(),
            response_nonce: self.nonces.get(type_url).cloned().unwrap_or_default(),
            error_detail: error.map(nack),
            ..Default::default()
        };
        self.node_sent = true;
        self.tx.send(request).await.map_err(|_| StreamError::Closed)
    }

    fn names(&self, type_url: &str) -> Vec<String> {
        self.followed.names(type_url).iter().cloned().collect()
    }

    /// Asks RDS and EDS for what the listeners and clusters now name, if that changed.
    async fn follow(&mut self, dynamic: &DynamicConfig) -> Result<(), StreamError> {
        for (type_url, _) in self.followed.update(dynamic) {
            let version = dynamic.versions.get(type_url).cloned().unwrap_or_default();
            let names = self.names(type_url);
            self.send(type_url, version, names, None).await?;
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
        nonces: HashMap::new(),
        followed: Followed::default(),
        node_sent: false,
        node: config.node.clone(),
    };
    // Clusters and listeners first (wildcard), with the versions held, then what they name.
    for type_url in [type_url::CLUSTER, type_url::LISTENER] {
        let version = dynamic.versions.get(type_url).cloned().unwrap_or_default();
        requests.send(type_url, version, Vec::new(), None).await?;
    }
    requests.follow(dynamic).await?;
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    shared.xds.connected_state.store(1, Ordering::Relaxed);
    tracing::info!(uri = %config.uri, "xDS stream established (state of the world)");
    while let Some(response) = super::next_response(&mut responses, dynamic).await? {
        *established = true;
        let type_url = response.type_url.as_str();
        let update = Update {
            type_url,
            version: &response.version_info,
            resources: response
                .resources
                .iter()
                .map(|any| (None, response.version_info.as_str(), any))
                .collect(),
            removed: Vec::new(),
            complete: type_url == type_url::LISTENER || type_url == type_url::CLUSTER,
        };
        let result = dynamic.apply(&update).await;
        count(shared, type_url, result.is_ok());
        requests
            .nonces
            .insert(type_url.to_string(), response.nonce.clone());
        let names = requests.names(type_url);
        match result {
            Ok(()) => {
                requests
                    .send(type_url, response.version_info.clone(), names, None)
                    .await?;
            }
            Err(message) => {
                tracing::warn!(type_url, version = %response.version_info, error = %message, "xDS update rejected");
                let version = dynamic.versions.get(type_url).cloned().unwrap_or_default();
                requests
                    .send(type_url, version, names, Some(message))
                    .await?;
            }
        }
        requests.follow(dynamic).await?;
    }
    Err(StreamError::Closed)
}
