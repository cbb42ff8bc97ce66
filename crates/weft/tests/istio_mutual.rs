//! A DestinationRule with `tls.mode: ISTIO_MUTUAL`, through `weft up` with Weft proxies and
//! with Envoy: the ingress gateway originates the mesh's mTLS with its own SPIFFE identity from
//! the mesh CA (an operator's, plugged in with `--cacerts`), and checks the server's identity
//! against the service's workload identities. The server end is the workload's own sidecar,
//! which `weft up` puts on its inbound path: it terminates the mTLS (PERMISSIVE, the default)
//! with the certificate the CA gave it for the workload's service account, and hands the
//! request to the application. With `subjectAltNames` naming another identity, nothing gets
//! through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use support::up::Up;
use support::xds::eventually_within;
use weft_ca::Ca;

/// A counter of the workload sidecar's admin `/stats`, found through the status file.
async fn sidecar_counter(status: &Value, suffix: &str) -> u64 {
    let sidecar = Up::proxy(status, "sidecar default/web-v1").unwrap();
    let admin: SocketAddr = sidecar["admin"].as_str().unwrap().parse().unwrap();
    let stats = support::try_request(admin, &support::Req::get("admin", "/stats"))
        .await
        .unwrap();
    String::from_utf8_lossy(&stats.body)
        .lines()
        .filter(|l| l.starts_with("listener.") && l.split(": ").next().unwrap().ends_with(suffix))
        .filter_map(|l| l.split(": ").nth(1)?.trim().parse::<u64>().ok())
        .sum()
}

async fn istio_mutual(envoy: bool) {
    let dir = tempfile::tempdir().unwrap();
    Ca::open(&dir.path().join("ca"), None, "cluster.local").unwrap();
    let app = support::start_echo("web-v1").await;
    let mesh = tempfile::tempdir().unwrap();
    let base = support::up::base_mesh(app.port()).replace(
        "labels: { app: web, version: v1 }",
        "labels: { app: web, version: v1 }, serviceAccount: web",
    );
    assert!(base.contains("serviceAccount: web"));
    std::fs::write(mesh.path().join("base.yaml"), base).unwrap();
    let rule = |sans: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: web }}\nspec:\n  host: web\n  trafficPolicy: {{ tls: {{ mode: ISTIO_MUTUAL{sans} }} }}\n"
        )
    };
    std::fs::write(mesh.path().join("rule.yaml"), rule("")).unwrap();
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
        "--cacerts".to_string(),
        dir.path().join("ca").display().to_string(),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(mesh.path(), envoy, &args));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    eventually_within(
        "an answer over the mesh's mTLS",
        Duration::from_secs(20),
        || async {
            match support::upstream_name(gateway, "web.example").await {
                got if got == "web-v1" => Ok(()),
                got => Err(format!("{got}\n{}", up.stderr())),
            }
        },
    )
    .await;

    // The workload's sidecar terminated it.
    let status = up.status().unwrap();
    assert!(sidecar_counter(&status, ".ssl.handshake").await > 0);

    // The rule now expects another identity of the server: secure naming refuses it.
    let before = up.generation();
    std::fs::write(
        mesh.path().join("rule.yaml"),
        rule(", subjectAltNames: [ \"spiffe://cluster.local/ns/default/sa/other\" ]"),
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        up.wait_status("the edit", |s| {
            s["config"]["generation"].as_u64() > Some(before)
        })
    });
    eventually_within(
        "secure naming refusing",
        Duration::from_secs(10),
        || async {
            match support::upstream_name(gateway, "web.example").await {
                got if got == "HTTP 503" => Ok(()),
                got => Err(format!("still answered: {got}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_through_weft_up_with_weft_proxies() {
    istio_mutual(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_through_weft_up_with_envoy() {
    istio_mutual(true).await;
}
