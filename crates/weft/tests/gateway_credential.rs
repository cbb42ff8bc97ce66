//! A Gateway server's `credentialName`, through `weft up` with Weft proxies and with Envoy: the
//! certificate comes from a Kubernetes Secret in the folder (the gateway's namespace), served to
//! the gateway over SDS on its ADS stream as istiod serves it (`kubernetes://NAME`), in both of
//! the forms istiod reads (`tls.crt`/`tls.key`/`ca.crt` and `cert`/`key`/`cacert`). SIMPLE and
//! MUTUAL servers (with `subjectAltNames` the client's certificate must carry); an edit of the
//! Secret reaches the gateway with no restart; a Secret that is not there is reported with the
//! server it leaves out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine as _;
use std::net::SocketAddr;
use std::time::Duration;
use support::certs::{ca, client_config, leaf};
use support::up::Up;
use support::xds::eventually_within;
use support::{Req, try_request_tls};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: istio-system }}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(cert),
        b64(key)
    )
}

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: cred-gateway }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 443, name: https, protocol: HTTPS }
    hosts: [ "web.example" ]
    tls: { mode: SIMPLE, credentialName: web-cred }
  - port: { number: 9443, name: https-mutual, protocol: HTTPS }
    hosts: [ "*" ]
    tls: { mode: MUTUAL, credentialName: mutual-cred, subjectAltNames: [ client.test ] }
  - port: { number: 9444, name: https-missing, protocol: HTTPS }
    hosts: [ "*" ]
    tls: { mode: SIMPLE, credentialName: nope }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web-cred }
spec:
  hosts: [ "*" ]
  gateways: [ cred-gateway ]
  http:
  - route: [ { destination: { host: web } } ]
"#;

/// `eventually_within` 20 s, with `weft up`'s log in the failure.
async fn until(what: &str, up: &Up, check: impl AsyncFn() -> Result<(), String>) {
    eventually_within(what, Duration::from_secs(20), || async {
        check().await.map_err(|e| format!("{e}\n{}", up.stderr()))
    })
    .await
}

async fn answered(
    addr: SocketAddr,
    config: &rustls::ClientConfig,
    sni: &str,
) -> Result<(), String> {
    let r = try_request_tls(addr, &Req::get(sni, "/"), config, sni).await?;
    let who = r
        .json()
        .and_then(|j| j["upstream"].as_str().map(str::to_string));
    if r.status == 200 && who.as_deref() == Some("web-v1") {
        Ok(())
    } else {
        Err(format!("HTTP {} from {who:?}", r.status))
    }
}

async fn credential_name(envoy: bool) {
    let first = ca("first CA");
    let second = ca("second CA");
    let clients = ca("client CA");
    let server = leaf(&first, &["web.example"]);
    let renewed = leaf(&second, &["web.example"]);
    let client = leaf(&clients, &["client.test"]);
    let stranger = leaf(&clients, &["other.test"]);
    let app = support::start_echo("web-v1").await;
    let mesh = tempfile::tempdir().unwrap();
    let dir = mesh.path();
    std::fs::write(dir.join("base.yaml"), support::up::base_mesh(app.port())).unwrap();
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    std::fs::write(
        dir.join("web-cred.yaml"),
        tls_secret("web-cred", &server.pem, &server.key_pem),
    )
    .unwrap();
    // The generic form, written as stringData.
    let mutual = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: mutual-cred, namespace: istio-system }}\nstringData:\n  cert: |\n{}  key: |\n{}  cacert: |\n{}",
        indent(&server.pem),
        indent(&server.key_pem),
        indent(&clients.pem)
    );
    std::fs::write(dir.join("mutual-cred.yaml"), mutual).unwrap();
    let (simple, mutual) = (support::free_port(), support::free_port());
    let args = [
        "--gateway-port".to_string(),
        format!("443={simple}"),
        "--gateway-port".to_string(),
        format!("9443={mutual}"),
        "--gateway-port".to_string(),
        format!("9444={}", support::free_port()),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(dir, envoy, &args));
    let simple = SocketAddr::from(([127, 0, 0, 1], simple));
    let mutual = SocketAddr::from(([127, 0, 0, 1], mutual));

    let trusts_first = client_config(&first, None);
    until("SIMPLE with credentialName", &up, async || {
        answered(simple, &trusts_first, "web.example").await
    })
    .await;
    let with_cert = client_config(&first, Some(&client));
    until("MUTUAL with credentialName", &up, async || {
        answered(mutual, &with_cert, "web.example").await
    })
    .await;
    assert!(
        answered(mutual, &trusts_first, "web.example")
            .await
            .is_err(),
        "MUTUAL let in a client without a certificate"
    );
    // The server's subjectAltNames: a certificate of the right CA for another name is refused.
    let other = client_config(&first, Some(&stranger));
    assert!(
        answered(mutual, &other, "web.example").await.is_err(),
        "MUTUAL let in a client its subjectAltNames do not name"
    );
    assert!(
        up.stderr()
            .contains("credentialName \"nope\": no Secret istio-system/nope"),
        "{}",
        up.stderr()
    );

    // A new certificate in the Secret: the gateway presents it, with no restart.
    let pid =
        Up::proxy(&up.status().unwrap(), "gateway istio=ingressgateway").unwrap()["pid"].clone();
    std::fs::write(
        dir.join("web-cred.yaml"),
        tls_secret("web-cred", &renewed.pem, &renewed.key_pem),
    )
    .unwrap();
    let trusts_second = client_config(&second, None);
    until("the renewed certificate", &up, async || {
        answered(simple, &trusts_second, "web.example").await
    })
    .await;
    let now =
        Up::proxy(&up.status().unwrap(), "gateway istio=ingressgateway").unwrap()["pid"].clone();
    assert_eq!(pid, now, "the gateway was restarted");
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_name_from_a_secret_with_weft_proxies() {
    credential_name(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_name_from_a_secret_with_envoy() {
    credential_name(true).await;
}
