//! The differential suite: the same bootstrap (tests/data/differential.yaml) runs in real Envoy
//! 1.40 and in `weft proxy`; every case sends the same request through both and requires the
//! same observable result: status, which upstream answered, what the upstream received (path,
//! authority, HTTP version, chosen headers), the response headers that matter and local bodies.
//! Each case also states the status it expects, so that both proxies cannot pass by failing alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use support::{Kind, Proxy, Req, Resp, counter, request};

const TEMPLATE: &str = include_str!("data/differential.yaml");

struct Case {
    name: &'static str,
    listener: &'static str,
    req: Req,
    status: u16,
    /// Upstream request headers whose values must agree ("?" compares presence only).
    upstream_headers: &'static [&'static str],
    /// Response headers whose values must agree.
    response_headers: &'static [&'static str],
    /// Compare only this many leading bytes of a local (non-JSON) body.
    body_prefix: usize,
}

fn case(name: &'static str, authority: &str, path: &str, status: u16) -> Case {
    Case {
        name,
        listener: "HTTP",
        req: Req::get(authority, path),
        status,
        upstream_headers: &[],
        response_headers: &[
            "location",
            "content-type",
            "server",
            "x-route-config",
            "x-vhost",
        ],
        body_prefix: usize::MAX,
    }
}

impl Case {
    fn header(mut self, k: &str, v: &str) -> Case {
        self.req.headers.push((k.into(), v.into()));
        self
    }
    fn h2(mut self) -> Case {
        self.req.h2 = true;
        self
    }
    fn method(mut self, m: &'static str) -> Case {
        self.req.method = m;
        self
    }
    fn upstream(mut self, names: &'static [&'static str]) -> Case {
        self.upstream_headers = names;
        self
    }
    fn response(mut self, names: &'static [&'static str]) -> Case {
        self.response_headers = names;
        self
    }
    /// A CORS exchange: the CORS response headers must agree too.
    fn cors(mut self, origin: &str, request_method: Option<&str>) -> Case {
        self.req.headers.push(("origin".into(), origin.into()));
        if let Some(m) = request_method {
            self.req.method = "OPTIONS";
            self.req
                .headers
                .push(("access-control-request-method".into(), m.into()));
            self.req
                .headers
                .push(("access-control-request-headers".into(), "x-custom".into()));
        }
        self.response_headers = &[
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-headers",
            "access-control-allow-credentials",
            "access-control-expose-headers",
            "access-control-max-age",
            "content-type",
            "server",
        ];
        self
    }
    fn listener(mut self, l: &'static str) -> Case {
        self.listener = l;
        self
    }
    fn body(mut self, b: &[u8]) -> Case {
        self.req.body = b.to_vec();
        self
    }
    fn body_prefix(mut self, n: usize) -> Case {
        self.body_prefix = n;
        self
    }
}

/// Headers that steer Envoy itself; a client's are not believed.
const CONTROL_HEADERS: &[&str] = &[
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-retriable-status-codes",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-original-url",
    "x-envoy-ip-tags",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
];

fn with_control_headers(mut c: Case) -> Case {
    for h in CONTROL_HEADERS {
        c = c.header(h, "1");
    }
    c.upstream(CONTROL_HEADERS)
}

const XFF_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-envoy-external-address",
    "x-envoy-internal",
];

fn cases() -> Vec<Case> {
    vec![
        // Virtual host selection.
        case("exact domain", "exact.test", "/", 200),
        case("exact domain ignores case", "EXACT.test", "/", 200),
        case("suffix wildcard", "a.suffix.test", "/", 200),
        case(
            "longest suffix wildcard wins",
            "x.deep.suffix.test",
            "/",
            200,
        ),
        case("prefix wildcard", "prefix.anything.example", "/", 200),
        case("domain with port", "port.test:8080", "/", 200),
        case("catch-all domain", "unknown.example", "/", 200),
        case(
            "no route in the virtual host is 404",
            "noroute.test",
            "/other",
            404,
        ),
        case(
            "exact path in a narrow virtual host",
            "noroute.test",
            "/only",
            200,
        ),
        // Path matching.
        case("exact path", "main", "/exact", 200),
        case(
            "exact path does not match a longer path",
            "main",
            "/exactly",
            200,
        ),
        case("case-insensitive prefix", "main", "/caseinsensitive/x", 200),
        case("regex path", "main", "/regex/123", 200),
        case(
            "regex path must match whole path",
            "main",
            "/regex/12a",
            200,
        ),
        case("separated prefix, exact", "main", "/sep", 200),
        case("separated prefix, child", "main", "/sep/child", 200),
        case(
            "separated prefix is not a plain prefix",
            "main",
            "/sepx",
            200,
        ),
        // Header matching.
        case("header exact", "main", "/hdr", 200).header("x-version", "v2"),
        case("header prefix", "main", "/hdr", 200).header("x-pre", "abcdef"),
        case("header suffix ignoring case", "main", "/hdr", 200).header("x-suffix", "fooXYZ"),
        case("header contains", "main", "/hdr", 200).header("x-contains", "amidb"),
        case("header regex", "main", "/hdr", 200).header("x-regex", "abc-123"),
        case("header regex is a full match", "main", "/hdr", 200).header("x-regex", "abc-123x"),
        case("header present", "main", "/hdr", 200).header("x-present", ""),
        case("inverted header match", "main", "/hdr", 200).header("x-not", "yes"),
        case("inverted header match, equal value", "main", "/hdr", 200).header("x-not", "no"),
        case(":method pseudo-header", "main", "/hdr", 200).method("DELETE"),
        case("no header matches: direct response", "main", "/hdr", 200),
        // Query parameters.
        case("query exact", "main", "/query?version=v2", 200),
        case("query other value", "main", "/query?version=v3", 200),
        case("query present", "main", "/query?a=1&debug", 200),
        case(
            "query percent-encoded",
            "main",
            "/query?version=%76%32",
            200,
        ),
        // Weighted clusters with header operations (the split itself: weighted_split_agrees).
        // Rewrites.
        case(
            "prefix rewrite keeps the query",
            "main",
            "/rewrite/prefix/a?x=1",
            200,
        )
        .upstream(&["x-envoy-original-path"]),
        case(
            "regex rewrite with groups",
            "main",
            "/rewrite/regex/one/two",
            200,
        )
        .upstream(&["x-envoy-original-path"]),
        case("host rewrite", "main", "/hostrewrite", 200),
        // Redirects.
        case("https redirect", "main", "/redirect/https?q=1", 301),
        case(
            "host and port redirect",
            "main:8000",
            "/redirect/host/x",
            302,
        ),
        case(
            "path redirect strips the query",
            "main",
            "/redirect/path?q=1",
            303,
        ),
        case("prefix redirect", "main", "/redirect/prefix/rest?q=1", 307),
        case(
            "scheme redirect keeps a non-default port",
            "main:8080",
            "/redirect/scheme",
            308,
        ),
        case(
            "https redirect drops port 80",
            "main:80",
            "/redirect/https",
            301,
        ),
        case(
            "https redirect keeps port 8080",
            "main:8080",
            "/redirect/https",
            301,
        ),
        // Direct responses.
        case("direct response with body", "main", "/direct/teapot", 418),
        case("direct response without body", "main", "/direct/empty", 204),
        // Header operations at route, virtual host and route configuration level.
        case("header operations", "main", "/headers", 200)
            .header("x-appended", "one")
            .header("x-overwritten", "old")
            .header("x-if-absent", "client")
            .header("x-remove-me", "1")
            .upstream(&[
                "x-added",
                "x-appended",
                "x-overwritten",
                "x-if-absent",
                "x-remove-me",
                "x-vhost-added",
            ])
            .response(&[
                "x-resp-added",
                "x-upstream-secret",
                "x-route-config",
                "content-type",
            ]),
        case("headers Envoy adds upstream", "main", "/", 200).upstream(&[
            "x-forwarded-proto",
            "x-request-id?",
            "x-envoy-expected-rq-timeout-ms",
            "x-forwarded-for",
        ]),
        case("client x-request-id is kept", "main", "/", 200)
            .header("x-request-id", "abc")
            .upstream(&["x-request-id"]),
        // Cluster selection and upstream failures.
        case("cluster from a header", "main", "/clusterheader", 200).header("x-cluster", "v3"),
        case(
            "cluster header names no cluster",
            "main",
            "/clusterheader",
            503,
        )
        .header("x-cluster", "nope"),
        case("cluster header missing", "main", "/clusterheader", 503),
        case("unknown cluster", "main", "/missing-cluster", 503),
        case(
            "unknown cluster with NOT_FOUND",
            "main",
            "/missing-cluster-404",
            404,
        ),
        case("connection refused is 503", "main", "/dead", 503).body_prefix(57),
        case("no hosts is 503", "main", "/empty", 503),
        case("route timeout is 504", "main", "/timeout", 504),
        case("timeout 0s disables the timeout", "main", "/notimeout", 200)
            .upstream(&["x-envoy-expected-rq-timeout-ms"]),
        case("upstream status passes through", "main", "/status/503", 503),
        case(
            "priority failover past unhealthy hosts",
            "main",
            "/priority",
            200,
        ),
        case("STRICT_DNS cluster", "main", "/dns", 200),
        // Protocols.
        case("h2c downstream", "main", "/exact", 200).h2(),
        case("h2c downstream with headers", "main", "/hdr", 200)
            .h2()
            .header("x-version", "v2"),
        case("HTTP/2 upstream", "main", "/h2up", 200),
        case(
            "downstream protocol upstream, HTTP/1.1",
            "main",
            "/downstream-proto",
            200,
        ),
        case(
            "downstream protocol upstream, h2c",
            "main",
            "/downstream-proto",
            200,
        )
        .h2(),
        case("POST body reaches the upstream", "main", "/post", 200)
            .method("POST")
            .body(&[7u8; 100_000]),
        case("HTTP/1.1-only listener", "main", "/", 200).listener("HTTP1ONLY"),
        case(
            "CORS preflight from an allowed origin",
            "cors.test",
            "/",
            200,
        )
        .cors("https://app.example", Some("PUT")),
        case("CORS preflight, origin by regex", "cors.test", "/x", 200)
            .cors("https://shop.regex.example", Some("GET")),
        case(
            "CORS preflight, route policy over vhost",
            "cors.test",
            "/route-policy",
            200,
        )
        .cors("https://route.example", Some("DELETE")),
        case(
            "CORS preflight from another origin goes upstream",
            "cors.test",
            "/",
            200,
        )
        .cors("https://evil.example", Some("GET")),
        case(
            "CORS preflight refused, not forwarded",
            "cors.test",
            "/strict",
            200,
        )
        .cors("https://evil.example", Some("GET")),
        case(
            "CORS simple request from an allowed origin",
            "cors.test",
            "/",
            200,
        )
        .cors("https://app.example", None),
        case(
            "CORS simple request from another origin",
            "cors.test",
            "/",
            200,
        )
        .cors("https://evil.example", None),
        case(
            "CORS disabled by filter_enabled 0%",
            "cors.test",
            "/disabled",
            200,
        )
        .cors("https://app.example", Some("GET")),
        // x-forwarded-for and the trusted client address (use_remote_address, xff_num_trusted_hops).
        case("edge proxy appends the peer to XFF", "main", "/", 200)
            .listener("EDGE0")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .upstream(XFF_HEADERS),
        case("edge proxy without XFF", "main", "/", 200)
            .listener("EDGE0")
            .upstream(XFF_HEADERS),
        case(
            "one trusted hop picks the client from XFF",
            "main",
            "/",
            200,
        )
        .listener("EDGE")
        .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
        .header("x-forwarded-proto", "https")
        .upstream(XFF_HEADERS),
        case("one trusted hop, internal client in XFF", "main", "/", 200)
            .listener("EDGE")
            .header("x-forwarded-for", "10.1.2.3")
            .header("x-envoy-internal", "true")
            .upstream(XFF_HEADERS),
        with_control_headers(
            case("control headers from an edge client", "main", "/", 200).listener("EDGE0"),
        ),
        with_control_headers(
            case("control headers behind a trusted hop", "main", "/", 200).listener("INNER"),
        ),
        case("client x-envoy-internal is not trusted", "main", "/", 200)
            .listener("EDGE0")
            .header("x-envoy-internal", "true")
            .header("x-envoy-external-address", "1.1.1.1")
            .upstream(XFF_HEADERS),
        case("no remote address: XFF passes unchanged", "main", "/", 200)
            .listener("INNER")
            .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
            .header("x-forwarded-proto", "https")
            .upstream(XFF_HEADERS),
        case(
            "stream idle timeout before the response",
            "main",
            "/slow/1500",
            504,
        )
        .listener("EDGE"),
        case(
            "CORS headers on a local reply",
            "cors.test",
            "/strict/status",
            200,
        )
        .cors("https://app.example", None),
    ]
}

/// What a user could see of one exchange.
#[derive(Debug, PartialEq)]
struct Observed {
    status: u16,
    upstream: Option<serde_json::Value>,
    response_headers: BTreeMap<String, String>,
    local_body: Option<String>,
}

fn observe(case: &Case, resp: &Resp) -> Observed {
    let mut response_headers = BTreeMap::new();
    for name in case.response_headers {
        let value = resp
            .headers
            .get_all(*name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(",");
        response_headers.insert(name.to_string(), value);
    }
    match resp.json() {
        Some(json) => {
            let mut seen = BTreeMap::new();
            for name in case.upstream_headers {
                let (name, presence) = match name.strip_suffix('?') {
                    Some(n) => (n, true),
                    None => (*name, false),
                };
                let value = json["headers"][name].as_str().map(str::to_string);
                let value = if presence {
                    value.map(|_| "present".to_string())
                } else {
                    value
                };
                seen.insert(name.to_string(), value);
            }
            let upstream = serde_json::json!({
                "upstream": json["upstream"],
                "method": json["method"],
                "path": json["path"],
                "authority": json["authority"],
                "version": json["version"],
                "body_len": json["body_len"],
                "headers": seen,
            });
            Observed {
                status: resp.status,
                upstream: Some(upstream),
                response_headers,
                local_body: None,
            }
        }
        None => {
            let body = String::from_utf8_lossy(&resp.body);
            let body: String = body.chars().take(case.body_prefix).collect();
            Observed {
                status: resp.status,
                upstream: None,
                response_headers,
                local_body: Some(body),
            }
        }
    }
}

struct Pair {
    envoy: Proxy,
    weft: Proxy,
}

async fn start_pair() -> Pair {
    let v1 = support::start_echo("v1").await;
    let v2 = support::start_echo("v2").await;
    let v3 = support::start_echo("v3").await;
    let tcp = support::start_tcp_echo().await;
    let dead = support::free_port();
    let given = [
        ("V1", v1.port()),
        ("V2", v2.port()),
        ("V3", v3.port()),
        ("TCPECHO", tcp.port()),
        ("DEAD", dead),
    ];
    let envoy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Envoy, TEMPLATE, &given));
    let weft = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, TEMPLATE, &given));
    Pair {
        envoy: envoy.await.unwrap(),
        weft: weft.await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_matrix_matches_envoy() {
    let pair = start_pair().await;
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the issue asks for at least 40 scenarios"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let envoy = request(pair.envoy.addr(case.listener), &case.req).await;
        let weft = request(pair.weft.addr(case.listener), &case.req).await;
        let (e, w) = (observe(case, &envoy), observe(case, &weft));
        if e.status != case.status {
            failures.push(format!(
                "{}: Envoy answered {} where the case expects {}",
                case.name, e.status, case.status
            ));
        }
        if e != w {
            failures.push(format!("{}:\n  envoy: {e:?}\n  weft:  {w:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// 80/20 weighted clusters over 400 requests: each proxy's share of v1 must lie within
/// 8 points of 80 % (four standard deviations of a binomial with n = 400, p = 0.8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_agrees() {
    let pair = start_pair().await;
    for proxy in [&pair.envoy, &pair.weft] {
        let mut v1 = 0;
        let mut canary_headers = 0;
        for _ in 0..400 {
            let r = request(proxy.addr("HTTP"), &Req::get("main", "/weighted")).await;
            let json = r.json().unwrap();
            match json["upstream"].as_str() {
                Some("v1") => v1 += 1,
                Some("v2") => {
                    // The header belongs to the v2 entry of weighted_clusters only.
                    if json["headers"]["x-canary"] == "true" {
                        canary_headers += 1;
                    }
                }
                other => panic!("{:?}: unexpected upstream {other:?}", proxy.kind),
            }
        }
        let share = f64::from(v1) / 400.0;
        assert!(
            (share - 0.8).abs() <= 0.08,
            "{:?}: v1 share {share}",
            proxy.kind
        );
        assert_eq!(
            canary_headers,
            400 - v1,
            "{:?}: x-canary only and always on v2",
            proxy.kind
        );
    }
}

/// Round robin over three hosts: 30 requests give each host exactly 10, in both proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_agrees() {
    let pair = start_pair().await;
    for proxy in [&pair.envoy, &pair.weft] {
        let mut counts = BTreeMap::new();
        for _ in 0..30 {
            let r = request(proxy.addr("HTTP"), &Req::get("main", "/rr")).await;
            *counts
                .entry(r.json().unwrap()["upstream"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        let expected: BTreeMap<String, i32> = [("v1", 10), ("v2", 10), ("v3", 10)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(counts, expected, "{:?}", proxy.kind);
    }
}

/// RING_HASH and MAGLEV place each key on the same host in both proxies: the tables are built
/// as Envoy builds them. Keys must spread over the hosts, and a generated cookie has Envoy's form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_agrees_host_for_host() {
    let pair = start_pair().await;
    let upstream = |r: &Resp| r.json().unwrap()["upstream"].as_str().unwrap().to_string();
    for path in ["/header", "/maglev", "/query", "/cookie", "/both"] {
        let mut seen = BTreeMap::new();
        for i in 0..40 {
            let key = format!("user-{i}");
            let mut req = Req::get("hash.test", &format!("{path}?user={key}"));
            req.headers.push(("x-user".into(), key.clone()));
            req.headers.push(("cookie".into(), format!("sticky={key}")));
            let e = upstream(&request(pair.envoy.addr("HTTP"), &req).await);
            let w = upstream(&request(pair.weft.addr("HTTP"), &req).await);
            assert_eq!(e, w, "{path} key {key}: Envoy chose {e}, Weft {w}");
            *seen.entry(e).or_insert(0) += 1;
        }
        assert!(seen.len() >= 2, "{path}: 40 keys all went to {seen:?}");
    }
    // Without the cookie, both create it (value aside, same form) and hash by it.
    let re = regex::Regex::new(r#"^sticky="[0-9a-f]{16}"; Max-Age=60; Path=/; HttpOnly$"#).unwrap();
    for proxy in [&pair.envoy, &pair.weft] {
        let r = request(proxy.addr("HTTP"), &Req::get("hash.test", "/cookie")).await;
        let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(re.is_match(&cookie), "{:?}: {cookie}", proxy.kind);
        let value = cookie.split('"').nth(1).unwrap().to_string();
        let mut again = Req::get("hash.test", "/cookie");
        again
            .headers
            .push(("cookie".into(), format!("sticky={value}")));
        let first = upstream(&request(proxy.addr("HTTP"), &again).await);
        for _ in 0..5 {
            assert_eq!(upstream(&request(proxy.addr("HTTP"), &again).await), first);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_and_malformed_http_agree() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pair = start_pair().await;
    let mut results = Vec::new();
    for proxy in [&pair.envoy, &pair.weft] {
        // TCP: bytes come back unchanged through tcp_proxy.
        let mut s = tokio::net::TcpStream::connect(proxy.addr("TCP"))
            .await
            .unwrap();
        let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        s.write_all(&payload).await.unwrap();
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, payload, "{:?}", proxy.kind);
        // Malformed requests: status line of the answer.
        let bad_header = support::raw(
            proxy.addr("HTTP"),
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        )
        .await;
        let bad_version = support::raw(proxy.addr("HTTP"), b"\x01\x02 garbage\r\n\r\n").await;
        let huge = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        );
        let too_large = support::raw(proxy.addr("HTTP"), huge.as_bytes()).await;
        results.push((bad_header, bad_version, too_large));
    }
    let status = |line: &str| line.split(' ').nth(1).unwrap_or("").to_string();
    let (e, w) = (&results[0], &results[1]);
    assert_eq!(status(&e.0), "400", "Envoy: {e:?}");
    assert_eq!(
        (status(&e.0), status(&e.1), status(&e.2)),
        (status(&w.0), status(&w.1), status(&w.2)),
        "envoy {e:?} weft {w:?}"
    );
}

/// A websocket upgrade through each proxy: 101 with the upgrade headers, then bytes both ways
/// through the tunnel (a masked text frame, echoed by the upstream). An upgrade type the
/// connection manager does not list must get the same answer from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_agrees() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pair = start_pair().await;
    let mut other_upgrade = Vec::new();
    for proxy in [&pair.envoy, &pair.weft] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr("HTTP"))
            .await
            .unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: main\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            let mut rest = vec![0u8; 2000];
            let n = s.read(&mut rest).await.unwrap_or(0);
            panic!(
                "{:?}: {head}{}",
                proxy.kind,
                String::from_utf8_lossy(&rest[..n])
            );
        }
        assert!(
            head.contains("upgrade: websocket"),
            "{:?}: {head}",
            proxy.kind
        );
        assert!(head.contains("x-upstream: v1"), "{:?}: {head}", proxy.kind);
        // A masked text frame "hello" (RFC 6455 §5.7), then raw bytes after it.
        let frame = [
            0x81u8, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        s.write_all(&frame).await.unwrap();
        let mut back = [0u8; 11];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, frame, "{:?}", proxy.kind);

        let mut r = Req::get("main", "/other-upgrade");
        r.headers = vec![
            ("connection".into(), "upgrade".into()),
            ("upgrade".into(), "foo".into()),
        ];
        let resp = request(proxy.addr("HTTP"), &r).await;
        other_upgrade.push((
            resp.status,
            resp.json().map(|j| j["headers"]["upgrade"].clone()),
        ));
    }
    assert_eq!(
        other_upgrade[0], other_upgrade[1],
        "envoy vs weft for an unlisted upgrade type"
    );
}

/// A masked websocket text frame "hello" (RFC 6455 §5.7): written into a tunnel, it must come
/// back unchanged from the echoing upstream.
const HELLO_FRAME: [u8; 11] = [
    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];

/// Writes the frame into a tunnel and reads it back; whether it came back whole.
async fn frame_echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if s.write_all(&HELLO_FRAME).await.is_err() {
        return false;
    }
    let mut back = [0u8; 11];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut back)).await;
    matches!(read, Ok(Ok(_))) && back == HELLO_FRAME
}

/// Websockets across HTTP versions, as Envoy's codecs carry them. A client's HTTP/2 extended
/// CONNECT (with `allow_connect`) reaches an HTTP/1.1 upstream as `GET` + `Upgrade` and its 101
/// comes back as 200; towards an HTTP/2 upstream it stays an extended CONNECT; an HTTP/1.1
/// upgrade towards an HTTP/2 upstream becomes one and its 200 comes back as 101. Without
/// `allow_connect`, the extended CONNECT is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_agrees() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pair = start_pair().await;
    let mut seen = Vec::new();
    for proxy in [&pair.envoy, &pair.weft] {
        let mut observed = Vec::new();
        for path in ["/chat", "/to-h2/chat"] {
            let outcome = support::h2_websocket(proxy.addr("WS"), "ws.test", path).await;
            let (status, headers, tunnel) =
                outcome.unwrap_or_else(|e| panic!("{:?} {path}: {e}", proxy.kind));
            let header = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_string());
            let echoed = match tunnel {
                Some(mut t) => frame_echoes(&mut t).await,
                None => false,
            };
            observed.push(format!(
                "h2 {path}: {status} upgrade={:?} arrived={:?} from={:?} echoed={echoed}",
                header("upgrade"),
                header("x-upstream-upgrade"),
                header("x-upstream"),
            ));
        }
        // An HTTP/1.1 upgrade towards the HTTP/2 upstream.
        let mut s = tokio::net::TcpStream::connect(proxy.addr("WS"))
            .await
            .unwrap();
        s.write_all(
            b"GET /to-h2/chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if s.read_exact(&mut byte).await.is_err() {
                break;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let line = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        };
        let echoed = frame_echoes(&mut s).await;
        observed.push(format!(
            "h1 /to-h2/chat: {:?} upgrade={:?} connection={:?} arrived={:?} echoed={echoed}",
            head.lines().next(),
            line("upgrade"),
            line("connection"),
            line("x-upstream-upgrade"),
        ));
        // A listener without `allow_connect` does not take an extended CONNECT.
        let refused = support::h2_websocket(proxy.addr("HTTP"), "main", "/ws").await;
        observed.push(format!(
            "h2 without allow_connect: took={}",
            matches!(refused, Ok((200, _, Some(_))))
        ));
        seen.push(observed);
    }
    let expected = [
        "h2 /chat: 200 upgrade=None arrived=Some(\"GET /chat upgrade=websocket\") from=Some(\"v1\") echoed=true",
        "h2 /to-h2/chat: 200 upgrade=None arrived=Some(\"CONNECT /to-h2/chat :protocol=websocket\") from=Some(\"v1\") echoed=true",
        "h1 /to-h2/chat: Some(\"http/1.1 101 switching protocols\") upgrade=Some(\"websocket\") connection=Some(\"upgrade\") arrived=Some(\"connect /to-h2/chat :protocol=websocket\") echoed=true",
        "h2 without allow_connect: took=false",
    ];
    assert_eq!(seen[0], expected, "Envoy");
    assert_eq!(seen[0], seen[1], "envoy vs weft");
}

/// gRPC over h2c to an HTTP/2 upstream: a bidirectional stream where each message is sent only
/// after the previous one came back, then the upstream's trailers (`grpc-status`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bidirectional_stream_agrees() {
    let pair = start_pair().await;
    let messages: [&[u8]; 3] = [b"first", b"second message", &[0u8; 20_000]];
    let mut seen = Vec::new();
    for proxy in [&pair.envoy, &pair.weft] {
        let (status, echoed, trailers) =
            support::grpc_stream(proxy.addr("HTTP"), "/echo.Echo/Chat", &messages).await;
        assert_eq!(status, 200, "{:?}", proxy.kind);
        let expected: Vec<Vec<u8>> = messages.iter().map(|m| m.to_vec()).collect();
        assert_eq!(echoed, expected, "{:?}", proxy.kind);
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
            Some("0"),
            "{:?}",
            proxy.kind
        );
        seen.push(trailers.get("x-upstream").cloned());
    }
    assert_eq!(seen[0], seen[1]);
}

/// Sends `parts` one after another with `gap` between them, then reads the response until the
/// proxy closes the connection (or 5 s pass). Returns the response text and when its first byte
/// came (Envoy lingers up to its 1 s `delayed_close_timeout` before closing).
async fn dribble(
    addr: std::net::SocketAddr,
    parts: &[&[u8]],
    gap: std::time::Duration,
) -> (String, std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.split();
    let write = async {
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            if w.write_all(part).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    let mut out = Vec::new();
    let mut first_byte = None;
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            first_byte.get_or_insert_with(|| start.elapsed());
            out.extend_from_slice(&buf[..n]);
        }
    };
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), read);
    tokio::select! {
        _ = read => {}
        () = write => {}
    }
    let took = first_byte.unwrap_or_else(|| start.elapsed());
    (String::from_utf8_lossy(&out).into_owned(), took)
}

/// `request_timeout` (0.3 s) and `stream_idle_timeout` (0.5 s) on the EDGE listener end streams
/// where Envoy ends them, with Envoy's statuses, bodies and counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_timers_agree() {
    let pair = start_pair().await;
    let gap = std::time::Duration::from_millis(150);
    for proxy in [&pair.envoy, &pair.weft] {
        let addr = proxy.addr("EDGE");
        let kind = format!("{:?}", proxy.kind);
        // Half a body, then nothing: the request never completes.
        let (resp, _) = dribble(
            addr,
            &[b"POST /post HTTP/1.1\r\nhost: main\r\ncontent-length: 10\r\n\r\nhalf."],
            gap,
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 408"), "{kind}: {resp}");
        assert!(resp.ends_with("request timeout"), "{kind}: {resp}");
        // A body that keeps moving is never idle, but it is still late.
        let (resp, took) = dribble(
            addr,
            &[
                b"POST /post HTTP/1.1\r\nhost: main\r\ncontent-length: 5\r\n\r\n",
                b"a",
                b"b",
                b"c",
                b"d",
                b"e",
            ],
            gap,
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 408"), "{kind}: {resp}");
        assert!(resp.ends_with("request timeout"), "{kind}: {resp}");
        assert!(
            took < std::time::Duration::from_millis(700),
            "{kind}: {took:?}"
        );
        // An upstream that stops halfway through its body: the response is cut off.
        let (resp, _) = dribble(
            addr,
            &[b"GET /drip/2000 HTTP/1.1\r\nhost: main\r\n\r\n"],
            gap,
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{kind}: {resp}");
        assert!(resp.contains("first;"), "{kind}: {resp}");
        assert!(!resp.contains("second;"), "{kind}: {resp}");
        let stats = proxy.admin("/stats").await;
        assert_eq!(
            counter(&stats, "http.diff_edge.downstream_rq_timeout"),
            2,
            "{kind}"
        );
        assert!(
            counter(&stats, "http.diff_edge.downstream_rq_idle_timeout") >= 1,
            "{kind}"
        );
    }
}

/// One gRPC call over h2c: (HTTP status, grpc-status, grpc-message, messages received), the
/// status read from the trailers or, for a trailers-only answer, from the headers.
async fn grpc_unary(
    addr: std::net::SocketAddr,
    authority: &str,
    path: &str,
) -> (u16, Option<String>, Option<String>, usize) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut message = vec![0u8, 0, 0, 0, 5];
    message.extend_from_slice(b"hello");
    let req = http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from(message)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    let get = |name: &str| {
        trailers
            .get(name)
            .or_else(|| headers.get(name))
            .map(|v| v.to_str().unwrap().to_string())
    };
    let messages = if body.is_empty() { 0 } else { 1 };
    (status, get("grpc-status"), get("grpc-message"), messages)
}

/// gRPC unary calls: a success, a trailers-only failure from the upstream, and the proxy's own
/// failures (no cluster host, no route), which Envoy answers as gRPC (HTTP 200, grpc-status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_errors_agree() {
    let pair = start_pair().await;
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("unary call", "main", "/echo.Echo/Say", 200, "0"),
        (
            "trailers-only failure",
            "main",
            "/echo.Echo/Fail",
            200,
            "14",
        ),
        (
            "connection refused",
            "main",
            "/dead/echo.Echo/Say",
            200,
            "14",
        ),
        ("no route", "noroute.test", "/echo.Echo/Say", 200, "12"),
    ];
    let mut failures = Vec::new();
    for (name, authority, path, status, grpc_status) in cases {
        let envoy = grpc_unary(pair.envoy.addr("HTTP"), authority, path).await;
        let weft = grpc_unary(pair.weft.addr("HTTP"), authority, path).await;
        if envoy.0 != *status || envoy.1.as_deref() != Some(*grpc_status) {
            failures.push(format!("{name}: Envoy gave {envoy:?}"));
        }
        // The message text of a proxy failure carries Envoy's transport details: compare its start.
        let trim = |m: &Option<String>| m.as_ref().map(|m| m.chars().take(40).collect::<String>());
        if (envoy.0, &envoy.1, trim(&envoy.2), envoy.3) != (weft.0, &weft.1, trim(&weft.2), weft.3)
        {
            failures.push(format!("{name}:\n  envoy: {envoy:?}\n  weft:  {weft:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
