//! A real Prometheus (Debian's package) scrapes a `weft up --prometheus` mesh: the control
//! plane under job `istiod`, every proxy under `envoy-stats`, and every query of the Grafana
//! dashboards in `dashboards/` returns series.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::up::Up;
use support::xds::eventually;
use support::{Req, try_request};

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn api(prometheus: SocketAddr, path: &str) -> Result<Value, String> {
    let r = try_request(prometheus, &Req::get("prometheus", path)).await?;
    if r.status != 200 {
        return Err(format!(
            "{path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    serde_json::from_slice(&r.body).map_err(|e| e.to_string())
}

/// Every `expr` of a dashboard, its variables filled in for this mesh.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$qrep", "source|destination")
                .replace("$service", "web.default.svc.cluster.local")
                .replace("$namespace", "default")
                .replace("$workload", "web-v1");
            out.push((p["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_mesh_and_every_dashboard_query_has_series() {
    let app = support::start_echo("web-v1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.yaml"),
        support::up::base_mesh(app.port()),
    )
    .unwrap();
    let port = support::free_port();
    let prometheus = SocketAddr::from(([127, 0, 0, 1], port));
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
        "--prometheus".to_string(),
        "--prometheus-address".to_string(),
        prometheus.to_string(),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(dir.path(), false, &args));
    let status = up.wait_status("prometheus", |s| s["prometheus"]["url"].is_string());
    assert_eq!(
        status["prometheus"]["url"],
        format!("http://{prometheus}"),
        "{status:#}"
    );
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    // Both jobs up: the control plane and the two proxies.
    eventually("Prometheus to scrape every target", || async {
        let t = api(prometheus, "/api/v1/targets").await?;
        let active = t["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up_in = |job: &str| {
            active
                .iter()
                .filter(|a| a["labels"]["job"] == job && a["health"] == "up")
                .count()
        };
        (up_in("istiod") == 1 && up_in("envoy-stats") == 2)
            .then_some(())
            .ok_or(format!("{active:#?}"))
    })
    .await;
    // Traffic for a while, so that rates have samples; one 503 among it.
    let key = format!("prom-{}", std::process::id());
    let until = Instant::now() + Duration::from_secs(7);
    let mut n = 0;
    while Instant::now() < until {
        let path = if n == 3 {
            format!("/flaky/{key}/1")
        } else {
            format!("/r{n}")
        };
        let _ = try_request(gateway, &Req::get("web.example", &path)).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The counts Prometheus holds are the proxies': once a scrape after the traffic landed
    // (a loaded machine may take a few scrape intervals).
    let query = format!(
        "/api/v1/query?query={}",
        encode(
            "sum(istio_requests_total{reporter=\"destination\",destination_workload=\"web-v1\"})"
        )
    );
    let sent = f64::from(n);
    support::xds::eventually_within(
        "Prometheus to hold the sidecar's count of the traffic",
        Duration::from_secs(30),
        || {
            let query = query.clone();
            async move {
                let total = api(prometheus, &query).await?;
                let total: f64 = total["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or(format!("no series yet: {total}"))?;
                (total >= sent - 1.0)
                    .then_some(())
                    .ok_or(format!("{total} of {sent}"))
            }
        },
    )
    .await;
    let mut empty = Vec::new();
    let files = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards");
    let mut count = 0;
    for name in ["mesh", "service", "workload", "control-plane"] {
        let text = std::fs::read_to_string(files.join(format!("{name}.json"))).unwrap();
        let dashboard: Value = serde_json::from_str(&text).unwrap();
        for (title, expr) in queries(&dashboard) {
            count += 1;
            let v = api(
                prometheus,
                &format!("/api/v1/query?query={}", encode(&expr)),
            )
            .await
            .unwrap_or_else(|e| panic!("{name} / {title}: {e}"));
            if v["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                empty.push(format!("{name} / {title}: {expr}"));
            }
        }
    }
    assert!(count >= 25, "{count} queries");
    assert!(
        empty.is_empty(),
        "queries without series:\n{}",
        empty.join("\n")
    );
}
