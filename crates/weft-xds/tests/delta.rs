//! Delta ADS bookkeeping over a real gRPC stream: what a proxy is sent as it subscribes,
//! unsubscribes, comes back, and as the snapshot changes under it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_xds::ads::{AdsServer, Cache, Snapshot};
use weft_xds::type_url::ENDPOINT;

/// Endpoint assignments named by `clusters`, each with `version` as its one endpoint's weight,
/// so that a different `version` makes a different resource.
fn snapshot(version: &str, clusters: &[(&str, u32)]) -> Snapshot {
    let mut s = Snapshot::default();
    s.set(
        ENDPOINT,
        version,
        clusters.iter().map(|(name, weight)| {
            let cla = ClusterLoadAssignment {
                cluster_name: name.to_string(),
                endpoints: vec![
                    envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints {
                        load_balancing_weight: Some(
                            envoy_types::pb::google::protobuf::UInt32Value { value: *weight },
                        ),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            };
            (name.to_string(), cla)
        }),
    );
    s
}

struct Proxy {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl Proxy {
    async fn connect(addr: std::net::SocketAddr, first: DeltaDiscoveryRequest) -> Proxy {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (requests, rx) = mpsc::channel(8);
        requests.send(first).await.unwrap();
        let responses = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Proxy {
            requests,
            responses,
        }
    }

    /// The next response, acknowledged: (names sent, names removed).
    async fn next(&mut self) -> (Vec<String>, Vec<String>) {
        let r = tokio::time::timeout(Duration::from_secs(5), self.responses.message())
            .await
            .expect("a response within 5 s")
            .unwrap()
            .unwrap();
        self.requests
            .send(DeltaDiscoveryRequest {
                type_url: r.type_url.clone(),
                response_nonce: r.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut sent: Vec<String> = r.resources.into_iter().map(|r| r.name).collect();
        sent.sort();
        (sent, r.removed_resources)
    }

    async fn nothing_more(&mut self) {
        let r = tokio::time::timeout(Duration::from_millis(300), self.responses.message()).await;
        assert!(r.is_err(), "unexpected response: {r:?}");
    }

    async fn subscribe(&mut self, subscribe: &[&str], unsubscribe: &[&str]) {
        self.requests
            .send(DeltaDiscoveryRequest {
                type_url: ENDPOINT.into(),
                resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
                resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn first_request(subscribe: &[&str], versions: HashMap<String, String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
            ..Default::default()
        }),
        type_url: ENDPOINT.into(),
        resource_names_subscribe: names(subscribe),
        initial_resource_versions: versions,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_gets_what_it_lacks_and_hears_of_what_went_away() {
    let cache = Arc::new(Cache::default());
    cache.set_default(snapshot("1", &[("a", 1), ("b", 1), ("c", 1)]));
    let server = AdsServer::new(cache.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(weft_xds::ads::serve(
        server,
        listener,
        std::future::pending(),
    ));

    let mut proxy = Proxy::connect(addr, first_request(&["a", "b"], HashMap::new())).await;
    assert_eq!(proxy.next().await, (names(&["a", "b"]), vec![]));

    // b changes, a goes away, c (not subscribed) changes: only b is sent, only a removed.
    cache.set_default(snapshot("2", &[("b", 2), ("c", 2)]));
    assert_eq!(proxy.next().await, (names(&["b"]), names(&["a"])));

    // Subscribing to c sends c alone.
    proxy.subscribe(&["c"], &[]).await;
    assert_eq!(proxy.next().await, (names(&["c"]), vec![]));

    // Unsubscribing b needs no answer, and a change to b is then not sent; asking for b again
    // sends it again.
    proxy.subscribe(&[], &["b"]).await;
    proxy.nothing_more().await;
    cache.set_default(snapshot("3", &[("b", 3), ("c", 2)]));
    proxy.nothing_more().await;
    proxy.subscribe(&["b"], &[]).await;
    assert_eq!(proxy.next().await, (names(&["b"]), vec![]));

    // The same resources again push nothing.
    cache.set_default(snapshot("3", &[("b", 3), ("c", 2)]));
    proxy.nothing_more().await;

    // A proxy that comes back with the versions it has gets only what changed since, and
    // hears that what it has and is gone, is gone.
    let current = snapshot("3", &[("c", 2)])
        .resources(ENDPOINT)
        .and_then(|r| r.resource_version("c"));
    let versions = HashMap::from([
        ("c".to_string(), current.unwrap()),
        ("a".to_string(), "0000000000000001".to_string()),
    ]);
    let mut back = Proxy::connect(addr, first_request(&["a", "b", "c"], versions)).await;
    assert_eq!(back.next().await, (names(&["b"]), names(&["a"])));
    back.nothing_more().await;
}
