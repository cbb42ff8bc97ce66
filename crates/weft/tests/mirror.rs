//! Request mirroring (`request_mirror_policies`) in real Envoy 1.40 and `weft proxy` with one
//! bootstrap (tests/data/mirror.yaml): every request copied with `-shadow` on its host, bodies
//! included; a fractional share; the suffix turned off; a mirror cluster that does not exist;
//! and a slow mirror that must not hold up the original.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};
use support::recorder::{Recorded, Recorder, start_recorder};
use support::{Kind, Proxy, Req, counter, request};

const TEMPLATE: &str = include_str!("data/mirror.yaml");

fn recorded(method: &str, authority: &str, path: &str, body_len: usize) -> Recorded {
    Recorded {
        method: method.into(),
        authority: authority.into(),
        path: path.into(),
        body_len,
        version: "HTTP/1.1".into(),
    }
}

async fn start(kind: Kind) -> (Proxy, Recorder) {
    let primary = support::start_echo("primary").await;
    let (shadow, recorder) = start_recorder().await;
    let given = [("PRIMARY", primary.port()), ("SHADOW", shadow.port())];
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(kind, TEMPLATE, &given))
        .await
        .unwrap();
    (proxy, recorder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_behaves_like_envoy() {
    let (envoy, weft) = tokio::join!(start(Kind::Envoy), start(Kind::Weft));
    let mut failures = Vec::new();
    let mut quarter = Vec::new();
    for (proxy, shadow) in [&envoy, &weft] {
        let kind = proxy.kind;
        let addr = proxy.addr("HTTP");
        // Each request answered by the primary; a copy reaches the shadow, host suffixed
        // before the port.
        for _ in 0..10 {
            let r = request(addr, &Req::get("svc:8080", "/all")).await;
            let upstream = r.json().map(|j| j["upstream"].clone());
            if r.status != 200 || upstream != Some("primary".into()) {
                failures.push(format!("{kind:?} /all: {} {upstream:?}", r.status));
            }
        }
        let seen = shadow.wait_for(10).await;
        let want = vec![recorded("GET", "svc-shadow:8080", "/all", 0); 10];
        if seen != want {
            failures.push(format!("{kind:?} /all mirrored as {seen:?}"));
        }
        // The body is copied whole.
        let mut post = Req::get("svc", "/upload");
        post.method = "POST";
        post.body = vec![b'x'; 300_000];
        let r = request(addr, &post).await;
        if r.json().map(|j| j["body_len"].clone()) != Some(300_000.into()) {
            failures.push(format!("{kind:?} POST: {}", r.status));
        }
        let seen = shadow.wait_for(1).await;
        if seen != vec![recorded("POST", "svc-shadow", "/upload", 300_000)] {
            failures.push(format!("{kind:?} POST mirrored as {seen:?}"));
        }
        // Without the suffix, the host is left as it is.
        request(addr, &Req::get("svc", "/as-is")).await;
        let seen = shadow.wait_for(1).await;
        if seen != vec![recorded("GET", "svc", "/as-is", 0)] {
            failures.push(format!("{kind:?} /as-is mirrored as {seen:?}"));
        }
        // A mirror cluster that would follow the client's protocol gets HTTP/1.1 from an h2c
        // client: Envoy sends mirrors from a client of its own, which has no protocol to follow.
        let mut h2 = Req::get("svc", "/follow");
        h2.h2 = true;
        request(addr, &h2).await;
        let seen = shadow.wait_for(1).await;
        if seen != vec![recorded("GET", "svc-shadow", "/follow", 0)] {
            failures.push(format!("{kind:?} /follow mirrored as {seen:?}"));
        }
        // A mirror to a cluster that does not exist changes nothing for the original.
        let r = request(addr, &Req::get("svc", "/to-nowhere")).await;
        if r.status != 200 {
            failures.push(format!("{kind:?} /to-nowhere: {}", r.status));
        }
        // A mirror that answers a second late does not hold up the original.
        let started = Instant::now();
        let r = request(addr, &Req::get("svc", "/slow-answer")).await;
        let took = started.elapsed();
        if r.status != 200 || took > Duration::from_millis(700) {
            failures.push(format!(
                "{kind:?} /slow-answer: {} after {took:?}",
                r.status
            ));
        }
        if shadow.wait_for(1).await.len() != 1 {
            failures.push(format!("{kind:?} /slow-answer was not mirrored"));
        }
        // A quarter of the requests, over 2000 (±4 points is about 4.1 standard deviations:
        // at ±3, Envoy itself fell outside once in a few dozen runs).
        for _ in 0..2000 {
            request(addr, &Req::get("svc", "/quarter")).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        quarter.push(shadow.taken().len());
    }
    for (n, kind) in quarter.iter().zip(["Envoy", "Weft"]) {
        let share = *n as f64 / 20.0;
        if (share - 25.0).abs() > 4.0 {
            failures.push(format!("{kind} /quarter mirrored {share}%"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The shadow cluster counts its requests as any cluster does.
    let stats = weft.0.admin("/stats").await;
    let total = counter(&stats, "cluster.shadow.upstream_rq_total");
    assert_eq!(total, 10 + 1 + 1 + 1 + quarter[1] as u64, "{stats}");
    assert_eq!(counter(&stats, "cluster.shadow.upstream_rq_2xx"), total);
}

/// Mirrors are requests to their cluster: its max_requests drops the ones past it, and only
/// the mirrors, never the originals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_count_under_their_clusters_max_requests() {
    let (envoy, weft) = tokio::join!(start(Kind::Envoy), start(Kind::Weft));
    let mut seen = Vec::new();
    for (proxy, _) in [&envoy, &weft] {
        let addr = proxy.addr("HTTP");
        let slow = Req::get("svc", "/slow/400");
        let originals = futures::future::join_all((0..6).map(|_| request(addr, &slow))).await;
        let statuses: Vec<u16> = originals.iter().map(|r| r.status).collect();
        // The one mirror let through answers after 400 ms.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let stats = proxy.admin("/stats").await;
        let c = |name: &str| counter(&stats, &format!("cluster.shadow_limited.{name}"));
        seen.push((
            proxy.kind,
            statuses,
            c("upstream_rq_total"),
            c("upstream_rq_active_overflow"),
            c("upstream_rq_2xx"),
        ));
    }
    assert_eq!(seen[0].1, vec![200; 6], "{seen:?}");
    assert_eq!(
        (seen[0].2, seen[0].3, seen[0].4),
        (1, 5, 1),
        "Envoy: {seen:?}"
    );
    let (envoy_seen, weft_seen) = (&seen[0], &seen[1]);
    assert_eq!(
        (&envoy_seen.1, envoy_seen.2, envoy_seen.3, envoy_seen.4),
        (&weft_seen.1, weft_seen.2, weft_seen.3, weft_seen.4),
        "Envoy vs Weft"
    );
}

#[test]
fn a_mirror_policy_without_a_cluster_is_refused_naming_the_field() {
    let err = support::refusal(
        TEMPLATE,
        "- { cluster: shadow, disable_shadow_host_suffix_append: true }",
        "- { disable_shadow_host_suffix_append: true }",
    );
    assert!(err.contains("request_mirror_policies[0].cluster"), "{err}");
}
