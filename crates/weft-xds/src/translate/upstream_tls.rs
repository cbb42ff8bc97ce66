//! DestinationRule `tls` → the cluster's `transport_socket`: TLS origination with the files a
//! rule names (SIMPLE: the CA to verify with; MUTUAL: also the client certificate and key),
//! SNI, and the subject alternative names to accept; ISTIO_MUTUAL as istiod builds it
//! (`buildUpstreamClusterTLSContext`): the workload certificate and mesh roots from SDS
//! (`default`, `ROOTCA` on `sds-grpc`), the service's identities as exact SANs, istiod's SNI and
//! ALPN. `credentialName` takes the client certificate (MUTUAL) and the CA from a Kubernetes
//! Secret of the proxy's namespace, served over SDS on the ADS stream (`credential`).

use super::pb;
use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, DataSource, GrpcService, TransportSocket,
    api_config_source, config_source, data_source, grpc_service,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, TlsCertificate, TlsParameters,
    UpstreamTlsContext, common_tls_context, tls_parameters,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use weft_api::types::destination_rule::{ClientTlsMode, ClientTlsSettings};

pub(super) fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// What ISTIO_MUTUAL needs of the cluster: istiod's SNI, the service's identities, and
/// whether it speaks HTTP/2.
pub struct MeshTls {
    pub sni: String,
    pub service_accounts: Vec<String>,
    pub h2: bool,
}

/// Where a rule's `credentialName` is looked up (the proxy's namespace), and where the secrets
/// it calls for go.
pub struct Credential<'a, 'b> {
    pub inputs: &'a super::config::Inputs,
    pub namespace: &'a str,
    pub secrets: &'b mut Vec<Secret>,
}

/// The transport socket for `tls` on a cluster of `hostname`; `Ok(None)` for DISABLE,
/// `Err(reason)` for what cannot be translated yet.
pub fn transport_socket(
    tls: &ClientTlsSettings,
    hostname: &str,
    mesh: &MeshTls,
    credential: Credential<'_, '_>,
) -> Result<Option<TransportSocket>, String> {
    let mode = tls.mode.unwrap_or(ClientTlsMode::Disable);
    match mode {
        ClientTlsMode::Disable => return Ok(None),
        ClientTlsMode::IstioMutual => return Ok(Some(istio_mutual(tls, mesh))),
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {}
    }
    let mut common = CommonTlsContext::default();
    if let Some(name) = tls.credential_name.as_deref().filter(|n| !n.is_empty()) {
        // istiod's shape: the client certificate (MUTUAL) and the CA over SDS on the ADS
        // stream, the rule's SANs beside the CA.
        let mutual = mode == ClientTlsMode::Mutual;
        credential.secrets.extend(super::credential::secrets(
            credential.inputs,
            credential.namespace,
            name,
            mutual,
            true,
        )?);
        if mutual {
            common.tls_certificate_sds_secret_configs = vec![super::credential::sds_ads(
                &super::credential::resource_name(name),
            )];
        }
        common.validation_context_type = Some(combined_validation(
            exact_sans(tls.subject_alt_names.as_deref()),
            super::credential::sds_ads(&super::credential::ca_resource_name(name)),
        ));
        return Ok(Some(origination(tls, hostname, common)));
    }
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
        let sans = exact_sans(tls.subject_alt_names.as_deref());
        if tls.ca_certificates.is_some() || !sans.is_empty() {
            #[allow(deprecated)]
            let validation = CertificateValidationContext {
                trusted_ca: tls.ca_certificates.as_deref().map(file),
                match_subject_alt_names: sans,
                ..Default::default()
            };
            common.validation_context_type =
                Some(common_tls_context::ValidationContextType::ValidationContext(validation));
        }
    }
    Ok(Some(origination(tls, hostname, common)))
}

/// The socket of a SIMPLE or MUTUAL origination: the rule's SNI, else the host's.
fn origination(
    tls: &ClientTlsSettings,
    hostname: &str,
    common: CommonTlsContext,
) -> TransportSocket {
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
    tls_socket(pb::any(&ctx))
}

/// Istio's SDS reference to secret `name` on the agent's `sds-grpc` cluster
/// (`ConstructSdsSecretConfig`).
pub(super) fn sds_secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: api_config_source::ApiType::Grpc as i32,
                    set_node_on_first_message_only: true,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: "sds-grpc".into(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            initial_fetch_timeout: Some(super::pb::millis(0)),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// ISTIO_MUTUAL: the mesh's own mutual TLS. The SANs are the rule's `subjectAltNames`, else the
/// service's identities; the SNI the rule's, else istiod's.
fn istio_mutual(tls: &ClientTlsSettings, mesh: &MeshTls) -> TransportSocket {
    let sans: Vec<String> = match tls.subject_alt_names.as_deref() {
        Some(s) if !s.is_empty() => s.to_vec(),
        _ => mesh.service_accounts.clone(),
    };
    let alpn: &[&str] = if mesh.h2 {
        &["istio-peer-exchange", "istio", "h2"]
    } else {
        &["istio-peer-exchange", "istio"]
    };
    let common = mesh_common(exact_sans(Some(&sans)), alpn, Some(mesh_tls_versions()));
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls
            .sni
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| mesh.sni.clone()),
        ..Default::default()
    };
    tls_socket(pb::any(&ctx))
}

/// istiod's TLS versions for the mesh's own mTLS: 1.2 to 1.3.
pub(super) fn mesh_tls_versions() -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
        ..Default::default()
    }
}

/// istiod's combined validation context: the roots from SDS secret `roots`, and the peer's
/// SANs checked with `sans` (the untyped field).
pub(super) fn combined_validation(
    sans: Vec<StringMatcher>,
    roots: SdsSecretConfig,
) -> common_tls_context::ValidationContextType {
    #[allow(deprecated)]
    let default_validation_context = CertificateValidationContext {
        match_subject_alt_names: sans,
        ..Default::default()
    };
    common_tls_context::ValidationContextType::CombinedValidationContext(
        common_tls_context::CombinedCertificateValidationContext {
            default_validation_context: Some(default_validation_context),
            validation_context_sds_secret_config: Some(roots),
            ..Default::default()
        },
    )
}

/// The mesh's own mTLS context, client or server side, as istiod writes it: the workload
/// certificate (SDS `default`) and the mesh roots (SDS `ROOTCA`), the peer checked with `sans`,
/// offering `alpn`, with `versions` when istiod sets them.
pub(super) fn mesh_common(
    sans: Vec<StringMatcher>,
    alpn: &[&str],
    versions: Option<TlsParameters>,
) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: versions,
        alpn_protocols: alpn.iter().map(|p| (*p).to_string()).collect(),
        tls_certificate_sds_secret_configs: vec![sds_secret("default")],
        validation_context_type: Some(combined_validation(sans, sds_secret("ROOTCA"))),
        ..Default::default()
    }
}

/// Auto mTLS (istiod's `applyUpstreamTLSSettings`): ISTIO_MUTUAL to endpoints marked
/// `tlsMode: istio`, plaintext to the rest.
pub fn auto_mtls(mesh: &MeshTls) -> Vec<TransportSocketMatch> {
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(super::pb::struct_of([(
                "tlsMode",
                super::pb::string("istio"),
            )])),
            transport_socket: Some(istio_mutual(&ClientTlsSettings::default(), mesh)),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Default::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: Some(
                    envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                        pb::any(&RawBuffer::default()),
                    ),
                ),
            }),
        },
    ]
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

/// Istio's `subjectAltNames` as istiod writes them (`StringToExactMatch`): exact matches in the
/// untyped field, which Envoy compares with every SAN of the peer's certificate, whatever its
/// type (a DNS name or a SPIFFE URI alike).
pub(super) fn exact_sans(sans: Option<&[String]>) -> Vec<StringMatcher> {
    sans.unwrap_or_default()
        .iter()
        .map(|san| StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(san.clone())),
            ..Default::default()
        })
        .collect()
}
