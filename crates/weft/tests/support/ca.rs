//! The mesh CA in the test process, as the control plane serves it on 15012: Istio's certificate
//! service over TLS with a certificate for istiod's name, and the credentials it honours.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weft_ca::Ca;
use weft_ca::service::{CaService, Credentials};

pub struct MeshCa {
    pub ca: Arc<Ca>,
    pub credentials: Arc<Credentials>,
    /// Where the certificate service listens.
    pub address: SocketAddr,
    /// The mesh roots, written for proxies and agents to trust the CA by.
    pub root: PathBuf,
}

/// A CA kept in `dir/ca`, serving on a free port; its roots in `dir/root-cert.pem`.
pub async fn start(dir: &Path) -> MeshCa {
    let ca = Arc::new(Ca::open(&dir.join("ca"), None, "cluster.local").unwrap());
    let server = ca
        .issue_server(&["istiod.istio-system.svc"], Duration::from_secs(3600))
        .unwrap();
    let credentials = Arc::new(Credentials::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&server.cert_chain, &server.key),
            ))
            .unwrap()
            .add_service(CaService::new(ca.clone(), credentials.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let root = dir.join("root-cert.pem");
    std::fs::write(&root, ca.roots_pem()).unwrap();
    MeshCa {
        ca,
        credentials,
        address,
        root,
    }
}
