//! Locality weighted balancing in the Weft proxy beside Envoy, from one static bootstrap: a
//! locality takes its weight times its availability (min(1, 1.4 × healthy share)), and
//! locality weights mean nothing without `locality_weighted_lb_config`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Proxy, Req, request};

const TEMPLATE: &str = include_str!("data/locality.yaml");
const N: usize = 800;

/// The share of `N` requests that locality A (hosts a1, a2) answered.
async fn share_a(proxy: &Proxy, path: &str) -> f64 {
    let mut a = 0;
    for _ in 0..N {
        let r = request(proxy.addr("HTTP"), &Req::get("lb.test", path)).await;
        assert_eq!(r.status, 200);
        if r.json().unwrap()["upstream"]
            .as_str()
            .unwrap()
            .starts_with('a')
        {
            a += 1;
        }
    }
    a as f64 / N as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localities_take_weight_times_availability_like_envoy() {
    let ports = [
        ("A1", support::start_echo("a1").await),
        ("A2", support::start_echo("a2").await),
        ("B1", support::start_echo("b1").await),
        ("B2", support::start_echo("b2").await),
    ];
    let given = ports.iter().map(|(k, a)| (*k, a.port())).collect();
    let (envoy, weft) = support::start_both(TEMPLATE, given).await;
    // 800 draws: a share's standard deviation is at most 1.8 points; 6 points is > 3.3 of them.
    let tolerance = 0.06;
    for (path, want) in [
        ("/weighted", 0.75),
        // A half healthy: 3 × min(1, 1.4 × 0.5) = 2.1 against 1.
        ("/half", 2.1 / 3.1),
        // No locality_weighted_lb_config: round robin over the four hosts.
        ("/unweighted", 0.5),
    ] {
        let e = share_a(&envoy, path).await;
        let w = share_a(&weft, path).await;
        assert!(
            (e - want).abs() < tolerance,
            "{path}: Envoy {e}, expected {want}"
        );
        assert!(
            (w - want).abs() < tolerance,
            "{path}: Weft {w}, expected {want}, Envoy {e}"
        );
    }
}
