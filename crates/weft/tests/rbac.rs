//! Envoy's RBAC HTTP filter in real Envoy 1.40 and `weft proxy` from one bootstrap
//! (tests/data/rbac.yaml): for each request, the same status and body from both (200 through,
//! 403 `RBAC: access denied`), and the same `rbac.*` counters afterwards, for ALLOW and DENY
//! rules, `and`/`or`/`not` nesting, header, path, port and address matchers, shadow rules that
//! count without blocking, metadata matchers (with no metadata, as before any JWT), URI
//! templates, and over mTLS the client certificate's identity (`authenticated`) and the SNI
//! (`requested_server_name`). The network filter: the same decisions close TCP connections
//! (plaintext and mTLS), with its `<stat_prefix>rbac.*` counters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::certs::{Leaf, ca, client_config, leaf, leaf_named};
use support::{Kind, Proxy, Req, counter, request, try_request_tls};

/// (listener, method, path, headers, the status a reading of Envoy's semantics expects)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    u16,
);

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

const TEMPLATE: &str = include_str!("data/rbac.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_decides_and_counts_like_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("rbac test CA");
    let server = leaf(&ca, &["server.test", "other.test"]);
    let client = leaf_named(&ca, &[], &[CLIENT_ID], &[]);
    let stranger = leaf_named(
        &ca,
        &[],
        &["spiffe://cluster.local/ns/default/sa/other"],
        &[],
    );
    for (file, text) in [
        ("ca.pem", &ca.pem),
        ("server.pem", &server.pem),
        ("server-key.pem", &server.key_pem),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let echo = support::start_echo("echo").await;
    let given = [("ECHO", echo.port())];
    let template = TEMPLATE.replace("@DIR@", dir.path().to_str().unwrap());
    let t = template.clone();
    let envoy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Envoy, &t, &given));
    let weft = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, &template, &given));
    let (envoy, weft) = (envoy.await.unwrap(), weft.await.unwrap());

    let cases: &[Case] = &[
        ("ALLOW", "GET", "/public/x", &[], 200),
        ("ALLOW", "POST", "/public/x", &[], 403),
        ("ALLOW", "GET", "/public?x=/private", &[], 200),
        ("ALLOW", "POST", "/other", &[("x-user", "admin")], 200),
        ("ALLOW", "POST", "/other", &[("x-user", "Admin")], 403),
        (
            "ALLOW",
            "POST",
            "/other",
            &[("x-forwarded-for", "10.1.2.3")],
            200,
        ),
        (
            "ALLOW",
            "POST",
            "/private/x",
            &[("x-forwarded-for", "10.1.2.3")],
            403,
        ),
        (
            "ALLOW",
            "POST",
            "/other",
            &[("x-forwarded-for", "192.168.1.1")],
            403,
        ),
        ("ALLOW", "PUT", "/PORTS", &[], 200),
        ("ALLOW", "PUT", "/ports", &[("x-blocked", "1")], 403),
        ("ALLOW", "GET", "/public/y", &[("x-shadow", "1")], 200),
        // Metadata (a JWT's principal, as istiod matches it): there is none without JWT.
        ("ALLOW", "POST", "/absent", &[], 403),
        ("ALLOW", "POST", "/jwt-only", &[], 403),
        ("DENY", "GET", "/jwt/x", &[], 403),
        ("DENY", "GET", "/x", &[], 200),
        ("DENY", "GET", "/admin/x", &[], 403),
        // URI templates: `*` one segment, `**` any number; the query is not the path.
        ("DENY", "GET", "/tmpl/a/x", &[], 403),
        ("DENY", "GET", "/tmpl/a/x?q=/y", &[], 403),
        ("DENY", "GET", "/tmpl/a/b/x", &[], 200),
        ("DENY", "GET", "/tmpl//x", &[], 200),
        ("DENY", "GET", "/deep/a/b/end", &[], 403),
        ("DENY", "GET", "/deep//end", &[], 403),
        ("DENY", "GET", "/deep/end", &[], 200),
        ("DENY", "DELETE", "/x", &[], 403),
    ];
    let mut failures = Vec::new();
    for (listener, method, path, headers, want) in cases {
        for proxy in [&envoy, &weft] {
            let mut req = Req::get("svc", path);
            req.method = *method;
            req.headers = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let r = request(proxy.addr(listener), &req).await;
            let body = String::from_utf8_lossy(&r.body).into_owned();
            let ok = match *want {
                403 => r.status == 403 && body == "RBAC: access denied",
                s => r.status == s,
            };
            if !ok {
                failures.push(format!(
                    "{:?} {listener} {method} {path} {headers:?}: {} {body:?}, want {want}",
                    proxy.kind, r.status
                ));
            }
        }
    }
    // Over mTLS: who the client certificate names, and the SNI it asked for.
    let mtls_cases: &[(&Leaf, &str, &str, u16)] = &[
        (&client, "server.test", "/x", 200),
        (&client, "other.test", "/x", 403),
        (&stranger, "server.test", "/x", 403),
        (&stranger, "server.test", "/open", 200),
    ];
    for (who, sni, path, want) in mtls_cases {
        let config = client_config(&ca, Some(who));
        for proxy in [&envoy, &weft] {
            let got = try_request_tls(proxy.addr("MTLS"), &Req::get(sni, path), &config, sni)
                .await
                .map(|r| r.status);
            if got != Ok(*want) {
                failures.push(format!(
                    "{:?} mTLS {sni} {path}: {got:?}, want {want}",
                    proxy.kind
                ));
            }
        }
    }
    // Network RBAC: a denied connection is closed before anything reaches the upstream.
    for proxy in [&envoy, &weft] {
        for (listener, through) in [("TCP_ALLOW", true), ("TCP_DENY", false)] {
            let got = support::try_request(proxy.addr(listener), &Req::get("svc", "/tcp"))
                .await
                .map(|r| r.status);
            if got.is_ok() != through || got.as_ref().is_ok_and(|s| *s != 200) {
                failures.push(format!("{:?} {listener}: {got:?}", proxy.kind));
            }
        }
        for (who, sni, through) in [
            (&client, "server.test", true),
            (&client, "other.test", false),
            (&stranger, "server.test", false),
        ] {
            let config = client_config(&ca, Some(who));
            let got = try_request_tls(proxy.addr("TCP_MTLS"), &Req::get(sni, "/tcp"), &config, sni)
                .await
                .map(|r| r.status);
            if got.is_ok() != through {
                failures.push(format!("{:?} TCP mTLS {sni}: {got:?}", proxy.kind));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (e, w) = (envoy.admin("/stats").await, weft.admin("/stats").await);
    for name in [
        "http.allow.rbac.allowed",
        "http.allow.rbac.denied",
        "http.allow.rbac.audit_.shadow_allowed",
        "http.allow.rbac.audit_.shadow_denied",
        "http.deny.rbac.mine.allowed",
        "http.deny.rbac.mine.denied",
        "tcp_allow.rbac.allowed",
        "tcp_allow.rbac.denied",
        "tcp_allow.rbac.istio_dry_run_deny_shadow_denied",
        "tcp_deny.rbac.denied",
        "tcp_mtls.rbac.allowed",
        "tcp_mtls.rbac.denied",
    ] {
        assert_eq!(
            counter(&w, name),
            counter(&e, name),
            "{name}: Weft, then Envoy\n{}",
            e.lines()
                .filter(|l| l.contains("rbac"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(counter(&w, "http.allow.rbac.denied"), 7);
    assert_eq!(counter(&w, "http.allow.rbac.audit_.shadow_denied"), 1);
    assert_eq!(counter(&w, "tcp_allow.rbac.allowed"), 1);
    assert_eq!(counter(&w, "tcp_deny.rbac.denied"), 1);
    assert_eq!(counter(&w, "tcp_mtls.rbac.denied"), 2);
}
