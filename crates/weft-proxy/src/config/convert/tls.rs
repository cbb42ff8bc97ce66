//! `transport_socket` (`envoy.transport_sockets.tls`): a cluster's `UpstreamTlsContext` →
//! `upstream::tls::UpstreamTls`, a filter chain's `DownstreamTlsContext` →
//! `listener::tls::DownstreamTls`. Certificates are read here, off the data path, so that a
//! missing or broken file is a config error naming its field.

use super::{Result, decode_any, type_name};
use crate::agent::tls::{Roots, SanMatcher, SanType};
use crate::config::FieldError;
use crate::listener::tls::{DownstreamTls, ServerCert, ServerSettings};
use crate::upstream::tls::{ClientCert, TlsSettings, UpstreamTls};
use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsCertificate, UpstreamTlsContext, common_tls_context, tls_parameters,
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
    let cert = match context_certificate(common, &cpath)? {
        Some(Cert::Static(chain, key)) => ServerCert::Static { chain, key },
        Some(Cert::Sds) => ServerCert::Sds,
        Some(Cert::Ads(name)) => ServerCert::Ads(name),
        None => {
            return Err(FieldError::new(
                format!("{cpath}.tls_certificates"),
                "a server certificate is required",
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
    let (client_ca, client_sans) = context_validation(common, &cpath)?;
    let settings = ServerSettings {
        cert,
        alpn: common
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
        versions,
        client_ca,
        client_sans,
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

/// A transport socket of `transport_socket_matches`: TLS, or `raw_buffer` (None).
pub fn any_transport_socket(t: &TransportSocket, path: &str) -> Result<Option<Arc<UpstreamTls>>> {
    if let Some(
        envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(any),
    ) = &t.config_type
        && type_name(any) == "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
    {
        return Ok(None);
    }
    transport_socket(t, path)
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
        settings.client_cert = match context_certificate(common, &cpath)? {
            Some(Cert::Static(chain, key)) => Some(ClientCert::Static(chain, key)),
            Some(Cert::Sds) => Some(ClientCert::Sds),
            Some(Cert::Ads(name)) => Some(ClientCert::Ads(name)),
            None => None,
        };
        (settings.trusted_ca, settings.sans) = context_validation(common, &cpath)?;
    }
    UpstreamTls::build(settings, format!("{ctx:?}"))
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| FieldError::new(tpath, e.to_string()))
}

/// A context's own certificate.
enum Cert {
    Static(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// SDS `default`.
    Sds,
    /// An SDS secret on the ADS stream, by name.
    Ads(String),
}

/// Where an SDS secret comes from: the proxy's agent, or the ADS stream.
enum SdsRef {
    Agent,
    Ads(String),
}

/// An SDS secret config: with `sds_config` `ads`, any secret the control plane sends on the ADS
/// stream; otherwise one of the agent's, `want`.
fn sds_ref(sds: &SdsSecretConfig, want: &str, path: &str) -> Result<SdsRef> {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    let ads = sds.sds_config.as_ref().is_some_and(|c| {
        matches!(
            c.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        )
    });
    if ads {
        if sds.name.is_empty() {
            return Err(FieldError::new(format!("{path}.name"), "is required"));
        }
        return Ok(SdsRef::Ads(sds.name.clone()));
    }
    sds_name(sds, want, path)?;
    Ok(SdsRef::Agent)
}

/// Istio's SDS secret names, served by the proxy's own agent whatever `sds_config` names (in a
/// pod, `sds-grpc` is the agent next door; here the agent is in the proxy).
const SDS_CERTIFICATE: &str = "default";
const SDS_ROOTS: &str = "ROOTCA";

fn sds_name(sds: &SdsSecretConfig, want: &str, path: &str) -> Result<()> {
    if sds.name == want {
        Ok(())
    } else {
        Err(FieldError::new(
            format!("{path}.name"),
            format!(
                "the Weft proxy's agent serves SDS secrets {SDS_CERTIFICATE:?} and {SDS_ROOTS:?}; here it must be {want:?}, not {:?}",
                sds.name
            ),
        ))
    }
}

/// `tls_certificates` (one) or `tls_certificate_sds_secret_configs` (SDS `default`).
fn context_certificate(common: &CommonTlsContext, cpath: &str) -> Result<Option<Cert>> {
    match (
        common.tls_certificates.as_slice(),
        common.tls_certificate_sds_secret_configs.as_slice(),
    ) {
        ([], []) => Ok(None),
        ([cert], []) => {
            let (chain, key) = certificate(cert, &format!("{cpath}.tls_certificates[0]"))?;
            Ok(Some(Cert::Static(chain, key)))
        }
        ([], [sds]) => {
            let path = format!("{cpath}.tls_certificate_sds_secret_configs[0]");
            Ok(Some(match sds_ref(sds, SDS_CERTIFICATE, &path)? {
                SdsRef::Agent => Cert::Sds,
                SdsRef::Ads(name) => Cert::Ads(name),
            }))
        }
        ([], _) => Err(FieldError::new(
            format!("{cpath}.tls_certificate_sds_secret_configs"),
            "the Weft proxy takes one certificate per context",
        )),
        (_, []) => Err(FieldError::new(
            format!("{cpath}.tls_certificates"),
            "the Weft proxy takes one certificate per context",
        )),
        (_, _) => Err(FieldError::new(
            format!("{cpath}.tls_certificate_sds_secret_configs"),
            "give tls_certificates or tls_certificate_sds_secret_configs, not both",
        )),
    }
}

/// The roots peers are checked against, and the SANs they must carry: an inline
/// `validation_context`, SDS `ROOTCA`, or both combined (Istio's shape).
fn context_validation(
    common: &CommonTlsContext,
    cpath: &str,
) -> Result<(Option<Roots>, Vec<SanMatcher>)> {
    use common_tls_context::ValidationContextType as V;
    match &common.validation_context_type {
        None => Ok((None, Vec::new())),
        Some(V::ValidationContext(v)) => {
            let path = format!("{cpath}.validation_context");
            let roots = trusted_ca(v, &path)?;
            Ok((roots, san_matchers(v, &path)?))
        }
        Some(V::ValidationContextSdsSecretConfig(sds)) => {
            let path = format!("{cpath}.validation_context_sds_secret_config");
            Ok((Some(sds_roots(sds_ref(sds, SDS_ROOTS, &path)?)), Vec::new()))
        }
        Some(V::CombinedValidationContext(c)) => {
            let path = format!("{cpath}.combined_validation_context");
            let Some(sds) = &c.validation_context_sds_secret_config else {
                return Err(FieldError::new(
                    format!("{path}.validation_context_sds_secret_config"),
                    "is required",
                ));
            };
            let roots = sds_roots(sds_ref(
                sds,
                SDS_ROOTS,
                &format!("{path}.validation_context_sds_secret_config"),
            )?);
            let sans = match &c.default_validation_context {
                Some(v) => {
                    let vpath = format!("{path}.default_validation_context");
                    if v.trusted_ca.is_some() {
                        return Err(FieldError::new(
                            format!("{vpath}.trusted_ca"),
                            "the roots come from SDS ROOTCA here",
                        ));
                    }
                    san_matchers(v, &vpath)?
                }
                None => Vec::new(),
            };
            Ok((Some(roots), sans))
        }
        Some(_) => Err(FieldError::new(
            cpath,
            "this validation context type is not supported by the Weft proxy",
        )),
    }
}

fn sds_roots(r: SdsRef) -> Roots {
    match r {
        SdsRef::Agent => Roots::Sds(crate::agent::secrets().clone()),
        SdsRef::Ads(name) => Roots::Ads(name),
    }
}

/// An SDS `Secret` from the ADS stream: a certificate and key, or trusted roots.
pub fn secret(
    s: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret,
) -> Result<crate::agent::ads::AdsSecret> {
    use crate::agent::ads::AdsSecret;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
    match &s.r#type {
        Some(Type::TlsCertificate(cert)) => {
            let (chain, key) = certificate(cert, ".tls_certificate")?;
            let uris = chain
                .first()
                .map(|c| crate::http::xfcc::uri_sans(c.as_ref()))
                .unwrap_or_default();
            let signing = crate::upstream::tls::provider()
                .key_provider
                .load_private_key(key)
                .map_err(|e| FieldError::new(".tls_certificate.private_key", e.to_string()))?;
            Ok(AdsSecret::Certificate {
                certified: Arc::new(rustls::sign::CertifiedKey::new(chain, signing)),
                uris,
            })
        }
        Some(Type::ValidationContext(v)) => match trusted_ca(v, ".validation_context")? {
            Some(Roots::Static(store)) => Ok(AdsSecret::Roots(store)),
            _ => Err(FieldError::new(
                ".validation_context.trusted_ca",
                "is required",
            )),
        },
        _ => Err(FieldError::new(
            ".",
            "a secret must be a tls_certificate or a validation_context",
        )),
    }
}

/// `match_typed_subject_alt_names`, and the older `match_subject_alt_names` (any SAN type).
fn san_matchers(v: &CertificateValidationContext, path: &str) -> Result<Vec<SanMatcher>> {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType as Pb;
    let mut out = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let mpath = format!("{path}.match_typed_subject_alt_names[{i}]");
        let san_type = match Pb::try_from(m.san_type) {
            Ok(Pb::Dns) => SanType::Dns,
            Ok(Pb::Uri) => SanType::Uri,
            Ok(Pb::Email) => SanType::Email,
            Ok(Pb::IpAddress) => SanType::IpAddress,
            _ => {
                return Err(FieldError::new(
                    format!("{mpath}.san_type"),
                    "must be DNS, URI, EMAIL or IP_ADDRESS",
                ));
            }
        };
        let Some(matcher) = &m.matcher else {
            return Err(FieldError::new(format!("{mpath}.matcher"), "is required"));
        };
        out.push(SanMatcher {
            san_type,
            matcher: super::headers::string_match(matcher, &format!("{mpath}.matcher"))?,
        });
    }
    // Deprecated in Envoy, still written by older control planes and by hand.
    #[allow(deprecated)]
    let legacy = &v.match_subject_alt_names;
    for (i, m) in legacy.iter().enumerate() {
        out.push(SanMatcher {
            san_type: SanType::Any,
            matcher: super::headers::string_match(
                m,
                &format!("{path}.match_subject_alt_names[{i}]"),
            )?,
        });
    }
    Ok(out)
}

fn trusted_ca(v: &CertificateValidationContext, path: &str) -> Result<Option<Roots>> {
    let Some(ca) = &v.trusted_ca else {
        return Ok(None);
    };
    let pem = data(Some(ca), &format!("{path}.trusted_ca"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(&pem, &format!("{path}.trusted_ca"))? {
        roots
            .add(cert)
            .map_err(|e| FieldError::new(format!("{path}.trusted_ca"), e.to_string()))?;
    }
    Ok(Some(Roots::Static(Arc::new(roots))))
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
