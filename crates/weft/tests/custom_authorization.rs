//! CUSTOM AuthorizationPolicies end to end through `weft up`, with Weft proxies and with Envoy:
//! the mesh config's `extensionProviders` name an HTTP and a gRPC authorization service
//! (written in the test, registered by ServiceEntries), and policies send some paths of the
//! workload to each. A checked request the service allows reaches the application with the
//! header the service added; one it denies gets the service's own answer; paths no CUSTOM
//! policy covers are not checked; a policy naming a provider the mesh does not have denies
//! what it covers, and says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use support::authz::{grpc_authorizer, http_authorizer};
use support::up::Up;
use support::xds::eventually;
use support::{Req, try_request};

fn mesh_config(http: u16, grpc: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{ name: istio, namespace: istio-system }}
data:
  mesh: |
    extensionProviders:
    - name: http-authz
      envoyExtAuthzHttp:
        service: authz-http.example.com
        port: {http}
        pathPrefix: /check
        includeRequestHeadersInCheck: ["x-ext-authz"]
        includeAdditionalHeadersInCheck: {{ x-added: "yes" }}
        headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
        headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
    - name: grpc-authz
      envoyExtAuthzGrpc:
        service: authz-grpc.example.com
        port: {grpc}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: authz-http, namespace: default }}
spec:
  hosts: [ authz-http.example.com ]
  ports: [ {{ number: {http}, name: http, protocol: HTTP }} ]
  resolution: STATIC
  endpoints: [ {{ address: 127.0.0.1 }} ]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: authz-grpc, namespace: default }}
spec:
  hosts: [ authz-grpc.example.com ]
  ports: [ {{ number: {grpc}, name: grpc, protocol: GRPC }} ]
  resolution: STATIC
  endpoints: [ {{ address: 127.0.0.1 }} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: by-http, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: web }} }}
  action: CUSTOM
  provider: {{ name: http-authz }}
  rules: [ {{ to: [ {{ operation: {{ paths: ["/http/*"] }} }} ] }} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: by-grpc, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: web }} }}
  action: CUSTOM
  provider: {{ name: grpc-authz }}
  rules: [ {{ to: [ {{ operation: {{ paths: ["/grpc/*"] }} }} ] }} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: by-nobody, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: web }} }}
  action: CUSTOM
  provider: {{ name: no-such-provider }}
  rules: [ {{ to: [ {{ operation: {{ paths: ["/nobody/*"] }} }} ] }} ]
"#
    )
}

async fn ask(
    gateway: SocketAddr,
    path: &str,
    allow: bool,
) -> Result<(u16, String, String), String> {
    let mut req = Req::get("web.example", path);
    if allow {
        req.headers.push(("x-ext-authz".into(), "allow".into()));
    }
    let r = try_request(gateway, &req).await?;
    let result = match r.json() {
        Some(j) => j["headers"]["x-ext-authz-check-result"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        None => r
            .headers
            .get("x-ext-authz-check-result")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
    };
    let body = if r.json().is_some() {
        String::new()
    } else {
        String::from_utf8_lossy(&r.body).into_owned()
    };
    Ok((r.status, result, body))
}

async fn custom(envoy: bool) {
    let app = support::start_echo("web-v1").await;
    let http = http_authorizer().await;
    let grpc = grpc_authorizer().await;
    let mesh = tempfile::tempdir().unwrap();
    std::fs::write(
        mesh.path().join("base.yaml"),
        support::up::base_mesh(app.port()),
    )
    .unwrap();
    std::fs::write(
        mesh.path().join("custom.yaml"),
        mesh_config(http.port(), grpc.port()),
    )
    .unwrap();
    let up = tokio::task::block_in_place(|| Up::start(mesh.path(), envoy));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    eventually("CUSTOM policies to apply", || async {
        let (s, _, _) = ask(gateway, "/http/x", false).await?;
        (s == 403)
            .then_some(())
            .ok_or(format!("/http/x without leave: {s}\n{}", up.stderr()))
    })
    .await;
    let cases: [(&str, bool, u16, &str, &str); 8] = [
        ("/open", false, 200, "", ""),
        (
            "/http/x",
            false,
            403,
            "denied",
            "denied by ext_authz for GET /check/http/x (x-added: yes)",
        ),
        ("/http/x", true, 200, "allowed", ""),
        (
            "/grpc/x",
            false,
            401,
            "denied",
            "denied by gRPC ext_authz for GET /grpc/x",
        ),
        ("/grpc/x", true, 200, "allowed", ""),
        ("/nobody/x", true, 403, "", "RBAC: access denied"),
        ("/nobody", true, 200, "", ""),
        ("/grpc", false, 200, "", ""),
    ];
    let mut failures = Vec::new();
    for (path, allow, status, result, body) in cases {
        match ask(gateway, path, allow).await {
            Ok((s, r, b)) if s == status && r == result && b == body => {}
            got => failures.push(format!(
                "{path} allow={allow}: got {got:?}, want {status} {result:?} {body:?}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "envoy: {envoy}\n{}\n{}",
        failures.join("\n"),
        up.stderr()
    );
    assert!(
        up.stderr().contains("no-such-provider"),
        "the unknown provider went unreported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_authorization_with_weft_proxies() {
    custom(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_authorization_with_envoy() {
    custom(true).await;
}
