//! TLS to upstream hosts (`transport_socket` `envoy.transport_sockets.tls` with an
//! `UpstreamTlsContext`), with Envoy's semantics rather than a browser's:
//! - with a `validation_context.trusted_ca`, the chain must lead to that CA, but the host name is
//!   not compared with the certificate (Envoy checks names only when told which to expect);
//! - without one, any certificate is accepted, as Envoy does;
//! - with SAN matchers (`match_typed_subject_alt_names`), the certificate must carry a SAN one
//!   of them accepts: secure naming, the server's SPIFFE identity;
//! - the client certificate and the CA may be SDS `default` and `ROOTCA` (the agent's);
//! - SNI only when `sni` is set;
//! - ALPN from `alpn_protocols`, else the HTTP version the pool speaks (`h2` / `http/1.1`).

use crate::agent::tls::{Roots, SanMatcher, SdsCertificate, sans_match};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A cluster's upstream TLS, ready to use.
#[derive(Debug)]
pub struct UpstreamTls {
    /// The config as given, so that an unchanged cluster compares equal.
    pub source: String,
    pub sni: Option<ServerName<'static>>,
    pub http1: Arc<ClientConfig>,
    pub http2: Arc<ClientConfig>,
    /// For `tcp_proxy`: only the configured ALPN.
    pub raw: Arc<ClientConfig>,
    /// The secrets it names on the ADS stream, which the xDS client asks for.
    pub ads_secrets: Vec<String>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The certificate a client presents.
#[derive(Debug)]
pub enum ClientCert {
    Static(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    /// SDS `default`: the agent's workload certificate.
    Sds,
    /// An SDS secret from the ADS stream (a DestinationRule's `credentialName`).
    Ads(String),
}

/// What `convert` reads from the proto, before configs are built.
#[derive(Debug, Default)]
pub struct TlsSettings {
    pub sni: Option<String>,
    pub trusted_ca: Option<Roots>,
    pub sans: Vec<SanMatcher>,
    pub client_cert: Option<ClientCert>,
    pub alpn: Vec<Vec<u8>>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("not a usable server name: {0}")]
    Sni(String),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl UpstreamTls {
    pub fn build(settings: TlsSettings, source: String) -> Result<Self, TlsConfigError> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = Arc::new(EnvoyVerifier {
            roots: settings.trusted_ca.clone(),
            sans: settings.sans.clone(),
            provider: provider.clone(),
        });
        let make = |fallback: &[&[u8]]| -> Result<Arc<ClientConfig>, TlsConfigError> {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&settings.versions)?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone());
            let mut config = match &settings.client_cert {
                Some(ClientCert::Static(chain, key)) => {
                    builder.with_client_auth_cert(chain.clone(), key.clone_key())?
                }
                Some(ClientCert::Sds) => builder.with_client_cert_resolver(Arc::new(
                    SdsCertificate(crate::agent::secrets().clone()),
                )),
                Some(ClientCert::Ads(name)) => builder.with_client_cert_resolver(Arc::new(
                    crate::agent::ads::AdsCertificate(name.clone()),
                )),
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = if settings.alpn.is_empty() {
                fallback.iter().map(|p| p.to_vec()).collect()
            } else {
                settings.alpn.clone()
            };
            config.enable_sni = settings.sni.is_some();
            Ok(Arc::new(config))
        };
        let sni = match &settings.sni {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsConfigError::Sni(name.clone()))?,
            ),
            None => None,
        };
        let mut ads_secrets = Vec::new();
        if let Some(ClientCert::Ads(name)) = &settings.client_cert {
            ads_secrets.push(name.clone());
        }
        if let Some(Roots::Ads(name)) = &settings.trusted_ca {
            ads_secrets.push(name.clone());
        }
        Ok(UpstreamTls {
            ads_secrets,
            source,
            sni,
            http1: make(&[b"http/1.1"])?,
            http2: make(&[b"h2"])?,
            raw: make(&[])?,
        })
    }

    /// Runs the TLS handshake over `tcp`.
    pub async fn connect(
        &self,
        config: &Arc<ClientConfig>,
        address: SocketAddr,
        tcp: TcpStream,
    ) -> io::Result<UpstreamStream> {
        // Without `sni` the name is the address, which rustls never sends as SNI.
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await?;
        Ok(UpstreamStream::Tls(Box::new(stream)))
    }
}

/// Envoy's check of an upstream certificate: with `roots` (a `trusted_ca`), the chain must lead
/// to one of them, and the name is not compared (see the module doc); without, any certificate
/// is accepted. With `sans`, a SAN must match. The handshake signature is checked either way,
/// so the peer holds the certificate's key.
#[derive(Debug)]
struct EnvoyVerifier {
    roots: Option<Roots>,
    sans: Vec<SanMatcher>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EnvoyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let roots: Arc<RootCertStore> = roots
                .current()
                .ok_or_else(|| rustls::Error::General("no trusted roots yet".into()))?;
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                &roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        if !self.sans.is_empty() && !sans_match(&self.sans, end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An upstream connection, plain or TLS, or in memory (a test's `Connector`).
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS with Istio's metadata exchange: who the server said it is fills the slot.
    Exchanged(
        Box<crate::istio::exchange::ExchangeStream<tokio_rustls::client::TlsStream<TcpStream>>>,
        Arc<crate::istio::exchange::PeerSlot>,
    ),
    Memory(tokio::io::DuplexStream),
}

impl UpstreamStream {
    /// This end's address (`%UPSTREAM_LOCAL_ADDRESS%`); none in memory.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            UpstreamStream::Plain(s) => s.local_addr().ok(),
            UpstreamStream::Tls(s) => s.get_ref().0.local_addr().ok(),
            UpstreamStream::Exchanged(s, _) => s.get_ref().get_ref().0.local_addr().ok(),
            UpstreamStream::Memory(_) => None,
        }
    }

    /// The server's exchange, when the connection has one.
    pub fn peer_slot(&self) -> Option<&Arc<crate::istio::exchange::PeerSlot>> {
        match self {
            UpstreamStream::Exchanged(_, slot) => Some(slot),
            _ => None,
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            UpstreamStream::Exchanged(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
            UpstreamStream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            UpstreamStream::Exchanged(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
            UpstreamStream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            UpstreamStream::Exchanged(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
            UpstreamStream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            UpstreamStream::Exchanged(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
            UpstreamStream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            UpstreamStream::Exchanged(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            UpstreamStream::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
            UpstreamStream::Exchanged(s, _) => s.is_write_vectored(),
            UpstreamStream::Memory(s) => s.is_write_vectored(),
        }
    }
}
