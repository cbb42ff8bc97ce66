//! A Gateway server's `tls` → its filter chain's `DownstreamTlsContext`: the gateway terminates
//! TLS with the files the server names (SIMPLE: `serverCertificate` and `privateKey`; MUTUAL and
//! OPTIONAL_MUTUAL: also the `caCertificates` that client certificates must lead to), offering
//! h2 and HTTP/1.1 as istiod does. ISTIO_MUTUAL terminates the mesh's own mTLS with the
//! gateway's workload certificate and the mesh roots (SDS `default`, `ROOTCA`), as istiod's
//! `BuildListenerTLSContext` writes it. `credentialName` takes the certificate (and for MUTUAL
//! the CA) from a Kubernetes Secret, served over SDS on the ADS stream (`credential`).

use super::config::Inputs;
use super::pb;
use super::upstream_tls::{combined_validation, exact_sans, file, mesh_common, tls_socket};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    TlsParameters, common_tls_context, tls_parameters::TlsProtocol as EnvoyTls,
};
use weft_api::types::gateway::{ServerTlsMode, ServerTlsSettings, TlsProtocol};

/// The transport socket for a terminating server of a gateway in `namespace`, or why it cannot
/// be made (yet); the secrets a `credentialName` calls for go to `secrets`.
pub fn transport_socket(
    tls: &ServerTlsSettings,
    inputs: &Inputs,
    namespace: &str,
    secrets: &mut Vec<Secret>,
) -> Result<TransportSocket, String> {
    let mesh_identity = inputs.mesh_identity;
    let mode = tls.mode.unwrap_or(ServerTlsMode::Simple);
    let mutual = match mode {
        ServerTlsMode::Simple => false,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => true,
        ServerTlsMode::IstioMutual if !mesh_identity => {
            return Err(
                "tls.mode ISTIO_MUTUAL needs the mesh's certificates, and this mesh has no CA (start it with --secure-xds-address)".into(),
            );
        }
        ServerTlsMode::IstioMutual => return Ok(istio_mutual(tls)),
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            return Err(format!(
                "tls.mode {} does not terminate TLS",
                pb::istio_name(&mode)
            ));
        }
    };
    let credential = tls
        .credential_name
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            tls.credential_names
                .as_ref()
                .and_then(|n| n.first().cloned())
        });
    if let Some(credential) = credential {
        if tls.credential_names.as_ref().is_some_and(|n| n.len() > 1) {
            return Err("tls.credentialNames: more than one credential (one RSA, one ECDSA) is not translated yet; give one".into());
        }
        secrets.extend(super::credential::secrets(
            inputs,
            namespace,
            &credential,
            true,
            mutual,
        )?);
        let mut common = CommonTlsContext {
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            tls_certificate_sds_secret_configs: vec![super::credential::sds_ads(
                &super::credential::resource_name(&credential),
            )],
            ..Default::default()
        };
        if mutual {
            common.validation_context_type = Some(combined_validation(
                exact_sans(tls.subject_alt_names.as_deref()),
                super::credential::sds_ads(&super::credential::ca_resource_name(&credential)),
            ));
        }
        return Ok(finish(tls, mode, common));
    }
    let first = tls.tls_certificates.as_ref().and_then(|c| c.first());
    let cert = tls
        .server_certificate
        .as_ref()
        .or(first.and_then(|c| c.server_certificate.as_ref()));
    let key = tls
        .private_key
        .as_ref()
        .or(first.and_then(|c| c.private_key.as_ref()));
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(format!(
            "tls.mode {} needs serverCertificate and privateKey",
            pb::istio_name(&mode)
        ));
    };
    let mut common = CommonTlsContext {
        alpn_protocols: vec!["h2".into(), "http/1.1".into()],
        tls_certificates: vec![TlsCertificate {
            certificate_chain: Some(file(cert)),
            private_key: Some(file(key)),
            ..Default::default()
        }],
        ..Default::default()
    };
    if mutual {
        let Some(ca) = tls
            .ca_certificates
            .as_ref()
            .or(first.and_then(|c| c.ca_certificates.as_ref()))
        else {
            return Err(format!(
                "tls.mode {} needs caCertificates to verify clients with",
                pb::istio_name(&mode)
            ));
        };
        let sans = exact_sans(tls.subject_alt_names.as_deref());
        #[allow(deprecated)]
        let validation = CertificateValidationContext {
            trusted_ca: Some(file(ca)),
            match_subject_alt_names: sans,
            ..Default::default()
        };
        common.validation_context_type =
            Some(common_tls_context::ValidationContextType::ValidationContext(validation));
    }
    Ok(finish(tls, mode, common))
}

/// The server's TLS versions and ciphers, and whether it requires a client certificate.
fn finish(
    tls: &ServerTlsSettings,
    mode: ServerTlsMode,
    mut common: CommonTlsContext,
) -> TransportSocket {
    let min = tls.min_protocol_version.map(version);
    let max = tls.max_protocol_version.map(version);
    let ciphers = tls.cipher_suites.clone().unwrap_or_default();
    if min.is_some() || max.is_some() || !ciphers.is_empty() {
        common.tls_params = Some(TlsParameters {
            tls_minimum_protocol_version: min.unwrap_or(EnvoyTls::TlsAuto) as i32,
            tls_maximum_protocol_version: max.unwrap_or(EnvoyTls::TlsAuto) as i32,
            cipher_suites: ciphers,
            ..Default::default()
        });
    }
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: mode == ServerTlsMode::Mutual,
        }),
        ..Default::default()
    };
    tls_socket(pb::any(&ctx))
}

/// ISTIO_MUTUAL: the gateway's workload certificate, a client certificate of the mesh
/// required, and the server's `subjectAltNames` as exact matches of the untyped field. No TLS
/// parameters: istiod applies the server's versions and ciphers to the other modes only.
fn istio_mutual(tls: &ServerTlsSettings) -> TransportSocket {
    let common = mesh_common(
        exact_sans(tls.subject_alt_names.as_deref()),
        &["h2", "http/1.1"],
        None,
    );
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: true,
        }),
        ..Default::default()
    };
    tls_socket(pb::any(&ctx))
}

fn version(v: TlsProtocol) -> EnvoyTls {
    match v {
        TlsProtocol::TlsAuto => EnvoyTls::TlsAuto,
        TlsProtocol::TlsV1_0 => EnvoyTls::TlSv10,
        TlsProtocol::TlsV1_1 => EnvoyTls::TlSv11,
        TlsProtocol::TlsV1_2 => EnvoyTls::TlSv12,
        TlsProtocol::TlsV1_3 => EnvoyTls::TlSv13,
    }
}
