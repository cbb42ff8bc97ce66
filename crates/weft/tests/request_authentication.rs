//! RequestAuthentication end to end through `weft up`, with Weft proxies and with Envoy: the
//! control plane fetches the issuer's JWKS (or takes it inline) and sends the keys to the
//! workload's sidecar, whose jwt_authn filter checks tokens the gateway passes on, and whose
//! AuthorizationPolicy reads the request principal and the claims. A request without a token
//! passes authentication and is left to the policy; a bad token is a 401. An issuer whose JWKS
//! cannot be had (its server down, or never answering) has every token refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::net::SocketAddr;
use support::up::Up;
use support::xds::eventually;
use support::{Req, try_request};
use weft_proxy::jwt::mint::{Issuer, jwks};

fn policies(jwks_uri: &str, inline: &str, down: &str, hanging: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: web, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: web }} }}
  jwtRules:
  - issuer: https://issuer.test
    jwksUri: {jwks_uri}
    outputClaimToHeaders: [ {{ header: x-jwt-sub, claim: sub }} ]
  - issuer: https://inline.test
    jwks: '{inline}'
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: unreachable, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: web }} }}
  jwtRules:
  - issuer: https://down.test
    jwksUri: {down}
  - issuer: https://hanging.test
    jwksUri: {hanging}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: web, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: web }} }}
  rules:
  - to: [ {{ operation: {{ paths: ["/secure"] }} }} ]
    from: [ {{ source: {{ requestPrincipals: ["https://issuer.test/alice"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/any-principal"] }} }} ]
    from: [ {{ source: {{ requestPrincipals: ["*"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/claims"] }} }} ]
    when: [ {{ key: "request.auth.claims[groups]", values: ["admin"] }} ]
  - to: [ {{ operation: {{ paths: ["/nested"] }} }} ]
    when: [ {{ key: "request.auth.claims[realm][role]", values: ["owner"] }} ]
  - to: [ {{ operation: {{ paths: ["/audience"] }} }} ]
    when: [ {{ key: request.auth.audiences, values: ["api"] }} ]
  - to: [ {{ operation: {{ paths: ["/presenter"] }} }} ]
    when: [ {{ key: request.auth.presenter, values: ["cli"] }} ]
  - to: [ {{ operation: {{ paths: ["/principal-when"] }} }} ]
    when: [ {{ key: request.auth.principal, values: ["https://issuer.test/alice"] }} ]
  - to: [ {{ operation: {{ paths: ["/not-principal"] }} }} ]
    from: [ {{ source: {{ notRequestPrincipals: ["*"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/open"] }} }} ]
"#
    )
}

async fn ask(gateway: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, Value), String> {
    let mut req = Req::get("web.example", path);
    if let Some(t) = token {
        req.headers
            .push(("authorization".into(), format!("Bearer {t}")));
    }
    let r = try_request(gateway, &req).await?;
    let json = r
        .json()
        .unwrap_or_else(|| json!(String::from_utf8_lossy(&r.body)));
    Ok((r.status, json))
}

async fn tokens(envoy: bool) {
    let app = support::start_echo("web-v1").await;
    let main = Issuer::new("RS256", "main").unwrap();
    let inline = Issuer::new("ES256", "inline").unwrap();
    let down = Issuer::new("ES256", "down").unwrap();
    let server = support::jwks::serve(jwks(&[&main])).await;
    let hanging = support::jwks::hang().await;
    let closed = format!("http://127.0.0.1:{}/jwks.json", support::free_port());
    let mesh = tempfile::tempdir().unwrap();
    std::fs::write(
        mesh.path().join("base.yaml"),
        support::up::base_mesh(app.port()),
    )
    .unwrap();
    std::fs::write(
        mesh.path().join("policies.yaml"),
        policies(
            &format!("http://{server}/jwks.json"),
            &jwks(&[&inline]),
            &closed,
            &format!("http://{hanging}/jwks.json"),
        ),
    )
    .unwrap();
    let up = tokio::task::block_in_place(|| Up::start(mesh.path(), envoy));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |sub: &str, extra: Value| {
        let mut c = json!({"iss": "https://issuer.test", "sub": sub, "exp": n + 600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let alice = main.token(&claims("alice", json!({})));
    eventually("the sidecar to check tokens", || async {
        let (s, _) = ask(gateway, "/secure", Some(&alice)).await?;
        (s == 200)
            .then_some(())
            .ok_or(format!("alice got {s}\n{}", up.stderr()))
    })
    .await;
    let bob = main.token(&claims("bob", json!({})));
    let cases: Vec<(&str, &str, Option<String>, u16)> = vec![
        ("no token", "/open", None, 200),
        ("no token where a principal is needed", "/secure", None, 403),
        (
            "no token, notRequestPrincipals",
            "/not-principal",
            None,
            200,
        ),
        (
            "a token, notRequestPrincipals",
            "/not-principal",
            Some(alice.clone()),
            403,
        ),
        ("alice", "/secure", Some(alice.clone()), 200),
        ("bob", "/secure", Some(bob.clone()), 403),
        (
            "bob, any principal",
            "/any-principal",
            Some(bob.clone()),
            200,
        ),
        (
            "alice, request.auth.principal",
            "/principal-when",
            Some(alice.clone()),
            200,
        ),
        (
            "bob, request.auth.principal",
            "/principal-when",
            Some(bob.clone()),
            403,
        ),
        (
            "an admin",
            "/claims",
            Some(main.token(&claims("c", json!({"groups": ["dev", "admin"]})))),
            200,
        ),
        (
            "not an admin",
            "/claims",
            Some(main.token(&claims("c", json!({"groups": ["dev"]})))),
            403,
        ),
        (
            "a nested claim",
            "/nested",
            Some(main.token(&claims("c", json!({"realm": {"role": "owner"}})))),
            200,
        ),
        (
            "another nested claim",
            "/nested",
            Some(main.token(&claims("c", json!({"realm": {"role": "guest"}})))),
            403,
        ),
        (
            "the audience",
            "/audience",
            Some(main.token(&claims("c", json!({"aud": ["x", "api"]})))),
            200,
        ),
        (
            "another audience",
            "/audience",
            Some(main.token(&claims("c", json!({"aud": "x"})))),
            403,
        ),
        (
            "the presenter",
            "/presenter",
            Some(main.token(&claims("c", json!({"azp": "cli"})))),
            200,
        ),
        (
            "another presenter",
            "/presenter",
            Some(main.token(&claims("c", json!({"azp": "web"})))),
            403,
        ),
        (
            "expired",
            "/open",
            Some(main.token(&claims("alice", json!({"exp": n - 600})))),
            401,
        ),
        (
            "signed by another key",
            "/open",
            Some(
                Issuer::new("RS256", "main")
                    .unwrap()
                    .token(&claims("alice", json!({}))),
            ),
            401,
        ),
        (
            "an issuer no rule names",
            "/open",
            Some(main.token(&claims("alice", json!({"iss": "https://nobody.test"})))),
            401,
        ),
        (
            "the inline issuer",
            "/open",
            Some(inline.token(&json!({"iss": "https://inline.test", "sub": "x", "exp": n + 600}))),
            200,
        ),
        (
            "an issuer whose JWKS server is down",
            "/open",
            Some(down.token(&json!({"iss": "https://down.test", "sub": "x", "exp": n + 600}))),
            401,
        ),
        (
            "an issuer whose JWKS server hangs",
            "/open",
            Some(down.token(&json!({"iss": "https://hanging.test", "sub": "x", "exp": n + 600}))),
            401,
        ),
    ];
    let mut failures = Vec::new();
    for (what, path, token, want) in &cases {
        match ask(gateway, path, token.as_deref()).await {
            Ok((s, _)) if s == *want => {}
            got => failures.push(format!("{what}: {path}: got {got:?}, want {want}")),
        }
    }
    // The claim became a header, and the token was not forwarded to the application.
    let (_, seen) = ask(gateway, "/secure", Some(&alice)).await.unwrap();
    if seen["headers"]["x-jwt-sub"] != "alice" || !seen["headers"]["authorization"].is_null() {
        failures.push(format!("what the application saw: {}", seen["headers"]));
    }
    let (status, body) = ask(gateway, "/open", Some("not-a-jwt")).await.unwrap();
    if status != 401
        || body
            != json!(
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            )
    {
        failures.push(format!("a malformed token: {status} {body}"));
    }
    assert!(
        failures.is_empty(),
        "envoy: {envoy}\n{}\n{}",
        failures.join("\n"),
        up.stderr()
    );
    assert!(
        up.stderr().contains("cannot fetch a JWKS"),
        "the unreachable JWKS went unreported:\n{}",
        up.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_authentication_with_weft_proxies() {
    tokens(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_authentication_with_envoy() {
    tokens(true).await;
}
