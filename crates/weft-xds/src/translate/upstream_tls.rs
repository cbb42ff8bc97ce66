//! DestinationRule `tls` → the cluster's `transport_socket`: TLS origination with the files a
//! rule names (SIMPLE: the CA to verify with; MUTUAL: also the client certificate and key),
//! SNI, and the subject alternative names to accept. What needs the mesh's own certificates
//! (ISTIO_MUTUAL) or a secret by name (`credentialName`, served over SDS) waits for the
//! security issue; such clusters are left out rather than sent in plaintext.

use super::pb;
use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use weft_api::types::destination_rule::{ClientTlsMode, ClientTlsSettings};

pub(super) fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// The transport socket for `tls` on a cluster of `hostname`; `Ok(None)` for DISABLE,
/// `Err(reason)` for what cannot be translated yet.
pub fn transport_socket(
    tls: &ClientTlsSettings,
    hostname: &str,
) -> Result<Option<TransportSocket>, String> {
    let mode = tls.mode.unwrap_or(ClientTlsMode::Disable);
    match mode {
        ClientTlsMode::Disable => return Ok(None),
        ClientTlsMode::IstioMutual => {
            return Err(
                "mode ISTIO_MUTUAL needs the mesh's certificates (the security issue)".into(),
            );
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {}
    }
    if tls.credential_name.is_some() {
        return Err("credentialName needs secrets served over SDS (the security issue)".into());
    }
    let mut common = CommonTlsContext::default();
    if mode == ClientTlsMode::Mutual {
        let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key) else {
            return Err("mode MUTUAL needs clientCertificate and privateKey".into());
        };
        common.tls_certificates.push(TlsCertificate {
            certificate_chain: Some(file(cert)),
            private_key: Some(file(key)),
            ..Default::default()
        });
    }
    if tls.insecure_skip_verify != Some(true) {
        let sans = san_matchers(tls.subject_alt_names.as_deref());
        if tls.ca_certificates.is_some() || !sans.is_empty() {
            common.validation_context_type = Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: tls.ca_certificates.as_deref().map(file),
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    },
                ),
            );
        }
    }
    let sni = tls.sni.clone().unwrap_or_else(|| {
        if hostname.starts_with('*') {
            String::new()
        } else {
            hostname.to_string()
        }
    });
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    };
    Ok(Some(tls_socket(pb::any(&ctx))))
}

/// `envoy.transport_sockets.tls` with its context (upstream or downstream).
pub(super) fn tls_socket(context: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                context,
            ),
        ),
    }
}

/// Istio's `subjectAltNames`: each an exact DNS name the peer's certificate must carry.
pub(super) fn san_matchers(sans: Option<&[String]>) -> Vec<SubjectAltNameMatcher> {
    sans.unwrap_or_default()
        .iter()
        .map(|san| SubjectAltNameMatcher {
            san_type: SanType::Dns as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(san.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}
