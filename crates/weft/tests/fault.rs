//! The fault filter, side by side in real Envoy and the Weft proxy (the same bootstrap,
//! `data/fault.yaml`): aborts over a share of requests, delays, gRPC aborts, the route's config
//! replacing the filter's, and the counters each proxy keeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{Kind, Proxy, Req, counter, request};

const TEMPLATE: &str = include_str!("data/fault.yaml");

async fn start(kind: Kind, v1: u16) -> Proxy {
    let given = [("V1", v1)];
    tokio::task::spawn_blocking(move || Proxy::start(kind, TEMPLATE, &given))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_agree_with_envoy() {
    let v1 = support::start_echo("v1").await.port();
    let envoy = start(Kind::Envoy, v1).await;
    let weft = start(Kind::Weft, v1).await;
    for proxy in [&envoy, &weft] {
        let kind = proxy.kind;
        let addr = proxy.addr("HTTP");
        // 30 % aborted with 418, within ±3 points over 4000 requests (4.1 standard deviations).
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        for _ in 0..4000 {
            *statuses
                .entry(request(addr, &Req::get("f", "/abort")).await.status)
                .or_default() += 1;
        }
        let aborted = statuses.get(&418).copied().unwrap_or(0);
        assert_eq!(
            aborted + statuses.get(&200).copied().unwrap_or(0),
            4000,
            "{kind:?}: {statuses:?}"
        );
        assert!(
            (aborted as f64 / 40.0 - 30.0).abs() <= 3.0,
            "{kind:?}: {statuses:?}"
        );

        // The route's empty config replaces the filter's abort-everything.
        assert_eq!(
            request(addr, &Req::get("f", "/calm")).await.status,
            200,
            "{kind:?}"
        );
        let own = request(addr, &Req::get("f", "/")).await;
        assert_eq!(
            (own.status, &own.body[..]),
            (503, &b"fault filter abort"[..]),
            "{kind:?}"
        );

        // A delay holds the request for its 0.2 s (Envoy's timer fires a few ms early), then
        // it goes through.
        let start = Instant::now();
        assert_eq!(
            request(addr, &Req::get("f", "/delay")).await.status,
            200,
            "{kind:?}"
        );
        assert!(
            start.elapsed() >= Duration::from_millis(180),
            "{kind:?}: {:?}",
            start.elapsed()
        );

        // A gRPC abort is a trailers-only gRPC reply with the status.
        let mut call = Req::get("f", "/grpc");
        call.headers
            .push(("content-type".into(), "application/grpc".into()));
        let g = request(addr, &call).await;
        // To a client that is not gRPC, Envoy answers 200 with the text.
        let plain = request(addr, &Req::get("f", "/grpc")).await;
        assert_eq!(
            (plain.status, &plain.body[..]),
            (200, &b"fault filter abort"[..]),
            "{kind:?}"
        );
        assert!(!plain.headers.contains_key("grpc-status"), "{kind:?}");
        assert_eq!(g.status, 200, "{kind:?}");
        assert_eq!(g.headers["grpc-status"], "14", "{kind:?}");
        assert_eq!(g.headers["grpc-message"], "fault filter abort", "{kind:?}");

        let stats = proxy.admin("/stats").await;
        // The /abort requests' aborts, then /, and /grpc twice.
        let injected = counter(&stats, "http.faults.fault.aborts_injected");
        assert_eq!(injected, aborted + 3, "{kind:?}");
        assert_eq!(
            counter(&stats, "http.faults.fault.delays_injected"),
            1,
            "{kind:?}"
        );
        assert_eq!(
            counter(&stats, "http.faults.fault.active_faults"),
            0,
            "{kind:?}"
        );

        // Header-controlled faults: none without the headers; the status, delay or gRPC
        // status the request names; a percentage header of 0 turns the fault off.
        let with = |headers: &[(&str, &str)]| {
            let mut r = Req::get("f", "/header");
            for (k, v) in headers {
                r.headers.push((k.to_string(), v.to_string()));
            }
            r
        };
        assert_eq!(request(addr, &with(&[])).await.status, 200, "{kind:?}");
        let teapot = request(addr, &with(&[("x-envoy-fault-abort-request", "429")])).await;
        assert_eq!(
            (teapot.status, &teapot.body[..]),
            (429, &b"fault filter abort"[..]),
            "{kind:?}"
        );
        let lowered = with(&[
            ("x-envoy-fault-abort-request", "429"),
            ("x-envoy-fault-abort-request-percentage", "0"),
        ]);
        assert_eq!(request(addr, &lowered).await.status, 200, "{kind:?}");
        let start = Instant::now();
        let slow = request(addr, &with(&[("x-envoy-fault-delay-request", "200")])).await;
        assert_eq!(slow.status, 200, "{kind:?}");
        assert!(start.elapsed() >= Duration::from_millis(180), "{kind:?}");
        let g = request(
            addr,
            &with(&[
                ("x-envoy-fault-abort-grpc-request", "14"),
                ("content-type", "application/grpc"),
            ]),
        )
        .await;
        assert_eq!(g.headers["grpc-status"], "14", "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fault_configs_are_refused_naming_the_field() {
    for (from, to, field) in [
        ("http_status: 418", "http_status: 600", "abort.http_status"),
        ("fixed_delay: 0.2s", "fixed_delay: -1s", "delay.fixed_delay"),
    ] {
        let err = support::refusal(TEMPLATE, from, to);
        assert!(err.contains(field), "{to}: {err}");
    }
}
