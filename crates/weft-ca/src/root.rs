//! The CA's own key and certificates, in Istio's `cacerts` layout: `ca-cert.pem` (the signing
//! certificate), `ca-key.pem`, `root-cert.pem` (every trusted root) and `cert-chain.pem` (the
//! signing certificate up to the root). An operator's intermediate is plugged in as those four
//! files; without one, a self-signed root is made once and kept in the same layout, so that a
//! restart keeps every issued identity valid.

use crate::{Ca, DEFAULT_WORKLOAD_TTL, MAX_WORKLOAD_TTL, Refusals};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Istio's self-signed root lifetime (`CITADEL_SELF_SIGNED_CA_CERT_TTL`, 10 years).
const ROOT_TTL: time::Duration = time::Duration::days(3650);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{dir}: plugged-in CA files are incomplete: {missing} missing (Istio's cacerts need ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem)"
    )]
    Incomplete { dir: PathBuf, missing: String },
    #[error("generating the self-signed root: {0}")]
    Generate(String),
}

/// Where the four files of a CA are.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub root_cert: PathBuf,
    pub cert_chain: PathBuf,
}

impl CaFiles {
    pub fn in_dir(dir: &Path) -> CaFiles {
        CaFiles {
            ca_cert: dir.join("ca-cert.pem"),
            ca_key: dir.join("ca-key.pem"),
            root_cert: dir.join("root-cert.pem"),
            cert_chain: dir.join("cert-chain.pem"),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.root_cert,
            &self.cert_chain,
        ]
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The DER of every `CERTIFICATE` block of a PEM file.
pub(crate) fn pem_certificates(path: &Path, text: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let blocks = pem::parse_many(text).map_err(|e| invalid(path, format!("not PEM: {e}")))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err(invalid(path, "holds no CERTIFICATE"));
    }
    Ok(certs)
}

fn parse<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, CaError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| invalid(path, format!("not an X.509 certificate: {e}")))
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

impl Ca {
    /// The CA of `cacerts` when given (all four files must be there), else the one kept in
    /// `state_dir`, made on first use.
    pub fn open(
        state_dir: &Path,
        cacerts: Option<&Path>,
        trust_domain: &str,
    ) -> Result<Ca, CaError> {
        if let Some(dir) = cacerts {
            let files = CaFiles::in_dir(dir);
            let missing: Vec<String> = files
                .all()
                .iter()
                .filter(|p| !p.exists())
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            if !missing.is_empty() {
                return Err(CaError::Incomplete {
                    dir: dir.to_path_buf(),
                    missing: missing.join(", "),
                });
            }
            return Ca::load(&files, trust_domain);
        }
        let files = CaFiles::in_dir(state_dir);
        if !files.ca_cert.exists() {
            generate(state_dir, &files, trust_domain)?;
        }
        Ca::load(&files, trust_domain)
    }

    /// Reads and checks a CA: the key is the signing certificate's, that certificate is a CA,
    /// its chain ends in a trusted root, and every root is a self-signed CA.
    pub fn load(files: &CaFiles, trust_domain: &str) -> Result<Ca, CaError> {
        let cert_pem = read(&files.ca_cert)?;
        let key_pem = read(&files.ca_key)?;
        let roots = read(&files.root_cert)?;
        let chain_pem = read(&files.cert_chain)?;

        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid(&files.ca_key, format!("not a private key: {e}")))?;
        let cert_der = pem_certificates(&files.ca_cert, &cert_pem)?;
        let Some(signing_der) = cert_der.first() else {
            return Err(invalid(&files.ca_cert, "holds no CERTIFICATE"));
        };
        let signing = parse(&files.ca_cert, signing_der)?;
        if signing.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(&files.ca_key, "is not the key of ca-cert.pem"));
        }
        if !is_ca(&signing) {
            return Err(invalid(
                &files.ca_cert,
                "is not a CA certificate (basicConstraints CA:TRUE)",
            ));
        }
        let root_der = pem_certificates(&files.root_cert, &roots)?;
        for der in &root_der {
            let root = parse(&files.root_cert, der)?;
            if !is_ca(&root) || root.subject() != root.issuer() {
                return Err(invalid(
                    &files.root_cert,
                    "holds a certificate that is not a self-signed CA",
                ));
            }
        }
        let chain_der = pem_certificates(&files.cert_chain, &chain_pem)?;
        verify_chain(files, signing_der, &chain_der, &root_der)?;

        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| invalid(&files.ca_cert, format!("cannot sign with it: {e}")))?;
        // The chain sent after a leaf: the signing certificate and any intermediates, without
        // the root, which workloads get (and must already trust) on its own.
        let chain = chain_der
            .iter()
            .filter(|der| !root_der.contains(der))
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
            .collect();
        Ok(Ca {
            issuer,
            chain,
            roots,
            trust_domain: trust_domain.to_string(),
            default_ttl: DEFAULT_WORKLOAD_TTL,
            max_ttl: MAX_WORKLOAD_TTL,
            refusals: Refusals::default(),
        })
    }
}

/// `cert-chain.pem` starts with the signing certificate, each certificate is signed by the
/// next, and the last is signed by one of the roots (or is one).
fn verify_chain(
    files: &CaFiles,
    signing: &[u8],
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
) -> Result<(), CaError> {
    let path = &files.cert_chain;
    if chain.first().map(Vec::as_slice) != Some(signing) {
        return Err(invalid(path, "does not start with ca-cert.pem"));
    }
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .map(|d| parse(path, d))
        .collect::<Result<_, _>>()?;
    for pair in parsed.windows(2) {
        if let [child, parent] = pair
            && child.verify_signature(Some(parent.public_key())).is_err()
        {
            return Err(invalid(
                path,
                format!("{} is not signed by {}", child.subject(), parent.subject()),
            ));
        }
    }
    let Some(last) = parsed.last() else {
        return Err(invalid(path, "is empty"));
    };
    let anchored = roots.iter().any(|r| {
        parse(&files.root_cert, r)
            .is_ok_and(|root| last.verify_signature(Some(root.public_key())).is_ok())
    });
    if !anchored {
        return Err(invalid(
            path,
            "does not lead to any certificate of root-cert.pem",
        ));
    }
    Ok(())
}

/// A self-signed ECDSA P-256 root, its organisation the trust domain as Istio's is, written in
/// the cacerts layout (the key readable by its owner only).
fn generate(dir: &Path, files: &CaFiles, trust_domain: &str) -> Result<(), CaError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CaError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Generate(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + ROOT_TTL;
    params.serial_number = Some(SerialNumber::from_slice(&crate::sign::random_serial()));
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Generate(e.to_string()))?;
    let cert_pem = cert.pem();
    write(&files.ca_key, &key.serialize_pem(), 0o600)?;
    write(&files.root_cert, &cert_pem, 0o644)?;
    write(&files.cert_chain, &cert_pem, 0o644)?;
    // Last: its presence is what says the CA exists.
    write(&files.ca_cert, &cert_pem, 0o644)
}

/// Writes through a temporary file and a rename, so that a crash never leaves half a file.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("pem.tmp");
    let err = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
