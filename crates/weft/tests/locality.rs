//! Locality load balancing through `weft up`, with Weft proxies and with Envoy, as istiod
//! places endpoints for each proxy: with outlier detection, a client's requests stay in its own
//! zone and fail over to the next zone of its region when that zone's endpoint is ejected; a
//! `distribute` rule splits traffic between regions by weight. A service's `trafficDistribution`
//! (the Kubernetes field, or Istio's annotation on a ServiceEntry) keeps requests in the client's
//! zone with no DestinationRule at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::up::Up;
use support::{Req, try_request};

fn workload(name: &str, app: &str, port: u16, locality: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata: {{ name: {name}, namespace: default }}\n\
         spec: {{ address: 127.0.0.1, ports: {{ http: {port} }}, labels: {{ app: {app} }}, locality: {locality} }}\n---\n"
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: {name} }}\n\
         spec:\n  ports: [ {{ port: 80, name: http }} ]\n  selector: {{ app: {name} }}\n---\n"
    )
}

/// Who answers `n` requests for `host` sent through the client's sidecar.
async fn tally(proxy: SocketAddr, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let who = match try_request(proxy, &Req::get(host, "/")).await {
            Ok(r) if r.status == 200 => r.json().map_or_else(
                || "?".to_string(),
                |j| j["upstream"].as_str().unwrap_or("?").to_string(),
            ),
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => format!("error {e}"),
        };
        *out.entry(who).or_insert(0) += 1;
    }
    out
}

async fn locality(envoy: bool) {
    let near = support::start_echo("near").await;
    let zone = support::start_echo("zone").await;
    let far = support::start_echo("far").await;
    let east = support::start_echo("east").await;
    let west = support::start_echo("west").await;
    let mut folder = service("geo") + &service("spread");
    folder += &workload("geo-near", "geo", near.port(), "r1/z1/s1");
    folder += &workload("geo-zone", "geo", zone.port(), "r1/z2/s1");
    folder += &workload("geo-far", "geo", far.port(), "r2/z1/s1");
    folder += &workload("spread-east", "spread", east.port(), "r1/z1/s1");
    folder += &workload("spread-west", "spread", west.port(), "r2/z1/s1");
    let close_near = support::start_echo("close-near").await;
    let close_far = support::start_echo("close-far").await;
    // Another subzone of the client's zone is as close as it gets under PreferClose.
    folder += &workload("close-near", "close", close_near.port(), "r1/z1/s2");
    folder += &workload("close-far", "close", close_far.port(), "r1/z2/s1");
    folder += "apiVersion: v1\nkind: Service\nmetadata: { name: close }\n\
               spec:\n  trafficDistribution: PreferClose\n  ports: [ { port: 80, name: http } ]\n  selector: { app: close }\n---\n";
    folder += "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
               metadata:\n  name: close-external\n  annotations: { networking.istio.io/traffic-distribution: PreferClose }\n\
               spec:\n  hosts: [ close.example.com ]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
               ports: [ { number: 80, name: http, protocol: HTTP } ]\n  workloadSelector: { labels: { app: close } }\n---\n";
    // The client: its sidecar's locality is its WorkloadEntry's.
    folder += "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
               metadata: { name: client, namespace: default }\n\
               spec: { address: 127.0.0.1, labels: { app: client }, locality: r1/z1/s1 }\n---\n";
    folder += "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: geo }\n\
               spec:\n  host: geo\n  trafficPolicy:\n    outlierDetection:\n      \
               consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 60s\n      maxEjectionPercent: 100\n---\n";
    // No retries: the 5xx that ejects the near endpoint comes back as it is.
    folder += "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: geo }\n\
               spec:\n  hosts: [ geo ]\n  http:\n  - route: [ { destination: { host: geo } } ]\n    retries: { attempts: 0 }\n---\n";
    folder += "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: spread }\n\
               spec:\n  host: spread\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        \
               distribute:\n        - from: r1/z1/*\n          to: { \"r1/z1/*\": 80, \"r2/*\": 20 }\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), folder).unwrap();
    let up = tokio::task::block_in_place(|| Up::start(dir.path(), envoy));
    let name = "sidecar default/client";
    let status = tokio::task::block_in_place(|| {
        up.wait_status("the client's sidecar", |s| {
            Up::proxy(s, name).is_some_and(|p| p["sync"]["state"] == "SYNCED")
        })
    });
    let client = Up::proxy(&status, name).unwrap();
    assert_eq!(client["locality"], "r1/z1/s1", "{client:#}");
    let proxy: SocketAddr = client["http_proxy"].as_str().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while try_request(proxy, &Req::get("spread", "/"))
        .await
        .map_or(true, |r| r.status != 200)
    {
        assert!(Instant::now() < deadline, "the sidecar never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // distribute: 80 % to the client's zone, 20 % to the other region.
    let n = 1000;
    let spread = tally(proxy, "spread", n).await;
    let east_share = *spread.get("east").unwrap_or(&0) as f64 / n as f64;
    assert!(
        (east_share - 0.8).abs() < 0.05 && spread.len() == 2,
        "envoy {envoy}: distribute 80/20 gave {spread:?}"
    );

    // trafficDistribution: PreferClose, with no DestinationRule and so no outlier detection:
    // every request stays in the client's zone (without it, half would leave).
    for host in ["close", "close.example.com"] {
        let close = tally(proxy, host, 50).await;
        assert_eq!(
            close.get("close-near"),
            Some(&50),
            "envoy {envoy}: {host} with PreferClose gave {close:?}"
        );
    }

    // Failover: the client's own zone first, while its endpoint is there.
    let before = tally(proxy, "geo", 20).await;
    assert_eq!(before.get("near"), Some(&20), "envoy {envoy}: {before:?}");
    // Its endpoint answers a 5xx and is ejected; the rest of the region (not the other
    // region) takes over.
    let r = try_request(proxy, &Req::get("geo", "/status/503"))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = tally(proxy, "geo", 50).await;
    assert_eq!(
        after.get("zone"),
        Some(&50),
        "envoy {envoy}: after ejection {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_failover_and_distribute_with_weft_proxies() {
    locality(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_failover_and_distribute_with_envoy() {
    locality(true).await;
}
