//! Listener filters and filter chain matching, against real Envoy 1.40 with one bootstrap
//! (tests/data/listener_filters.yaml): `tls_inspector` (SNI, ALPN), `http_inspector` (HTTP/1.x,
//! h2c), Envoy's order of match criteria and its most-specific-wins rule, the default
//! `raw_buffer` transport, and `listener_filters_timeout` for clients that wait for the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{Kind, Proxy, Req, request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TEMPLATE: &str = include_str!("data/listener_filters.yaml");

/// The first flight of a real TLS client (rustls): a ClientHello with this SNI (none for an IP
/// address) and ALPN list.
fn client_hello(server: &str, alpn: &[&str]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls_pki_types::ServerName::try_from(server.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    conn.write_tls(&mut bytes).unwrap();
    bytes
}

/// Sends `bytes` and returns the first line the upstream behind the chosen chain writes.
async fn banner(addr: SocketAddr, bytes: &[u8]) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    w.write_all(bytes).await.unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(r);
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    drop(w);
    line.trim_end().to_string()
}

struct Setup {
    envoy: Proxy,
    weft: Proxy,
}

async fn setup() -> Setup {
    let mut given = Vec::new();
    for (key, name) in [
        ("API", "api"),
        ("WILD", "wild"),
        ("DEEP", "deep"),
        ("TLS_H2", "tls_h2"),
        ("TLS_ANY", "tls_any"),
        ("RAW", "raw"),
    ] {
        given.push((key, support::start_tcp_banner(name).await.port()));
    }
    given.push(("V1", support::start_echo("v1").await.port()));
    given.push(("V2", support::start_echo("v2").await.port()));
    let g = given.clone();
    let envoy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Envoy, TEMPLATE, &g));
    let weft = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, TEMPLATE, &given));
    Setup {
        envoy: envoy.await.unwrap(),
        weft: weft.await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_chains_are_chosen_like_envoy() {
    let s = setup().await;
    let tls_cases: &[(&str, &str, &[&str], &str)] = &[
        ("exact SNI", "api.example.com", &[], "api"),
        ("exact SNI, any case", "API.Example.com", &["h2"], "api"),
        ("wildcard SNI", "shop.example.com", &[], "wild"),
        ("longer wildcard wins", "a.b.deep.example.com", &[], "deep"),
        (
            "unknown SNI with ALPN h2",
            "other.org",
            &["h2", "http/1.1"],
            "tls_h2",
        ),
        (
            "unknown SNI, other ALPN",
            "other.org",
            &["http/1.1"],
            "tls_any",
        ),
        ("no SNI (IP address)", "127.0.0.1", &[], "tls_any"),
    ];
    let mut failures = Vec::new();
    for proxy in [&s.envoy, &s.weft] {
        let addr = proxy.addr("INSPECT");
        for (case, sni, alpn, want) in tls_cases {
            let got = banner(addr, &client_hello(sni, alpn)).await;
            if got != *want {
                failures.push(format!("{:?} {case}: {got:?}, want {want:?}", proxy.kind));
            }
        }
        let got = banner(addr, b"hello there\n").await;
        if got != "raw" {
            failures.push(format!("{:?} plain bytes: {got:?}", proxy.kind));
        }
        // Without inspectors the transport is raw_buffer, whatever the bytes.
        let got = banner(proxy.addr("BLIND"), &client_hello("api.example.com", &[])).await;
        if got != "raw" {
            failures.push(format!("{:?} TLS without inspector: {got:?}", proxy.kind));
        }
        let r = request(addr, &Req::get("any", "/")).await;
        let upstream = r.json().map(|j| j["upstream"].clone());
        if upstream != Some("v1".into()) {
            failures.push(format!(
                "{:?} HTTP/1.1: {} {upstream:?}",
                proxy.kind, r.status
            ));
        }
        let mut h2 = Req::get("any", "/");
        h2.h2 = true;
        let r = request(addr, &h2).await;
        let upstream = r.json().map(|j| j["upstream"].clone());
        if upstream != Some("v2".into()) {
            failures.push(format!("{:?} h2c: {} {upstream:?}", proxy.kind, r.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A client that waits for the server to speak first: after `listener_filters_timeout` (0.5 s)
/// the connection goes on with what is known (`continue_on_listener_filters_timeout`), and the
/// timeout is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_protocols_continue_after_the_listener_filter_timeout() {
    let s = setup().await;
    for proxy in [&s.envoy, &s.weft] {
        let addr = proxy.addr("INSPECT");
        let start = std::time::Instant::now();
        let got = banner(addr, b"").await;
        let waited = start.elapsed();
        assert_eq!(got, "raw", "{:?}", proxy.kind);
        assert!(
            waited >= Duration::from_millis(450),
            "{:?}: chain chosen after {waited:?}, before the timeout",
            proxy.kind
        );
        let stats = proxy.admin("/stats").await;
        let key = format!(
            "listener.127.0.0.1_{}.downstream_pre_cx_timeout: 1",
            addr.port()
        );
        assert!(
            stats.lines().any(|l| l == key),
            "{:?}: no {key} in\n{}",
            proxy.kind,
            stats
                .lines()
                .filter(|l| l.contains("pre_cx"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
