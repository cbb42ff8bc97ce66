//! The ingress gateway and the mesh's own mTLS, through `weft up` with its CA, with Weft
//! proxies and with Envoy:
//! - an HTTPS server with `tls.mode: ISTIO_MUTUAL` terminates mTLS with the gateway's workload
//!   certificate and lets in only clients with a certificate of the mesh CA, whose identity and
//!   certificate the application then reads in `x-forwarded-client-cert`;
//! - a TLS server with `tls.mode: AUTO_PASSTHROUGH` terminates nothing: it reads the SNI a
//!   sidecar sends (`outbound_.80_._.web.default.svc.cluster.local`) and passes the connection
//!   to that service's workloads, whose own sidecar answers the handshake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::Req;
use support::up::Up;
use support::xds::eventually_within;
use weft_ca::{Ca, Identity};

const GATEWAYS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: mesh-gateway }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 443, name: https, protocol: HTTPS }
    hosts: [ "*" ]
    tls: { mode: ISTIO_MUTUAL }
  - port: { number: 15443, name: tls, protocol: TLS }
    hosts: [ "*.local" ]
    tls: { mode: AUTO_PASSTHROUGH }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web-mtls }
spec:
  hosts: [ "*" ]
  gateways: [ mesh-gateway ]
  http:
  - route: [ { destination: { host: web } } ]
"#;

/// Trusts any server: the AUTO_PASSTHROUGH check reads who answered instead.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client with a certificate of the mesh CA for `default/client`, or none.
fn client(ca: &Ca, with_cert: bool, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = if with_cert {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let signed = ca
            .sign(
                &csr,
                &[Identity::new("cluster.local", "default", "client")],
                None,
            )
            .unwrap();
        let chain: Vec<CertificateDer<'static>> = signed
            .cert_chain
            .iter()
            .flat_map(|pem| rustls_pemfile_certs(pem))
            .collect();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        builder.with_client_auth_cert(chain, der).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(config)
}

fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

/// A GET over TLS with `sni`: the upstream's name (or the status), the SPIFFE identity of
/// whoever answered the handshake, and the `x-forwarded-client-cert` the application heard.
async fn get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> Result<(String, String, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| {
            let (_, parsed) = x509_parser::parse_x509_certificate(c.as_ref()).unwrap();
            parsed
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|san| {
                    san.value.general_names.iter().find_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let r = support::send(tls, &Req::get("web.example", "/"), "https").await?;
    let xfcc = r
        .json()
        .and_then(|j| {
            j["headers"]["x-forwarded-client-cert"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    let who = if r.status == 200 {
        r.json().unwrap()["upstream"].as_str().unwrap().to_string()
    } else {
        format!("HTTP {}", r.status)
    };
    Ok((who, peer, xfcc))
}

async fn gateway_mtls(envoy: bool) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(&dir.path().join("ca"), None, "cluster.local").unwrap();
    let app = support::start_echo("web-v1").await;
    let mesh = tempfile::tempdir().unwrap();
    let base = support::up::base_mesh(app.port()).replace(
        "labels: { app: web, version: v1 }",
        "labels: { app: web, version: v1 }, serviceAccount: web",
    );
    std::fs::write(mesh.path().join("base.yaml"), base).unwrap();
    std::fs::write(mesh.path().join("gateways.yaml"), GATEWAYS).unwrap();
    let (https, auto) = (support::free_port(), support::free_port());
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
        "--cacerts".to_string(),
        dir.path().join("ca").display().to_string(),
        "--gateway-port".to_string(),
        format!("443={https}"),
        "--gateway-port".to_string(),
        format!("15443={auto}"),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(mesh.path(), envoy, &args));
    let https = SocketAddr::from(([127, 0, 0, 1], https));
    let auto = SocketAddr::from(([127, 0, 0, 1], auto));
    let gateway_id =
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let web_id = "spiffe://cluster.local/ns/default/sa/web";
    let sni = "outbound_.80_._.web.default.svc.cluster.local";

    // ISTIO_MUTUAL: a client of the mesh gets in, and the gateway presented its own identity.
    let xfcc = eventually_within("ISTIO_MUTUAL", Duration::from_secs(20), || async {
        match get(https, client(&ca, true, &["http/1.1"]), "web.example").await {
            Ok((who, peer, heard)) if who == "web-v1" && peer == gateway_id => Ok(heard),
            got => Err(format!("{got:?}\n{}", up.stderr())),
        }
    })
    .await;
    // The application hears who called: the gateway set its mTLS client's certificate
    // (SANITIZE_SET), and the workload's sidecar appended the gateway's identity.
    let (gateway_hop, sidecar_hop) = xfcc.split_once(',').unwrap_or_else(|| panic!("{xfcc}"));
    assert!(
        gateway_hop.starts_with(&format!("By={gateway_id};Hash="))
            && gateway_hop.contains(";Cert=\"-----BEGIN%20CERTIFICATE-----%0A")
            && gateway_hop.ends_with(";URI=spiffe://cluster.local/ns/default/sa/client"),
        "{xfcc}"
    );
    assert!(
        sidecar_hop.starts_with(&format!("By={web_id};Hash="))
            && sidecar_hop.ends_with(&format!(";URI={gateway_id}")),
        "{xfcc}"
    );
    let anonymous = get(https, client(&ca, false, &["http/1.1"]), "web.example").await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate got {anonymous:?}"
    );

    // AUTO_PASSTHROUGH: the workload's sidecar answers the handshake through the gateway.
    eventually_within("AUTO_PASSTHROUGH", Duration::from_secs(20), || async {
        match get(auto, client(&ca, true, &["istio"]), sni).await {
            Ok((who, peer, _)) if who == "web-v1" && peer == web_id => Ok(()),
            got => Err(format!("{got:?}\n{}", up.stderr())),
        }
    })
    .await;
    // An SNI no service port has, or no Istio ALPN, matches no chain.
    for (name, alpn) in [
        ("outbound_.81_._.web.default.svc.cluster.local", "istio"),
        (sni, "http/1.1"),
    ] {
        let got = get(auto, client(&ca, true, &[alpn]), name).await;
        assert!(got.is_err(), "{name} {alpn}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_and_auto_passthrough_gateways_with_weft_proxies() {
    gateway_mtls(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_and_auto_passthrough_gateways_with_envoy() {
    gateway_mtls(true).await;
}
