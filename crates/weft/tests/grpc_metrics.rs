//! gRPC message counts through `weft up`, with Weft proxies and with Envoy: two streaming
//! calls of 3 messages each way through the ingress gateway to a gRPC service. Both data
//! planes count them in the gateway's cluster stats (`cluster.<c>.grpc.*`, Envoy's
//! `grpc_stats` filter as istiod configures it); Weft proxies also report
//! `istio_request_messages_total` and `istio_response_messages_total` on both reporters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use support::up::Up;
use support::xds::eventually;
use support::{Req, try_request};

fn mesh(echo: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{ name: chat }}
spec:
  ports: [ {{ port: 80, name: grpc }} ]
  selector: {{ app: chat }}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: chat-v1, namespace: default }}
spec: {{ address: 127.0.0.1, ports: {{ grpc: {echo} }}, labels: {{ app: chat, version: v1 }} }}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{ name: chat-gateway }}
spec:
  selector: {{ istio: ingressgateway }}
  servers:
  - port: {{ number: 80, name: http, protocol: HTTP }}
    hosts: [ "*" ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: chat }}
spec:
  hosts: [ "*" ]
  gateways: [ chat-gateway ]
  http:
  - route: [ {{ destination: {{ host: chat }} }} ]
"#
    )
}

async fn text(addr: SocketAddr, path: &str) -> String {
    let r = try_request(addr, &Req::get("admin", path)).await.unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `name: value` of Envoy's text `/stats`.
fn stat(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The value of the one `metric` series whose labels include all of `want`.
fn istio(text: &str, metric: &str, want: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            want.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .collect()
}

async fn run(envoy: bool) {
    let echo = support::start_echo("chat-v1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chat.yaml"), mesh(echo.port())).unwrap();
    let up = tokio::task::block_in_place(|| Up::start(dir.path(), envoy));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    let status = up.wait_status("both proxies", |s| {
        Up::proxy(s, "gateway istio=ingressgateway").is_some()
            && Up::proxy(s, "sidecar default/chat-v1").is_some()
    });
    let addr = |name: &str, key: &str| -> SocketAddr {
        Up::proxy(&status, name).unwrap()[key]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let gw_admin = addr("gateway istio=ingressgateway", "admin");
    let gw_stats = addr("gateway istio=ingressgateway", "stats");
    let chat_stats = addr("sidecar default/chat-v1", "stats");
    eventually("the route", || async {
        let r = try_request(gateway, &Req::get("chat.example", "/ready")).await?;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{}", r.status))
    })
    .await;
    let (code, echoed, _) = support::grpc_stream(gateway, "/chat.Chat/Ready", &[b"r"]).await;
    assert_eq!((code, echoed.len()), (200, 1));
    let cluster = "cluster.outbound|80||chat.default.svc.cluster.local.grpc";
    let before = text(gw_admin, "/stats").await;
    let was = |s: &str| stat(&before, &format!("{cluster}.{s}")).unwrap_or(0);
    for _ in 0..2 {
        let (code, echoed, trailers) =
            support::grpc_stream(gateway, "/chat.Chat/Talk", &[b"one", b"two", b"three"]).await;
        assert_eq!(code, 200);
        assert_eq!(echoed.len(), 3);
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..]),
            "{trailers:?}"
        );
    }
    let after = text(gw_admin, "/stats").await;
    let now = |s: &str| stat(&after, &format!("{cluster}.{s}")).unwrap_or(0);
    for (s, n) in [
        ("0", 2),
        ("success", 2),
        ("total", 2),
        ("request_message_count", 6),
        ("response_message_count", 6),
    ] {
        assert_eq!(now(s) - was(s), n, "{cluster}.{s}\n{after}");
    }
    assert_eq!(now("failure"), 0);
    if envoy {
        return;
    }
    // Istio's message counters, per reporter, for the gRPC series only.
    for (addr, reporter) in [(gw_stats, "source"), (chat_stats, "destination")] {
        let m = text(addr, "/stats/prometheus").await;
        let want = [
            ("reporter", reporter),
            ("request_protocol", "grpc"),
            ("grpc_response_status", "0"),
            ("destination_service", "chat.default.svc.cluster.local"),
        ];
        // The first call counts too: one message each way.
        let calls: f64 = istio(&m, "istio_requests_total", &want).iter().sum();
        assert_eq!(calls, 3.0, "{m}");
        let probes = 1.0;
        for metric in [
            "istio_request_messages_total",
            "istio_response_messages_total",
        ] {
            let n: f64 = istio(&m, metric, &want).iter().sum();
            assert_eq!(n, 6.0 + probes, "{reporter} {metric}\n{m}");
            assert!(m.contains(&format!("# TYPE {metric} counter")), "{m}");
        }
        assert!(
            !m.lines()
                .any(|l| l.starts_with("istio_request_messages_total{")
                    && l.contains("request_protocol=\"http\"")),
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_proxies_count_grpc_messages() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_counts_the_same_grpc_messages() {
    run(true).await;
}
