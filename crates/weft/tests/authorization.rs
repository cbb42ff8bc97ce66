//! AuthorizationPolicy end to end through `weft up` with its CA on, with Weft proxies and with
//! Envoy: every source, operation and `when` key, each with a request it allows and one it
//! denies. Requests reach the workload's sidecar through the ingress gateway (over the mesh's
//! mTLS, as `istio-ingressgateway-service-account`) or straight from a plaintext client (no
//! identity); each rule of one ALLOW policy answers one path, so a path that no rule allows
//! is denied. DENY, root-namespace, dry-run, selector and targetRef scoping, and TCP ports
//! (where a rule naming HTTP attributes allows nothing) are checked beside them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;

use support::up::Up;
use support::xds::eventually;
use support::{Req, try_request};

const GATEWAY_ID: &str = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

fn allow_policy(port: u16) -> String {
    let rule = |path: &str, extra: &str| {
        format!("  - to: [ {{ operation: {{ paths: [\"{path}\"] {extra} }} }} ]\n")
    };
    let from = |path: &str, source: &str| {
        format!(
            "  - to: [ {{ operation: {{ paths: [\"{path}\"] }} }} ]\n    from: [ {{ source: {{ {source} }} }} ]\n"
        )
    };
    let when = |path: &str, condition: &str| {
        format!(
            "  - to: [ {{ operation: {{ paths: [\"{path}\"] }} }} ]\n    when: [ {{ {condition} }} ]\n"
        )
    };
    let mut rules = String::new();
    rules += &from("/principal", &format!("principals: [\"{GATEWAY_ID}\"]"));
    rules += &from(
        "/not-principal",
        &format!("notPrincipals: [\"{GATEWAY_ID}\"]"),
    );
    rules += &from("/namespace", "namespaces: [istio-system]");
    rules += &from("/not-namespace", "notNamespaces: [istio-system]");
    rules += &from(
        "/sa",
        "serviceAccounts: [istio-system/istio-ingressgateway-service-account]",
    );
    rules += &from(
        "/not-sa",
        "notServiceAccounts: [istio-system/istio-ingressgateway-service-account]",
    );
    rules += &from("/trust-domain", "trustDomains: [cluster.local]");
    rules += &from("/not-trust-domain", "notTrustDomains: [\"cluster.*\"]");
    rules += &from("/ip", "ipBlocks: [127.0.0.0/8]");
    rules += &from("/not-ip", "notIpBlocks: [127.0.0.1]");
    rules += &from("/remote-ip", "remoteIpBlocks: [10.9.9.0/24]");
    rules += &from("/not-remote-ip", "notRemoteIpBlocks: [10.9.9.0/24]");
    rules += &rule("/host", ", hosts: [web.example, \"*.web.test\"]");
    rules += &rule("/not-host", ", notHosts: [web.example]");
    rules += &rule("/method", ", methods: [GET]");
    rules += &rule("/not-method", ", notMethods: [GET]");
    rules += "  - to: [ { operation: { paths: [\"/prefix/*\", \"*.suffix\", \"/tmpl/{*}/x\", \"/deep/{**}\"] } } ]\n";
    rules += "  - to: [ { operation: { paths: [\"/np/*\"], notPaths: [\"/np/secret\"] } } ]\n";
    rules += &rule("/port", &format!(", ports: [\"{port}\"]"));
    rules += &rule("/other-port", ", ports: [\"1\"]");
    rules += &rule("/not-port", &format!(", notPorts: [\"{port}\"]"));
    rules += &when(
        "/header",
        "key: \"request.headers[x-user]\", values: [alice, \"bob*\"]",
    );
    rules += &when(
        "/not-header",
        "key: \"request.headers[x-user]\", notValues: [mallory]",
    );
    rules += &when("/when-source-ip", "key: source.ip, values: [127.0.0.1]");
    rules += &when(
        "/when-not-source-ip",
        "key: source.ip, notValues: [127.0.0.1]",
    );
    rules += &when("/when-remote-ip", "key: remote.ip, values: [10.9.9.9]");
    rules += &when(
        "/when-namespace",
        "key: source.namespace, values: [istio-system]",
    );
    rules += &when(
        "/when-principal",
        "key: source.principal, values: [\"*/sa/istio-ingressgateway-service-account\"]",
    );
    rules += &when(
        "/when-sa",
        "key: source.serviceAccount, values: [istio-system/istio-ingressgateway-service-account]",
    );
    rules += &when(
        "/when-destination-ip",
        "key: destination.ip, values: [127.0.0.1]",
    );
    rules += &when(
        "/when-not-destination-ip",
        "key: destination.ip, notValues: [127.0.0.1/32]",
    );
    rules += &when(
        "/when-destination-port",
        &format!("key: destination.port, values: [\"{port}\"]"),
    );
    rules += &when(
        "/when-other-destination-port",
        "key: destination.port, values: [\"1\"]",
    );
    rules += &when(
        "/when-sni",
        "key: connection.sni, values: [\"outbound_.80_._.web.default.svc.cluster.local\"]",
    );
    rules += &rule("/open", "");
    rules += &rule("/root-denied", "");
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: web-allow, namespace: default }}\nspec:\n  selector: {{ matchLabels: {{ app: web }} }}\n  rules:\n{rules}"
    )
}

/// DENY before ALLOW, a root-namespace DENY for every workload, a gateway's own DENY, a
/// dry-run DENY that only counts, and policies that must not apply: another workload's, and
/// one attached by targetRef (Gateway API only).
const OTHER_POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: web-deny, namespace: default }
spec:
  selector: { matchLabels: { app: web } }
  action: DENY
  rules:
  - to: [ { operation: { paths: ["/open"] } } ]
    when: [ { key: "request.headers[x-block]", values: ["*"] } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: root-deny, namespace: istio-system }
spec:
  action: DENY
  rules:
  - to: [ { operation: { paths: ["/root-denied"] } } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny
  namespace: default
  annotations: { istio.io/dry-run: "true" }
spec:
  selector: { matchLabels: { app: web } }
  action: DENY
  rules:
  - to: [ { operation: { paths: ["/open"] } } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: at-the-gateway, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: DENY
  rules:
  - to: [ { operation: { paths: ["/open"], methods: ["DELETE"] } } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: other-workload, namespace: default }
spec:
  selector: { matchLabels: { app: other } }
  action: DENY
  rules: [ {} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: for-a-gateway-api-gateway, namespace: default }
spec:
  targetRefs: [ { group: gateway.networking.k8s.io, kind: Gateway, name: web } ]
  action: DENY
  rules: [ {} ]
"#;

#[derive(Clone, Copy, Debug)]
enum Via {
    Gateway,
    Direct,
}

/// (via, method, path, Host, headers, status)
type Case = (
    Via,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    u16,
);

const CASES: &[Case] = {
    use Via::{Direct as D, Gateway as G};
    &[
        (G, "GET", "/principal", "web.example", &[], 200),
        (D, "GET", "/principal", "web", &[], 403),
        (G, "GET", "/not-principal", "web.example", &[], 403),
        (D, "GET", "/not-principal", "web", &[], 200),
        (G, "GET", "/namespace", "web.example", &[], 200),
        (D, "GET", "/namespace", "web", &[], 403),
        (G, "GET", "/not-namespace", "web.example", &[], 403),
        (D, "GET", "/not-namespace", "web", &[], 200),
        (G, "GET", "/sa", "web.example", &[], 200),
        (D, "GET", "/sa", "web", &[], 403),
        (G, "GET", "/not-sa", "web.example", &[], 403),
        (D, "GET", "/not-sa", "web", &[], 200),
        (G, "GET", "/trust-domain", "web.example", &[], 200),
        (D, "GET", "/trust-domain", "web", &[], 403),
        (G, "GET", "/not-trust-domain", "web.example", &[], 403),
        (D, "GET", "/not-trust-domain", "web", &[], 200),
        (D, "GET", "/ip", "web", &[], 200),
        (D, "GET", "/not-ip", "web", &[], 403),
        (
            D,
            "GET",
            "/remote-ip",
            "web",
            &[("x-forwarded-for", "10.9.9.9")],
            200,
        ),
        (D, "GET", "/remote-ip", "web", &[], 403),
        (D, "GET", "/not-remote-ip", "web", &[], 200),
        (
            D,
            "GET",
            "/not-remote-ip",
            "web",
            &[("x-forwarded-for", "10.9.9.9")],
            403,
        ),
        (D, "GET", "/host", "web.example", &[], 200),
        (D, "GET", "/host", "A.Web.Test", &[], 200),
        (D, "GET", "/host", "web", &[], 403),
        (D, "GET", "/not-host", "web.example", &[], 403),
        (D, "GET", "/not-host", "web", &[], 200),
        (D, "GET", "/method", "web", &[], 200),
        (D, "POST", "/method", "web", &[], 403),
        (D, "GET", "/not-method", "web", &[], 403),
        (D, "POST", "/not-method", "web", &[], 200),
        (D, "GET", "/prefix/a", "web", &[], 200),
        (D, "GET", "/a/b.suffix", "web", &[], 200),
        (D, "GET", "/tmpl/a/x", "web", &[], 200),
        (D, "GET", "/tmpl/a/b/x", "web", &[], 403),
        (D, "GET", "/deep/a/b", "web", &[], 200),
        (D, "GET", "/deep", "web", &[], 403),
        (D, "GET", "/np/a", "web", &[], 200),
        (D, "GET", "/np/secret", "web", &[], 403),
        (D, "GET", "/port", "web", &[], 200),
        (D, "GET", "/other-port", "web", &[], 403),
        (D, "GET", "/not-port", "web", &[], 403),
        (D, "GET", "/header", "web", &[("x-user", "alice")], 200),
        (D, "GET", "/header", "web", &[("x-user", "bobby")], 200),
        (D, "GET", "/header", "web", &[("x-user", "carol")], 403),
        (D, "GET", "/header", "web", &[], 403),
        (D, "GET", "/not-header", "web", &[], 200),
        (
            D,
            "GET",
            "/not-header",
            "web",
            &[("x-user", "mallory")],
            403,
        ),
        (D, "GET", "/when-source-ip", "web", &[], 200),
        (D, "GET", "/when-not-source-ip", "web", &[], 403),
        (
            D,
            "GET",
            "/when-remote-ip",
            "web",
            &[("x-forwarded-for", "10.9.9.9")],
            200,
        ),
        (D, "GET", "/when-remote-ip", "web", &[], 403),
        (G, "GET", "/when-namespace", "web.example", &[], 200),
        (D, "GET", "/when-namespace", "web", &[], 403),
        (G, "GET", "/when-principal", "web.example", &[], 200),
        (D, "GET", "/when-principal", "web", &[], 403),
        (G, "GET", "/when-sa", "web.example", &[], 200),
        (D, "GET", "/when-sa", "web", &[], 403),
        (D, "GET", "/when-destination-ip", "web", &[], 200),
        (D, "GET", "/when-not-destination-ip", "web", &[], 403),
        (D, "GET", "/when-destination-port", "web", &[], 200),
        (D, "GET", "/when-other-destination-port", "web", &[], 403),
        (G, "GET", "/when-sni", "web.example", &[], 200),
        (D, "GET", "/when-sni", "web", &[], 403),
        (D, "GET", "/open", "web", &[], 200),
        (D, "GET", "/open", "web", &[("x-block", "1")], 403),
        (G, "GET", "/open", "web.example", &[("x-block", "1")], 403),
        (D, "GET", "/root-denied", "web", &[], 403),
        // The gateway's own policy: its DENY answers before the request leaves it.
        (G, "DELETE", "/open", "web.example", &[], 403),
        (D, "DELETE", "/open", "web", &[], 200),
        (D, "GET", "/", "web", &[], 403),
    ]
};

async fn status_of(addr: SocketAddr, case: &Case) -> Result<(u16, String), String> {
    let (_, method, path, host, headers, _) = case;
    let mut req = Req::get(host, path);
    req.method = method;
    req.headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = try_request(addr, &req).await?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

fn inbound(up: &Up, name: &str) -> (SocketAddr, SocketAddr) {
    let status = up.wait_status("the sidecar's inbound port", |s| {
        Up::proxy(s, name).is_some_and(|p| p["inbound"][0]["sidecar"].is_string())
    });
    let p = Up::proxy(&status, name).unwrap();
    let addr = |v: &serde_json::Value| v.as_str().unwrap().parse().unwrap();
    (addr(&p["admin"]), addr(&p["inbound"][0]["sidecar"]))
}

async fn write_and_wait(up: &Up, dir: &Path, file: &str, text: &str) {
    let before = up.generation();
    std::fs::write(dir.join(file), text).unwrap();
    tokio::task::block_in_place(|| {
        up.wait_status(file, |s| s["config"]["generation"].as_u64() > Some(before))
    });
}

async fn policies(envoy: bool) {
    let app = support::start_echo("web-v1").await;
    let db = support::start_tcp_echo().await;
    let mesh = tempfile::tempdir().unwrap();
    let base = support::up::base_mesh(app.port()).replace(
        "labels: { app: web, version: v1 }",
        "labels: { app: web, version: v1 }, serviceAccount: web",
    );
    let tcp_service = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{ name: db }}\nspec:\n  ports: [ {{ port: 5432, name: tcp }} ]\n  selector: {{ app: db }}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: db-v1, namespace: default }}\nspec: {{ address: 127.0.0.1, ports: {{ tcp: {} }}, labels: {{ app: db }}, serviceAccount: db }}\n",
        db.port()
    );
    std::fs::write(mesh.path().join("base.yaml"), base + &tcp_service).unwrap();
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(mesh.path(), envoy, &args));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    let (admin, web) = inbound(&up, "sidecar default/web-v1");
    let (_, db_sidecar) = inbound(&up, "sidecar default/db-v1");
    let dir = mesh.path();
    let problems = || up.stderr();

    write_and_wait(&up, dir, "allow.yaml", &allow_policy(app.port())).await;
    write_and_wait(&up, dir, "others.yaml", OTHER_POLICIES).await;
    // Both files taken: what only the first allows, and what only the second denies.
    eventually("the policies to apply", || async {
        let (principal, _) = status_of(web, &CASES[1]).await?;
        let root = CASES.iter().find(|c| c.2 == "/root-denied").unwrap();
        let (root, _) = status_of(web, root).await?;
        (principal == 403 && root == 403)
            .then_some(())
            .ok_or_else(|| {
                format!("/principal from a plaintext client: {principal}, /root-denied: {root}")
            })
    })
    .await;
    let mut failures = Vec::new();
    for case in CASES {
        let addr = match case.0 {
            Via::Gateway => gateway,
            Via::Direct => web,
        };
        let want = case.5;
        match status_of(addr, case).await {
            Ok((s, body)) if s == want => {
                if s == 403 && body != "RBAC: access denied" {
                    failures.push(format!("{case:?}: 403 with {body:?}"));
                }
            }
            got => failures.push(format!("{case:?}: got {got:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} (envoy: {envoy})\n{}",
        failures.join("\n"),
        problems()
    );
    // The dry-run DENY matched /open each time and denied nothing.
    let stats = try_request(admin, &Req::get("admin", "/stats"))
        .await
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.body).into_owned();
    let shadow_denied: u64 = stats
        .lines()
        .filter(|l| l.contains(".rbac.istio_dry_run_deny_.shadow_denied: "))
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum();
    // Four requests for /open reached the sidecar (the gateway's DENY kept the fifth).
    assert_eq!(
        shadow_denied,
        4,
        "{}",
        stats
            .lines()
            .filter(|l| l.contains(".rbac."))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        up.stderr().contains("for-a-gateway-api-gateway")
            || up
                .status()
                .is_some_and(|s| s.to_string().contains("for-a-gateway-api-gateway")),
        "the targetRef policy left out in silence"
    );

    // TCP: a rule naming HTTP attributes matches no connection, so an ALLOW of only such a
    // rule closes every connection; a rule of what a connection has lets it through.
    let tcp_allow = |rules: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: db, namespace: default }}\nspec:\n  selector: {{ matchLabels: {{ app: db }} }}\n  rules:\n{rules}"
        )
    };
    let echo = || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(db_sidecar)
            .await
            .map_err(|e| e.to_string())?;
        // Long enough for Envoy's TLS inspector to tell it is not TLS.
        let ping = b"ping, ping, ping";
        s.write_all(ping).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 16];
        match s.read_exact(&mut buf).await {
            Ok(_) if &buf == ping => Ok(true),
            _ => Ok::<bool, String>(false),
        }
    };
    let by_address = "  - to: [ { operation: { methods: [GET] } } ]\n  - from: [ { source: { ipBlocks: [127.0.0.1] } } ]\n";
    for (rules, others, through) in [
        // The root namespace's DENY of a path denies every TCP connection: on TCP the path
        // is left out of a DENY rule, which then matches everything (as in Istio).
        (by_address, true, false),
        (by_address, false, true),
        (
            "  - to: [ { operation: { methods: [GET] } } ]\n",
            false,
            false,
        ),
        (
            "  - from: [ { source: { principals: [\"*\"] } } ]\n",
            false,
            false,
        ),
    ] {
        if !others && dir.join("others.yaml").exists() {
            std::fs::remove_file(dir.join("others.yaml")).unwrap();
        }
        write_and_wait(&up, dir, "db.yaml", &tcp_allow(rules)).await;
        eventually(&format!("TCP under {rules}"), || async {
            let got = echo().await?;
            (got == through)
                .then_some(())
                .ok_or_else(|| format!("echoed: {got}, want {through}"))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_with_weft_proxies() {
    policies(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_with_envoy() {
    policies(true).await;
}
