//! The HTTP filter chain, side by side in real Envoy and the Weft proxy (the same bootstrap,
//! `data/filter_chain.yaml`): the order of `http_filters` decides which answers, two filters of
//! one type keep their own configs and counters, `FilterConfig` turns filters off and on per
//! route and virtual host, an optional filter of an unknown type is skipped, and every kind of
//! local reply gets Envoy's `%RESPONSE_CODE_DETAILS%`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};
use support::{Kind, Proxy, Req, assert_agree, counter, request};

const TEMPLATE: &str = include_str!("data/filter_chain.yaml");

async fn statuses(proxy: &Proxy, listener: &str, requests: &[(&str, &str)]) -> Vec<u16> {
    let mut out = Vec::new();
    for (authority, path) in requests {
        out.push(
            request(proxy.addr(listener), &Req::get(authority, path))
                .await
                .status,
        );
    }
    out
}

/// What each proxy shows for the order, two-of-a-type and FilterConfig listeners: the statuses
/// of a fixed sequence of requests and the counters they leave.
async fn observe(proxy: &Proxy) -> Vec<(String, u64)> {
    let mut seen = Vec::new();
    let mut note = |what: &str, statuses: Vec<u16>| {
        for (i, s) in statuses.into_iter().enumerate() {
            seen.push((format!("{what} #{i}"), u64::from(s)));
        }
    };
    let four = [("x", "/"); 4];
    note(
        "rate limit then fault",
        statuses(proxy, "RL_FIRST", &four).await,
    );
    note(
        "fault then rate limit",
        statuses(proxy, "FAULT_FIRST", &four).await,
    );
    note(
        "two rate limits",
        statuses(
            proxy,
            "TWO",
            &[
                ("x", "/"),
                ("x", "/"),
                ("x", "/own-b"),
                ("x", "/own-b"),
                ("x", "/"),
            ],
        )
        .await,
    );
    note(
        "FilterConfig",
        statuses(
            proxy,
            "DISABLE",
            &[
                ("x", "/"),
                ("x", "/off"),
                ("x", "/late"),
                ("quiet", "/"),
                ("quiet", "/loud"),
            ],
        )
        .await,
    );
    let stats = proxy.admin("/stats").await;
    for name in [
        "rl_first.http_local_rate_limit.rate_limited",
        "rl_first.http_local_rate_limit.ok",
        "http.rl_first.fault.aborts_injected",
        "fault_first.http_local_rate_limit.enabled",
        "http.fault_first.fault.aborts_injected",
        "two_a.http_local_rate_limit.ok",
        "two_a.http_local_rate_limit.rate_limited",
        "two_b.http_local_rate_limit.ok",
        "two_b.http_local_rate_limit.rate_limited",
        "two_b_route.http_local_rate_limit.ok",
    ] {
        seen.push((name.to_string(), counter(&stats, name)));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_order_instances_and_filter_configs_agree_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let dead = support::free_port();
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("V1", v1), ("DEAD", dead)]).await;
    let e = observe(&envoy).await;
    let w = observe(&weft).await;
    assert_agree(&e, &w);
    // What the comparison is about, stated outright so that a change in both cannot hide.
    let get = |what: &str| w.iter().find(|(k, _)| k == what).map(|(_, v)| *v);
    let rl_first: Vec<_> = (0..4)
        .map(|i| get(&format!("rate limit then fault #{i}")))
        .collect();
    assert_eq!(
        rl_first,
        [Some(503), Some(503), Some(429), Some(429)],
        "order"
    );
    let fault_first: Vec<_> = (0..4)
        .map(|i| get(&format!("fault then rate limit #{i}")))
        .collect();
    assert_eq!(fault_first, [Some(503); 4], "order");
    assert_eq!(get("fault_first.http_local_rate_limit.enabled"), Some(0));
    let two: Vec<_> = (0..5)
        .map(|i| get(&format!("two rate limits #{i}")))
        .collect();
    assert_eq!(
        two,
        [Some(200), Some(503), Some(200), Some(429), Some(429)],
        "two of a type"
    );
    let configs: Vec<_> = (0..5).map(|i| get(&format!("FilterConfig #{i}"))).collect();
    assert_eq!(
        configs,
        [Some(503), Some(200), Some(418), Some(200), Some(502)],
        "FilterConfig"
    );
}

/// The `ALOG` lines a proxy wrote, once there are `n` (Envoy flushes its file logs every second).
async fn access_log(proxy: &Proxy, n: usize) -> Vec<String> {
    let path = format!("/tmp/weft-filter-chain-{}.log", proxy.port("DETAILS"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ALOG ").map(str::to_string))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            let _ = std::fs::remove_file(&path);
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_code_details_agree_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let dead = support::free_port();
    let given = [("V1", v1), ("DEAD", dead)];
    // Envoy writes file logs out every 10 s unless told otherwise.
    let (envoy, weft) = tokio::task::spawn_blocking(move || {
        (
            Proxy::start_with(
                Kind::Envoy,
                TEMPLATE,
                &given,
                &["--file-flush-interval-msec", "100"],
            ),
            Proxy::start(Kind::Weft, TEMPLATE, &given),
        )
    })
    .await
    .unwrap();
    let mut requests: Vec<Req> = [
        "/nothing-here",
        "/nocluster",
        "/empty",
        "/refused",
        "/slow/1000",
        "/fault",
        "/rl",
        "/rl",
        "/direct",
        "/redirect",
        "/ok",
    ]
    .iter()
    .map(|p| Req::get("x", p))
    .collect();
    let mut preflight = Req::get("x", "/cors");
    preflight.method = "OPTIONS";
    preflight
        .headers
        .push(("origin".into(), "http://a.example".into()));
    preflight
        .headers
        .push(("access-control-request-method".into(), "GET".into()));
    requests.push(preflight);
    let mut upgrade = Req::get("x", "/ok");
    upgrade.headers.push(("upgrade".into(), "foo".into()));
    upgrade
        .headers
        .push(("connection".into(), "upgrade".into()));
    requests.push(upgrade);
    let mut grpc = Req::get("x", "/refused");
    grpc.headers
        .push(("content-type".into(), "application/grpc".into()));
    requests.push(grpc);
    let mut logs = Vec::new();
    let mut replies = Vec::new();
    for proxy in [&envoy, &weft] {
        let mut seen = Vec::new();
        for r in &requests {
            let resp = request(proxy.addr("DETAILS"), r).await;
            let grpc_status = resp
                .headers
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_string());
            // The upstream's echo carries a fresh x-request-id: compare only that it answered.
            let body = match resp.json() {
                Some(_) => b"(the upstream's echo)".to_vec(),
                None => resp.body.to_vec(),
            };
            seen.push((r.path.clone(), resp.status, grpc_status, body));
        }
        replies.push(seen);
        logs.push(access_log(proxy, requests.len()).await);
    }
    assert_agree(&replies[0], &replies[1]);
    assert_agree(&logs[0], &logs[1]);
    let weft_log = &logs[1];
    for expected in [
        "/nothing-here 404 NR route_not_found",
        "/nocluster 503 NC cluster_not_found",
        "/empty 503 UH no_healthy_upstream",
        "/slow/1000 504 UT response_timeout",
        "/fault 503 FI fault_filter_abort",
        "/rl 429 RL local_rate_limited",
        "/direct 200 - direct_response",
        "/ok 200 - via_upstream",
        "/cors 200 - cors_response",
        "/ok 403 - upgrade_failed",
    ] {
        assert!(
            weft_log.iter().any(|l| l == expected),
            "{expected:?} not in {weft_log:#?}"
        );
    }
}

#[test]
fn unknown_required_filters_and_bad_filter_configs_are_refused_naming_them() {
    let err = support::refusal(
        TEMPLATE,
        "          - name: example.unknown\n            is_optional: true\n",
        "          - name: example.unknown\n",
    );
    assert!(
        err.contains("example.unknown") && err.contains("http_filters[0]"),
        "{err}"
    );
    // A FilterConfig that neither disables nor configures its filter.
    let err = support::refusal(
        TEMPLATE,
        "                    \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    disabled: true\n",
        "                    \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n",
    );
    assert!(
        err.contains("typed_per_filter_config[envoy.filters.http.fault].config"),
        "{err}"
    );
}
