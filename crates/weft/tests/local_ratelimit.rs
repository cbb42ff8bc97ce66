//! The local rate limit filter, side by side in real Envoy and the Weft proxy (the same
//! bootstrap, `data/local_ratelimit.yaml`): token buckets of the filter and of routes, what a
//! limited request is answered, the `x-ratelimit-*` headers, refills, and the counters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::{Proxy, Req, counter, request};

const TEMPLATE: &str = include_str!("data/local_ratelimit.yaml");

/// One answer as compared: status, body of local answers, and the headers that matter.
async fn seen(proxy: &Proxy, path: &str) -> String {
    let r = request(proxy.addr("HTTP"), &Req::get("limits.test", path)).await;
    let header = |n: &str| {
        r.headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let body = if r.status == 200 {
        String::new()
    } else {
        String::from_utf8_lossy(&r.body).into_owned()
    };
    format!(
        "{} {body:?} limit={} remaining={} x-local-rate-limit={} content-type={}",
        r.status,
        header("x-ratelimit-limit"),
        header("x-ratelimit-remaining"),
        header("x-local-rate-limit"),
        if r.status == 200 {
            String::new()
        } else {
            header("content-type")
        },
    )
}

async fn observe(proxy: &Proxy) -> Vec<String> {
    let mut out = Vec::new();
    // The filter's bucket: 3 tokens a minute.
    for _ in 0..5 {
        out.push(seen(proxy, "/filter").await);
    }
    // A route's own bucket (2 a second, answered 503) replaces the filter's; it refills.
    for _ in 0..3 {
        out.push(seen(proxy, "/route").await);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        out.push(seen(proxy, "/route").await);
    }
    // Enabled but not enforced: counted, never refused.
    for _ in 0..3 {
        out.push(seen(proxy, "/shadow").await);
    }
    let stats = proxy.admin("/stats").await;
    for prefix in ["filter_limit", "route_limit", "shadow_limit"] {
        for stat in ["enabled", "enforced", "rate_limited", "ok"] {
            let name = format!("{prefix}.http_local_rate_limit.{stat}");
            out.push(format!("{name}: {}", counter(&stats, &name)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limits_agree_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let given = [("V1", v1)];
    let (envoy, weft) = support::start_both(TEMPLATE, given.to_vec()).await;
    let (e, w) = tokio::join!(observe(&envoy), observe(&weft));
    support::assert_agree(&e, &w);
    // What both showed is what the configs mean.
    let statuses: Vec<&str> = w.iter().take(14).map(|l| &l[..3]).collect();
    assert_eq!(
        statuses,
        [
            "200", "200", "200", "429", "429", "200", "200", "503", "200", "200", "503", "200",
            "200", "200"
        ]
    );
    assert_eq!(
        w[2],
        "200 \"\" limit=3 remaining=0 x-local-rate-limit= content-type="
    );
    assert_eq!(
        w[3],
        "429 \"local_rate_limited\" limit=3 remaining=0 x-local-rate-limit=true content-type=text/plain"
    );
    assert!(w.contains(&"filter_limit.http_local_rate_limit.rate_limited: 2".to_string()));
    assert!(w.contains(&"shadow_limit.http_local_rate_limit.rate_limited: 2".to_string()));
    assert!(w.contains(&"shadow_limit.http_local_rate_limit.enforced: 0".to_string()));
}

/// New connections through each listener: answered, or closed at once (`None`).
async fn connections(proxy: &Proxy) -> Vec<String> {
    let mut out = Vec::new();
    for (listener, n) in [("TCP", 4), ("HTTP_OFF", 3)] {
        for _ in 0..n {
            let r = support::try_request(proxy.addr(listener), &Req::get("limits.test", "/")).await;
            out.push(format!("{listener}: {:?}", r.ok().map(|r| r.status)));
        }
    }
    let stats = proxy.admin("/stats").await;
    for name in [
        "local_rate_limit.conns.rate_limited",
        "local_rate_limit.switched_off.rate_limited",
        "tcp.limited.downstream_cx_total",
        "http.unlimited.downstream_cx_total",
    ] {
        out.push(format!("{name}: {}", counter(&stats, name)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_limits_agree_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("V1", v1)]).await;
    let (e, w) = tokio::join!(connections(&envoy), connections(&weft));
    support::assert_agree(&e, &w);
    assert_eq!(
        w[..7],
        [
            "TCP: Some(200)",
            "TCP: Some(200)",
            "TCP: None",
            "TCP: None",
            "HTTP_OFF: Some(200)",
            "HTTP_OFF: Some(200)",
            "HTTP_OFF: Some(200)",
        ]
    );
    assert!(
        w.contains(&"local_rate_limit.conns.rate_limited: 2".to_string()),
        "{w:?}"
    );
    // The closed connections still reached the TCP proxy's count, as in Envoy.
    assert!(
        w.contains(&"tcp.limited.downstream_cx_total: 4".to_string()),
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_local_rate_limits_are_refused_naming_the_field() {
    for (from, to, field) in [
        (
            "max_tokens: 3,",
            "max_tokens: 0,",
            "token_bucket.max_tokens",
        ),
        (
            "fill_interval: 60s }\n              filter_enabled",
            "fill_interval: 0s }\n              filter_enabled",
            "token_bucket.fill_interval",
        ),
        (
            "stat_prefix: filter_limit",
            "stat_prefix: \"\"",
            "stat_prefix",
        ),
        (
            "token_bucket: { max_tokens: 2, fill_interval: 60s }",
            "token_bucket: { max_tokens: 2, fill_interval: 0.01s }",
            "filters[0].typed_config.token_bucket.fill_interval",
        ),
        (
            "stat_prefix: conns\n",
            "stat_prefix: conns\n          share_key: shared\n",
            "share_key",
        ),
    ] {
        let err = support::refusal(TEMPLATE, from, to);
        assert!(err.contains(field), "{to}: {err}");
    }
}
