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
    // Envoy takes one buffer limit or the other, not both.
    let limit = "per_request_buffer_limit_bytes: 1024";
    let both =
        "per_request_buffer_limit_bytes: 1024\n              request_body_buffer_limit: 2048";
    let err = support::refusal(TEMPLATE, limit, both);
    assert!(
        err.contains("virtual_hosts[0].request_body_buffer_limit") && err.contains("only one"),
        "{err}"
    );
}

/// What one proxy showed for a request with a body.
#[derive(Debug, PartialEq)]
struct Replayed {
    status: u16,
    /// What the upstream said it got: the attempt, the body's length and digest.
    body: String,
    /// `x-envoy-attempt-count` as the last attempt carried it, and on the response.
    request_count: Option<String>,
    response_count: Option<String>,
}

async fn post(proxy: &Proxy, path: &str, body: Vec<u8>, h2: bool) -> Replayed {
    let req = Req {
        method: "POST",
        body,
        h2,
        ..Req::get("bodies.test", path)
    };
    let r = request(proxy.addr("HTTP"), &req).await;
    let header = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());
    Replayed {
        status: r.status,
        body: String::from_utf8_lossy(&r.body).into_owned(),
        request_count: header("x-seen-attempt-count"),
        response_count: header("x-envoy-attempt-count"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_replayed_up_to_the_buffer_limit() {
    let envoy = start(Kind::Envoy).await;
    let weft = start(Kind::Weft).await;
    let small: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
    let large: Vec<u8> = (0..5000u32).map(|i| (i % 241) as u8).collect();
    let mut seen = Vec::new();
    for proxy in [&envoy, &weft] {
        let tag = format!("{:?}", proxy.kind);
        seen.push(vec![
            // Two 503s, then the third attempt gets the whole body again.
            post(proxy, &format!("/flaky/{tag}-body/2"), small.clone(), false).await,
            // The same over HTTP/2 from the client.
            post(
                proxy,
                &format!("/flaky/{tag}-body-h2/1"),
                small.clone(),
                true,
            )
            .await,
            // Past the 1 KiB limit the copy is given up, and with it the retries.
            post(
                proxy,
                &format!("/flaky/{tag}-large/1"),
                large.clone(),
                false,
            )
            .await,
            // No body: attempts are still counted.
            post(proxy, &format!("/flaky/{tag}-empty/1"), Vec::new(), false).await,
        ]);
        let stats = proxy.admin("/stats").await;
        assert_eq!(
            counter(&stats, "cluster.one.retry_or_shadow_abandoned"),
            1,
            "{tag}"
        );
        assert_eq!(counter(&stats, "cluster.one.upstream_rq_retry"), 4, "{tag}");
    }
    for (i, s) in seen[1].iter().enumerate() {
        // The digests are the echo's own, so only Envoy's observation tells what is right.
        assert_eq!(&seen[0][i], s, "scenario {i}: Envoy vs Weft");
    }
    let weft = &seen[1];
    assert_eq!(weft[0].status, 200);
    assert!(
        weft[0].body.starts_with("attempt 3 of v1; body 700 bytes"),
        "{:?}",
        weft[0]
    );
    assert_eq!(weft[0].request_count.as_deref(), Some("3"));
    assert_eq!(weft[0].response_count.as_deref(), Some("3"));
    assert!(
        weft[1].body.starts_with("attempt 2 of v1; body 700 bytes"),
        "{:?}",
        weft[1]
    );
    assert_eq!(weft[2].status, 503);
    assert!(
        weft[2].body.starts_with("attempt 1 of v1; body 5000 bytes"),
        "{:?}",
        weft[2]
    );
    assert_eq!(weft[3].response_count.as_deref(), Some("2"));
}
