//! Workload certificates from CSRs, as istiod's CA makes them: the CSR gives the public key; the
//! identities are the caller's proved ones; the certificate is a short-lived leaf for both TLS
//! ends (server and client auth), with an empty subject and its SPIFFE URIs in a critical SAN.

use crate::{Ca, Identity};
use rcgen::{
    CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The largest CSR accepted, PEM. An ECDSA P-256 request is about 500 bytes and an RSA 4096 one
/// under 2 KiB; anything near this is not a workload asking for its certificate.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Clocks across a mesh differ; a certificate valid from a little before now is not refused by a
/// peer whose clock runs behind.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the CSR is {size} bytes, more than the {max} a certificate request may be")]
    TooLarge { size: usize, max: usize },
    #[error("the CSR cannot be used: {0}")]
    Malformed(String),
    #[error("the CSR asks for {requested}, which the caller has not proved (it proved {proved})")]
    ForeignIdentity { requested: String, proved: String },
    #[error("requested TTL {requested:?} is greater than the max allowed TTL {max:?}")]
    Ttl { requested: Duration, max: Duration },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct Signed {
    /// PEM: the leaf, then the CA's chain without the root.
    pub cert_chain: Vec<String>,
    /// PEM of every trusted root.
    pub roots: String,
}

impl Signed {
    /// Istio's `IstioCertificateResponse.cert_chain`: the leaf first, the root last.
    pub fn istio_cert_chain(&self) -> Vec<String> {
        let mut out = self.cert_chain.clone();
        out.push(self.roots.clone());
        out
    }
}

impl Ca {
    /// Signs `csr_pem` for the identities the caller `proved`, for `ttl` (the default when
    /// `None` or zero). Every refusal is counted by reason.
    pub fn sign(
        &self,
        csr_pem: &str,
        proved: &[Identity],
        ttl: Option<Duration>,
    ) -> Result<Signed, SignError> {
        self.refusals.csr.fetch_add(1, Ordering::Relaxed);
        let r = self.check_and_sign(csr_pem, proved, ttl);
        if r.is_ok() {
            self.refusals.issued.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = &r {
            let counter = match e {
                SignError::TooLarge { .. } => &self.refusals.too_large,
                SignError::Malformed(_) | SignError::Sign(_) => &self.refusals.malformed,
                SignError::ForeignIdentity { .. } => &self.refusals.foreign_identity,
                SignError::Ttl { .. } => &self.refusals.ttl,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn check_and_sign(
        &self,
        csr_pem: &str,
        proved: &[Identity],
        ttl: Option<Duration>,
    ) -> Result<Signed, SignError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(SignError::TooLarge {
                size: csr_pem.len(),
                max: MAX_CSR_BYTES,
            });
        }
        let proved_uris: Vec<String> = proved.iter().map(ToString::to_string).collect();
        if proved_uris.is_empty() {
            return Err(SignError::ForeignIdentity {
                requested: "a certificate".into(),
                proved: "no identity".into(),
            });
        }
        let ttl = match ttl {
            None | Some(Duration::ZERO) => self.default_ttl,
            Some(t) if t > self.max_ttl => {
                return Err(SignError::Ttl {
                    requested: t,
                    max: self.max_ttl,
                });
            }
            Some(t) => t,
        };
        // Parsing checks the CSR's own signature: the caller holds the key it sends.
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| SignError::Malformed(e.to_string()))?;
        if matches!(csr.params.is_ca, IsCa::Ca(_)) {
            return Err(SignError::Malformed(
                "it asks for a CA certificate; workloads get leaf certificates only".into(),
            ));
        }
        for san in &csr.params.subject_alt_names {
            let requested = match san {
                SanType::URI(uri) if proved_uris.iter().any(|p| p == uri.as_str()) => continue,
                SanType::URI(s) | SanType::DnsName(s) | SanType::Rfc822Name(s) => {
                    s.as_str().to_string()
                }
                SanType::IpAddress(ip) => ip.to_string(),
                _ => "a SAN of another kind".to_string(),
            };
            return Err(SignError::ForeignIdentity {
                requested,
                proved: proved_uris.join(", "),
            });
        }

        let sans = proved_uris
            .iter()
            .map(|u| {
                u.clone()
                    .try_into()
                    .map(SanType::URI)
                    .map_err(|e| SignError::Sign(format!("{u}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        leaf_params(&mut csr.params, sans, ttl);
        let leaf = csr
            .signed_by(&self.issuer)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(Signed {
            cert_chain: self.chain_from(leaf.pem()),
            roots: self.roots.clone(),
        })
    }
}

impl Ca {
    /// A certificate and key of the CA's own for a server it runs (istiod's on 15012), for
    /// `names`: DNS names, or IP addresses where they parse as one.
    pub fn issue_server(&self, names: &[&str], ttl: Duration) -> Result<ServerCert, SignError> {
        let sign = |e: rcgen::Error| SignError::Sign(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign)?;
        let mut sans = Vec::new();
        for n in names {
            sans.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.to_string().try_into().map_err(sign)?),
            });
        }
        let mut params = rcgen::CertificateParams::default();
        leaf_params(&mut params, sans, ttl);
        let cert = params.signed_by(&key, &self.issuer).map_err(sign)?;
        let cert_chain = self.chain_from(cert.pem());
        Ok(ServerCert {
            cert_chain: cert_chain.concat(),
            key: key.serialize_pem(),
        })
    }
}

impl Ca {
    /// `leaf` followed by the CA's chain without the root.
    fn chain_from(&self, leaf: String) -> Vec<String> {
        let mut chain = vec![leaf];
        chain.extend(self.chain.iter().cloned());
        chain
    }
}

/// What every leaf the CA signs is: `sans` as its only names (an empty subject), no CA, usable
/// by both TLS ends, valid from a little before now for `ttl`, with a fresh serial.
fn leaf_params(params: &mut rcgen::CertificateParams, sans: Vec<SanType>, ttl: Duration) {
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + ttl).into();
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
}

/// A server's certificate chain and key, PEM.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_chain: String,
    pub key: String,
}

/// A positive 128-bit serial unique to this process's issuances (RFC 5280 asks unique per CA,
/// at most 20 bytes): the process's random hasher keys over the time and a counter.
pub(crate) fn random_serial() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = [0u8; 16];
    for (i, half) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u64(n);
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_be_bytes());
    }
    out[0] &= 0x7f;
    out[0] |= 0x01;
    out
}
