//! Istio's standard metrics end to end through `weft up` with its CA on: 100 requests through
//! the ingress gateway to `web`, 7 of which the application answers 503, give exactly those
//! counts on both reporters (the gateway's `source`, the sidecar's `destination`), with Istio's
//! labels: workloads and services learnt through the metadata exchange, principals from the
//! mesh's mTLS. A Telemetry override then removes a tag, adds one and drops a metric, live.
//! With Envoy as the data plane, the same config is taken (the telemetry filters are optional)
//! and traffic flows; stock Envoy has no `istio.stats`, so it reports no `istio_*` series.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use support::up::Up;
use support::xds::eventually;
use support::{Req, try_request};

/// No retries, so that each 503 reaches the client once.
const NO_RETRIES: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: web }\n\
spec:\n  hosts: [ \"*\" ]\n  gateways: [ web-gateway ]\n  http:\n  - route: [ { destination: { host: web } } ]\n    retries: { attempts: 0 }\n";

/// One series of `/stats/prometheus`: its labels and value.
#[derive(Debug)]
struct Series {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every series of `metric` (the exact name, `_bucket` and friends excluded).
fn series(text: &str, metric: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let mut map = BTreeMap::new();
        for pair in labels.split("\",") {
            let (k, v) = pair.split_once("=\"").unwrap();
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        out.push(Series {
            labels: map,
            value: value.trim().parse().unwrap(),
        });
    }
    out
}

/// The label names of `metric`'s first series, in the order they are printed.
fn label_order(text: &str, metric: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{metric}{{")))
        .unwrap_or_else(|| panic!("no {metric} in\n{text}"));
    let inner = &line[metric.len() + 1..line.rfind('}').unwrap()];
    inner
        .split("\",")
        .map(|p| p.split_once('=').unwrap().0.to_string())
        .collect()
}

async fn scrape(addr: SocketAddr) -> String {
    scrape_path(addr, "/stats/prometheus").await
}

/// The control plane's `/metrics` (istiod's 15014).
async fn control_metrics(up: &Up) -> String {
    let status = up.status().unwrap();
    let addr: SocketAddr = status["control_plane"]["monitoring"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    scrape_path(addr, "/metrics").await
}

async fn scrape_path(addr: SocketAddr, path: &str) -> String {
    let r = try_request(addr, &Req::get("cp", path)).await.unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The value of the series `name{labels}` (exactly as printed), if there is one.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn stats_address(up: &Up, name: &str) -> SocketAddr {
    let status = up.wait_status(name, |s| Up::proxy(s, name).is_some());
    let p = Up::proxy(&status, name).unwrap();
    p["stats"].as_str().unwrap().parse().unwrap()
}

/// The count of `istio_requests_total` series matching `want`, summed.
fn count(text: &str, want: &[(&str, &str)]) -> f64 {
    series(text, "istio_requests_total")
        .iter()
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

const ISTIO_ORDER: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

async fn run(envoy: bool) {
    let app = support::start_echo("web-v1").await;
    let dir = tempfile::tempdir().unwrap();
    let base = support::up::base_mesh(app.port())
        .replace(
            "labels: { app: web, version: v1 }",
            "labels: { app: web, version: v1 }, serviceAccount: web",
        )
        .replace(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: web }\n\
             spec:\n  hosts: [ \"*\" ]\n  gateways: [ web-gateway ]\n  http:\n  - route: [ { destination: { host: web } } ]\n",
            NO_RETRIES,
        );
    assert!(base.contains("attempts: 0"));
    std::fs::write(dir.path().join("base.yaml"), base).unwrap();
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(dir.path(), envoy, &args));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    let gw_stats =
        tokio::task::block_in_place(|| stats_address(&up, "gateway istio=ingressgateway"));
    let web_stats = tokio::task::block_in_place(|| stats_address(&up, "sidecar default/web-v1"));
    eventually("the route through the gateway", || async {
        let r = try_request(gateway, &Req::get("web.example", "/ready")).await?;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{}", r.status))
    })
    .await;
    // The application never sees the exchange's headers.
    let r = try_request(gateway, &Req::get("web.example", "/headers"))
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&r.body).to_lowercase();
    assert!(!body.contains("x-envoy-peer-metadata"), "{body}");
    let key = format!("metrics-{}-{envoy}", std::process::id());
    let before = [scrape(gw_stats).await, scrape(web_stats).await];
    for _ in 0..100 {
        let r = try_request(
            gateway,
            &Req::get("web.example", &format!("/flaky/{key}/7")),
        )
        .await
        .unwrap();
        assert!(r.status == 200 || r.status == 503, "{}", r.status);
        // Nor does the client see the sidecar's answer to it.
        assert!(!r.headers.contains_key("x-envoy-peer-metadata"));
    }
    let gw = scrape(gw_stats).await;
    let web = scrape(web_stats).await;
    // The control plane's own metrics, under istiod's names: both proxies connected, each
    // type pushed to each, certificates signed for both (the CA is on).
    let cp = control_metrics(&up).await;
    assert_eq!(
        value(&cp, "pilot_xds{version=\"unknown\"}"),
        Some(2.0),
        "{cp}"
    );
    for t in ["cds", "eds", "lds", "rds"] {
        let n = value(&cp, &format!("pilot_xds_pushes{{type=\"{t}\"}}")).unwrap_or(0.0);
        assert!(n >= 2.0, "{t}: {n}\n{cp}");
    }
    assert!(cp.contains("# TYPE pilot_xds_pushes counter"), "{cp}");
    assert_eq!(value(&cp, "pilot_services"), Some(1.0), "{cp}");
    assert_eq!(value(&cp, "pilot_virt_services"), Some(1.0), "{cp}");
    let csr = value(&cp, "citadel_server_csr_count").unwrap();
    assert!(csr >= 2.0, "{cp}");
    assert_eq!(
        value(&cp, "citadel_server_success_cert_issuance_count"),
        Some(csr)
    );
    assert_eq!(
        value(&cp, "pilot_total_xds_rejects{type=\"lds\"}"),
        None,
        "{cp}"
    );
    // The mesh root's expiry (weft's CA makes a 10-year root), and the build.
    let expiry = value(&cp, "citadel_server_root_cert_expiry_timestamp").unwrap();
    let left = value(&cp, "citadel_server_root_cert_expiry_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((expiry - now - left).abs() < 60.0, "{cp}");
    assert!(left > 300.0 * 86_400.0, "{cp}");
    assert!(
        cp.contains("istio_build{component=\"pilot\",tag=\"weft-"),
        "{cp}"
    );
    // istiod's conflict gauges, none here.
    for g in [
        "pilot_conflict_inbound_listener",
        "pilot_conflict_outbound_listener_http_over_current_tcp",
        "pilot_conflict_outbound_listener_tcp_over_current_http",
        "pilot_conflict_outbound_listener_tcp_over_current_tcp",
    ] {
        assert_eq!(value(&cp, g), Some(0.0), "{g}\n{cp}");
    }
    if envoy {
        // Stock Envoy skips the optional Istio filters: the config is taken, no istio_ series.
        assert!(!gw.contains("istio_requests_total"), "{gw}");
        assert!(gw.contains("envoy_cluster_upstream_rq"), "{gw}");
        return;
    }
    let gateway_id =
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let web_id = "spiffe://cluster.local/ns/default/sa/web";
    let common = |reporter: &'static str| {
        vec![
            ("reporter", reporter),
            ("source_workload", "istio-ingressgateway"),
            ("source_canonical_service", "istio-ingressgateway"),
            ("source_canonical_revision", "latest"),
            ("source_workload_namespace", "istio-system"),
            ("source_principal", gateway_id),
            ("source_cluster", "Kubernetes"),
            ("destination_workload", "web-v1"),
            ("destination_workload_namespace", "default"),
            ("destination_principal", web_id),
            ("destination_app", "web"),
            ("destination_version", "v1"),
            ("destination_service", "web.default.svc.cluster.local"),
            ("destination_canonical_service", "web"),
            ("destination_canonical_revision", "v1"),
            ("destination_service_name", "web"),
            ("destination_service_namespace", "default"),
            ("destination_cluster", "Kubernetes"),
            ("request_protocol", "http"),
            ("grpc_response_status", ""),
            ("response_flags", "-"),
        ]
    };
    for (text, before, reporter, security) in [
        (&gw, &before[0], "source", "unknown"),
        (&web, &before[1], "destination", "mutual_tls"),
    ] {
        let mut want = common(reporter);
        want.push(("connection_security_policy", security));
        let with = |code: &'static str| {
            let mut w = want.clone();
            w.push(("response_code", code));
            w
        };
        let flaky: Vec<_> = series(text, "istio_requests_total");
        assert_eq!(count(text, &with("503")), 7.0, "{reporter}: {flaky:#?}");
        assert_eq!(
            count(text, &with("200")) - count(before, &with("200")),
            93.0,
            "{reporter}: {flaky:#?}"
        );
        assert_eq!(label_order(text, "istio_requests_total"), ISTIO_ORDER);
        // Every request is one observation of each histogram.
        let observations =
            |t: &str, metric: &str| -> f64 { series(t, metric).iter().map(|s| s.value).sum() };
        for h in [
            "istio_request_duration_milliseconds_count",
            "istio_request_bytes_count",
            "istio_response_bytes_count",
        ] {
            assert_eq!(
                observations(text, h) - observations(before, h),
                100.0,
                "{reporter} {h}"
            );
        }
        let buckets = series(text, "istio_request_duration_milliseconds_bucket");
        let les: Vec<&str> = buckets
            .iter()
            .filter(|s| {
                with("503")
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.labels["le"].as_str())
            .collect();
        assert_eq!(
            les,
            [
                "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000",
                "10000", "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf"
            ]
        );
        assert!(text.contains("# TYPE istio_requests_total counter"));
        assert!(text.contains("# TYPE istio_response_bytes histogram"));
    }
    // A plaintext request from outside the mesh, straight to the sidecar: an unknown source,
    // and no mTLS.
    let inbound = up.wait_status("the sidecar's inbound", |s| {
        Up::proxy(s, "sidecar default/web-v1")
            .is_some_and(|p| p["inbound"][0]["sidecar"].is_string())
    });
    let web_addr: SocketAddr = Up::proxy(&inbound, "sidecar default/web-v1").unwrap()["inbound"][0]
        ["sidecar"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = try_request(web_addr, &Req::get("web", "/direct"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let web = scrape(web_stats).await;
    assert_eq!(
        count(
            &web,
            &[
                ("reporter", "destination"),
                ("source_workload", "unknown"),
                ("source_principal", "unknown"),
                ("source_canonical_revision", "latest"),
                ("connection_security_policy", "none"),
                ("response_code", "200"),
            ]
        ),
        1.0,
        "{web}"
    );

    // Telemetry, live: no `destination_version`, a `team` tag, tags from the request's host,
    // a header and the response code, no request size histogram.
    let before = up.generation();
    std::fs::write(
        dir.path().join("telemetry.yaml"),
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: { name: mesh-default, namespace: istio-system }\n\
         spec:\n  metrics:\n  - providers: [ { name: prometheus } ]\n    overrides:\n    - match: { metric: REQUEST_COUNT }\n      tagOverrides:\n        destination_version: { operation: REMOVE }\n        team: { value: \"'checkout'\" }\n        host: { value: \"request.host\" }\n        caller: { value: \"request.headers['x-caller']\" }\n        code: { value: \"string(response.code)\" }\n    - match: { metric: REQUEST_SIZE }\n      disabled: true\n",
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        up.wait_status("the Telemetry", |s| {
            s["config"]["generation"].as_u64() > Some(before)
        })
    });
    let team = |t: &str| -> f64 {
        series(t, "istio_requests_total")
            .iter()
            .filter(|s| s.labels.get("team").map(String::as_str) == Some("checkout"))
            .map(|s| s.value)
            .sum()
    };
    eventually("the override on the gateway", || async {
        let _ = try_request(gateway, &Req::get("web.example", "/after")).await;
        let gw = scrape(gw_stats).await;
        (team(&gw) > 0.0)
            .then_some(())
            .ok_or(format!("{:?}", label_order(&gw, "istio_requests_total")))
    })
    .await;
    // Series counted before stay, as Envoy keeps them; new requests count under the new tags,
    // and no longer in the dropped histogram.
    let observations =
        |t: &str, metric: &str| -> f64 { series(t, metric).iter().map(|s| s.value).sum() };
    let before = scrape(gw_stats).await;
    for _ in 0..5 {
        let r = try_request(gateway, &Req::get("web.example", "/after"))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let mut req = Req::get("web.example", "/after");
    req.headers = vec![("x-caller".into(), "alice".into())];
    let r = try_request(gateway, &req).await.unwrap();
    assert_eq!(r.status, 200);
    let gw = scrape(gw_stats).await;
    assert_eq!(team(&gw) - team(&before), 6.0);
    let tagged = |t: &str, caller: &str| -> f64 {
        series(t, "istio_requests_total")
            .iter()
            .filter(|s| {
                s.labels.get("host").map(String::as_str) == Some("web.example")
                    && s.labels.get("code").map(String::as_str) == Some("200")
                    && s.labels.get("caller").map(String::as_str) == Some(caller)
            })
            .map(|s| s.value)
            .sum()
    };
    assert_eq!(tagged(&gw, "alice") - tagged(&before, "alice"), 1.0, "{gw}");
    assert_eq!(tagged(&gw, "unknown") - tagged(&before, "unknown"), 5.0);
    assert_eq!(
        observations(&gw, "istio_request_bytes_count"),
        observations(&before, "istio_request_bytes_count")
    );
    assert_eq!(
        observations(&gw, "istio_response_bytes_count")
            - observations(&before, "istio_response_bytes_count"),
        6.0
    );
    for s in series(&gw, "istio_requests_total") {
        if s.labels.contains_key("team") {
            assert!(!s.labels.contains_key("destination_version"), "{s:?}");
            assert_eq!(s.labels.keys().last().map(String::as_str), Some("team"));
        }
    }
    // The other metrics keep their labels.
    assert!(
        series(&gw, "istio_response_bytes_count")
            .iter()
            .all(|s| s.labels.contains_key("destination_version") && !s.labels.contains_key("team"))
    );
    let last = gw
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("team="))
        .all(|l| l.contains(",team=\"checkout\"} "));
    assert!(last, "the added tag comes last\n{gw}");

    // The edit was a push: counted, and each proxy's convergence observed.
    let cp = control_metrics(&up).await;
    assert!(
        value(&cp, "pilot_push_triggers{type=\"config\"}").unwrap_or(0.0) >= 1.0,
        "{cp}"
    );
    assert!(
        value(&cp, "pilot_proxy_convergence_time_count").unwrap_or(0.0) >= 2.0,
        "{cp}"
    );
    // A tag value the Weft proxy cannot evaluate is refused by every proxy that gets it, and
    // the control plane counts the rejections.
    let before = up.generation();
    std::fs::write(
        dir.path().join("telemetry.yaml"),
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: { name: mesh-default, namespace: istio-system }\n\
         spec:\n  metrics:\n  - overrides:\n    - tagOverrides:\n        peer_app: { value: \"upstream_peer.labels['app'].value\" }\n",
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        up.wait_status("the refused Telemetry", |s| {
            s["config"]["generation"].as_u64() > Some(before)
        })
    });
    eventually("the rejections to be counted", || async {
        let cp = control_metrics(&up).await;
        let total = value(&cp, "pilot_total_xds_rejects{type=\"lds\"}").unwrap_or(0.0);
        let standing = cp
            .lines()
            .filter(|l| l.starts_with("pilot_xds_lds_reject{"))
            .count();
        (total >= 2.0 && standing == 2)
            .then_some(())
            .ok_or(format!("{total} {standing}"))
    })
    .await;
    // The proxies keep serving what they had.
    let r = try_request(gateway, &Req::get("web.example", "/still"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_metrics_count_every_request_on_both_reporters() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_takes_the_telemetry_config_and_serves() {
    run(true).await;
}
