//! The OpenTelemetry access-log provider (`envoyOtelAls`) through `weft up`, with Weft proxies
//! and with Envoy: a Telemetry that logs `response.code >= 400` to it, with a text format and
//! labels; the collector here receives one OTLP log record per failed request from the
//! gateway and from the sidecar, body and attributes formatted, and none for a success. With
//! OpenTelemetry tracing on (sampling nothing, as Envoy still keeps a trace context then),
//! each record carries the trace id both hops share and its own hop's span id, as Envoy's do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::collector::{LogRecord, Logs};
use support::up::Up;
use support::xds::{eventually, eventually_within};
use support::{Req, try_request};

fn mesh(collector: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{ name: istio, namespace: istio-system }}
data:
  mesh: |
    extensionProviders:
    - name: otel-tracing
      opentelemetry:
        service: otel-collector.istio-system.svc.cluster.local
        port: 4317
    - name: otel-als
      envoyOtelAls:
        service: otel-collector.istio-system.svc.cluster.local
        port: 4317
        logFormat:
          text: "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%"
          labels:
            path: "%REQ(:PATH)%"
            flags: "%RESPONSE_FLAGS%"
            trace: "%TRACE_ID%"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: otel-collector, namespace: istio-system }}
spec:
  hosts: [ otel-collector.istio-system.svc.cluster.local ]
  ports: [ {{ number: 4317, name: grpc, protocol: GRPC }} ]
  resolution: STATIC
  endpoints: [ {{ address: 127.0.0.1, ports: {{ grpc: {collector} }} }} ]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{ name: mesh-default, namespace: istio-system }}
spec:
  tracing:
  - providers: [ {{ name: otel-tracing }} ]
    randomSamplingPercentage: 0
  accessLogging:
  - providers: [ {{ name: otel-als }} ]
    filter: {{ expression: "response.code >= 400" }}
"#
    )
}

fn records_for(logs: &Logs, path: &str) -> Vec<LogRecord> {
    logs.lock()
        .unwrap()
        .iter()
        .filter(|r| r.attributes.get("path").map(String::as_str) == Some(path))
        .cloned()
        .collect()
}

async fn run(envoy: bool) {
    let app = support::start_echo("web-v1").await;
    let (collector, _spans, logs) = support::collector::start_all().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.yaml"),
        support::up::base_mesh(app.port()),
    )
    .unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), mesh(collector.port())).unwrap();
    let up = tokio::task::block_in_place(|| Up::start(dir.path(), envoy));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    eventually("the route", || async {
        let r = try_request(gateway, &Req::get("web.example", "/ready")).await?;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{}", r.status))
    })
    .await;
    let key = format!("otel-{}-{envoy}", std::process::id());
    let failed = format!("/flaky/{key}/1");
    let ok = format!("/ok-{key}");
    let r = try_request(gateway, &Req::get("web.example", &failed))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    let r = try_request(gateway, &Req::get("web.example", &ok))
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // Both hops log the 503: the sidecar (inbound) and the gateway.
    let records = eventually_within(
        "two log records for the 503",
        Duration::from_secs(20),
        || {
            let got = records_for(&logs, &failed);
            async move {
                if got.len() >= 2 {
                    Ok(got)
                } else {
                    Err(format!("{got:#?}"))
                }
            }
        },
    )
    .await;
    for r in &records {
        assert_eq!(r.body, format!("GET {failed} 503"), "{r:#?}");
        assert_eq!(r.attributes.len(), 3, "{r:#?}");
        assert!(r.attributes.contains_key("flags"), "{r:#?}");
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes().all(|b| b.is_ascii_hexdigit())
                && s.bytes().any(|b| b != b'0')
        };
        assert!(hex(&r.trace_id, 32), "{r:#?}");
        assert!(hex(&r.span_id, 16), "{r:#?}");
        assert_eq!(r.attributes["trace"], r.trace_id, "{r:#?}");
        // istiod turns the built-in resource labels off.
        assert!(r.resource.is_empty(), "{r:#?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(r.time_unix_nano <= now && now - r.time_unix_nano < 120_000_000_000);
    }
    // One trace through both hops, a span each.
    assert_eq!(records[0].trace_id, records[1].trace_id, "{records:#?}");
    assert_ne!(records[0].span_id, records[1].span_id, "{records:#?}");
    // The success was not logged by either: Envoy flushes every second, so two seconds after
    // the 503s arrived a logged 200 would be there too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(records_for(&logs, &ok), Vec::new());
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_proxies_send_otlp_logs() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sends_the_same_otlp_logs() {
    run(true).await;
}
