//! How long a stream may last, side by side in real Envoy and the Weft proxy (one bootstrap,
//! `data/stream_duration.yaml`): a route's `max_stream_duration`, the connection manager's, the
//! client's `grpc-timeout` as istiod's routes honour it (capped and offset), a response cut off
//! mid-body, and the per-try idle timeout of a retry policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::{Proxy, Req, counter, try_request};

const TEMPLATE: &str = include_str!("data/stream_duration.yaml");

/// What one proxy showed for one request.
#[derive(Debug, PartialEq)]
struct Seen {
    what: &'static str,
    status: Option<u16>,
    body: String,
    grpc_status: Option<String>,
    grpc_message: Option<String>,
}

async fn call(proxy: &Proxy, what: &'static str, req: Req) -> Seen {
    match try_request(proxy.addr("HTTP"), &req).await {
        Ok(r) => {
            let h = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap().to_string());
            Seen {
                what,
                status: Some(r.status),
                // The echo's own report differs in its request id: keep what tells the story.
                body: match r.json() {
                    Some(j) => format!(
                        "echo of {} {:?}",
                        j["path"],
                        j["headers"].get("x-envoy-expected-rq-timeout-ms")
                    ),
                    None => String::from_utf8_lossy(&r.body).into_owned(),
                },
                grpc_status: h("grpc-status"),
                grpc_message: h("grpc-message"),
            }
        }
        Err(_) => Seen {
            what,
            status: None,
            body: String::new(),
            grpc_status: None,
            grpc_message: None,
        },
    }
}

fn get(path: &str, grpc_timeout: Option<&str>) -> Req {
    let mut r = Req::get("duration.test", path);
    if let Some(t) = grpc_timeout {
        r.headers.push(("grpc-timeout".into(), t.into()));
    }
    r
}

/// A unary gRPC call over h2c with an empty message.
fn grpc(path: &str, grpc_timeout: &str) -> Req {
    let mut r = Req {
        method: "POST",
        h2: true,
        headers: vec![
            ("content-type".into(), "application/grpc".into()),
            ("te".into(), "trailers".into()),
        ],
        body: vec![0, 0, 0, 0, 0],
        ..Req::get("duration.test", path)
    };
    if !grpc_timeout.is_empty() {
        r.headers.push(("grpc-timeout".into(), grpc_timeout.into()));
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_durations_agree_with_envoy() {
    let echo = support::start_echo("echo").await;
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("ECHO", echo.port())]).await;
    let mut all = Vec::new();
    for proxy in [&envoy, &weft] {
        let seen = vec![
            call(proxy, "within the route's 0.3 s", get("/msd/100", None)).await,
            call(proxy, "past the route's 0.3 s", get("/msd/1000", None)).await,
            call(proxy, "response cut mid-body", get("/msd-drip/600", None)).await,
            call(
                proxy,
                "istio route, no grpc-timeout",
                get("/istio/1000", None),
            )
            .await,
            call(
                proxy,
                "istio route, grpc-timeout 300m",
                get("/istio/1000", Some("300m")),
            )
            .await,
            call(
                proxy,
                "grpc-timeout 0: at once",
                get("/istio/300", Some("0m")),
            )
            .await,
            call(
                proxy,
                "malformed grpc-timeout is ignored",
                get("/istio/300", Some("soon")),
            )
            .await,
            call(
                proxy,
                "gRPC call past its deadline",
                grpc("/echo.Echo/Slow", "300m"),
            )
            .await,
            call(proxy, "gRPC call within it", grpc("/echo.Echo/Fast", "5S")).await,
            call(
                proxy,
                "grpc-timeout capped to 0.2 s",
                get("/cap/1000", Some("5S")),
            )
            .await,
            call(
                proxy,
                "max_grpc_timeout 0, 300m",
                grpc("/legacy/echo.Echo/Slow", "300m"),
            )
            .await,
            call(
                proxy,
                "max_grpc_timeout 0, none",
                grpc("/legacy/echo.Echo/Slow", ""),
            )
            .await,
            call(
                proxy,
                "max_grpc_timeout 0, plain",
                get("/legacy/slow/10", Some("1m")),
            )
            .await,
            call(
                proxy,
                "max_grpc_timeout capped",
                grpc("/legacy-cap/echo.Echo/Slow", "5S"),
            )
            .await,
            call(
                proxy,
                "max_grpc_timeout, no header",
                grpc("/legacy-cap/echo.Echo/Slow", ""),
            )
            .await,
            call(
                proxy,
                "expected timeout: per try",
                get("/per-try/slow/10", None),
            )
            .await,
            call(
                proxy,
                "cap less offset: 0.1 s, slower",
                get("/offset/150", Some("5S")),
            )
            .await,
            call(
                proxy,
                "cap less offset: 0.1 s, faster",
                get("/offset/40", Some("5S")),
            )
            .await,
            call(
                proxy,
                "the connection manager's 0.8 s",
                get("/slow/1500", None),
            )
            .await,
            call(
                proxy,
                "within the connection manager's",
                get("/slow/100", None),
            )
            .await,
            call(proxy, "each try idle past 0.2 s", get("/idle/1000", None)).await,
            call(proxy, "a try that answers in time", get("/idle/50", None)).await,
        ];
        let stats = proxy.admin("/stats").await;
        all.push((proxy.kind, seen, stats));
    }
    let (envoy_seen, weft_seen) = (&all[0].1, &all[1].1);
    let differ: Vec<String> = envoy_seen
        .iter()
        .zip(weft_seen)
        .filter(|(e, w)| e != w)
        .map(|(e, w)| format!("Envoy {e:?}\n Weft {w:?}"))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // What Envoy showed is what a user relies on; check the key facts outright too.
    let by = |what: &str| weft_seen.iter().find(|s| s.what == what).unwrap();
    assert_eq!(by("past the route's 0.3 s").status, Some(504));
    assert_eq!(
        by("past the route's 0.3 s").body,
        "downstream duration timeout"
    );
    assert_eq!(by("istio route, no grpc-timeout").status, Some(200));
    let deadline = by("gRPC call past its deadline");
    assert_eq!(
        (deadline.status, deadline.grpc_status.as_deref()),
        (Some(200), Some("4"))
    );
    assert_eq!(
        by("each try idle past 0.2 s").body,
        "upstream request timeout"
    );
    // max_grpc_timeout makes the client's deadline the route timeout: 504 as gRPC UNAVAILABLE.
    let legacy = by("max_grpc_timeout 0, 300m");
    assert_eq!(
        (
            legacy.grpc_status.as_deref(),
            legacy.grpc_message.as_deref()
        ),
        (Some("14"), Some("upstream request timeout")),
        "{legacy:?}"
    );
    assert!(
        by("expected timeout: per try")
            .body
            .ends_with("Some(String(\"500\"))"),
        "{:?}",
        by("expected timeout: per try")
    );
    for (kind, _, stats) in &all {
        let c = |name: &str| counter(stats, name);
        // Route, mid-body, 300m, 0m, gRPC, cap, offset, and the connection manager's twice
        // (once a gRPC call on a route without a grpc-timeout of its own).
        assert_eq!(
            c("http.duration.downstream_rq_max_duration_reached"),
            9,
            "{kind:?}"
        );
        assert_eq!(
            c("cluster.echo.upstream_rq_per_try_idle_timeout"),
            3,
            "{kind:?}"
        );
        // The three gRPC calls past max_grpc_timeout's deadline (the client's, or the cap when
        // the client gave none) are route timeouts.
        assert_eq!(c("cluster.echo.upstream_rq_timeout"), 3, "{kind:?}");
        assert_eq!(c("cluster.echo.upstream_rq_retry"), 2, "{kind:?}");
        assert_eq!(
            c("cluster.echo.upstream_rq_retry_limit_exceeded"),
            1,
            "{kind:?}"
        );
    }
}

/// Reads one HTTP/1.1 response (with Content-Length) from `stream`: its status line, or `None`
/// when the connection was closed first.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text.lines().next().map(str::to_string);
            }
        }
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Whether the proxy closed `stream` (end of stream or reset) within `within`.
async fn closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// What one proxy does with idle connections.
async fn idling(proxy: &Proxy) -> Vec<String> {
    use tokio::io::AsyncWriteExt;
    let mut seen = Vec::new();
    // Requests every 0.15 s keep a connection alive past the 0.3 s timeout...
    let mut conn = tokio::net::TcpStream::connect(proxy.addr("HTTP_IDLE"))
        .await
        .unwrap();
    for _ in 0..4 {
        conn.write_all(b"GET /status/200 HTTP/1.1\r\nhost: idle.test\r\n\r\n")
            .await
            .unwrap();
        seen.push(format!("{:?}", read_response(&mut conn).await));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // ...and once they stop, it idles out, then drains for Envoy's 5 s drain timeout before it
    // is closed.
    let quiet = tokio::net::TcpStream::connect(proxy.addr("HTTP_IDLE"));
    let (draining, quiet) = tokio::join!(closed(&mut conn, Duration::from_secs(4)), quiet);
    seen.push(format!("closed within 4 s of the last request: {draining}"));
    seen.push(format!(
        "then closed within 3 s more: {}",
        closed(&mut conn, Duration::from_secs(3)).await
    ));
    // A connection that never carried a request is closed as soon as it idles out.
    let mut quiet = quiet.unwrap();
    seen.push(format!(
        "quiet connection closed within 1 s: {}",
        closed(&mut quiet, Duration::from_secs(1)).await
    ));
    let stats = proxy.admin("/stats").await;
    seen.push(format!(
        "downstream_cx_idle_timeout: {}",
        counter(&stats, "http.idle.downstream_cx_idle_timeout")
    ));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_like_envoy_closes_them() {
    let echo = support::start_echo("echo").await;
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("ECHO", echo.port())]).await;
    let (e, w) = tokio::join!(idling(&envoy), idling(&weft));
    support::assert_agree(&e, &w);
    assert_eq!(w[0], "Some(\"HTTP/1.1 200 OK\")");
    assert_eq!(w[3], "Some(\"HTTP/1.1 200 OK\")");
    assert_eq!(w[4], "closed within 4 s of the last request: false");
    assert_eq!(w[5], "then closed within 3 s more: true");
    assert_eq!(w[6], "quiet connection closed within 1 s: true");
    assert_eq!(w[7], "downstream_cx_idle_timeout: 2");
}

/// What one proxy does with a TCP connection that goes quiet.
async fn tcp_idling(proxy: &Proxy) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut seen = Vec::new();
    let mut conn = tokio::net::TcpStream::connect(proxy.addr("TCP_IDLE"))
        .await
        .unwrap();
    // Bytes every 0.15 s keep it open past the 0.3 s timeout...
    for i in 0..4 {
        let msg = format!("ping {i};");
        conn.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        let echoed = tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut back)).await;
        seen.push(format!(
            "{:?}",
            echoed
                .ok()
                .and_then(Result::ok)
                .map(|_| String::from_utf8_lossy(&back).into_owned())
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // ...and once they stop, it is closed.
    seen.push(format!(
        "closed within 1 s: {}",
        closed(&mut conn, Duration::from_secs(1)).await
    ));
    let stats = proxy.admin("/stats").await;
    seen.push(format!(
        "idle_timeout: {}",
        counter(&stats, "tcp.tcp_idle.idle_timeout")
    ));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_tcp_connections_are_closed_like_envoy_closes_them() {
    let tcp_echo = support::start_tcp_echo().await;
    let (envoy, weft) = support::start_both(TEMPLATE, vec![("TCP_ECHO", tcp_echo.port())]).await;
    let (e, w) = tokio::join!(tcp_idling(&envoy), tcp_idling(&weft));
    support::assert_agree(&e, &w);
    assert_eq!(w[3], "Some(\"ping 3;\")");
    assert_eq!(w[4], "closed within 1 s: true");
    assert_eq!(w[5], "idle_timeout: 1");
}

#[test]
fn negative_durations_are_refused_naming_the_field() {
    for (from, to, field) in [
        (
            "max_stream_duration: { max_stream_duration: 0.3s } }",
            "max_stream_duration: { max_stream_duration: -1s } }",
            "routes[0].route.max_stream_duration.max_stream_duration",
        ),
        (
            "grpc_timeout_header_max: 0.2s, grpc_timeout_header_offset: 0.1s",
            "grpc_timeout_header_max: 0.2s, grpc_timeout_header_offset: -0.1s",
            "max_stream_duration.grpc_timeout_header_offset",
        ),
        (
            "per_try_idle_timeout: 0.2s",
            "per_try_idle_timeout: -2s",
            "retry_policy.per_try_idle_timeout",
        ),
        (
            "common_http_protocol_options: { idle_timeout: 0.3s }",
            "common_http_protocol_options: { idle_timeout: -0.3s }",
            "common_http_protocol_options.idle_timeout",
        ),
        (
            "common_http_protocol_options: { max_stream_duration: 0.8s }",
            "common_http_protocol_options: { max_stream_duration: 0.8s, max_requests_per_connection: 5 }",
            "common_http_protocol_options.max_requests_per_connection",
        ),
    ] {
        let err = support::refusal(TEMPLATE, from, to);
        assert!(err.contains(field), "{to}: {err}");
    }
}
