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
