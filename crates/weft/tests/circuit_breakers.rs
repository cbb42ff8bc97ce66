//! Circuit breakers, side by side in real Envoy and the Weft proxy (the same bootstrap,
//! `data/circuit_breakers.yaml`): bursts of concurrent requests against limits on connections,
//! pending requests, requests and retries, and the statuses and counters each proxy shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use support::{Kind, Proxy, Req, Resp, counter, request};

const TEMPLATE: &str = include_str!("data/circuit_breakers.yaml");

async fn start(kind: Kind, v1: u16) -> Proxy {
    let given = [("V1", v1), ("DEAD", support::free_port())];
    tokio::task::spawn_blocking(move || Proxy::start(kind, TEMPLATE, &given))
        .await
        .unwrap()
}

/// `n` requests for `path` at once; their answers.
async fn burst(proxy: &Proxy, path: &str, n: usize) -> Vec<Resp> {
    let addr = proxy.addr("HTTP");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let req = Req::get("breakers.test", path);
            tokio::spawn(async move { request(addr, &req).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn statuses(answers: &[Resp]) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.status).or_default() += 1;
    }
    m
}

/// What one proxy showed: per scenario, the statuses and the counters that matter.
#[derive(Debug, PartialEq)]
struct Seen {
    scenario: &'static str,
    statuses: BTreeMap<u16, usize>,
    counters: Vec<(String, u64)>,
}

async fn scenario(
    proxy: &Proxy,
    scenario: &'static str,
    path: &str,
    n: usize,
    cluster: &str,
    names: &[&str],
) -> (Seen, Vec<Resp>) {
    let answers = burst(proxy, path, n).await;
    let stats = proxy.admin("/stats").await;
    let counters = names
        .iter()
        .map(|name| {
            let full = format!("cluster.{cluster}.{name}");
            let v = counter(&stats, &full);
            (full, v)
        })
        .collect();
    let seen = Seen {
        scenario,
        statuses: statuses(&answers),
        counters,
    };
    (seen, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breakers_agree_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let envoy = start(Kind::Envoy, v1).await;
    let weft = start(Kind::Weft, v1).await;
    let mut seen = Vec::new();
    for proxy in [&envoy, &weft] {
        let kind = proxy.kind;
        let mut mine = Vec::new();

        // max_connections 1, max_pending_requests 1: with the one connection open and idle, of
        // 20 requests at once one takes it, one waits for it, the other 18 are dropped at once.
        let warm = request(proxy.addr("HTTP"), &Req::get("b", "/pending/")).await;
        assert_eq!(warm.status, 200, "{kind:?}");
        let (s, answers) = scenario(
            proxy,
            "max_connections 1, max_pending_requests 1",
            "/pending/slow/300",
            20,
            "one_connection",
            &[
                "upstream_rq_pending_overflow",
                "upstream_cx_total",
                "upstream_rq_pending_total",
            ],
        )
        .await;
        assert_eq!(
            s.statuses,
            BTreeMap::from([(200, 2), (503, 18)]),
            "{kind:?}"
        );
        assert!(
            counter(
                &proxy.admin("/stats").await,
                "cluster.one_connection.upstream_cx_overflow"
            ) >= 1,
            "{kind:?}: a request waited because of max_connections"
        );
        let dropped = answers.iter().find(|a| a.status == 503).unwrap();
        assert_eq!(
            dropped.headers.get("x-envoy-overloaded").unwrap(),
            "true",
            "{kind:?}"
        );
        assert_eq!(
            &dropped.body[..],
            b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
            "{kind:?}"
        );
        mine.push(s);

        // max_requests 2 at the default priority, 4 at HIGH.
        let (s, _) = scenario(
            proxy,
            "max_requests 2",
            "/requests/slow/300",
            10,
            "two_requests",
            &["upstream_rq_active_overflow", "upstream_rq_503"],
        )
        .await;
        assert_eq!(s.statuses, BTreeMap::from([(200, 2), (503, 8)]), "{kind:?}");
        mine.push(s);
        let (s, _) = scenario(
            proxy,
            "max_requests 4 at HIGH priority",
            "/high/slow/300",
            10,
            "two_requests",
            &["upstream_rq_active_overflow", "upstream_rq_200"],
        )
        .await;
        assert_eq!(s.statuses, BTreeMap::from([(200, 4), (503, 6)]), "{kind:?}");
        mine.push(s);

        // max_retries 0: the upstream's 503 comes back unretried, counted as an overflow.
        let (s, _) = scenario(
            proxy,
            "max_retries 0",
            "/no-retries/status/503",
            1,
            "no_retries",
            &[
                "upstream_rq_retry",
                "upstream_rq_retry_overflow",
                "upstream_rq_503",
            ],
        )
        .await;
        assert_eq!(s.statuses, BTreeMap::from([(503, 1)]), "{kind:?}");
        mine.push(s);

        // A retry storm against a dead cluster: 10 requests that would each retry 5 times, but
        // the budget lets only 2 retries be in flight, so 8 requests are not retried at all.
        let (s, _) = scenario(
            proxy,
            "retry budget against a dead cluster",
            "/budget/",
            10,
            "budget",
            &[
                "upstream_rq_retry",
                "upstream_rq_retry_overflow",
                "upstream_rq_retry_limit_exceeded",
            ],
        )
        .await;
        assert_eq!(s.statuses, BTreeMap::from([(503, 10)]), "{kind:?}");
        mine.push(s);

        // max_requests_per_connection 2: six requests in turn take three connections.
        for _ in 0..6 {
            let r = request(proxy.addr("HTTP"), &Req::get("b", "/per-connection/")).await;
            assert_eq!(r.status, 200, "{kind:?}");
        }
        let stats = proxy.admin("/stats").await;
        assert_eq!(
            counter(&stats, "cluster.two_per_connection.upstream_cx_total"),
            3,
            "{kind:?}"
        );
        seen.push(mine);
    }
    assert_eq!(seen[0], seen[1], "Envoy (left) and Weft (right) differ");
    let budget = &seen[1][4].counters;
    assert_eq!(budget[1].1, 8, "retry overflow counted: {budget:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_circuit_breakers_are_refused_naming_the_field() {
    for (from, to, field) in [
        (
            "budget_percent: { value: 10 }",
            "budget_percent: { value: 150 }",
            "retry_budget.budget_percent",
        ),
        (
            "{ priority: HIGH, max_requests: 4 }",
            "{ priority: DEFAULT, max_requests: 4 }",
            "thresholds[1].priority",
        ),
    ] {
        let err = support::refusal(TEMPLATE, from, to);
        assert!(err.contains(field), "{to}: {err}");
    }
}
