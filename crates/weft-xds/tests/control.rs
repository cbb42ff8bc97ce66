//! The control plane's push loop with real ADS streams: only proxies whose resources change are
//! pushed, and a proxy that goes away is forgotten.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use weft_api::load::LoadResult;
use weft_api::types::mesh::Mesh;
use weft_xds::control::ControlPlane;
use weft_xds::translate::Inputs;
use weft_xds::type_url;

fn inputs(weight_v1: u32) -> Inputs {
    let yaml = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: default }}
spec:
  ports: [ {{ name: http, port: 80 }} ]
  selector: {{ app: web }}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: web, namespace: default }}
spec:
  host: web
  subsets: [ {{ name: v1, labels: {{ v: "1" }} }}, {{ name: v2, labels: {{ v: "2" }} }} ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: web, namespace: default }}
spec:
  hosts: [ web ]
  http:
  - route:
    - {{ destination: {{ host: web, subset: v1 }}, weight: {weight_v1} }}
    - {{ destination: {{ host: web, subset: v2 }}, weight: {} }}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{ name: only-own, namespace: other }}
spec:
  egress: [ {{ hosts: [ "./*" ] }} ]
"#,
        100 - weight_v1
    );
    let mut loaded = LoadResult::default();
    loaded.load_str("test.yaml", &yaml);
    assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    let resources: Vec<_> = loaded.objects.into_iter().map(|o| o.resource).collect();
    Inputs::new(&resources, Mesh::default())
}

/// A sidecar's ADS stream that asks for listeners and clusters, and keeps the stream open.
async fn connect(
    addr: std::net::SocketAddr,
    id: &str,
) -> tokio::sync::mpsc::Sender<DiscoveryRequest> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: id.into(),
            ..Default::default()
        }),
        type_url: type_url::LISTENER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = responses.message().await {} });
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_proxies_whose_resources_change_are_pushed() {
    let control = ControlPlane::new();
    control.apply(inputs(90));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = control.server();
    tokio::spawn(weft_xds::ads::serve(
        server,
        listener,
        std::future::pending(),
    ));

    // Two sidecars in `default` (they see web and its VirtualService), one in `other`, whose
    // Sidecar resource hides `default`.
    let a = connect(addr, "sidecar~10.0.0.1~a.default~default.svc.cluster.local").await;
    let b = connect(addr, "sidecar~10.0.0.2~b.default~default.svc.cluster.local").await;
    let c = connect(addr, "sidecar~10.0.0.3~c.other~other.svc.cluster.local").await;
    for _ in 0..100 {
        if control.connections().len() == 3 && control.proxies().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(control.proxies().len(), 3);
    let proxies = control.proxies();
    let (pa, pb) = (
        &proxies["sidecar~10.0.0.1~a.default~default.svc.cluster.local"],
        &proxies["sidecar~10.0.0.2~b.default~default.svc.cluster.local"],
    );
    assert!(
        std::sync::Arc::ptr_eq(&pa.snapshot, &pb.snapshot),
        "proxies of one shape share a snapshot"
    );

    // The same config again: nobody is pushed.
    assert_eq!(control.apply(inputs(90)), 0);
    // A new weight changes the routes of the two in `default` only.
    assert_eq!(control.apply(inputs(80)), 2);

    // A proxy that goes away is forgotten at the next push.
    drop(c);
    for _ in 0..100 {
        if control.connections().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(control.apply(inputs(70)), 2);
    assert_eq!(control.proxies().len(), 2);
    drop((a, b));
}
