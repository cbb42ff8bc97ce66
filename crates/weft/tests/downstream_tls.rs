//! TLS termination on filter chains (`transport_socket` with a `DownstreamTlsContext`) and
//! virtual hosts' `require_tls`, in real Envoy 1.40 and `weft proxy` with one bootstrap
//! (tests/data/downstream_tls.yaml): chains chosen by SNI, ALPN h2 and HTTP/1.1, client
//! certificates required, `x-forwarded-proto`, the redirect to https, and the listener's
//! `ssl.*` counters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::certs::{ca, client_config, leaf, leaf_expired};
use support::{Kind, Proxy, Req, counter, request, try_request_tls};

const TEMPLATE: &str = include_str!("data/downstream_tls.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_and_require_tls_behave_like_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("weft test CA");
    let stranger = ca("a CA nobody trusts");
    let a = leaf(&ca1, &["a.test"]);
    let b = leaf(&ca1, &["b.test"]);
    let client = leaf(&ca1, &["client.test"]);
    let untrusted_client = leaf(&stranger, &["client.test"]);
    let expired_client = leaf_expired(&ca1, &["client.test"]);
    for (file, text) in [
        ("ca.pem", &ca1.pem),
        ("a.pem", &a.pem),
        ("a-key.pem", &a.key_pem),
        ("b.pem", &b.pem),
        ("b-key.pem", &b.key_pem),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let echo = support::start_echo("echo").await;
    let template = TEMPLATE.replace("@DIR@", dir.path().to_str().unwrap());
    let given = [("ECHO", echo.port())];
    let t = template.clone();
    let envoy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Envoy, &t, &given));
    let weft = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, &template, &given));
    let (envoy, weft) = (envoy.await.unwrap(), weft.await.unwrap());

    let plain = client_config(&ca1, None);
    let with_cert = client_config(&ca1, Some(&client));
    let with_untrusted = client_config(&ca1, Some(&untrusted_client));
    let with_expired = client_config(&ca1, Some(&expired_client));
    let mut failures = Vec::new();
    for proxy in [&envoy, &weft] {
        let kind = proxy.kind;
        let https = proxy.addr("HTTPS");
        // Server TLS, HTTP/1.1 and h2 by ALPN; the upstream hears it came over https.
        for h2 in [false, true] {
            let mut req = Req::get("a.test", "/x");
            req.h2 = h2;
            match try_request_tls(https, &req, &plain, "a.test").await {
                Ok(r) => {
                    let j = r.json().unwrap_or_default();
                    let proto = j["headers"]["x-forwarded-proto"].as_str().unwrap_or("");
                    if r.status != 200 || proto != "https" || j["path"] != "/x" {
                        failures.push(format!(
                            "{kind:?} a.test h2={h2}: {} proto={proto:?} {j}",
                            r.status
                        ));
                    }
                }
                Err(e) => failures.push(format!("{kind:?} a.test h2={h2}: {e}")),
            }
        }
        // The chain for b.test presents b's certificate and wants the client's.
        match try_request_tls(https, &Req::get("b.test", "/y"), &with_cert, "b.test").await {
            Ok(r) if r.status == 200 => {}
            other => failures.push(format!("{kind:?} b.test with a certificate: {other:?}")),
        }
        for (what, config) in [
            ("no certificate", &plain),
            ("an untrusted certificate", &with_untrusted),
            ("an expired certificate", &with_expired),
        ] {
            if let Ok(r) = try_request_tls(https, &Req::get("b.test", "/y"), config, "b.test").await
            {
                failures.push(format!(
                    "{kind:?} b.test with {what}: answered {}",
                    r.status
                ));
            }
        }
        // No chain for another name: the connection is closed.
        if let Ok(r) = try_request_tls(https, &Req::get("c.test", "/"), &plain, "c.test").await {
            failures.push(format!("{kind:?} c.test: answered {}", r.status));
        }
        // require_tls: plain requests to secure.test are sent to https, path and query kept.
        let http = proxy.addr("HTTP");
        let r = request(http, &Req::get("secure.test", "/p?q=1")).await;
        let location = r.headers.get("location").and_then(|v| v.to_str().ok());
        if r.status != 301 || location != Some("https://secure.test/p?q=1") {
            failures.push(format!("{kind:?} secure.test: {} {location:?}", r.status));
        }
        // EXTERNAL_ONLY redirects what is not internal, and a client cannot claim to be: the
        // proxy drops its x-envoy-internal (no address is internal by default).
        let mut claims_internal = Req::get("inside.test", "/");
        claims_internal
            .headers
            .push(("x-envoy-internal".into(), "true".into()));
        let r = request(http, &claims_internal).await;
        if r.status != 301 {
            failures.push(format!("{kind:?} inside.test: {}", r.status));
        }
        let r = request(http, &Req::get("other.test", "/")).await;
        let proto = r.json().unwrap_or_default()["headers"]["x-forwarded-proto"]
            .as_str()
            .map(str::to_string);
        if r.status != 200 || proto.as_deref() != Some("http") {
            failures.push(format!("{kind:?} other.test: {} {proto:?}", r.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Both count the same handshakes: a.test twice and b.test with a certificate.
    let key = |p: &Proxy| format!("listener.127.0.0.1_{}.ssl.handshake", p.port("HTTPS"));
    let envoy_stats = envoy.admin("/stats").await;
    let weft_stats = weft.admin("/stats").await;
    assert_eq!(counter(&weft_stats, &key(&weft)), 3, "{weft_stats}");
    assert_eq!(
        counter(&envoy_stats, &key(&envoy)),
        counter(&weft_stats, &key(&weft))
    );
}

#[test]
fn a_missing_certificate_file_is_refused_naming_the_field() {
    let template = TEMPLATE.replace("@DIR@", "/nonexistent-weft-dir");
    let err = support::refusal(&template, "{ECHO}", "9");
    assert!(
        err.contains("filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0].certificate_chain.filename"),
        "{err}"
    );
}
