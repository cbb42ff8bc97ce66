//! Retry policies, side by side in real Envoy and the Weft proxy (the same bootstrap,
//! `data/retries.yaml`): upstreams that fail on purpose, and the statuses, attempts and
//! counters each proxy shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Kind, Proxy, Req, counter, request};

const TEMPLATE: &str = include_str!("data/retries.yaml");

async fn start(kind: Kind) -> Proxy {
    let v1 = support::start_echo("v1").await;
    let v2 = support::start_echo("v2").await;
    let given = [
        ("V1", v1.port()),
        ("V2", v2.port()),
        ("DEAD", support::free_port()),
    ];
    tokio::task::spawn_blocking(move || Proxy::start(kind, TEMPLATE, &given))
        .await
        .unwrap()
}

/// What one proxy showed for one scenario.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    attempt: Option<String>,
}

async fn get(proxy: &Proxy, path: &str) -> Seen {
    let r = request(proxy.addr("HTTP"), &Req::get("retries.test", path)).await;
    Seen {
        status: r.status,
        attempt: r
            .headers
            .get("x-upstream-attempt")
            .map(|v| v.to_str().unwrap().to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_agree_with_envoy() {
    let envoy = start(Kind::Envoy).await;
    let weft = start(Kind::Weft).await;
    let mut stats = Vec::new();
    for proxy in [&envoy, &weft] {
        let tag = format!("{:?}", proxy.kind);
        let mut seen = Vec::new();
        // Two 503s then a 200: three attempts under 5xx with num_retries 3.
        seen.push(get(proxy, &format!("/flaky/{tag}-a/2")).await);
        // Five 503s against gateway-error with 2 retries: the third 503 comes back.
        seen.push(get(proxy, &format!("/exhaust/{tag}-b/5")).await);
        // retriable-status-codes [500] does not retry a 503.
        seen.push(get(proxy, &format!("/codes/{tag}-c/1")).await);
        // Istio's default policy moves off a dead host (connect-failure, previous_hosts).
        for _ in 0..6 {
            seen.push(get(proxy, "/istio").await);
        }
        // Each try stalls past its 0.2 s; the 1 s route timeout ends it with 504.
        seen.push(get(proxy, "/slow/400").await);
        let s = proxy.admin("/stats").await;
        stats.push((tag, s));
        let expected = [
            Seen {
                status: 200,
                attempt: Some("3".into()),
            },
            Seen {
                status: 503,
                attempt: Some("3".into()),
            },
            Seen {
                status: 503,
                attempt: Some("1".into()),
            },
        ];
        assert_eq!(seen[..3], expected[..], "{:?}", proxy.kind);
        for s in &seen[3..9] {
            assert_eq!(
                s.status, 200,
                "{:?}: /istio must never see the dead host",
                proxy.kind
            );
        }
        assert_eq!(
            seen[9].status, 504,
            "{:?}: per-try timeouts then the route timeout",
            proxy.kind
        );
    }
    for (tag, s) in &stats {
        let c = |name: &str| counter(s, name);
        // One retry-success on `one` (/flaky), none on `two`, whose retries ran out.
        assert_eq!(c("cluster.one.upstream_rq_retry_success"), 1, "{tag}");
        assert_eq!(c("cluster.two.upstream_rq_retry"), 2, "{tag}");
        assert_eq!(
            c("cluster.two.upstream_rq_retry_limit_exceeded"),
            1,
            "{tag}"
        );
        // Only the answer that went back counts by its code.
        assert_eq!(c("cluster.two.upstream_rq_5xx"), 1, "{tag}");
        assert!(
            c("cluster.one.upstream_rq_per_try_timeout") >= 2,
            "{tag}: {}",
            c("cluster.one.upstream_rq_per_try_timeout")
        );
        // The dead host is tried at most once per request, then skipped.
        assert!(c("cluster.half_dead.upstream_rq_retry") <= 6, "{tag}");
        assert!(c("cluster.half_dead.upstream_rq_retry") >= 1, "{tag}");
    }
    // /flaky: 2 retries in each; /codes: none.
    for (tag, s) in &stats {
        let one_retries = counter(s, "cluster.one.upstream_rq_retry");
        let per_try = counter(s, "cluster.one.upstream_rq_per_try_timeout");
        // Every per-try timeout was retried; the try the route timeout cut short was not a
        // per-try timeout.
        assert_eq!(one_retries, 2 + per_try, "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_retry_policies_are_refused_naming_the_field() {
    let valid = r#"retry_on: "5xx", num_retries: 3"#;
    for (bad, field) in [
        (r#"retry_on: "5xx,sometimes""#, "retry_policy.retry_on"),
        (
            r#"retry_on: "5xx", retry_back_off: { base_interval: 0s }"#,
            "retry_back_off.base_interval",
        ),
        (
            r#"retry_on: "5xx", retriable_status_codes: [ 42 ]"#,
            "retriable_status_codes[0]",
        ),
    ] {
        let err = support::refusal(TEMPLATE, valid, bad);
        assert!(err.contains(field), "{bad}: {err}");
    }
}
