//! Traffic captured by iptables, as in an Istio sidecar: `original_dst`, `use_original_dst`
//! hand-off to `bind_to_port: false` listeners, and ORIGINAL_DST clusters, in real Envoy 1.40
//! and `weft proxy` with one bootstrap (tests/data/original_dst.yaml).
//!
//! The test re-runs itself in a network namespace of its own (`unshare --net`), where it can
//! add addresses and NAT rules without touching the machine's network. It needs root and the
//! `iptables` command, which `scripts/install-test-deps.sh` installs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;
use support::{Kind, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEMPLATE: &str = include_str!("data/original_dst.yaml");
const TEST: &str = "redirected_connections_reach_their_original_destination";

fn sh(command: &str) {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects from `source` to `destination` (which NAT sends to the proxy), writes `bytes` and
/// reads until the other side closes.
async fn exchange(source: IpAddr, destination: SocketAddr, bytes: &[u8]) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(destination).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = stream.read_to_end(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n{extra}\r\n").into_bytes()
}

fn upstream_of(response: &str) -> String {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|j| j["upstream"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("not an echo answer: {response:?}"))
}

#[test]
fn redirected_connections_reach_their_original_destination() {
    if std::env::var_os("WEFT_IN_NETNS").is_none() {
        let status = Command::new("unshare")
            .args(["--net", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("WEFT_IN_NETNS", "1")
            .status()
            .expect("unshare (util-linux) runs the test in a network namespace");
        assert!(status.success(), "the test failed in its network namespace");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(in_namespace());
}

async fn in_namespace() {
    sh("ip link set lo up");
    // The /24 gives the destinations a route; .2 and .3 are the clients of Envoy and of Weft,
    // .20 a server no listener knows.
    sh("ip addr add 198.51.100.1/24 dev lo");
    for host in [2, 3, 20] {
        sh(&format!("ip addr add 198.51.100.{host}/32 dev lo"));
    }
    let v1 = support::start_echo("v1").await;
    let v2 = support::start_echo("v2").await;
    let v3 = support::start_echo("v3").await;
    let outside = {
        let l = tokio::net::TcpListener::bind("198.51.100.20:0")
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    // Read the client's line first: closing with unread bytes would send a
                    // reset, which may discard the answer before the proxy reads it.
                    let mut line = [0u8; 3];
                    let _ = s.read_exact(&mut line).await;
                    let _ = s.write_all(b"outside\n").await;
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    };
    let given = [("V1", v1.port()), ("V2", v2.port())];
    let proxies = [
        ("198.51.100.2", Proxy::start(Kind::Envoy, TEMPLATE, &given)),
        ("198.51.100.3", Proxy::start(Kind::Weft, TEMPLATE, &given)),
    ];
    for (client, proxy) in &proxies {
        // Only this client's connections are captured, as Istio spares the proxy's own.
        sh(&format!(
            "iptables -t nat -A OUTPUT -p tcp -s {client} -j REDIRECT --to-ports {}",
            proxy.port("OUTBOUND")
        ));
    }
    let mut failures = Vec::new();
    for (client, proxy) in &proxies {
        let source: IpAddr = client.parse().unwrap();
        let kind = proxy.kind;
        let mut check = |what: &str, got: String, want: &str| {
            if got != want {
                failures.push(format!("{kind:?} {what}: {got:?}, want {want:?}"));
            }
        };
        let to_80: SocketAddr = "198.51.100.10:80".parse().unwrap();
        let r = exchange(source, to_80, &get("/", "")).await;
        check(
            "hand-off to the listener of the destination",
            upstream_of(&r),
            "v1",
        );
        let r = exchange(source, "198.51.100.11:9080".parse().unwrap(), &get("/", "")).await;
        check(
            "hand-off to the wildcard listener of the port",
            upstream_of(&r),
            "v2",
        );
        let header = format!("x-envoy-original-dst-host: 127.0.0.1:{}\r\n", v3.port());
        let r = exchange(source, to_80, &get("/via-header", &header)).await;
        check("ORIGINAL_DST by header", upstream_of(&r), "v3");
        let r = exchange(source, outside, b"hi\n").await;
        check("passthrough to the original destination", r, "outside\n");
    }
    let stats = proxies[1].1.admin("/stats").await;
    assert!(
        stats
            .lines()
            .any(|l| l == "cluster.PassthroughCluster.upstream_cx_total: 1"),
        "{stats}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
