//! TLS to upstreams (`transport_socket` with an `UpstreamTlsContext`) in real Envoy 1.40 and
//! `weft proxy` with one bootstrap (tests/data/upstream_tls.yaml): SNI, CA validation, a CA that
//! does not match, no validation at all, ALPN for HTTP/2, a client certificate for an upstream
//! that requires one, and tcp_proxy over TLS. The upstreams are rustls servers that report what
//! the handshake showed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::certs::{Leaf, ca, leaf, leaf_expired, server_config};
use support::{Kind, Proxy, Req, request};

const TEMPLATE: &str = include_str!("data/upstream_tls.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_behaves_like_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("weft test CA");
    let other = ca("another CA");
    let Leaf {
        chain: server_chain,
        key: server_key,
        ..
    } = leaf(&ca1, &["upstream.test"]);
    let client = leaf(&ca1, &["client.test"]);
    let (client_pem, client_key_pem) = (client.pem, client.key_pem);
    for (file, text) in [
        ("ca.pem", &ca1.pem),
        ("other-ca.pem", &other.pem),
        ("client.pem", &client_pem),
        ("client-key.pem", &client_key_pem),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let tls = support::start_tls_echo(server_config(
        server_chain.clone(),
        server_key.clone_key(),
        None,
    ))
    .await;
    let mtls = support::start_tls_echo(server_config(server_chain, server_key, Some(&ca1))).await;
    let template = TEMPLATE.replace("@DIR@", dir.path().to_str().unwrap());
    // A server whose certificate (of the right CA) has expired.
    let old = leaf_expired(&ca1, &["upstream.test"]);
    let expired = support::start_tls_echo(server_config(old.chain, old.key, None)).await;
    let given = [
        ("TLS", tls.port()),
        ("MTLS", mtls.port()),
        ("EXPIRED", expired.port()),
    ];
    let t = template.clone();
    let envoy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Envoy, &t, &given));
    let weft = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, &template, &given));
    let (envoy, weft) = (envoy.await.unwrap(), weft.await.unwrap());

    let cases: &[(&str, u16, Option<&str>)] = &[
        (
            "/verified",
            200,
            Some("tls sni=upstream.test alpn=http/1.1 client=no"),
        ),
        ("/wrong-ca", 503, None),
        ("/expired", 503, None),
        ("/unverified", 200, Some("tls sni= alpn=http/1.1 client=no")),
        ("/h2", 200, Some("tls sni=upstream.test alpn=h2 client=no")),
        (
            "/mtls",
            200,
            Some("tls sni=upstream.test alpn=http/1.1 client=yes"),
        ),
        ("/no-client-cert", 503, None),
    ];
    let mut failures = Vec::new();
    for (path, status, upstream) in cases {
        for proxy in [&envoy, &weft] {
            let r = request(proxy.addr("HTTP"), &Req::get("svc", path)).await;
            let got = r
                .json()
                .and_then(|j| j["upstream"].as_str().map(str::to_string));
            if r.status != *status || got.as_deref() != *upstream {
                failures.push(format!(
                    "{:?} {path}: {} {got:?}, want {status} {upstream:?}",
                    proxy.kind, r.status
                ));
            }
        }
    }
    // tcp_proxy originates TLS too; with no ALPN configured it offers none.
    for proxy in [&envoy, &weft] {
        let head = support::raw(
            proxy.addr("TCP"),
            b"GET /tcp HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n",
        )
        .await;
        if !head.starts_with("HTTP/1.1 200") {
            failures.push(format!("{:?} tcp_proxy over TLS: {head}", proxy.kind));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let stats = weft.admin("/stats").await;
    assert!(
        stats
            .lines()
            .any(|l| l == "cluster.wrong_ca.upstream_cx_connect_fail: 1"),
        "{stats}"
    );
}
