//! `weft demo`'s step 5: authorization. One AuthorizationPolicy lets only the ingress gateway's
//! identity in, and only to GET; a path `/admin` also wants a user's JWT, which a
//! RequestAuthentication checks against the demo's own issuer (its keys inline). The demo shows
//! what a POST, and `/admin` without a token, with a bad one and with the token it prints, get.

use anyhow::Context as _;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use weft_proxy::jwt::mint::{Issuer, jwks};

pub const ISSUER: &str = "https://weft-demo.local";
const GATEWAY: &str = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

fn policy(keys: &str) -> String {
    format!(
        "# Step 5: only the ingress gateway may call the website, only to GET; /admin also wants\n\
         # a user's token from the demo's issuer.\n\
         apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: website\n  namespace: default\n\
         spec:\n  selector:\n    matchLabels:\n      app: website\n  jwtRules:\n  - issuer: {ISSUER}\n    jwks: '{keys}'\n\
         ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: website\n  namespace: default\n\
         spec:\n  selector:\n    matchLabels:\n      app: website\n  action: ALLOW\n  rules:\n\
         \x20 - from:\n    - source:\n        principals: [\"{GATEWAY}\"]\n    to:\n    - operation:\n        methods: [\"GET\"]\n        notPaths: [\"/admin\", \"/admin/*\"]\n\
         \x20 - from:\n    - source:\n        principals: [\"{GATEWAY}\"]\n        requestPrincipals: [\"{ISSUER}/demo-user\"]\n    to:\n    - operation:\n        methods: [\"GET\"]\n        paths: [\"/admin\", \"/admin/*\"]\n"
    )
}

/// A request through the gateway: its status, and the version that answered or the body.
async fn ask(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    let a = super::demo::request(gateway, method, path, &headers).await?;
    Ok((a.status, a.version.unwrap_or(a.body)))
}

pub async fn step(dir: &Path, gateway: SocketAddr) -> anyhow::Result<()> {
    let file = dir.join("policy.yaml");
    println!(
        "\nstep 5: authorization  (AuthorizationPolicy and RequestAuthentication website, in {})",
        file.display()
    );
    let issuer = Issuer::new("ES256", "weft-demo").context("cannot make the demo's issuer key")?;
    let impostor = Issuer::new("ES256", "weft-demo").context("cannot make a key")?;
    super::demo::write(&file, &policy(&jwks(&[&issuer])))?;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 24 * 3600;
    let claims = json!({"iss": ISSUER, "sub": "demo-user", "exp": exp});
    let token = issuer.token(&claims);
    let bad = impostor.token(&claims);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ask(gateway, "POST", "/", None).await.map(|(s, _)| s) != Ok(403) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the policy did not apply within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (what, method, path, token) in [
        ("GET / through the gateway", "GET", "/", None),
        ("POST / through the gateway", "POST", "/", None),
        ("GET /admin without a token", "GET", "/admin", None),
        (
            "GET /admin with a bad token",
            "GET",
            "/admin",
            Some(bad.as_str()),
        ),
        (
            "GET /admin with the demo's token",
            "GET",
            "/admin",
            Some(token.as_str()),
        ),
    ] {
        let got = match ask(gateway, method, path, token).await {
            Ok((s, text)) => format!("{s} {text}"),
            Err(e) => e,
        };
        println!("  {:<42}{got}", format!("{what}:"));
    }
    println!("  the demo's token (user demo-user, valid 24 h):");
    println!("    {token}");
    Ok(())
}
