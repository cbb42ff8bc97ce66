//! Malformed and hostile requests over raw sockets, side by side in real Envoy and the Weft
//! proxy (the same bootstrap, `data/hostile_input.yaml`): what each answers, what reaches the
//! upstream, whether the connection is closed after, and that a client's broken body never
//! counts against a healthy host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::{Proxy, Req, assert_agree, counter, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TEMPLATE: &str = include_str!("data/hostile_input.yaml");

/// What one raw request got: the status, what the upstream saw of it (method, path, `host` and
/// any underscored header, from the echo's JSON), and whether the proxy said it closes the
/// connection (Envoy closes it a second later, its delayed close, so the header is what to
/// compare).
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    upstream: Option<String>,
    closes: bool,
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Seen {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let (head_end, length, closes) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            let closes = head.lines().any(|l| l.trim() == "connection: close");
            break (end + 4, length, closes);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => {
                return Seen {
                    status: 0,
                    upstream: None,
                    closes: true,
                };
            }
        }
    };
    while buf.len() < head_end + length {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let status = String::from_utf8_lossy(&buf[..head_end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = &buf[head_end..(head_end + length).min(buf.len())];
    let upstream = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|j| {
            let headers = j["headers"].as_object().cloned().unwrap_or_default();
            let underscored: Vec<String> = headers
                .keys()
                .filter(|k| k.contains('_'))
                .cloned()
                .collect();
            format!(
                "{} {} host={} underscored={underscored:?} upgrade={}",
                j["method"].as_str().unwrap_or("?"),
                j["path"].as_str().unwrap_or("?"),
                headers.get("host").and_then(|h| h.as_str()).unwrap_or("-"),
                headers.contains_key("upgrade"),
            )
        });
    Seen {
        status,
        upstream,
        closes,
    }
}

/// The classes of request Envoy's codec and connection manager refuse or normalise, each with a
/// name for the report.
fn cases() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let big = format!("x-big: {}\r\n", "a".repeat(61 * 1024));
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let eleven: String = (0..11).map(|i| format!("x-h{i}: v\r\n")).collect();
    let three_kib = format!("x-big: {}\r\n", "a".repeat(3 * 1024));
    let h = |s: &str| s.as_bytes().to_vec();
    vec![
        (
            "plain request",
            "HTTP",
            h("GET /p HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        (
            "CONNECT on an ordinary route",
            "HTTP",
            h("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        ),
        (
            "absolute-form target and another Host",
            "HTTP",
            h("GET http://a.example/p HTTP/1.1\r\nHost: b.example\r\n\r\n"),
        ),
        ("no Host", "HTTP", h("GET /p HTTP/1.1\r\n\r\n")),
        (
            "Host with a space",
            "HTTP",
            h("GET /p HTTP/1.1\r\nHost: a b\r\n\r\n"),
        ),
        (
            "two Host headers",
            "HTTP",
            h("GET /p HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ),
        ("HTTP/1.0", "HTTP", h("GET /p HTTP/1.0\r\nHost: a\r\n\r\n")),
        (
            "61 KiB of headers",
            "HTTP",
            h(&format!("GET /p HTTP/1.1\r\nHost: a\r\n{big}\r\n")),
        ),
        (
            "101 headers",
            "HTTP",
            h(&format!("GET /p HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
        ),
        (
            "transfer-encoding gzip, chunked",
            "HTTP",
            h(
                "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        (
            "lowercase method",
            "HTTP",
            h("get /p HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        (
            "overlong unknown method",
            "HTTP",
            h("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ /p HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        (
            "target without a slash",
            "HTTP",
            h("GET p HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        (
            "OPTIONS *",
            "HTTP",
            h("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        (
            "h2c upgrade offer",
            "HTTP",
            h(
                "GET /p HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            ),
        ),
        (
            "two content-lengths",
            "HTTP",
            h(
                "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            ),
        ),
        (
            "space before the colon",
            "HTTP",
            h("GET /p HTTP/1.1\r\nHost: a\r\nx-a : 1\r\n\r\n"),
        ),
        (
            "NUL in a header value",
            "HTTP",
            h("GET /p HTTP/1.1\r\nHost: a\r\nx-a: a\0b\r\n\r\n"),
        ),
        (
            "underscore allowed",
            "HTTP",
            h("GET /p HTTP/1.1\r\nHost: a\r\nx_under: 1\r\n\r\n"),
        ),
        (
            "underscore refused",
            "REJECT",
            h("GET /p HTTP/1.1\r\nHost: a\r\nx_under: 1\r\n\r\n"),
        ),
        (
            "underscore dropped",
            "DROP",
            h("GET /p HTTP/1.1\r\nHost: a\r\nx_under: 1\r\n\r\n"),
        ),
        (
            "11 headers over max_headers_count 10",
            "REJECT",
            h(&format!("GET /p HTTP/1.1\r\nHost: a\r\n{eleven}\r\n")),
        ),
        (
            "3 KiB over max_request_headers_kb 2",
            "REJECT",
            h(&format!("GET /p HTTP/1.1\r\nHost: a\r\n{three_kib}\r\n")),
        ),
    ]
}

async fn observe(proxy: &Proxy) -> Vec<(String, Seen)> {
    let mut seen = Vec::new();
    for (name, listener, bytes) in cases() {
        seen.push((
            name.to_string(),
            exchange(proxy.addr(listener), &bytes).await,
        ));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_envoys_answers() {
    let v1 = support::start_echo("v1").await.port();
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("V1", v1)]).await;
    let e = observe(&envoy).await;
    let w = observe(&weft).await;
    assert_agree(&e, &w);
    let get = |name: &str| &w.iter().find(|(n, _)| n == name).unwrap().1;
    // Stated outright, so that a change in both proxies cannot hide.
    assert_eq!(get("CONNECT on an ordinary route").status, 404);
    assert_eq!(get("HTTP/1.0").status, 426);
    assert_eq!(get("61 KiB of headers").status, 431);
    assert_eq!(get("transfer-encoding gzip, chunked").status, 501);
    assert_eq!(get("lowercase method").status, 400);
    assert!(get("lowercase method").closes);
    assert_eq!(get("Host with a space").upstream, None);
    assert_eq!(get("underscore refused").status, 400);
    let stats = [envoy.admin("/stats").await, weft.admin("/stats").await];
    let names = [
        "http1.requests_rejected_with_underscores_in_headers",
        "http1.dropped_headers_with_underscores",
    ];
    let counts: Vec<Vec<u64>> = stats
        .iter()
        .map(|s| names.iter().map(|n| counter(s, n)).collect())
        .collect();
    assert_agree(&counts[0], &counts[1]);
    assert_eq!(counts[1], [1, 1]);
}

/// Four POSTs with a malformed chunked body: the client's fault, answered 400, and the host
/// they were on their way to stays in rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_request_bodies_do_not_eject_a_healthy_host() {
    let v1 = support::start_echo("v1").await.port();
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("V1", v1)]).await;
    let bad = b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let mut seen = Vec::new();
    for proxy in [&envoy, &weft] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(exchange(proxy.addr("HTTP"), bad).await.status);
        }
        for _ in 0..20 {
            statuses.push(
                request(proxy.addr("HTTP"), &Req::get("a", "/"))
                    .await
                    .status,
            );
        }
        let stats = proxy.admin("/stats").await;
        statuses.push(counter(
            &stats,
            "cluster.up.outlier_detection.ejections_enforced_total",
        ) as u16);
        seen.push(statuses);
    }
    assert_agree(&seen[0], &seen[1]);
    assert_eq!(&seen[1][..4], [400; 4]);
    assert_eq!(&seen[1][4..24], [200; 20]);
    assert_eq!(seen[1][24], 0, "no ejection");
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Sends an HTTP/2 connection's worth of frames at once and tells whether the proxy closed the
/// connection within two seconds (reading everything it sends meanwhile).
async fn h2_closed(addr: SocketAddr, frames: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(4, 0, 0, &[]));
    bytes.extend_from_slice(frames);
    let _ = s.write_all(&bytes).await;
    let mut chunk = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A GET for `/` on `stream`, HPACK-encoded from the static table (`:authority: a`).
fn h2_get(stream: u32, flags: u8) -> Vec<u8> {
    h2_frame(1, flags, stream, &[0x82, 0x86, 0x84, 0x41, 0x01, b'a'])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_close_the_connection_as_envoy_closes_it() {
    let v1 = support::start_echo("v1").await.port();
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("V1", v1)]).await;
    let pings = |n: u64| -> Vec<u8> {
        (0..n)
            .flat_map(|i| h2_frame(6, 0, 0, &i.to_be_bytes()))
            .collect()
    };
    let settings = |n: usize| -> Vec<u8> { (0..n).flat_map(|_| h2_frame(4, 0, 0, &[])).collect() };
    let empty_data = |n: usize| -> Vec<u8> {
        let mut f = h2_get(1, 0x4);
        for _ in 0..n {
            f.extend(h2_frame(0, 0, 1, &[]));
        }
        f
    };
    let resets = |n: u32| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let id = 1 + 2 * i;
                let mut f = h2_get(id, 0x5);
                f.extend(h2_frame(3, 0, id, &8u32.to_be_bytes()));
                f
            })
            .collect()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("900 PINGs", pings(900)),
        ("1100 PINGs", pings(1100)),
        ("1100 SETTINGS", settings(1100)),
        ("one empty DATA frame", empty_data(1)),
        ("two empty DATA frames", empty_data(2)),
        ("200 streams reset at once", resets(200)),
        ("1000 streams reset at once", resets(1000)),
    ];
    let mut seen = Vec::new();
    for proxy in [&envoy, &weft] {
        let mut closed = Vec::new();
        for (name, frames) in &cases {
            closed.push((*name, h2_closed(proxy.addr("HTTP"), frames).await));
        }
        seen.push(closed);
    }
    assert_agree(&seen[0], &seen[1]);
    assert_eq!(
        seen[1].iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [false, true, true, false, true, false, true]
    );
    let stats = weft.admin("/stats").await;
    assert_eq!(counter(&stats, "http2.outbound_control_flood"), 2);
    assert_eq!(counter(&stats, "http2.inbound_empty_frames_flood"), 1);
}
