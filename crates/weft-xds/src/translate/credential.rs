//! `credentialName`: a certificate from a Kubernetes Secret, as istiod serves it, for a Gateway
//! server or a DestinationRule's TLS origination. The listener or cluster names the secret over
//! SDS on the ADS stream (`kubernetes://NAME`, and `kubernetes://NAME-cacert` for the CA that
//! peers' certificates must lead to), and the control plane sends the Secret resources with the
//! proxy's other config, so that an edit of the Secret reaches the proxy like any other. The
//! Secret is looked up in the proxy's own namespace (istiod's rule: the workload's, not the
//! Gateway's or rule's), in either of the forms istiod reads (`extractCertAndKey`):
//! `tls.crt`/`tls.key`/`ca.crt`, or `cert`/`key`/`cacert`; the CA may also be a Secret of its
//! own named `NAME-cacert`.

use super::config::Inputs;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, config_source, data_source,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, SdsSecretConfig, Secret, TlsCertificate, secret,
};
use std::collections::BTreeMap;

/// A Secret's data, decoded, by key (`stringData` over `data`, as the API server merges them).
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// The decoded data of a Kubernetes Secret, or why it cannot be read.
pub fn decode(secret: &weft_api::types::kube::Secret) -> Result<SecretData, String> {
    use base64::Engine as _;
    let mut out = SecretData::new();
    for (k, v) in secret.data.iter().flatten() {
        let text: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("data.{k}: not base64: {e}"))?;
        out.insert(k.clone(), bytes);
    }
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.as_bytes().to_vec());
    }
    Ok(out)
}

/// SDS over the ADS stream, as istiod names a credential.
pub fn sds_ads(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource::default(),
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// The resource name of a credential, and of its CA.
pub fn resource_name(credential: &str) -> String {
    format!("kubernetes://{credential}")
}

pub fn ca_resource_name(credential: &str) -> String {
    format!("kubernetes://{credential}-cacert")
}

fn inline(bytes: &[u8]) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    }
}

/// The Secret resources for `credential` in `namespace`: the certificate and key when
/// `with_certificate`, and the CA when `with_ca`; or why they cannot be made.
pub fn secrets(
    inputs: &Inputs,
    namespace: &str,
    credential: &str,
    with_certificate: bool,
    with_ca: bool,
) -> Result<Vec<Secret>, String> {
    let found = |name: &str| {
        inputs
            .config
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
    };
    let Some(data) = found(credential) else {
        return Err(format!(
            "credentialName {credential:?}: no Secret {namespace}/{credential} in the folder (the gateway's namespace is where istiod looks)"
        ));
    };
    let data = data.as_ref().map_err(|e| {
        format!("credentialName {credential:?}: Secret {namespace}/{credential}: {e}")
    })?;
    let mut out = Vec::new();
    if with_certificate {
        let pair = |c: &str, k: &str| Some((data.get(c)?, data.get(k)?));
        let Some((cert, key)) = pair("cert", "key").or_else(|| pair("tls.crt", "tls.key")) else {
            return Err(format!(
                "credentialName {credential:?}: Secret {namespace}/{credential} has neither cert and key nor tls.crt and tls.key"
            ));
        };
        out.push(Secret {
            name: resource_name(credential),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(cert)),
                private_key: Some(inline(key)),
                ..Default::default()
            })),
        });
    }
    if with_ca {
        let ca_of = |d: &SecretData| d.get("cacert").or_else(|| d.get("ca.crt")).cloned();
        let ca = ca_of(data).or_else(|| {
            found(&format!("{credential}-cacert"))
                .and_then(|d| d.as_ref().ok())
                .and_then(ca_of)
        });
        let Some(ca) = ca else {
            return Err(format!(
                "credentialName {credential:?}: the CA to verify peers with is missing: ca.crt or cacert in Secret {namespace}/{credential}, or a Secret {credential}-cacert"
            ));
        };
        out.push(Secret {
            name: ca_resource_name(credential),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(&ca)),
                    ..Default::default()
                },
            )),
        });
    }
    Ok(out)
}
