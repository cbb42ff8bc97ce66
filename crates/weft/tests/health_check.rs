//! Active health checks, side by side in real Envoy and the Weft proxy (the same bootstrap,
//! `data/health_check.yaml`): HTTP and TCP checks against a live host and a port nobody listens
//! on, a check the host fails, and what each proxy then routes, shows in `/clusters` and counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::{Proxy, counter};

const TEMPLATE: &str = include_str!("data/health_check.yaml");

async fn run(proxy: &Proxy, path: &str, n: usize) -> (BTreeMap<u16, usize>, String) {
    support::tally(proxy.addr("HTTP"), "checks.test", path, n).await
}

fn flags(clusters: &str, cluster: &str, port: u16) -> String {
    let line = format!("{cluster}::127.0.0.1:{port}::health_flags::");
    clusters
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or("(missing)")
        .to_string()
}

async fn observe(proxy: &Proxy) -> Vec<(String, String)> {
    // A few check intervals.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (live, dead) = (proxy.port("V1"), proxy.port("DEAD"));
    let mut seen = Vec::new();
    let clusters = proxy.admin("/clusters").await;
    let stats = proxy.admin("/stats").await;
    for cluster in ["http_checked", "tcp_checked"] {
        seen.push((
            format!("{cluster}: live host flags"),
            flags(&clusters, cluster, live),
        ));
        seen.push((
            format!("{cluster}: dead host flags"),
            flags(&clusters, cluster, dead),
        ));
        seen.push((
            format!("{cluster}: membership_healthy"),
            counter(&stats, &format!("cluster.{cluster}.membership_healthy")).to_string(),
        ));
        // One round, then none until traffic comes (no_traffic_interval, 60 s).
        seen.push((
            format!("{cluster}: checks before traffic"),
            counter(&stats, &format!("cluster.{cluster}.health_check.attempt")).to_string(),
        ));
        seen.push((
            format!("{cluster}: network failures counted"),
            (counter(
                &stats,
                &format!("cluster.{cluster}.health_check.network_failure"),
            ) > 0)
                .to_string(),
        ));
    }
    seen.push((
        "failing_check: host flags".into(),
        flags(&clusters, "failing_check", live),
    ));
    seen.push((
        "failing_check: failures counted".into(),
        (counter(&stats, "cluster.failing_check.health_check.failure") > 0).to_string(),
    ));
    for path in ["/http/", "/tcp/"] {
        let (s, _) = run(proxy, path, 10).await;
        seen.push((format!("{path}: statuses"), format!("{s:?}")));
    }
    let (s, body) = run(proxy, "/failing/", 2).await;
    seen.push(("/failing/: statuses".into(), format!("{s:?}")));
    seen.push(("/failing/: body".into(), body));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_agree_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let given = [("V1", v1), ("DEAD", support::free_port())];
    let (envoy, weft) = support::start_both(TEMPLATE, given.to_vec()).await;
    let (e, w) = tokio::join!(observe(&envoy), observe(&weft));
    support::assert_agree(&e, &w);
    let get = |what: &str| w.iter().find(|(k, _)| k == what).unwrap().1.as_str();
    assert_eq!(get("http_checked: live host flags"), "healthy");
    assert!(get("http_checked: dead host flags").contains("/failed_active_hc"));
    assert!(get("tcp_checked: dead host flags").contains("/failed_active_hc"));
    assert_eq!(get("/http/: statuses"), "{200: 10}");
    assert_eq!(get("/tcp/: statuses"), "{200: 10}");
    assert_eq!(get("/failing/: body"), "no healthy upstream");
    assert_eq!(get("http_checked: checks before traffic"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_health_checks_are_refused_naming_the_field() {
    for (from, to, field) in [
        (
            "unhealthy_threshold: 3",
            "unhealthy_threshold: 0",
            "health_checks[0].unhealthy_threshold",
        ),
        (
            "interval: 0.2s\n      unhealthy_threshold: 2",
            "interval: 0s\n      unhealthy_threshold: 2",
            "health_checks[0].interval",
        ),
        (
            "path: /status/200",
            "path: status",
            "health_checks[0].http_health_check.path",
        ),
    ] {
        let err = support::refusal(TEMPLATE, from, to);
        assert!(err.contains(field), "{to}: {err}");
    }
}
