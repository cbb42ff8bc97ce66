//! The agent's secrets in TLS: Envoy's SDS secrets `default` (the workload certificate) and
//! `ROOTCA` (the mesh roots), as rustls reads them at each handshake, so that a renewal takes
//! effect on the next connection without a config change; and the peer SAN checks
//! (`match_typed_subject_alt_names`, `match_subject_alt_names`) that secure naming needs.

use super::SecretStore;
use crate::route::StringMatch;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Where trusted roots come from.
#[derive(Debug, Clone)]
pub enum Roots {
    Static(Arc<RootCertStore>),
    /// SDS `ROOTCA`: the agent's, as they are now.
    Sds(Arc<SecretStore>),
    /// An SDS secret from the ADS stream (a credential's CA), as it is now.
    Ads(String),
}

impl Roots {
    /// The roots now; none while the agent has no certificate yet.
    pub fn current(&self) -> Option<Arc<RootCertStore>> {
        match self {
            Roots::Static(r) => Some(r.clone()),
            Roots::Sds(store) => store.current.load().as_ref().map(|c| c.root_store.clone()),
            Roots::Ads(name) => super::ads::ads_secrets().roots(name),
        }
    }
}

/// Which SANs a matcher looks at (`SubjectAltNameMatcher.san_type`; `Any` for the older
/// `match_subject_alt_names`, which compares every SAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Any,
    Dns,
    Uri,
    Email,
    IpAddress,
}

#[derive(Debug, Clone)]
pub struct SanMatcher {
    pub san_type: SanType,
    pub matcher: StringMatch,
}

/// Whether `cert` has a SAN that one of `matchers` accepts (Envoy: any matcher, any SAN).
pub fn sans_match(matchers: &[SanMatcher], cert: &CertificateDer<'_>) -> bool {
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|name| {
        let (kind, text) = match name {
            GeneralName::DNSName(d) => (SanType::Dns, (*d).to_string()),
            GeneralName::URI(u) => (SanType::Uri, (*u).to_string()),
            GeneralName::RFC822Name(e) => (SanType::Email, (*e).to_string()),
            GeneralName::IPAddress(bytes) => (SanType::IpAddress, ip_text(bytes)),
            _ => return false,
        };
        matchers
            .iter()
            .any(|m| (m.san_type == SanType::Any || m.san_type == kind) && m.matcher.matches(&text))
    })
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).map_or_else(
            |_| String::new(),
            |b| std::net::Ipv4Addr::from(b).to_string(),
        ),
        16 => <[u8; 16]>::try_from(bytes).map_or_else(
            |_| String::new(),
            |b| std::net::Ipv6Addr::from(b).to_string(),
        ),
        _ => String::new(),
    }
}

/// SDS `default` as the certificate a server or client presents.
#[derive(Debug)]
pub struct SdsCertificate(pub Arc<SecretStore>);

impl SdsCertificate {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().as_ref().map(|c| c.certified.clone())
    }
}

impl ResolvesServerCert for SdsCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SdsCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server's check of client certificates against roots that may change (SDS `ROOTCA`), and
/// of their SANs. rustls's own verifier is kept per root set and rebuilt when it changes.
#[derive(Debug)]
pub struct PeerVerifier {
    roots: Roots,
    sans: Vec<SanMatcher>,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
    built: Mutex<Option<Built>>,
}

/// rustls's verifier for one root set, and that set.
type Built = (Arc<RootCertStore>, Arc<dyn ClientCertVerifier>);

impl PeerVerifier {
    pub fn new(
        roots: Roots,
        sans: Vec<SanMatcher>,
        mandatory: bool,
        provider: Arc<CryptoProvider>,
    ) -> PeerVerifier {
        PeerVerifier {
            roots,
            sans,
            mandatory,
            provider,
            built: Mutex::new(None),
        }
    }

    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let roots = self
            .roots
            .current()
            .ok_or_else(|| rustls::Error::General("no trusted roots yet".into()))?;
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, v)) = built.as_ref()
            && Arc::ptr_eq(r, &roots)
        {
            return Ok(v.clone());
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), self.provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        *built = Some((roots, verifier.clone()));
        Ok(verifier)
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner()?
            .verify_client_cert(end_entity, intermediates, now)?;
        if !self.sans.is_empty() && !sans_match(&self.sans, end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
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
