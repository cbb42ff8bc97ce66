//! PeerAuthentication and auto mTLS through `weft up` with its CA on, with Weft proxies and
//! with Envoy. The workload's own sidecar fronts it (`inbound` in the status file says where);
//! the ingress gateway, with no DestinationRule, speaks the mesh's mTLS to it whenever the
//! sidecar takes it (auto mTLS). Each step edits the folder and checks, from outside, what a
//! plaintext client gets at the sidecar's port, what the gateway gets, and whether the sidecar
//! terminated TLS for it (its `listener.*.ssl.handshake` counter).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;

use support::up::Up;
use support::xds::eventually;

const STRICT_MESH: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec: { mtls: { mode: STRICT } }\n";

/// The sidecar's admin and inbound addresses, from the status file.
fn sidecar(up: &Up) -> (SocketAddr, SocketAddr) {
    let status = up.wait_status("the sidecar's inbound port", |s| {
        Up::proxy(s, "sidecar default/web-v1")
            .is_some_and(|p| p["inbound"][0]["sidecar"].is_string())
    });
    let p = Up::proxy(&status, "sidecar default/web-v1").unwrap();
    (
        p["admin"].as_str().unwrap().parse().unwrap(),
        p["inbound"][0]["sidecar"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    )
}

/// TLS handshakes the sidecar's inbound listeners completed.
async fn handshakes(admin: SocketAddr) -> u64 {
    let stats = support::try_request(admin, &support::Req::get("admin", "/stats"))
        .await
        .unwrap();
    String::from_utf8_lossy(&stats.body)
        .lines()
        .filter(|l| l.starts_with("listener.") && l.contains(".ssl.handshake: "))
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

/// Writes `file` (removes it for `None`), waits for the control plane to take the edit, then
/// until the plaintext client and the gateway both get what `want` says.
async fn step(
    up: &Up,
    dir: &Path,
    file: &str,
    text: Option<&str>,
    (plain, gateway): (SocketAddr, SocketAddr),
    want: (fn(&str) -> bool, &str),
) {
    let before = up.generation();
    match text {
        Some(t) => std::fs::write(dir.join(file), t).unwrap(),
        None => std::fs::remove_file(dir.join(file)).unwrap(),
    }
    tokio::task::block_in_place(|| {
        up.wait_status(file, |s| s["config"]["generation"].as_u64() > Some(before))
    });
    eventually(&format!("after {file}"), || async {
        let p = support::upstream_name(plain, "web").await;
        let g = support::upstream_name(gateway, "web.example").await;
        if want.0(&p) && g == want.1 {
            return Ok(());
        }
        Err(format!(
            "plaintext got {p:?}, the gateway {g:?}\n{}",
            up.stderr()
        ))
    })
    .await;
}

fn answered(got: &str) -> bool {
    got == "web-v1"
}

/// Refused: the connection ends without an HTTP answer.
fn refused(got: &str) -> bool {
    got != "web-v1" && !got.starts_with("HTTP ")
}

async fn modes(envoy: bool) {
    let app = support::start_echo("web-v1").await;
    let mesh = tempfile::tempdir().unwrap();
    let base = support::up::base_mesh(app.port()).replace(
        "labels: { app: web, version: v1 }",
        "labels: { app: web, version: v1 }, serviceAccount: web",
    );
    std::fs::write(mesh.path().join("base.yaml"), base).unwrap();
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(mesh.path(), envoy, &args));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    let (admin, inbound) = sidecar(&up);
    let ends = (inbound, gateway);
    let dir = mesh.path();

    // Nothing set: PERMISSIVE. Plaintext gets in; the gateway's auto mTLS is terminated.
    step(
        &up,
        dir,
        "none.yaml",
        Some("\n"),
        ends,
        (answered, "web-v1"),
    )
    .await;
    let tls = handshakes(admin).await;
    assert!(tls > 0, "the gateway did not speak mTLS to the sidecar");

    // STRICT for the whole mesh: plaintext is refused, the gateway's mTLS still gets in.
    step(
        &up,
        dir,
        "mesh.yaml",
        Some(STRICT_MESH),
        ends,
        (refused, "web-v1"),
    )
    .await;

    // A namespace policy left UNSET inherits the mesh's STRICT.
    let unset = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: default }\nspec: { mtls: { mode: UNSET } }\n";
    step(&up, dir, "ns.yaml", Some(unset), ends, (refused, "web-v1")).await;

    // The workload turns mTLS off on its application's port: plaintext gets in, and the
    // gateway's auto mTLS falls back to plaintext for that endpoint (the port has no TLS
    // chain left, so an answer is a plaintext one).
    let port_level = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: web, namespace: default }}\nspec:\n  selector: {{ matchLabels: {{ app: web }} }}\n  portLevelMtls:\n    {}: {{ mode: DISABLE }}\n",
        app.port()
    );
    step(
        &up,
        dir,
        "web.yaml",
        Some(&port_level),
        ends,
        (answered, "web-v1"),
    )
    .await;
    // A DestinationRule that insists on ISTIO_MUTUAL meets a port that takes no TLS.
    let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: web }\nspec:\n  host: web\n  trafficPolicy: { tls: { mode: ISTIO_MUTUAL } }\n";
    step(
        &up,
        dir,
        "rule.yaml",
        Some(rule),
        ends,
        (answered, "HTTP 503"),
    )
    .await;
    step(&up, dir, "rule.yaml", None, ends, (answered, "web-v1")).await;

    // The workload policy gone, the namespace says DISABLE: plaintext everywhere, and no
    // auto mTLS to the namespace's services.
    step(&up, dir, "web.yaml", None, ends, (refused, "web-v1")).await;
    let disable = unset.replace("UNSET", "DISABLE");
    step(
        &up,
        dir,
        "ns.yaml",
        Some(&disable),
        ends,
        (answered, "web-v1"),
    )
    .await;
    step(
        &up,
        dir,
        "rule.yaml",
        Some(rule),
        ends,
        (answered, "HTTP 503"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentication_levels_and_auto_mtls_with_weft_proxies() {
    modes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentication_levels_and_auto_mtls_with_envoy() {
    modes(true).await;
}
