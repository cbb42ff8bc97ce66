//! Envoy's ext_authz filter, as istiod writes it for CUSTOM policies, in real Envoy and
//! `weft proxy` from one bootstrap (tests/data/ext_authz.yaml), against authorization services
//! written here: one over HTTP, one over gRPC (envoy.service.auth.v3.Authorization). Both allow a
//! request that says `x-ext-authz: allow` (adding a header for the upstream) and deny the rest
//! with their own status, body and header. Paths no CUSTOM policy covers are not checked; a
//! service that is down denies (403), unless `failure_mode_allow`. Both proxies answer alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::authz::{grpc_authorizer, http_authorizer};
use support::{Kind, Proxy, Req, try_request};

const TEMPLATE: &str = include_str!("data/ext_authz.yaml");

/// What a client saw, and what the upstream was given of the check.
async fn seen(proxy: &Proxy, listener: &str, path: &str, allow: bool) -> Value {
    let mut req = Req::get("svc", path);
    if allow {
        req.headers.push(("x-ext-authz".into(), "allow".into()));
    }
    match try_request(proxy.addr(listener), &req).await {
        Ok(r) => {
            let h = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap().to_string());
            match r.json() {
                Some(j) => json!({
                    "status": r.status,
                    "upstream saw": j["headers"].get("x-ext-authz-check-result"),
                    "upstream saw the other": j["headers"].get("x-not-for-upstream"),
                }),
                None => json!({
                    "status": r.status,
                    "body": String::from_utf8_lossy(&r.body),
                    "x-ext-authz-check-result": h("x-ext-authz-check-result"),
                    "x-not-for-client": h("x-not-for-client"),
                }),
            }
        }
        Err(e) => json!({ "error": e }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_checks_like_envoy() {
    let echo = support::start_echo("echo").await;
    let http = http_authorizer().await;
    let grpc = grpc_authorizer().await;
    let given = [
        ("ECHO", echo.port()),
        ("AUTHZ_HTTP", http.port()),
        ("AUTHZ_GRPC", grpc.port()),
        ("AUTHZ_DOWN", support::free_port()),
    ];
    let (t, w) = (TEMPLATE.to_string(), TEMPLATE.to_string());
    let envoy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Envoy, &t, &given));
    let weft = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, &w, &given));
    let (envoy, weft) = (envoy.await.unwrap(), weft.await.unwrap());
    let cases = [
        ("HTTP", "/public", false, 200),
        ("HTTP", "/protected/x?q=1", false, 403),
        ("HTTP", "/protected/x", true, 200),
        ("GRPC", "/public", false, 200),
        ("GRPC", "/protected/x", false, 401),
        ("GRPC", "/protected/x", true, 200),
        ("DOWN", "/public", false, 200),
        ("DOWN", "/protected", true, 403),
        ("OPEN", "/protected", false, 200),
    ];
    let mut failures = Vec::new();
    for (listener, path, allow, want) in cases {
        let e = seen(&envoy, listener, path, allow).await;
        let w = seen(&weft, listener, path, allow).await;
        if e["status"] != want {
            failures.push(format!(
                "{listener} {path} allow={allow}: Envoy {e}, the test expects {want}"
            ));
        }
        if e != w {
            failures.push(format!(
                "{listener} {path} allow={allow}:\n  Envoy {e}\n  Weft  {w}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
