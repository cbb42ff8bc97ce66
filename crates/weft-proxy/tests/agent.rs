//! The proxy's agent against the mesh CA over real gRPC and TLS: it gets its certificate,
//! renews it at half its life with a new key and serial, and when renewal fails (its credential
//! withdrawn) keeps serving the certificate it has while retrying.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use weft_ca::service::{CaService, Credentials};
use weft_ca::{Ca, Identity};
use weft_proxy::agent::{self, AgentOptions, SecretStore};

async fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn serial(store: &SecretStore) -> Option<String> {
    store.current.load_full().map(|c| c.serial.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_renewed_at_half_life_and_kept_while_renewal_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::open(dir.path(), None, "cluster.local").unwrap());
    let server = ca
        .issue_server(&["istiod.istio-system.svc"], Duration::from_secs(3600))
        .unwrap();
    let credentials = Arc::new(Credentials::default());
    let identity = Identity::new("cluster.local", "shop", "web");
    let token = credentials.issue(identity.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&server.cert_chain, &server.key),
            ))
            .unwrap()
            .add_service(CaService::new(ca.clone(), credentials.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let store = Arc::new(SecretStore::default());
    let options = AgentOptions {
        ca_address: addr.to_string(),
        ca_root: ca.roots_pem().to_string(),
        ca_server_name: "istiod.istio-system.svc".into(),
        credential: token.clone(),
        ttl: Some(Duration::from_secs(4)),
    };
    tokio::spawn(agent::run(options, store.clone()));

    wait("a first certificate", Duration::from_secs(10), || {
        store.current.load().is_some()
    })
    .await;
    let first = store.current.load_full().unwrap();
    assert_eq!(first.identities, [identity.to_string()]);
    assert!(first.key.contains("PRIVATE KEY"));
    assert_eq!(first.roots, ca.roots_pem());
    // Four seconds of life: renewed at half of what is left when it arrives, about two seconds
    // (`not_after` is in whole seconds, and issuing takes a moment on a loaded machine).
    let renew_in = first.renew_at().duration_since(first.received).unwrap();
    assert!(
        renew_in > Duration::from_secs(1) && renew_in <= Duration::from_secs(2),
        "{renew_in:?}"
    );
    let first_serial = first.serial.clone();
    wait("a renewal", Duration::from_secs(6), || {
        serial(&store).is_some_and(|s| s != first_serial)
    })
    .await;
    let second = store.current.load_full().unwrap();
    assert_ne!(second.key, first.key, "a new key each time");
    assert_eq!(store.issued.load(Ordering::Relaxed), 2);

    // The credential is withdrawn: renewals fail, and the certificate held stays.
    credentials.revoke(&token);
    wait("a failed renewal", Duration::from_secs(8), || {
        store.failed.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(serial(&store), Some(second.serial.clone()));
    assert_eq!(store.issued.load(Ordering::Relaxed), 2);
    let certs = agent::certs_json(&store);
    assert_eq!(
        certs["certificates"][0]["cert_chain"][0]["serial_number"],
        second.serial
    );
}
