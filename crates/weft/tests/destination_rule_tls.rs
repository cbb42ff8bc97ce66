//! DestinationRule `tls` modes DISABLE, SIMPLE and MUTUAL through `weft up`, with Weft proxies
//! and with Envoy: TLS origination from the ingress gateway to a service outside the mesh (a
//! ServiceEntry whose HTTP port 80 targets 443, the way Istio's egress TLS origination is
//! written), with the rule's `sni`, `caCertificates`, `subjectAltNames` and, for MUTUAL, the
//! client certificate, from files or from a Secret named by `credentialName`. The upstream
//! reports what its handshake showed. ISTIO_MUTUAL is `istio_mutual.rs`'s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;

use support::certs::{ca, leaf, server_config};
use support::up::Up;
use support::xds::eventually;

const ROUTE: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: web-gateway }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 80, name: http, protocol: HTTP }
    hosts: [ "*" ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: api }
spec:
  hosts: [ "*" ]
  gateways: [ web-gateway ]
  http:
  - route: [ { destination: { host: api.external.test, port: { number: 80 } } } ]
"#;

fn service_entry(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: api }}\nspec:\n  hosts: [ api.external.test ]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [ {{ number: 80, name: http, protocol: HTTP, targetPort: {port} }} ]\n  endpoints: [ {{ address: 127.0.0.1 }} ]\n"
    )
}

fn rule(tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: api }}\nspec:\n  host: api.external.test\n  trafficPolicy:\n    tls: {tls}\n"
    )
}

/// Writes the rule (and the ServiceEntry's target port), then waits until the gateway's answer
/// is `want`.
async fn step(up: &Up, dir: &Path, port: u16, tls: &str, gateway: SocketAddr, want: &str) {
    let before = up.generation();
    std::fs::write(dir.join("se.yaml"), service_entry(port)).unwrap();
    std::fs::write(dir.join("rule.yaml"), rule(tls)).unwrap();
    tokio::task::block_in_place(|| {
        up.wait_status("the edit", |s| {
            s["config"]["generation"].as_u64() > Some(before)
        })
    });
    eventually(&format!("tls {tls}"), || async {
        let got = support::upstream_name(gateway, "api.example").await;
        if got == want {
            return Ok(());
        }
        Err(format!("got {got:?}, want {want:?}\n{}", up.stderr()))
    })
    .await;
}

async fn modes(envoy: bool) {
    let files = tempfile::tempdir().unwrap();
    let d = files.path().display();
    let server_ca = ca("api CA");
    let client_ca = ca("client CA");
    let server = leaf(&server_ca, &["api.external.test"]);
    let client = leaf(&client_ca, &["gateway.test"]);
    for (f, text) in [
        ("ca.pem", &server_ca.pem),
        ("client.pem", &client.pem),
        ("client-key.pem", &client.key_pem),
    ] {
        std::fs::write(files.path().join(f), text).unwrap();
    }
    let plain = support::start_echo("plain").await;
    let simple = support::start_tls_echo(server_config(
        server.chain.clone(),
        server.key.clone_key(),
        None,
    ))
    .await;
    let mutual = support::start_tls_echo(server_config(
        server.chain.clone(),
        server.key.clone_key(),
        Some(&client_ca),
    ))
    .await;

    let mesh = tempfile::tempdir().unwrap();
    let dir = mesh.path();
    std::fs::write(dir.join("route.yaml"), ROUTE).unwrap();
    std::fs::write(dir.join("se.yaml"), service_entry(plain.port())).unwrap();
    let up = tokio::task::block_in_place(|| Up::start(dir, envoy));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));

    step(
        &up,
        dir,
        plain.port(),
        "{ mode: DISABLE }",
        gateway,
        "plain",
    )
    .await;
    // SIMPLE: the server is checked against the CA and the SNI is the rule's.
    let checked = format!("{{ mode: SIMPLE, sni: api.external.test, caCertificates: {d}/ca.pem }}");
    step(
        &up,
        dir,
        simple.port(),
        &checked,
        gateway,
        "tls sni=api.external.test alpn=http/1.1 client=no",
    )
    .await;
    // subjectAltNames the server's certificate does not carry: refused.
    let wrong = format!(
        "{{ mode: SIMPLE, sni: api.external.test, caCertificates: {d}/ca.pem, subjectAltNames: [ other.test ] }}"
    );
    step(&up, dir, simple.port(), &wrong, gateway, "HTTP 503").await;
    let named = format!(
        "{{ mode: SIMPLE, sni: api.external.test, caCertificates: {d}/ca.pem, subjectAltNames: [ api.external.test ] }}"
    );
    step(
        &up,
        dir,
        simple.port(),
        &named,
        gateway,
        "tls sni=api.external.test alpn=http/1.1 client=no",
    )
    .await;
    // MUTUAL: the gateway's client certificate, which the server requires.
    let mtls = format!(
        "{{ mode: MUTUAL, sni: api.external.test, caCertificates: {d}/ca.pem, clientCertificate: {d}/client.pem, privateKey: {d}/client-key.pem }}"
    );
    step(
        &up,
        dir,
        mutual.port(),
        &mtls,
        gateway,
        "tls sni=api.external.test alpn=http/1.1 client=yes",
    )
    .await;
    // SIMPLE to the server that requires a client certificate: refused.
    step(&up, dir, mutual.port(), &checked, gateway, "HTTP 503").await;

    // credentialName: the client certificate and the CA from a Secret of the gateway's
    // namespace, served to it over SDS on its ADS stream. First with a CA that is not the
    // server's, which must refuse it; then with the right one.
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let secret = |ca: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: api-cred, namespace: istio-system }}\nstringData:\n  cert: |\n{}  key: |\n{}  cacert: |\n{}",
            indent(&client.pem),
            indent(&client.key_pem),
            indent(ca)
        )
    };
    std::fs::write(dir.join("secret.yaml"), secret(&client_ca.pem)).unwrap();
    let simple_by_name = "{ mode: SIMPLE, sni: api.external.test, credentialName: api-cred, subjectAltNames: [ api.external.test ] }";
    step(&up, dir, simple.port(), simple_by_name, gateway, "HTTP 503").await;
    std::fs::write(dir.join("secret.yaml"), secret(&server_ca.pem)).unwrap();
    step(
        &up,
        dir,
        simple.port(),
        simple_by_name,
        gateway,
        "tls sni=api.external.test alpn=http/1.1 client=no",
    )
    .await;
    let by_name = "{ mode: MUTUAL, sni: api.external.test, credentialName: api-cred }";
    step(
        &up,
        dir,
        mutual.port(),
        by_name,
        gateway,
        "tls sni=api.external.test alpn=http/1.1 client=yes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_tls_modes_with_weft_proxies() {
    modes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_tls_modes_with_envoy() {
    modes(true).await;
}
