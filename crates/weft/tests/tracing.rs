//! Distributed tracing through `weft up` (ingress gateway → sidecar → application), with Weft
//! proxies and with Envoy: for each propagation format (B3 headers, the single `b3` header,
//! W3C `traceparent`) and each exporter (Zipkin v2 JSON, OTLP over HTTP and over gRPC), the
//! collector here
//! receives the gateway's CLIENT span and the sidecar's SERVER span of the same trace, the
//! sidecar's a child of the gateway's and the gateway's a child of the caller's; the
//! application sees the sidecar's span as its parent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::collector::{Span, Spans};
use support::up::Up;
use support::xds::eventually;
use support::{Req, try_request};

fn mesh(collector: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{ name: istio, namespace: istio-system }}
data:
  mesh: |
    extensionProviders:
    - name: zipkin
      zipkin: {{ service: zipkin.istio-system.svc.cluster.local, port: 9411 }}
    - name: otel
      opentelemetry:
        service: zipkin.istio-system.svc.cluster.local
        port: 9411
        http: {{ path: /v1/traces }}
    - name: otel-grpc
      opentelemetry: {{ service: zipkin.istio-system.svc.cluster.local, port: 4317 }}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: zipkin, namespace: istio-system }}
spec:
  hosts: [ zipkin.istio-system.svc.cluster.local ]
  ports:
  - {{ number: 9411, name: http, protocol: HTTP }}
  - {{ number: 4317, name: grpc, protocol: GRPC }}
  resolution: STATIC
  endpoints: [ {{ address: 127.0.0.1, ports: {{ http: {collector}, grpc: {collector} }} }} ]
"#
    )
}

fn telemetry(provider: &str) -> String {
    format!(
        r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{ name: mesh-default, namespace: istio-system }}
spec:
  tracing:
  - providers: [ {{ name: {provider} }} ]
    randomSamplingPercentage: 100
    customTags:
      team: {{ literal: {{ value: checkout }} }}
      who: {{ header: {{ name: x-user, defaultValue: nobody }} }}
"#
    )
}

/// The spans of `trace` once both hops reported them (Envoy flushes every 5 s).
fn two_spans(spans: &Spans, trace: &str) -> (Span, Span) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect();
        if found.len() >= 2 {
            let client = found.iter().find(|s| s.kind == "CLIENT").cloned();
            let server = found.iter().find(|s| s.kind == "SERVER").cloned();
            if let (Some(c), Some(s)) = (client, server) {
                return (c, s);
            }
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace}: {found:#?}\nall: {:#?}",
            spans.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Random hex digits (`len` of them), never all zero.
fn random_hex(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish() | 1));
    }
    out.truncate(len);
    out
}

/// What the application saw of the trace headers.
fn seen(r: &support::Resp, name: &str) -> Option<String> {
    let v = r.json()?;
    v["headers"][name].as_str().map(str::to_string)
}

/// A mesh whose Telemetry traces to `provider`, with the collector's spans.
async fn mesh_with(envoy: bool, provider: &str) -> (tempfile::TempDir, Up, SocketAddr, Spans) {
    let app = support::start_echo("web-v1").await;
    let (collector, spans) = support::collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.yaml"),
        support::up::base_mesh(app.port()),
    )
    .unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), mesh(collector.port())).unwrap();
    std::fs::write(dir.path().join("telemetry.yaml"), telemetry(provider)).unwrap();
    let up = tokio::task::block_in_place(|| Up::start(dir.path(), envoy));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    eventually("the route", || async {
        let r = try_request(gateway, &Req::get("web.example", "/ready")).await?;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{}", r.status))
    })
    .await;
    (dir, up, gateway, spans)
}

async fn run(envoy: bool) {
    let (_dir, up, gateway, spans) = mesh_with(envoy, "zipkin").await;

    // B3 headers from the caller.
    let trace = random_hex(32);
    let caller = "00f067aa0ba902b7";
    let mut req = Req::get("web.example", "/b3");
    req.headers = vec![
        ("x-b3-traceid".into(), trace.clone()),
        ("x-b3-spanid".into(), caller.into()),
        ("x-b3-sampled".into(), "1".into()),
        ("x-user".into(), "alice".into()),
    ];
    let r = try_request(gateway, &req).await.unwrap();
    assert_eq!(r.status, 200);
    let (client, server) = tokio::task::block_in_place(|| two_spans(&spans, &trace));
    assert_eq!(client.parent.as_deref(), Some(caller), "{client:#?}");
    assert_eq!(
        server.parent.as_deref(),
        Some(client.id.as_str()),
        "{server:#?}"
    );
    assert_ne!(server.id, client.id);
    assert_eq!(seen(&r, "x-b3-traceid").as_deref(), Some(trace.as_str()));
    assert_eq!(seen(&r, "x-b3-spanid").as_deref(), Some(server.id.as_str()));
    assert_eq!(
        seen(&r, "x-b3-parentspanid").as_deref(),
        Some(client.id.as_str())
    );
    for s in [&client, &server] {
        assert_eq!(s.via, "zipkin");
        assert_eq!(s.tags["http.method"], "GET");
        assert_eq!(s.tags["http.status_code"], "200");
        assert_eq!(s.tags["team"], "checkout", "{s:#?}");
        assert_eq!(s.tags["who"], "alice");
        assert_eq!(s.tags["component"], "proxy");
        assert!(s.tags["http.url"].ends_with("/b3"), "{s:#?}");
    }
    assert_eq!(client.tags["istio.namespace"], "istio-system");
    assert_eq!(server.tags["istio.namespace"], "default");
    assert_eq!(server.tags["istio.canonical_service"], "web");
    assert_eq!(client.name, "web.example");
    assert_eq!(
        client.tags["upstream_cluster"],
        "outbound|80||web.default.svc.cluster.local"
    );

    // The single b3 header, 64-bit.
    let trace = random_hex(16);
    let mut req = Req::get("web.example", "/b3-single");
    req.headers = vec![("b3".into(), format!("{trace}-{caller}-1"))];
    let r = try_request(gateway, &req).await.unwrap();
    assert_eq!(r.status, 200);
    let (client, server) = tokio::task::block_in_place(|| two_spans(&spans, &trace));
    assert_eq!(client.parent.as_deref(), Some(caller));
    assert_eq!(server.parent.as_deref(), Some(client.id.as_str()));

    // No context: the gateway starts the trace (sampled at 100%), the sidecar continues it.
    let r = try_request(gateway, &Req::get("web.example", "/root"))
        .await
        .unwrap();
    let trace = seen(&r, "x-b3-traceid").expect("the application got a trace id");
    let (client, server) = tokio::task::block_in_place(|| two_spans(&spans, &trace));
    assert_eq!(client.parent, None);
    assert_eq!(server.parent.as_deref(), Some(client.id.as_str()));
    // The sampling decision travels in the request id, as Envoy marks it.
    let rid = seen(&r, "x-request-id").unwrap();
    assert_eq!(&rid[14..15], "9", "{rid}");

    drop(up);

    // OpenTelemetry, W3C Trace Context, in a mesh of its own (Envoy keeps a connection on the
    // listener config it was accepted under, so an edit would reach the sidecar only as the
    // gateway's pooled connections drain).
    // OpenTelemetry, W3C Trace Context, each exporter in a mesh of its own (Envoy keeps a
    // connection on the listener config it was accepted under, so an edit would reach the
    // sidecar only as the gateway's pooled connections drain).
    for (provider, via) in [("otel", "otlp"), ("otel-grpc", "otlp-grpc")] {
        let (_dir, up, gateway, spans) = mesh_with(envoy, provider).await;
        w3c(gateway, &spans, via).await;
        drop(up);
    }
}

/// A W3C trace through both hops, exported as `via` says.
async fn w3c(gateway: SocketAddr, spans: &Spans, via: &'static str) {
    let caller = "00f067aa0ba902b7";
    let trace = random_hex(32);
    let mut n = 0;
    eventually(
        &format!("a W3C trace through both hops, sent by {via}"),
        || {
            n += 1;
            let trace = trace.clone();
            let spans = spans.clone();
            async move {
                let mut req = Req::get("web.example", &format!("/w3c-{n}"));
                req.headers = vec![
                    ("traceparent".into(), format!("00-{trace}-{caller}-01")),
                    ("tracestate".into(), "congo=t61rcWkgMzE".into()),
                ];
                let r = try_request(gateway, &req).await?;
                let tp = seen(&r, "traceparent").ok_or("no traceparent at the application")?;
                if !tp.contains(&trace) {
                    return Err(format!("the application saw {tp}"));
                }
                if seen(&r, "tracestate").as_deref() != Some("congo=t61rcWkgMzE") {
                    return Err("tracestate not passed on".into());
                }
                tokio::time::sleep(Duration::from_secs(6)).await;
                let got: Vec<Span> = spans
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s.trace_id == trace && s.via == via)
                    .cloned()
                    .collect();
                let client = got
                    .iter()
                    .find(|s| s.kind == "CLIENT")
                    .ok_or("no CLIENT span")?;
                let server = got
                    .iter()
                    .find(|s| s.kind == "SERVER")
                    .ok_or("no SERVER span")?;
                if client.parent.as_deref() != Some(caller)
                    || server.parent.as_deref() != Some(client.id.as_str())
                    || !tp.contains(&server.id)
                {
                    return Err(format!("{client:#?} {server:#?} {tp}"));
                }
                Ok(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_through_weft_proxies() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_through_envoy() {
    run(true).await;
}
