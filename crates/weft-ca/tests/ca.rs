//! The CA as an operator and a workload meet it: a root made once and kept, an operator's own
//! intermediate plugged in with Istio's cacerts files, workload certificates that carry only
//! the proved SPIFFE identity, and requests refused with a reason. Certificates are checked by
//! `openssl verify` (an independent implementation) and read back with x509-parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use weft_ca::{Ca, CaError, Identity, SignError};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's package; scripts/install-test-deps.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

/// A workload's key and CSR, asking for `sans` (SPIFFE URIs).
fn csr(sans: &[&str]) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI(s.to_string().try_into().unwrap()))
        .collect();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}

fn web() -> Identity {
    Identity::new("cluster.local", "shop", "web")
}

#[test]
fn a_self_signed_root_is_made_once_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::open(dir.path(), None, "cluster.local").unwrap();
    let again = Ca::open(dir.path(), None, "cluster.local").unwrap();
    assert_eq!(first.roots_pem(), again.roots_pem());
    let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is its owner's alone");
    let text = openssl(
        dir.path(),
        &[
            "x509",
            "-in",
            "root-cert.pem",
            "-noout",
            "-subject",
            "-text",
        ],
    );
    assert!(
        text.contains("O=cluster.local") || text.contains("O = cluster.local"),
        "{text}"
    );
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    // A certificate issued before the restart verifies against the root after it.
    let signed = first.sign(&csr(&[]), &[web()], None).unwrap();
    std::fs::write(dir.path().join("leaf.pem"), &signed.cert_chain[0]).unwrap();
    std::fs::write(dir.path().join("roots.pem"), again.roots_pem()).unwrap();
    openssl(dir.path(), &["verify", "-CAfile", "roots.pem", "leaf.pem"]);
}

#[test]
fn a_workload_certificate_carries_only_its_proved_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), None, "cluster.local").unwrap();
    let uri = "spiffe://cluster.local/ns/shop/sa/web";
    for asked in [vec![uri], vec![]] {
        let signed = ca.sign(&csr(&asked), &[web()], None).unwrap();
        // The chain of a self-signed CA is the leaf alone; the root comes apart, and last in
        // Istio's response.
        assert_eq!(signed.cert_chain.len(), 1);
        let response = signed.istio_cert_chain();
        assert_eq!(response.last().map(String::as_str), Some(ca.roots_pem()));

        let leaf_der = der(&signed.cert_chain[0]);
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        assert!(leaf.subject().iter().next().is_none(), "empty subject");
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert!(san.critical, "SAN is critical when the subject is empty");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::URI(u) => u.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, [uri]);
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!leaf.is_ca());
        let validity = leaf.validity();
        let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
        // 24 h, from a minute before issue (clock skew).
        assert_eq!(lifetime, 24 * 3600 + 60);

        std::fs::write(dir.path().join("leaf.pem"), &signed.cert_chain[0]).unwrap();
        let out = openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "root-cert.pem",
                "-purpose",
                "sslserver",
                "leaf.pem",
            ],
        );
        assert!(out.contains("leaf.pem: OK"), "{out}");
        openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "root-cert.pem",
                "-purpose",
                "sslclient",
                "leaf.pem",
            ],
        );
    }
    // A lifetime asked for is given, up to Istio's 90 days.
    let hour = ca
        .sign(&csr(&[uri]), &[web()], Some(Duration::from_secs(3600)))
        .unwrap();
    let hour_der = der(&hour.cert_chain[0]);
    let (_, leaf) = X509Certificate::from_der(&hour_der).unwrap();
    let v = leaf.validity();
    assert_eq!(
        v.not_after.timestamp() - v.not_before.timestamp(),
        3600 + 60
    );
}

#[test]
fn bad_requests_are_refused_with_a_reason_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), None, "cluster.local").unwrap();
    let other = "spiffe://cluster.local/ns/bank/sa/vault";
    type Expect = fn(&SignError) -> bool;
    let cases: Vec<(String, Option<Duration>, Expect)> = vec![
        ("not a CSR".into(), None, |e| {
            matches!(e, SignError::Malformed(_))
        }),
        (
            csr(&[other]),
            None,
            |e| matches!(e, SignError::ForeignIdentity { requested, .. } if requested == "spiffe://cluster.local/ns/bank/sa/vault"),
        ),
        (format!("{}{}", csr(&[]), " ".repeat(20_000)), None, |e| {
            matches!(e, SignError::TooLarge { .. })
        }),
        (csr(&[]), Some(Duration::from_secs(91 * 24 * 3600)), |e| {
            matches!(e, SignError::Ttl { .. })
        }),
    ];
    for (request, ttl, expected) in cases {
        let e = ca.sign(&request, &[web()], ttl).unwrap_err();
        assert!(expected(&e), "{e}");
        assert!(!e.to_string().is_empty());
    }
    // A CSR whose signature does not hold (one byte of its public key changed).
    let good = csr(&[]);
    let mut bytes = der(&good);
    let at = bytes.len() - 80;
    bytes[at] ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bytes));
    assert!(matches!(
        ca.sign(&tampered, &[web()], None),
        Err(SignError::Malformed(_))
    ));
    // A caller that proved nothing gets nothing.
    assert!(matches!(
        ca.sign(&good, &[], None),
        Err(SignError::ForeignIdentity { .. })
    ));
    let counts: Vec<(&str, u64)> = ca.refusals().counts().to_vec();
    assert_eq!(
        counts,
        [
            ("too_large", 1),
            ("malformed", 2),
            ("foreign_identity", 2),
            ("ttl", 1)
        ]
    );
}

/// An operator's root and an RSA intermediate signed by it, as Istio's `tools/certs` makes
/// them with openssl.
fn operator_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "root-key.pem",
            "-out",
            "root-cert.pem",
            "-days",
            "3650",
            "-subj",
            "/O=Operator/CN=Root CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.csr",
            "-subj",
            "/O=Operator/CN=Intermediate CA",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "ca.csr",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-out",
            "ca-cert.pem",
            "-days",
            "730",
            "-extfile",
            "ext.cnf",
        ],
    );
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("root-cert.pem")).unwrap()
    );
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
}

#[test]
fn an_operators_intermediate_plugs_in_with_istios_cacerts_files() {
    let cacerts = tempfile::tempdir().unwrap();
    operator_ca(cacerts.path());
    let state = tempfile::tempdir().unwrap();
    let ca = Ca::open(state.path(), Some(cacerts.path()), "cluster.local").unwrap();
    assert!(
        !state.path().join("ca-key.pem").exists(),
        "no root of its own is made"
    );
    let signed = ca.sign(&csr(&[]), &[web()], None).unwrap();
    // Leaf, then the intermediate; the operator's root comes apart.
    assert_eq!(signed.cert_chain.len(), 2);
    assert_eq!(
        der(&signed.cert_chain[1]),
        der(&std::fs::read_to_string(cacerts.path().join("ca-cert.pem")).unwrap())
    );
    let dir = cacerts.path();
    std::fs::write(dir.join("leaf.pem"), &signed.cert_chain[0]).unwrap();
    std::fs::write(dir.join("intermediate.pem"), &signed.cert_chain[1]).unwrap();
    let out = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root-cert.pem",
            "-untrusted",
            "intermediate.pem",
            "leaf.pem",
        ],
    );
    assert!(out.contains("leaf.pem: OK"), "{out}");
}

#[test]
fn plugged_in_files_that_do_not_fit_are_refused_with_the_file_and_why() {
    let cacerts = tempfile::tempdir().unwrap();
    operator_ca(cacerts.path());
    let state = tempfile::tempdir().unwrap();
    let dir = cacerts.path();

    // Another key than the certificate's.
    let good_key = std::fs::read_to_string(dir.join("ca-key.pem")).unwrap();
    std::fs::write(
        dir.join("ca-key.pem"),
        std::fs::read_to_string(dir.join("root-key.pem")).unwrap(),
    )
    .unwrap();
    let e = Ca::open(state.path(), Some(dir), "cluster.local")
        .err()
        .unwrap();
    assert!(
        matches!(&e, CaError::Invalid { path, reason } if path.ends_with("ca-key.pem") && reason.contains("not the key of ca-cert.pem")),
        "{e}"
    );
    std::fs::write(dir.join("ca-key.pem"), good_key).unwrap();

    // A chain that does not start with the signing certificate.
    let chain = std::fs::read_to_string(dir.join("cert-chain.pem")).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        std::fs::read_to_string(dir.join("root-cert.pem")).unwrap(),
    )
    .unwrap();
    let e = Ca::open(state.path(), Some(dir), "cluster.local")
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("does not start with ca-cert.pem"),
        "{e}"
    );
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();

    // A root that did not sign the chain.
    let foreign = tempfile::tempdir().unwrap();
    operator_ca(foreign.path());
    let root = std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    std::fs::write(
        dir.join("root-cert.pem"),
        std::fs::read_to_string(foreign.path().join("root-cert.pem")).unwrap(),
    )
    .unwrap();
    let e = Ca::open(state.path(), Some(dir), "cluster.local")
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("does not lead to any certificate of root-cert.pem"),
        "{e}"
    );

    // Both roots: the bundle a root rotation goes through. Workloads get both.
    let bundle = format!(
        "{root}{}",
        std::fs::read_to_string(foreign.path().join("root-cert.pem")).unwrap()
    );
    std::fs::write(dir.join("root-cert.pem"), &bundle).unwrap();
    let ca = Ca::open(state.path(), Some(dir), "cluster.local").unwrap();
    assert_eq!(ca.roots_pem(), bundle);
    assert_eq!(pem::parse_many(ca.roots_pem()).unwrap().len(), 2);

    // A file missing.
    std::fs::remove_file(dir.join("cert-chain.pem")).unwrap();
    let e = Ca::open(state.path(), Some(dir), "cluster.local")
        .err()
        .unwrap();
    assert!(e.to_string().contains("cert-chain.pem missing"), "{e}");
}
