//! The proxy as its own Istio agent: it makes its key and CSR, gets its workload certificate
//! from the mesh CA (Istio's `CreateCertificate` on 15012, proving itself with its credential),
//! and renews it at half its life, keeping the one it has while renewal fails. What it holds is
//! what Envoy's SDS secrets `default` (certificate and key) and `ROOTCA` (trusted roots) carry.

pub mod ads;
pub mod sds;
pub mod tls;

use arc_swap::ArcSwapOption;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use weft_ca::service::{
    CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

static SECRETS: std::sync::OnceLock<Arc<SecretStore>> = std::sync::OnceLock::new();

/// The process's secrets: one identity per proxy process, as one agent per pod. TLS contexts
/// that name SDS secrets read them here.
pub fn secrets() -> &'static Arc<SecretStore> {
    SECRETS.get_or_init(Arc::default)
}

/// Where the CA is and how to prove who this proxy is.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `host:port` of the CA (the control plane's 15012).
    pub ca_address: String,
    /// PEM of the roots the CA's server certificate must chain to.
    pub ca_root: String,
    /// The name the CA's certificate must carry (Istio's `istiod.istio-system.svc`).
    pub ca_server_name: String,
    /// The credential sent as `authorization: Bearer …`.
    pub credential: String,
    /// The lifetime to ask for; the CA's default when `None`.
    pub ttl: Option<Duration>,
}

/// A workload certificate as served: the `default` and `ROOTCA` secrets.
#[derive(Debug, Clone)]
pub struct WorkloadCert {
    /// PEM, leaf first.
    pub chain: Vec<String>,
    pub key: String,
    /// PEM of every trusted root.
    pub roots: String,
    /// The leaf's SPIFFE identities.
    pub identities: Vec<String>,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When this proxy received it, by its own clock.
    pub received: SystemTime,
    /// The chain and key as TLS presents them.
    pub certified: Arc<rustls::sign::CertifiedKey>,
    /// The roots as TLS checks peers against them.
    pub root_store: Arc<rustls::RootCertStore>,
}

impl WorkloadCert {
    /// When to renew: half-way from receipt to expiry, as Istio's agent counts (the CA dates
    /// certificates a little back for clock skew, which is not life to wait out).
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.received)
            .unwrap_or_default();
        self.received + life / 2
    }
}

/// The proxy's secrets: read by TLS contexts, SDS and the admin `/certs`, replaced whole on
/// renewal.
#[derive(Debug)]
pub struct SecretStore {
    pub current: ArcSwapOption<WorkloadCert>,
    /// Certificates obtained, and attempts that failed: the agent's health at a glance.
    pub issued: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    /// Bumped with every new certificate, for those who push it on (SDS streams).
    pub version: tokio::sync::watch::Sender<u64>,
}

impl Default for SecretStore {
    fn default() -> SecretStore {
        SecretStore {
            current: ArcSwapOption::empty(),
            issued: std::sync::atomic::AtomicU64::new(0),
            failed: std::sync::atomic::AtomicU64::new(0),
            version: tokio::sync::watch::channel(0).0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("making the key or CSR: {0}")]
    Key(String),
    #[error("reaching the CA at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("the CA refused: {0}")]
    Refused(String),
    #[error("the CA's answer is unusable: {0}")]
    Answer(String),
}

/// How long to wait after a failed attempt: 1 s, doubling up to 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

/// Keeps `store` holding a valid certificate until the runtime stops.
pub async fn run(options: AgentOptions, store: Arc<SecretStore>) {
    let mut failures = 0u32;
    loop {
        match fetch(&options).await {
            Ok(cert) => {
                failures = 0;
                tracing::info!(
                    identity = cert.identities.join(",").as_str(),
                    serial = cert.serial.as_str(),
                    "workload certificate issued"
                );
                let wait = cert
                    .renew_at()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                store.current.store(Some(Arc::new(cert)));
                store.version.send_modify(|v| *v += 1);
                store
                    .issued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                store
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The certificate held, if any, keeps serving until it expires.
                tracing::warn!(error = %e, "workload certificate not renewed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
            }
        }
    }
}

/// One round: a new key, a CSR, and the CA's signed chain.
pub async fn fetch(options: &AgentOptions) -> Result<WorkloadCert, AgentError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Key(e.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| AgentError::Key(e.to_string()))?;
    let connect = |reason: String| AgentError::Connect {
        address: options.ca_address.clone(),
        reason,
    };
    let channel = Channel::from_shared(format!("https://{}", options.ca_address))
        .map_err(|e| connect(e.to_string()))?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&options.ca_root))
                .domain_name(options.ca_server_name.clone()),
        )
        .map_err(|e| connect(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| connect(format!("{e:?}")))?;
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.map_err(|e| connect(e.to_string()))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: options
            .ttl
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
    });
    let bearer = format!("Bearer {}", options.credential)
        .parse()
        .map_err(|_| AgentError::Key("the credential is not header text".into()))?;
    request.metadata_mut().insert("authorization", bearer);
    let response: IstioCertificateResponse = client
        .unary(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(|s| AgentError::Refused(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    workload_cert(response.cert_chain, key.serialize_pem())
}

/// Istio's response (leaf first, the roots last) as the secrets it makes.
fn workload_cert(mut chain: Vec<String>, key: String) -> Result<WorkloadCert, AgentError> {
    if chain.len() < 2 {
        return Err(AgentError::Answer(format!(
            "{} certificate(s); a leaf and the roots are expected",
            chain.len()
        )));
    }
    let roots = chain.pop().unwrap_or_default();
    let leaf_pem = chain.first().cloned().unwrap_or_default();
    let der = PemObject::from_pem_slice(leaf_pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .map_err(|e| AgentError::Answer(format!("the leaf is not PEM: {e}")))?;
    let (_, leaf) = X509Certificate::from_der(&der)
        .map_err(|e| AgentError::Answer(format!("the leaf is not X.509: {e}")))?;
    let identities = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let answer = |what: &str, e: &dyn std::fmt::Display| AgentError::Answer(format!("{what}: {e}"));
    let chain_der: Vec<rustls_pki_types::CertificateDer<'static>> = chain
        .iter()
        .flat_map(|pem| rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| answer("the chain is not PEM", &e))?;
    let key_der = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| answer("the key is not PEM", &e))?;
    let provider = crate::upstream::tls::provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| answer("the key is unusable", &e))?;
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain_der, signing));
    let mut root_store = rustls::RootCertStore::empty();
    for root in rustls_pki_types::CertificateDer::pem_slice_iter(roots.as_bytes()) {
        let root = root.map_err(|e| answer("the roots are not PEM", &e))?;
        root_store
            .add(root)
            .map_err(|e| answer("a root is unusable", &e))?;
    }
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    let validity = leaf.validity();
    Ok(WorkloadCert {
        identities,
        serial: leaf.raw_serial_as_string(),
        not_before: time(validity.not_before),
        not_after: time(validity.not_after),
        received: SystemTime::now(),
        certified,
        root_store: Arc::new(root_store),
        chain,
        key,
        roots,
    })
}

/// Envoy's admin `/certs`: each secret's certificates, with their SANs and lifetimes.
pub fn certs_json(store: &SecretStore) -> serde_json::Value {
    let Some(cert) = store.current.load_full() else {
        return serde_json::json!({ "certificates": [] });
    };
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let days_left = cert
        .not_after
        .duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs() / 86_400);
    let sans: Vec<serde_json::Value> = cert
        .identities
        .iter()
        .map(|u| serde_json::json!({ "uri": u }))
        .collect();
    serde_json::json!({ "certificates": [ {
        "ca_cert": [ { "path": "<inline>", "secret": "ROOTCA" } ],
        "cert_chain": [ {
            "path": "<inline>",
            "secret": "default",
            "serial_number": cert.serial,
            "subject_alt_names": sans,
            "days_until_expiration": days_left.to_string(),
            "valid_from_seconds": secs(cert.not_before),
            "expiration_time_seconds": secs(cert.not_after),
        } ],
    } ] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

    fn root(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    }

    /// During a root rotation the CA hands out both roots: a peer signed by either is trusted.
    #[test]
    fn a_bundle_of_two_roots_trusts_peers_of_either() {
        let (old_pem, old) = root("old root");
        let (new_pem, new) = root("new root");
        let leaf = |issuer: &Issuer<'static, KeyPair>| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.subject_alt_names = vec![SanType::URI(
                "spiffe://cluster.local/ns/default/sa/web"
                    .try_into()
                    .unwrap(),
            )];
            let key = KeyPair::generate().unwrap();
            (params.signed_by(&key, issuer).unwrap(), key)
        };
        let (mine, key) = leaf(&new);
        let cert = workload_cert(
            vec![mine.pem(), format!("{old_pem}{new_pem}")],
            key.serialize_pem(),
        )
        .unwrap();
        assert_eq!(cert.root_store.len(), 2);
        let provider = crate::upstream::tls::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            cert.root_store.clone(),
            provider,
        )
        .build()
        .unwrap();
        for issuer in [&old, &new] {
            let (peer, _) = leaf(issuer);
            verifier
                .verify_client_cert(peer.der(), &[], rustls::pki_types::UnixTime::now())
                .unwrap();
        }
        let (_, stranger) = root("stranger");
        let (peer, _) = leaf(&stranger);
        assert!(
            verifier
                .verify_client_cert(peer.der(), &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
    }
}
