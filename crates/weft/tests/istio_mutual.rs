//! A DestinationRule with `tls.mode: ISTIO_MUTUAL`, through `weft up` with Weft proxies and
//! with Envoy: the ingress gateway originates the mesh's mTLS with its own SPIFFE identity from
//! the mesh CA (an operator's, plugged in with `--cacerts`), and checks the server's identity
//! against the service's workload identities. The server end is a sidecar of the test's, with
//! a certificate the same CA signed for the workload's service account; it lets in only the
//! gateway's identity. With `subjectAltNames` naming another identity, nothing gets through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::up::Up;
use support::{Kind, Proxy};
use weft_ca::{Ca, Identity};

const GATEWAY_ID: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

/// The workload's sidecar, terminating the mesh's mTLS in front of the app.
fn server(dir: &Path) -> String {
    format!(
        r#"
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{ADMIN}} }} }} }}
static_resources:
  listeners:
  - name: inbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{LISTEN}} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [ {{ certificate_chain: {{ filename: {d}/web.pem }}, private_key: {{ filename: {d}/web-key.pem }} }} ]
            validation_context:
              trusted_ca: {{ filename: {d}/ca/root-cert.pem }}
              match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: "{GATEWAY_ID}" }} }} ]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          http_filters: [ {{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }} ]
          route_config: {{ virtual_hosts: [ {{ name: app, domains: [ "*" ], routes: [ {{ match: {{ prefix: "/" }}, route: {{ cluster: app }} }} ] }} ] }}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment: {{ cluster_name: app, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{APP}} }} }} }} }} ] }} ] }}
"#,
        d = dir.display()
    )
}

async fn istio_mutual(envoy: bool) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(&dir.path().join("ca"), None, "cluster.local").unwrap();
    // The workload's certificate, for its service account `web`.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let signed = ca
        .sign(
            &csr,
            &[Identity::new("cluster.local", "default", "web")],
            None,
        )
        .unwrap();
    std::fs::write(dir.path().join("web.pem"), signed.cert_chain.concat()).unwrap();
    std::fs::write(dir.path().join("web-key.pem"), key.serialize_pem()).unwrap();
    let app = support::start_echo("web-v1").await;
    let sidecar = tokio::task::block_in_place(|| {
        Proxy::start(Kind::Envoy, &server(dir.path()), &[("APP", app.port())])
    });

    let mesh = tempfile::tempdir().unwrap();
    let base = support::up::base_mesh(sidecar.port("LISTEN")).replace(
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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = support::upstream_name(gateway, "web.example").await;
        if got == "web-v1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer over the mesh's mTLS: {got}\n{}\n{}",
            up.stderr(),
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = support::upstream_name(gateway, "web.example").await;
        if got == "HTTP 503" {
            break;
        }
        assert!(Instant::now() < deadline, "still answered: {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_through_weft_up_with_weft_proxies() {
    istio_mutual(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_through_weft_up_with_envoy() {
    istio_mutual(true).await;
}
