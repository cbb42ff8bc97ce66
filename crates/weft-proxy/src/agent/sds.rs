//! The agent's secrets over Envoy's SDS (`envoy.service.secret.v3.SecretDiscoveryService`), on
//! a Unix socket, as Istio's `pilot-agent` serves them to stock Envoy: `default` is the
//! workload certificate and key, `ROOTCA` the trusted roots. A stream gets each secret it names
//! once there is one, and again with every renewal.

use super::{SecretStore, WorkloadCert};
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::BTreeSet;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Istio's names for the two secrets.
pub const DEFAULT: &str = "default";
pub const ROOTCA: &str = "ROOTCA";

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..Default::default()
    })
}

/// The named secret made of `cert`, if it is one the agent has.
pub fn secret(name: &str, cert: &WorkloadCert) -> Option<Secret> {
    let kind = match name {
        DEFAULT => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&cert.chain.concat()),
            private_key: inline(&cert.key),
            ..Default::default()
        }),
        ROOTCA => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(&cert.roots),
            ..Default::default()
        }),
        _ => return None,
    };
    Some(Secret {
        name: name.to_string(),
        r#type: Some(kind),
    })
}

struct Sds {
    store: Arc<SecretStore>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// The response carrying `names` (those the agent has), at the store's `version`.
fn response(
    store: &SecretStore,
    names: &BTreeSet<String>,
    version: u64,
) -> Option<DiscoveryResponse> {
    let cert = store.current.load_full()?;
    let resources: Vec<Any> = names
        .iter()
        .filter_map(|n| secret(n, &cert))
        .map(|s| Any {
            type_url: SECRET_TYPE.to_string(),
            value: s.encode_to_vec(),
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    Some(DiscoveryResponse {
        version_info: version.to_string(),
        resources,
        type_url: SECRET_TYPE.to_string(),
        nonce: version.to_string(),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type StreamSecretsStream = ResponseStream;
    type DeltaSecretsStream = DeltaStream;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut requests = request.into_inner();
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut versions = store.version.subscribe();
            let mut names: BTreeSet<String> = BTreeSet::new();
            let mut sent: Option<u64> = None;
            loop {
                tokio::select! {
                    req = requests.message() => {
                        let Ok(Some(req)) = req else { return };
                        if let Some(e) = &req.error_detail {
                            tracing::warn!(message = e.message.as_str(), "a proxy refused its secrets");
                        }
                        let asked: BTreeSet<String> = req.resource_names.into_iter().collect();
                        if asked == names && sent.is_some() {
                            continue; // an ACK
                        }
                        names = asked;
                        sent = None;
                    }
                    changed = versions.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                let version = *versions.borrow_and_update();
                if sent == Some(version) {
                    continue;
                }
                if let Some(r) = response(&store, &names, version) {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                    sent = Some(version);
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "the agent serves SDS as state of the world",
        ))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let names: BTreeSet<String> = request.into_inner().resource_names.into_iter().collect();
        let version = *self.store.version.borrow();
        response(&self.store, &names, version)
            .map(Response::new)
            .ok_or_else(|| Status::unavailable("no workload certificate yet"))
    }
}

/// Serves `store` over SDS on the Unix socket `path` (replacing a stale one) until the runtime
/// stops.
pub async fn serve(path: &Path, store: Arc<SecretStore>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(SecretDiscoveryServiceServer::new(Sds { store }))
        .serve_with_incoming(incoming)
        .await
        .map_err(std::io::Error::other)
}
