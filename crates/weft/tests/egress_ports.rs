//! Outbound ports without capture, through `weft up` with Weft proxies and with Envoy: a
//! Sidecar `egress` listener with a `port` (and `bind`) is a listener of the client's sidecar,
//! so an application sending to it reaches that port's route table; through the HTTP proxy
//! port, `host:PORT` reaches the same table and a port-less host port 80's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::up::Up;
use support::{Req, try_request};

async fn who(addr: SocketAddr, host: &str) -> String {
    match try_request(addr, &Req::get(host, "/")).await {
        Ok(r) if r.status == 200 => r.json().map_or_else(
            || "?".into(),
            |j| j["upstream"].as_str().unwrap_or("?").to_string(),
        ),
        Ok(r) => format!("HTTP {}", r.status),
        Err(e) => format!("error {e}"),
    }
}

async fn egress_ports(envoy: bool) {
    let on_80 = support::start_echo("on-80").await;
    let on_alt = support::start_echo("on-alt").await;
    let alt = support::free_port();
    let folder = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: multi }}\n\
         spec:\n  ports: [ {{ port: 80, name: http }}, {{ port: {alt}, name: http-alt }} ]\n  selector: {{ app: multi }}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: multi-v1 }}\n\
         spec: {{ address: 127.0.0.1, ports: {{ http: {}, http-alt: {} }}, labels: {{ app: multi }} }}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: client }}\n\
         spec: {{ address: 127.0.0.1, labels: {{ app: client }} }}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{ name: client }}\n\
         spec:\n  workloadSelector: {{ labels: {{ app: client }} }}\n  egress:\n\
         \x20 - port: {{ number: {alt}, protocol: HTTP, name: http-alt }}\n    bind: 127.0.0.1\n    hosts: [ \"./*\" ]\n\
         \x20 - hosts: [ \"./*\" ]\n",
        on_80.port(),
        on_alt.port()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), folder).unwrap();
    let up = tokio::task::block_in_place(|| Up::start(dir.path(), envoy));
    let name = "sidecar default/client";
    let status = tokio::task::block_in_place(|| {
        up.wait_status("the client's sidecar", |s| {
            Up::proxy(s, name).is_some_and(|p| p["sync"]["state"] == "SYNCED")
        })
    });
    assert_eq!(status["config"]["errors"], serde_json::json!([]));
    let proxy: SocketAddr = Up::proxy(&status, name).unwrap()["http_proxy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let listener = SocketAddr::from(([127, 0, 0, 1], alt));
    let deadline = Instant::now() + Duration::from_secs(15);
    while who(listener, "multi").await != "on-alt" {
        assert!(
            Instant::now() < deadline,
            "envoy {envoy}: the egress listener on 127.0.0.1:{alt} never served: {}",
            who(listener, "multi").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Through the HTTP proxy: the port in Host picks the table.
    assert_eq!(who(proxy, "multi").await, "on-80", "envoy {envoy}");
    assert_eq!(
        who(proxy, &format!("multi:{alt}")).await,
        "on-alt",
        "envoy {envoy}"
    );
    assert_eq!(
        who(proxy, "multi.default.svc.cluster.local:80").await,
        "on-80",
        "envoy {envoy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_port_is_a_listener_with_its_route_table_with_weft_proxies() {
    egress_ports(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_port_is_a_listener_with_its_route_table_with_envoy() {
    egress_ports(true).await;
}
