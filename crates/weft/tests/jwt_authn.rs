//! Envoy's jwt_authn filter in real Envoy and `weft proxy` from one bootstrap
//! (tests/data/jwt_authn.yaml): tokens of every algorithm the proxy verifies, and every way a
//! token fails (expired, not yet valid, another issuer, another audience, a bad signature, a
//! key the JWKS lacks, a malformed token, a JWKS with no usable key, an oversized header,
//! keys fetched from a JWKS server through a cluster, and one that is down), each answered the
//! same by both: status, body, `www-authenticate`, and for a request let
//! through, what the upstream saw (the claim header, the forwarded or removed token). RBAC
//! after it reads the payload from the dynamic metadata.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Kind, Proxy, Req, try_request};
use weft_proxy::jwt::mint::{Issuer, jwks};

const TEMPLATE: &str = include_str!("data/jwt_authn.yaml");

type Headers = Vec<(String, String)>;
/// (what, listener, path, headers, the status Envoy gives)
type Case<'a> = (String, &'a str, &'a str, Headers, u16);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What a client sees, and what the upstream was given.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    body: String,
    www_authenticate: Option<String>,
    upstream: Option<Value>,
}

async fn seen(proxy: &Proxy, listener: &str, path: &str, headers: &[(String, String)]) -> Seen {
    let mut req = Req::get("svc", path);
    req.headers = headers.to_vec();
    match try_request(proxy.addr(listener), &req).await {
        Ok(r) => {
            let json = r.json();
            let upstream = json.as_ref().map(|j| {
                let h = &j["headers"];
                json!({
                    "authorization": h.get("authorization"),
                    "x-token": h.get("x-token"),
                    "x-jwt-sub": h.get("x-jwt-sub"),
                    "x-jwt-payload": h.get("x-jwt-payload").is_some(),
                })
            });
            Seen {
                status: r.status,
                body: if json.is_some() {
                    String::new()
                } else {
                    String::from_utf8_lossy(&r.body).into_owned()
                },
                www_authenticate: r
                    .headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap().to_string()),
                upstream,
            }
        }
        Err(e) => Seen {
            status: 0,
            body: e,
            www_authenticate: None,
            upstream: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_authn_verifies_and_fails_like_envoy() {
    let algs = [
        "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
    ];
    let issuers: Vec<Issuer> = algs
        .iter()
        .map(|a| Issuer::new(a, &format!("key-{a}")).unwrap())
        .collect();
    let refs: Vec<&Issuer> = issuers.iter().collect();
    let set = jwks(&refs);
    let stranger = Issuer::new("RS256", "key-RS256").unwrap();
    let unknown_kid = Issuer::new("ES256", "nobody").unwrap();
    let echo = support::start_echo("echo").await;
    let keys = support::jwks::serve(set.clone()).await;
    let given = [
        ("ECHO", echo.port()),
        ("JWKS", keys.port()),
        ("JWKS_DOWN", support::free_port()),
    ];
    let template = TEMPLATE.replace("@JWKS@", &set);
    let t = template.clone();
    let envoy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Envoy, &t, &given));
    let weft = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, &template, &given));
    let (envoy, weft) = (envoy.await.unwrap(), weft.await.unwrap());

    let n = now();
    let claims = |extra: Value| {
        let mut c = json!({"iss": "https://issuer.test", "sub": "alice", "aud": "api", "exp": n + 600, "scope": "read write"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let bearer = |t: String| vec![("authorization".to_string(), format!("Bearer {t}"))];
    let rs = &issuers[0];
    let mut cases: Vec<Case<'_>> = Vec::new();
    for i in &issuers {
        cases.push((
            format!("{} token", i.alg),
            "OPTIONAL",
            "/secure",
            bearer(i.token(&claims(json!({})))),
            200,
        ));
    }
    let other = rs.token(&claims(json!({"iss": "https://other.test"})));
    let by_param = format!("/x?tok={other}");
    let more: Vec<(&str, &str, &str, Headers, u16)> = vec![
        ("no token", "OPTIONAL", "/x", vec![], 200),
        (
            "no token, RBAC wants a principal",
            "OPTIONAL",
            "/secure",
            vec![],
            403,
        ),
        (
            "another subject",
            "OPTIONAL",
            "/secure",
            bearer(rs.token(&claims(json!({"sub": "bob"})))),
            403,
        ),
        (
            "a scope among several",
            "OPTIONAL",
            "/scoped",
            bearer(rs.token(&claims(json!({})))),
            200,
        ),
        (
            "without the scope",
            "OPTIONAL",
            "/scoped",
            bearer(rs.token(&claims(json!({"scope": "read"})))),
            403,
        ),
        (
            "expired",
            "OPTIONAL",
            "/x",
            bearer(rs.token(&claims(json!({"exp": n - 120})))),
            401,
        ),
        (
            "within the clock skew",
            "OPTIONAL",
            "/x",
            bearer(rs.token(&claims(json!({"exp": n - 10})))),
            200,
        ),
        (
            "not yet valid",
            "OPTIONAL",
            "/x",
            bearer(rs.token(&claims(json!({"nbf": n + 600})))),
            401,
        ),
        (
            "another issuer",
            "OPTIONAL",
            "/x",
            bearer(rs.token(&claims(json!({"iss": "https://evil.test"})))),
            401,
        ),
        (
            "another audience",
            "OPTIONAL",
            "/x",
            bearer(rs.token(&claims(json!({"aud": ["web"]})))),
            403,
        ),
        (
            "a bad signature",
            "OPTIONAL",
            "/x",
            bearer(stranger.token(&claims(json!({})))),
            401,
        ),
        (
            "a key the JWKS lacks",
            "OPTIONAL",
            "/x",
            bearer(unknown_kid.token(&claims(json!({})))),
            401,
        ),
        ("not a JWT", "OPTIONAL", "/x", bearer("abc.def".into()), 401),
        (
            "a header without the prefix",
            "OPTIONAL",
            "/x",
            vec![("authorization".into(), "Basic abc".into())],
            200,
        ),
        (
            "the other provider's header",
            "OPTIONAL",
            "/x",
            vec![(
                "x-token".into(),
                format!(
                    "Token {}",
                    rs.token(&claims(json!({"iss": "https://other.test"})))
                ),
            )],
            200,
        ),
        ("its query parameter", "OPTIONAL", &by_param, vec![], 200),
        (
            "its cookie",
            "OPTIONAL",
            "/x",
            vec![(
                "cookie".into(),
                format!(
                    "a=b; jwt={}",
                    rs.token(&claims(json!({"iss": "https://other.test"})))
                ),
            )],
            200,
        ),
        (
            "an oversized token",
            "OPTIONAL",
            "/x",
            bearer("a".repeat(100 * 1024)),
            431,
        ),
        ("required, missing", "REQUIRED", "/x", vec![], 401),
        ("required, exempt path", "REQUIRED", "/public", vec![], 200),
        (
            "required, valid",
            "REQUIRED",
            "/x",
            bearer(rs.token(&claims(json!({})))),
            200,
        ),
    ];
    for (what, l, p, h, s) in more {
        cases.push((what.to_string(), l, p, h, s));
    }
    let mut failures = Vec::new();
    for (what, listener, path, headers, want) in &cases {
        let e = seen(&envoy, listener, path, headers).await;
        let w = seen(&weft, listener, path, headers).await;
        if e.status != *want {
            failures.push(format!(
                "{what}: Envoy answered {e:?}, the test expects {want}"
            ));
        }
        if e != w {
            failures.push(format!("{what}:\n  Envoy {e:?}\n  Weft  {w:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // An inline JWKS with no key either proxy can use is refused, as Envoy refuses it.
    for bad in [r#"{"keys": [{"kty": "XYZ", "kid": "k"}]}"#, "not json"] {
        let config = TEMPLATE
            .replacen(
                "inline_string: '@JWKS@'",
                &format!("inline_string: '{bad}'"),
                1,
            )
            .replace("@JWKS@", &set);
        let why = support::refusal(
            &config,
            "issuer: https://issuer.test",
            "issuer: https://issuer.test",
        );
        assert!(why.contains("invalid local jwks"), "{why}");
    }
}
