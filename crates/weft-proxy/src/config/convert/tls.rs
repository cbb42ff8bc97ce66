//! `transport_socket` (`envoy.transport_sockets.tls`): a cluster's `UpstreamTlsContext` →
//! `upstream::tls::UpstreamTls`, a filter chain's `DownstreamTlsContext` →
//! `listener::tls::DownstreamTls`. Certificates are read here, off the data path, so that a
//! missing or broken file is a config error naming its field.

use super::{Result, decode_any, type_name};
use crate::config::FieldError;
use crate::listener::tls::{DownstreamTls, ServerSettings};
use crate::upstream::tls::{TlsSettings, UpstreamTls};
use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    UpstreamTlsContext, common_tls_context, tls_parameters,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

const UPSTREAM_TLS_CONTEXT: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS_CONTEXT: &str =
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// The transport socket's typed config, which must be of type `want`.
fn typed_config<'a>(
    t: &'a TransportSocket,
    want: &str,
    tpath: &str,
) -> Result<&'a envoy_types::pb::google::protobuf::Any> {
    let any = match &t.config_type {
        Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) => any,
        _ => return Err(FieldError::new(tpath, "is required")),
    };
    let name = type_name(any);
    if name != want {
        return Err(FieldError::new(
            tpath,
            format!(
                "transport socket {name} is not supported here by the Weft proxy (expected {want})"
            ),
        ));
    }
    Ok(any)
}

/// A filter chain's TLS termination.
pub fn downstream(t: &TransportSocket, path: &str) -> Result<Arc<DownstreamTls>> {
    let tpath = format!("{path}.typed_config");
    let any = typed_config(t, DOWNSTREAM_TLS_CONTEXT, &tpath)?;
    let ctx: DownstreamTlsContext = decode_any(any, &tpath)?;
    let cpath = format!("{tpath}.common_tls_context");
    let default = CommonTlsContext::default();
    let common = ctx.common_tls_context.as_ref().unwrap_or(&default);
    let (chain, key) = match common.tls_certificates.as_slice() {
        [cert] => certificate(cert, &format!("{cpath}.tls_certificates[0]"))?,
        [] => {
            return Err(FieldError::new(
                format!("{cpath}.tls_certificates"),
                "a server certificate is required",
            ));
        }
        _ => {
            return Err(FieldError::new(
                format!("{cpath}.tls_certificates"),
                "the Weft proxy takes one server certificate per filter chain",
            ));
        }
    };
    // Envoy's server defaults: TLS 1.2 to 1.3.
    let versions = match &common.tls_params {
        Some(p) => versions(
            p.tls_minimum_protocol_version,
            p.tls_maximum_protocol_version,
            tls_parameters::TlsProtocol::TlSv13 as i32,
            &format!("{cpath}.tls_params"),
        )?,
        None => vec![&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let client_ca = match &common.validation_context_type {
        None => None,
        Some(common_tls_context::ValidationContextType::ValidationContext(v)) => {
            trusted_ca(v, &format!("{cpath}.validation_context"))?
        }
        Some(_) => {
            return Err(FieldError::new(
                format!("{cpath}.validation_context_sds_secret_config"),
                "only an inline validation_context is supported",
            ));
        }
    };
    let settings = ServerSettings {
        chain,
        key,
        alpn: common
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
        versions,
        client_ca,
        require_client_certificate: ctx
            .require_client_certificate
            .as_ref()
            .is_some_and(|b| b.value),
    };
    DownstreamTls::build(settings)
        .map(Arc::new)
        .map_err(|e| FieldError::new(tpath, e.to_string()))
}

/// A `TlsCertificate`'s chain and key.
fn certificate(
    cert: &TlsCertificate,
    kpath: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain_pem = data(
        cert.certificate_chain.as_ref(),
        &format!("{kpath}.certificate_chain"),
    )?;
    let chain = certificates(&chain_pem, &format!("{kpath}.certificate_chain"))?;
    let key_pem = data(cert.private_key.as_ref(), &format!("{kpath}.private_key"))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        FieldError::new(
            format!("{kpath}.private_key"),
            format!("no PEM private key: {e}"),
        )
    })?;
    Ok((chain, key))
}

/// A cluster's TLS origination.
pub fn transport_socket(t: &TransportSocket, path: &str) -> Result<Option<Arc<UpstreamTls>>> {
    let tpath = format!("{path}.typed_config");
    let any = typed_config(t, UPSTREAM_TLS_CONTEXT, &tpath)?;
    let ctx: UpstreamTlsContext = decode_any(any, &tpath)?;
    let mut settings = TlsSettings {
        sni: (!ctx.sni.is_empty()).then(|| ctx.sni.clone()),
        versions: vec![&rustls::version::TLS12],
        ..TlsSettings::default()
    };
    if let Some(common) = &ctx.common_tls_context {
        let cpath = format!("{tpath}.common_tls_context");
        settings.alpn = common
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        if let Some(params) = &common.tls_params {
            settings.versions = versions(
                params.tls_minimum_protocol_version,
                params.tls_maximum_protocol_version,
                tls_parameters::TlsProtocol::TlSv12 as i32,
                &format!("{cpath}.tls_params"),
            )?;
        }
        match common.tls_certificates.as_slice() {
            [] => {}
            [cert] => {
                settings.client_cert =
                    Some(certificate(cert, &format!("{cpath}.tls_certificates[0]"))?);
            }
            _ => {
                return Err(FieldError::new(
                    format!("{cpath}.tls_certificates"),
                    "an upstream context takes at most one certificate",
                ));
            }
        }
        match &common.validation_context_type {
            None => {}
            Some(common_tls_context::ValidationContextType::ValidationContext(v)) => {
                settings.trusted_ca = trusted_ca(v, &format!("{cpath}.validation_context"))?;
            }
            Some(_) => {
                return Err(FieldError::new(
                    format!("{cpath}.validation_context_sds_secret_config"),
                    "only an inline validation_context is supported",
                ));
            }
        }
    }
    UpstreamTls::build(settings, format!("{ctx:?}"))
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| FieldError::new(tpath, e.to_string()))
}

fn trusted_ca(
    v: &CertificateValidationContext,
    path: &str,
) -> Result<Option<Vec<CertificateDer<'static>>>> {
    let Some(ca) = &v.trusted_ca else {
        return Ok(None);
    };
    let pem = data(Some(ca), &format!("{path}.trusted_ca"))?;
    certificates(&pem, &format!("{path}.trusted_ca")).map(Some)
}

fn certificates(pem: &[u8], path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| FieldError::new(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(FieldError::new(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The bytes of a `DataSource`: a file's contents or inline data.
fn data(d: Option<&DataSource>, path: &str) -> Result<Vec<u8>> {
    match d.and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::Filename(f)) => std::fs::read(f)
            .map_err(|e| FieldError::new(format!("{path}.filename"), format!("{f}: {e}"))),
        Some(data_source::Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(data_source::Specifier::InlineBytes(b)) => Ok(b.clone()),
        _ => Err(FieldError::new(path, "is required")),
    }
}

/// TLS versions from Envoy's min/max: the minimum defaults to 1.2, the maximum to
/// `default_max` (1.2 for clients, 1.3 for servers, as in Envoy). rustls speaks 1.2 and 1.3
/// only, so a range reaching below 1.2 is cut to 1.2 — unless nothing is left.
fn versions(
    min: i32,
    max: i32,
    default_max: i32,
    path: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    use tls_parameters::TlsProtocol;
    let level = |v: i32, default: i32| match TlsProtocol::try_from(v) {
        Ok(TlsProtocol::TlsAuto) | Err(_) => default,
        Ok(p) => p as i32,
    };
    let (lo, hi) = (
        level(min, TlsProtocol::TlSv12 as i32),
        level(max, default_max),
    );
    let mut out = Vec::new();
    if lo <= TlsProtocol::TlSv12 as i32 && hi >= TlsProtocol::TlSv12 as i32 {
        out.push(&rustls::version::TLS12);
    }
    if lo <= TlsProtocol::TlSv13 as i32 && hi >= TlsProtocol::TlSv13 as i32 {
        out.push(&rustls::version::TLS13);
    }
    if out.is_empty() {
        return Err(FieldError::new(
            path,
            "the Weft proxy speaks TLS 1.2 and 1.3 only; the range allows neither",
        ));
    }
    Ok(out)
}
