//! Outlier detection, side by side in real Envoy and the Weft proxy (the same bootstrap,
//! `data/outlier.yaml`): hosts that fail on purpose (a port nobody listens on, an upstream that
//! answers 503), and what each proxy does with them: which answers come back, which hosts are
//! ejected and for how long, and the `outlier_detection.*` counters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::{Proxy, counter};

const TEMPLATE: &str = include_str!("data/outlier.yaml");

/// `n` requests in turn; how many got each status, and the last body.
async fn run(proxy: &Proxy, path: &str, n: usize) -> (BTreeMap<u16, usize>, String) {
    support::tally(proxy.addr("HTTP"), "outliers.test", path, n).await
}

async fn od(proxy: &Proxy, cluster: &str, stat: &str) -> u64 {
    let stats = proxy.admin("/stats").await;
    counter(
        &stats,
        &format!("cluster.{cluster}.outlier_detection.{stat}"),
    )
}

/// Whether `/clusters` marks the host on `port` of `cluster` as failing its outlier check.
async fn marked(proxy: &Proxy, cluster: &str, port: u16) -> bool {
    let clusters = proxy.admin("/clusters").await;
    let line = format!("{cluster}::127.0.0.1:{port}::health_flags::");
    clusters
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .is_some_and(|flags| flags.contains("/failed_outlier_check"))
}

/// Everything one proxy showed, in order, as (what, value).
async fn observe(proxy: &Proxy) -> Vec<(String, String)> {
    let dead = proxy.port("DEAD");
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut note = |what: &str, v: String| seen.push((what.to_string(), v));

    // Two consecutive failures eject the dead host; the rest of the traffic goes to the live
    // one. After base_ejection_time (and the interval's tick) it comes back, fails twice more
    // and is ejected again.
    let (s, _) = run(proxy, "/consecutive/", 20).await;
    note("consecutive: statuses", format!("{s:?}"));
    note(
        "consecutive: enforced",
        od(proxy, "consecutive", "ejections_enforced_consecutive_5xx")
            .await
            .to_string(),
    );
    note(
        "consecutive: active",
        od(proxy, "consecutive", "ejections_active")
            .await
            .to_string(),
    );
    note(
        "consecutive: /clusters marks the dead host",
        marked(proxy, "consecutive", dead).await.to_string(),
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    note(
        "consecutive: back after base_ejection_time",
        (!marked(proxy, "consecutive", dead).await).to_string(),
    );
    // Traffic reaches the host again. (How soon it is ejected again is not compared: Envoy
    // 1.40 needs more failures than consecutive_5xx for a second ejection, envoyproxy/envoy
    // issue 40697; Weft ejects at the threshold every time.)
    let (s, _) = run(proxy, "/consecutive/", 10).await;
    note(
        "consecutive: the dead host gets traffic after its return",
        s.contains_key(&503).to_string(),
    );

    // The only host ejected: with panic off (Istio's 0 %) nothing is left to route to; with
    // Envoy's default 50 % the load balancer panics and tries the host anyway.
    let (s, body) = run(proxy, "/panic-off/", 2).await;
    note("panic off: statuses", format!("{s:?}"));
    for stat in [
        "ejections_active",
        "ejections_overflow",
        "ejections_enforced_total",
    ] {
        note(
            &format!("panic off: {stat}"),
            od(proxy, "panic_off", stat).await.to_string(),
        );
    }
    note("panic off: last body", body);
    let (s, body) = run(proxy, "/panic-default/", 2).await;
    note("panic default: statuses", format!("{s:?}"));
    note(
        "panic default: ejections_active",
        od(proxy, "panic_default", "ejections_active")
            .await
            .to_string(),
    );
    note(
        "panic default: last body is not no-healthy-upstream",
        (body != "no healthy upstream").to_string(),
    );

    // max_ejection_percent 34 of 3 hosts: one ejected, every later detection overflows.
    let (s, _) = run(proxy, "/overflow/", 6).await;
    note("overflow: statuses", format!("{s:?}"));
    for stat in ["ejections_active", "ejections_overflow"] {
        note(
            &format!("overflow: {stat}"),
            od(proxy, "overflow", stat).await.to_string(),
        );
    }

    // Split errors: connect failures eject the dead host; the live host's 503s do not.
    let (s, _) = run(proxy, "/split/status/503", 10).await;
    note("split: statuses", format!("{s:?}"));
    for stat in [
        "ejections_enforced_consecutive_local_origin_failure",
        "ejections_enforced_consecutive_5xx",
        "ejections_active",
    ] {
        note(
            &format!("split: {stat}"),
            od(proxy, "split", stat).await.to_string(),
        );
    }
    note(
        "split: /clusters marks the dead host",
        marked(proxy, "split", dead).await.to_string(),
    );

    // Failure percentage: judged at the interval, the host failing 100 % goes.
    let (s, _) = run(proxy, "/percentage/", 20).await;
    note("percentage: statuses", format!("{s:?}"));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    note(
        "percentage: enforced",
        od(proxy, "percentage", "ejections_enforced_failure_percentage")
            .await
            .to_string(),
    );
    let (s, _) = run(proxy, "/percentage/", 4).await;
    note("percentage: statuses after the interval", format!("{s:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_agrees_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let given = [
        ("V1", v1),
        ("DEAD", support::free_port()),
        ("DEAD2", support::free_port()),
        ("DEAD3", support::free_port()),
    ];
    let (envoy, weft) = support::start_both(TEMPLATE, given.to_vec()).await;
    // Both at once: the scenarios wait for ejections to end.
    let (e, w) = tokio::join!(observe(&envoy), observe(&weft));
    support::assert_agree(&e, &w);
    // And what both showed is what the scenarios mean.
    let get = |what: &str| {
        w.iter()
            .find(|(k, _)| k == what)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    assert_eq!(get("consecutive: statuses"), "{200: 18, 503: 2}");
    assert_eq!(get("consecutive: enforced"), "1");
    assert_eq!(get("consecutive: /clusters marks the dead host"), "true");
    assert_eq!(get("consecutive: back after base_ejection_time"), "true");
    assert_eq!(
        get("consecutive: the dead host gets traffic after its return"),
        "true"
    );
    assert_eq!(get("panic off: last body"), "no healthy upstream");
    assert_eq!(get("panic off: ejections_active"), "1");
    assert_eq!(get("panic default: ejections_active"), "1");
    assert_eq!(
        get("panic default: last body is not no-healthy-upstream"),
        "true"
    );
    assert_eq!(get("overflow: ejections_overflow"), "5");
    assert_eq!(get("overflow: ejections_active"), "1");
    assert_eq!(get("split: ejections_enforced_consecutive_5xx"), "0");
    assert_eq!(
        get("split: ejections_enforced_consecutive_local_origin_failure"),
        "1"
    );
    assert_eq!(get("percentage: enforced"), "1");
    assert_eq!(get("percentage: statuses after the interval"), "{200: 4}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_outlier_detection_is_refused_naming_the_field() {
    for (from, to, field) in [
        (
            "max_ejection_percent: 34",
            "max_ejection_percent: 340",
            "outlier_detection.max_ejection_percent",
        ),
        ("interval: 1s", "interval: 0s", "outlier_detection.interval"),
        (
            "base_ejection_time: 2s",
            "base_ejection_time: -2s",
            "outlier_detection.base_ejection_time",
        ),
        (
            "healthy_panic_threshold: { value: 0 }",
            "healthy_panic_threshold: { value: 101 }",
            "common_lb_config.healthy_panic_threshold",
        ),
    ] {
        let err = support::refusal(TEMPLATE, from, to);
        assert!(err.contains(field), "{to}: {err}");
    }
}
