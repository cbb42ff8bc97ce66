//! Istio's TCP metrics and the ALPN metadata exchange through `weft up` with its CA on: three
//! connections through the ingress gateway's TCP server to a TCP service, over the mesh's mTLS
//! to its sidecar, each sending 100 bytes and reading them back. Each side learns who the
//! other is from the exchange (istio-proxy's header after ALPN `istio-peer-exchange`), and
//! both reporters count exactly 3 connections opened and closed and 300 bytes each way. Envoy
//! has no such network filters and cannot skip them (they cannot be optional), so the control
//! plane sends it none: the same mesh with Envoy carries the bytes and reports no `istio_tcp_*`.
//! With `accessLogFile`, both data planes log each TCP connection on both sides, as istiod
//! configures the TCP proxies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::up::Up;
use support::xds::eventually_within;
use support::{Req, try_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn mesh(echo: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{ name: istio, namespace: istio-system }}
data:
  mesh: |
    accessLogFile: /dev/stdout
---
apiVersion: v1
kind: Service
metadata: {{ name: db }}
spec:
  ports: [ {{ port: 5432, name: tcp }} ]
  selector: {{ app: db }}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: db-v1, namespace: default }}
spec: {{ address: 127.0.0.1, ports: {{ tcp: {echo} }}, labels: {{ app: db, version: v1 }}, serviceAccount: db }}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{ name: db-gateway }}
spec:
  selector: {{ istio: ingressgateway }}
  servers:
  - port: {{ number: 31400, name: tcp, protocol: TCP }}
    hosts: [ "*" ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: db }}
spec:
  hosts: [ "*" ]
  gateways: [ db-gateway ]
  tcp:
  - match: [ {{ port: 31400 }} ]
    route: [ {{ destination: {{ host: db, port: {{ number: 5432 }} }} }} ]
"#
    )
}

/// A TCP server that sends back whatever it reads.
async fn tcp_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// One connection: 100 bytes there and back.
async fn exchange(addr: SocketAddr) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let sent = [b'x'; 100];
    s.write_all(&sent).await.map_err(|e| e.to_string())?;
    let mut got = [0u8; 100];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .map_err(|_| "no echo".to_string())?
        .map_err(|e| e.to_string())?;
    (got == sent).then_some(()).ok_or("wrong echo".into())
}

/// The sum of `metric` over the series whose labels include all of `want`.
fn sum(text: &str, metric: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            want.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// `weft logs NAME`: what the proxy wrote.
fn weft_logs(up: &Up, name: &str) -> String {
    let status = up.status().unwrap();
    let monitoring = status["control_plane"]["monitoring"].as_str().unwrap();
    let out = std::process::Command::new(support::weft_binary())
        .args([
            "logs",
            name,
            "--control-plane",
            &format!("http://{monitoring}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn scrape(addr: SocketAddr) -> String {
    let r = try_request(addr, &Req::get("stats", "/stats/prometheus"))
        .await
        .unwrap();
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn run(envoy: bool) {
    let echo = tcp_echo().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db.yaml"), mesh(echo.port())).unwrap();
    let tcp_port = support::free_port();
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
        "--gateway-port".to_string(),
        format!("31400={tcp_port}"),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(dir.path(), envoy, &args));
    let gateway = SocketAddr::from(([127, 0, 0, 1], tcp_port));
    let status = up.wait_status("both proxies", |s| {
        Up::proxy(s, "gateway istio=ingressgateway").is_some()
            && Up::proxy(s, "sidecar default/db-v1").is_some()
    });
    let stats = |name: &str| -> SocketAddr {
        Up::proxy(&status, name).unwrap()["stats"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (gw_stats, db_stats) = (
        stats("gateway istio=ingressgateway"),
        stats("sidecar default/db-v1"),
    );
    // The first connection once the route is there, then two more.
    eventually_within("the TCP route", Duration::from_secs(30), || {
        exchange(gateway)
    })
    .await;
    for _ in 0..2 {
        exchange(gateway).await.unwrap();
    }
    // Each side logs the connections (Envoy writes its log file out every 10 s).
    for (proxy, cluster) in [
        (
            "istio-ingressgateway",
            "outbound|5432||db.default.svc.cluster.local".to_string(),
        ),
        ("db-v1", format!("inbound|{}||", echo.port())),
    ] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let logs = weft_logs(&up, proxy);
            let lines: Vec<&str> = logs
                .lines()
                .filter(|l| l.contains(&cluster) && l.contains(" 100 100 "))
                .collect();
            if lines.len() >= 3 {
                assert!(
                    lines.iter().all(|l| l.contains("\"- - -\" 0 ")),
                    "{lines:#?}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{proxy}: no 3 lines for {cluster} in\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if envoy {
        let gw = scrape(gw_stats).await;
        assert!(!gw.contains("istio_tcp_"), "{gw}");
        assert!(gw.contains("envoy_cluster_upstream_cx_total"), "{gw}");
        assert!(
            !up.stderr().contains("NACK") && !up.stderr().contains("rejected"),
            "{}",
            up.stderr()
        );
        return;
    }
    let gateway_id =
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let db_id = "spiffe://cluster.local/ns/default/sa/db";
    let common = [
        ("source_workload", "istio-ingressgateway"),
        ("source_workload_namespace", "istio-system"),
        ("source_principal", gateway_id),
        ("destination_workload", "db-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_principal", db_id),
        ("destination_app", "db"),
        ("destination_version", "v1"),
        ("destination_service", "db.default.svc.cluster.local"),
        ("destination_service_name", "db"),
        ("request_protocol", "tcp"),
    ];
    for (addr, reporter, security) in [
        (gw_stats, "source", "unknown"),
        (db_stats, "destination", "mutual_tls"),
    ] {
        let mut want = common.to_vec();
        want.push(("reporter", reporter));
        want.push(("connection_security_policy", security));
        // A side counts a connection as closed once its own end is done.
        let text = eventually_within(
            &format!("3 connections closed, as {reporter} counts them"),
            Duration::from_secs(20),
            || {
                let want = want.clone();
                async move {
                    let text = scrape(addr).await;
                    let closed = sum(&text, "istio_tcp_connections_closed_total", &want);
                    (closed == 3.0).then_some(text.clone()).ok_or(format!(
                        "{closed} closed:\n{}",
                        text.lines()
                            .filter(|l| l.starts_with("istio_tcp"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    ))
                }
            },
        )
        .await;
        for (metric, n) in [
            ("istio_tcp_connections_opened_total", 3.0),
            ("istio_tcp_received_bytes_total", 300.0),
            ("istio_tcp_sent_bytes_total", 300.0),
        ] {
            assert_eq!(sum(&text, metric, &want), n, "{reporter} {metric}\n{text}");
        }
        assert!(
            text.contains("# TYPE istio_tcp_sent_bytes_total counter"),
            "{text}"
        );
        // TCP series carry no response code.
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
            .unwrap();
        assert!(!line.contains("response_code"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_proxies_exchange_metadata_and_count_tcp() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_no_tcp_filters_and_carries_the_bytes() {
    run(true).await;
}
