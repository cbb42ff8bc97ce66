//! Weft's certificate authority, as istiod's: a root generated on first start and kept on disk
//! (or an operator's own, plugged in with Istio's `cacerts` files), and short-lived workload
//! certificates whose only identity is a SPIFFE URI, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//!
//! Trust model: the CA signs a CSR only for the identities its caller has proved (the caller's
//! proof is the server's business: a per-workload credential under `weft up`, a service-account
//! token on Kubernetes). The CSR contributes its public key and nothing else; SANs it asks for
//! must all be among the proved identities, or the request is refused.

mod identity;
mod root;
pub mod service;
mod sign;

pub use identity::{Identity, IdentityError};
pub use root::{CaError, CaFiles};
pub use sign::{ServerCert, SignError, Signed};

use rcgen::{Issuer, KeyPair};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Istio's default workload certificate lifetime (`DEFAULT_WORKLOAD_CERT_TTL`).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Istio's longest workload certificate lifetime a caller may ask for
/// (`MAX_WORKLOAD_CERT_TTL`, 90 days).
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// The signing certificate and key, the chain up to the root, and the roots workloads trust.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// PEM: the signing certificate, then its issuers up to and including the root (Istio's
    /// `cert-chain.pem`; the root alone for a self-signed CA).
    chain: Vec<String>,
    /// PEM of every trusted root (one or more: a bundle lets a root be rotated).
    roots: String,
    trust_domain: String,
    default_ttl: Duration,
    max_ttl: Duration,
    refusals: Refusals,
}

/// How many requests were refused, by reason: what an operator watches for abuse or breakage.
#[derive(Default)]
pub struct Refusals {
    pub too_large: AtomicU64,
    pub malformed: AtomicU64,
    pub foreign_identity: AtomicU64,
    pub ttl: AtomicU64,
    /// Every CSR the CA was asked to sign (istiod's `citadel_server_csr_count`), those it
    /// signed (`citadel_server_success_cert_issuance_count`), and callers whose credential
    /// was refused before that (`citadel_server_authentication_failure_count`).
    pub csr: AtomicU64,
    pub issued: AtomicU64,
    pub authentication_failures: AtomicU64,
}

impl Refusals {
    /// `(reason, count)` for each reason, in a stable order.
    pub fn counts(&self) -> [(&'static str, u64); 4] {
        [
            ("too_large", self.too_large.load(Ordering::Relaxed)),
            ("malformed", self.malformed.load(Ordering::Relaxed)),
            (
                "foreign_identity",
                self.foreign_identity.load(Ordering::Relaxed),
            ),
            ("ttl", self.ttl.load(Ordering::Relaxed)),
        ]
    }
}

impl Ca {
    /// The trust domain identities are issued in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Every trusted root, PEM, as workloads receive it (`ROOTCA`).
    pub fn roots_pem(&self) -> &str {
        &self.roots
    }

    /// The lifetime a certificate gets when its request names none.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Ca {
        self.default_ttl = ttl;
        self
    }

    /// When the first of the trusted roots expires, Unix seconds (istiod's
    /// `citadel_server_root_cert_expiry_timestamp`).
    pub fn root_expiry(&self) -> Option<i64> {
        pem::parse_many(self.roots.as_bytes())
            .ok()?
            .iter()
            .filter_map(|p| {
                let (_, cert) = x509_parser::parse_x509_certificate(p.contents()).ok()?;
                Some(cert.validity().not_after.timestamp())
            })
            .min()
    }

    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }
}
