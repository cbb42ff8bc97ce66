//! DNS clusters side by side in real Envoy and the Weft proxy (the same bootstrap,
//! `data/dns.yaml`): the address families each `dns_lookup_family` keeps, and the pace of
//! `dns_refresh_rate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::{Proxy, Req, assert_agree, counter, request};

const TEMPLATE: &str = include_str!("data/dns.yaml");

async fn observe(proxy: &Proxy) -> Vec<(String, u16)> {
    let mut seen = Vec::new();
    for path in ["/auto", "/v4-only", "/v4-preferred", "/v6-only", "/logical"] {
        let r = request(proxy.addr("HTTP"), &Req::get("x", path)).await;
        seen.push((path.to_string(), r.status));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_families_and_refresh_agree_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("V1", v1)]).await;
    let e = observe(&envoy).await;
    let w = observe(&weft).await;
    assert_agree(&e, &w);
    // `localhost` is 127.0.0.1 and ::1 here, and the upstream listens on 127.0.0.1: AUTO and
    // V6_ONLY take ::1 and find nobody there.
    assert_eq!(
        w,
        [
            ("/auto".to_string(), 503),
            ("/v4-only".to_string(), 200),
            ("/v4-preferred".to_string(), 200),
            ("/v6-only".to_string(), 503),
            ("/logical".to_string(), 200),
        ]
    );
    // A 0.2 s refresh for 2 s: about ten resolutions in each.
    let before = [
        counter(
            &envoy.admin("/stats").await,
            "cluster.v4_only.update_attempt",
        ),
        counter(
            &weft.admin("/stats").await,
            "cluster.v4_only.update_attempt",
        ),
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (proxy, before) in [&envoy, &weft].into_iter().zip(before) {
        let after = counter(
            &proxy.admin("/stats").await,
            "cluster.v4_only.update_attempt",
        );
        let n = after - before;
        assert!(
            (7..=13).contains(&n),
            "{:?}: {n} resolutions in 2 s",
            proxy.kind
        );
    }
}
