//! TLS termination on a filter chain (`transport_socket` `envoy.transport_sockets.tls` with a
//! `DownstreamTlsContext`): the chain's network filter reads the decrypted stream.
//!
//! As in Envoy: the server certificate is the context's one `tls_certificates` entry; ALPN
//! offers `alpn_protocols`; with a `validation_context.trusted_ca` a client certificate is asked
//! for and, when given, must lead to that CA; `require_client_certificate` refuses a client
//! without one. The certificate may be SDS secret `default` and the CA SDS `ROOTCA` (the agent's,
//! read at each handshake), and the client's SANs may be required to match.

use crate::agent::tls::{PeerVerifier, Roots, SanMatcher, SdsCertificate};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

/// The certificate a server presents.
#[derive(Debug)]
pub enum ServerCert {
    Static {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    },
    /// SDS `default`: the agent's workload certificate.
    Sds,
    /// An SDS secret from the ADS stream (a gateway's `credentialName`).
    Ads(String),
}

/// What `convert` reads from the proto.
#[derive(Debug)]
pub struct ServerSettings {
    pub cert: ServerCert,
    pub alpn: Vec<Vec<u8>>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub client_ca: Option<Roots>,
    /// Client certificates must carry a SAN one of these accepts (none: any).
    pub client_sans: Vec<SanMatcher>,
    pub require_client_certificate: bool,
}

/// A filter chain's TLS, ready to accept with.
pub struct DownstreamTls {
    config: Arc<ServerConfig>,
    /// The same without ALPN, for a client that offers none of ours: Envoy then goes on with
    /// no protocol agreed (the mesh's clients offer `istio-peer-exchange`, `istio` to servers
    /// that speak `h2`, `http/1.1`), where rustls alone would end the handshake.
    no_alpn: Option<Arc<ServerConfig>>,
    /// The URI SANs of a static certificate (XFCC's `By`); None: the SDS one, read when asked.
    static_uris: Option<Vec<String>>,
    /// The ADS secret the certificate is, if it is one.
    ads_certificate: Option<String>,
    /// The secrets it names on the ADS stream, which the xDS client asks for.
    pub ads_secrets: Vec<String>,
}

impl std::fmt::Debug for DownstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownstreamTls")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownstreamTlsError {
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificates: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("require_client_certificate needs a validation_context with a trusted_ca")]
    NoClientCa,
}

impl DownstreamTls {
    pub fn build(settings: ServerSettings) -> Result<Self, DownstreamTlsError> {
        let ads_roots = match &settings.client_ca {
            Some(Roots::Ads(name)) => Some(name.clone()),
            _ => None,
        };
        let provider = crate::upstream::tls::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&settings.versions)?;
        let builder = match settings.client_ca {
            Some(Roots::Static(roots)) if settings.client_sans.is_empty() => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = if settings.require_client_certificate {
                    verifier.build()?
                } else {
                    verifier.allow_unauthenticated().build()?
                };
                builder.with_client_cert_verifier(verifier)
            }
            Some(roots) => builder.with_client_cert_verifier(Arc::new(PeerVerifier::new(
                roots,
                settings.client_sans,
                settings.require_client_certificate,
                provider,
            ))),
            None if settings.require_client_certificate => {
                return Err(DownstreamTlsError::NoClientCa);
            }
            None => builder.with_no_client_auth(),
        };
        let static_uris = match &settings.cert {
            ServerCert::Static { chain, .. } => Some(
                chain
                    .first()
                    .map(|c| crate::http::xfcc::uri_sans(c.as_ref()))
                    .unwrap_or_default(),
            ),
            ServerCert::Sds | ServerCert::Ads(_) => None,
        };
        let ads_certificate = match &settings.cert {
            ServerCert::Ads(name) => Some(name.clone()),
            _ => None,
        };
        let mut ads_secrets: Vec<String> = ads_certificate.iter().cloned().collect();
        ads_secrets.extend(ads_roots);
        let mut config = match settings.cert {
            ServerCert::Static { chain, key } => builder.with_single_cert(chain, key)?,
            ServerCert::Sds => builder
                .with_cert_resolver(Arc::new(SdsCertificate(crate::agent::secrets().clone()))),
            ServerCert::Ads(name) => {
                builder.with_cert_resolver(Arc::new(crate::agent::ads::AdsCertificate(name)))
            }
        };
        let no_alpn = (!settings.alpn.is_empty()).then(|| Arc::new(config.clone()));
        config.alpn_protocols = settings.alpn;
        Ok(DownstreamTls {
            config: Arc::new(config),
            no_alpn,
            static_uris,
            ads_certificate,
            ads_secrets,
        })
    }

    /// The URI SANs of the certificate this context presents.
    pub fn local_uris(&self) -> Vec<String> {
        if let Some(name) = &self.ads_certificate {
            return crate::agent::ads::ads_secrets().uris(name);
        }
        match &self.static_uris {
            Some(uris) => uris.clone(),
            None => crate::agent::secrets()
                .current
                .load()
                .as_ref()
                .map(|c| c.identities.clone())
                .unwrap_or_default(),
        }
    }

    pub async fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        let Some(no_alpn) = &self.no_alpn else {
            return tokio_rustls::TlsAcceptor::from(self.config.clone())
                .accept(stream)
                .await;
        };
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await?;
        let ours = &self.config.alpn_protocols;
        let agreed = start
            .client_hello()
            .alpn()
            .is_none_or(|mut offered| offered.any(|p| ours.iter().any(|o| o == p)));
        let config = if agreed { &self.config } else { no_alpn };
        start.into_stream(config.clone()).await
    }
}
