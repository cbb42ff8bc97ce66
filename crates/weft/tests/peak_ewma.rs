//! Latency-aware load balancing (LEAST_REQUEST's peak EWMA variant, Weft's own, opt-in through
//! cluster metadata): 200 requests, one at a time, to a fast and a slow host. Least request cannot
//! tell them apart (neither has a request in flight when the next is sent), so both proxies
//! split about evenly; the peak EWMA variant learns the latencies and sends nearly everything
//! to the fast host. Envoy, which ignores the metadata, keeps splitting evenly on the same
//! config: the opt-in changes nothing for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::{Proxy, Req, request};

const TEMPLATE: &str = include_str!("data/peak_ewma.yaml");
const N: usize = 200;

/// How many of `N` sequential requests the fast host answered.
async fn fast_share(proxy: &Proxy, path: &str) -> usize {
    let mut fast = 0;
    for _ in 0..N {
        let r = request(proxy.addr("HTTP"), &Req::get("lb.test", path)).await;
        assert_eq!(r.status, 200);
        if r.json().unwrap()["upstream"] == "fast" {
            fast += 1;
        }
    }
    fast
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_traffic_to_the_faster_host() {
    let fast = support::start_echo("fast").await;
    let slow = support::start_delayed_echo("slow", Duration::from_millis(20)).await;
    let (envoy, weft) =
        support::start_both(TEMPLATE, vec![("FAST", fast.port()), ("SLOW", slow.port())]).await;
    // Even split: 200 fair coin flips land within 100 ± 30 (4.2 standard deviations) all but
    // about twice in 100 000 runs.
    let even = 70..=130;
    let mut seen = Vec::new();
    for (proxy, path) in [
        (&envoy, "/plain"),
        (&weft, "/plain"),
        (&envoy, "/ewma"),
        (&weft, "/ewma"),
    ] {
        seen.push((proxy.kind, path, fast_share(proxy, path).await));
    }
    assert!(even.contains(&seen[0].2), "{seen:?}");
    assert!(even.contains(&seen[1].2), "{seen:?}");
    assert!(
        even.contains(&seen[2].2),
        "Envoy ignores the variant: {seen:?}"
    );
    // At most the first pick or two go to the slow host before its latency is known.
    assert!(seen[3].2 >= 190, "{seen:?}");
}

#[test]
fn bad_variants_are_refused_naming_the_field() {
    for (to, field) in [
        (
            "weft: { least_request: fastest, peak_ewma_decay: 10s }",
            "filter_metadata.weft.least_request",
        ),
        (
            "weft: { least_request: peak_ewma, peak_ewma_decay: soon }",
            "filter_metadata.weft.peak_ewma_decay",
        ),
    ] {
        let from = "weft: { least_request: peak_ewma, peak_ewma_decay: 10s }";
        let err = support::refusal(TEMPLATE, from, to);
        assert!(err.contains(field), "{to}: {err}");
    }
    let err = support::refusal(
        TEMPLATE,
        "  - name: ewma\n    connect_timeout: 1s\n    lb_policy: LEAST_REQUEST",
        "  - name: ewma\n    connect_timeout: 1s\n    lb_policy: RANDOM",
    );
    assert!(
        err.contains("applies only to lb_policy LEAST_REQUEST"),
        "{err}"
    );
}
