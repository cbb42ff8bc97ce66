//! Istio's certificate service over real gRPC and TLS, as an agent calls istiod on 15012: a
//! caller with a credential gets a chain for its own identity and nothing else; one without is
//! refused, and every refusal has its gRPC status and reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use std::sync::Arc;
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Server, ServerTlsConfig};
use tonic::{Code, Request, Status};
use weft_ca::service::{
    CREATE_CERTIFICATE_PATH, CaService, Credentials, IstioCertificateRequest,
    IstioCertificateResponse,
};
use weft_ca::{Ca, Identity};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn csr(sans: &[&str]) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI(s.to_string().try_into().unwrap()))
        .collect();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

async fn call(
    channel: &Channel,
    token: Option<&str>,
    csr: String,
    validity_duration: i64,
) -> Result<IstioCertificateResponse, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let mut req = Request::new(IstioCertificateRequest {
        csr,
        validity_duration,
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client
        .unary(
            req,
            PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}

/// The leaf's SAN URIs and lifetime in seconds.
fn leaf(pem_text: &str) -> (Vec<String>, i64) {
    let der = pem::parse(pem_text).unwrap().into_contents();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let names = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    let v = cert.validity();
    (names, v.not_after.timestamp() - v.not_before.timestamp())
}

#[tokio::test]
async fn certificates_are_issued_over_grpc_and_tls_to_proved_callers_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::open(dir.path(), None, "cluster.local").unwrap());
    let server = ca
        .issue_server(
            &["istiod.istio-system.svc", "127.0.0.1"],
            Duration::from_secs(3600),
        )
        .unwrap();
    let credentials = Arc::new(Credentials::default());
    let web = Identity::new("cluster.local", "shop", "web");
    let token = credentials.issue(web.clone()).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
        &server.cert_chain,
        &server.key,
    ));
    let service = CaService::new(ca.clone(), credentials.clone());
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The client trusts the mesh root and checks istiod's name, as an agent does.
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.roots_pem()))
                .domain_name("istiod.istio-system.svc"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();

    let uri = web.to_string();
    let ok = call(&channel, Some(&token), csr(&[&uri]), 0).await.unwrap();
    assert_eq!(ok.cert_chain.len(), 2, "leaf, then root");
    assert_eq!(ok.cert_chain[1], ca.roots_pem());
    assert_eq!(leaf(&ok.cert_chain[0]), (vec![uri.clone()], 24 * 3600 + 60));

    let hour = call(&channel, Some(&token), csr(&[]), 3600).await.unwrap();
    assert_eq!(leaf(&hour.cert_chain[0]), (vec![uri.clone()], 3600 + 60));

    let status = |r: Result<IstioCertificateResponse, Status>| {
        let s = r.unwrap_err();
        (s.code(), s.message().to_string())
    };
    let (code, why) = status(call(&channel, None, csr(&[]), 0).await);
    assert_eq!(code, Code::Unauthenticated, "{why}");
    assert!(why.contains("credential"), "{why}");
    let (code, _) = status(call(&channel, Some("forged"), csr(&[]), 0).await);
    assert_eq!(code, Code::Unauthenticated);
    let other = "spiffe://cluster.local/ns/bank/sa/vault";
    let (code, why) = status(call(&channel, Some(&token), csr(&[other]), 0).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(why.contains(other), "{why}");
    let (code, why) = status(call(&channel, Some(&token), "garbage".into(), 0).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(why.contains("CSR"), "{why}");
    let (code, _) = status(call(&channel, Some(&token), "x".repeat(100_000), 0).await);
    assert_eq!(code, Code::InvalidArgument);

    // A withdrawn credential proves nothing any more.
    credentials.revoke(&token);
    let (code, _) = status(call(&channel, Some(&token), csr(&[]), 0).await);
    assert_eq!(code, Code::Unauthenticated);

    let counts = ca.refusals().counts().to_vec();
    assert_eq!(
        counts,
        [
            ("too_large", 1),
            ("malformed", 1),
            ("foreign_identity", 1),
            ("ttl", 0)
        ]
    );
}
