//! `typed_per_filter_config` → the CORS policy of a route or virtual host.

use super::route::string_match;
use super::{Result, decode_any, type_name};
use crate::config::FieldError;
use crate::http::cors::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as PbCorsPolicy;
use envoy_types::pb::google::protobuf::Any;
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::Arc;

const CORS_POLICY: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";

/// The CORS policy among a route's or virtual host's per-filter configs. Per-filter config of
/// any other filter is refused: none of the other filters the proxy has reads one yet.
pub fn per_filter_config(
    configs: &HashMap<String, Any>,
    path: &str,
) -> Result<Option<Arc<CorsPolicy>>> {
    let mut policy = None;
    for (key, any) in configs {
        let kpath = format!("{path}[{key}]");
        if type_name(any) != CORS_POLICY {
            return Err(FieldError::new(
                kpath,
                format!(
                    "per-filter config of type {} is not supported by the Weft proxy",
                    type_name(any)
                ),
            ));
        }
        let pb: PbCorsPolicy = decode_any(any, &kpath)?;
        policy = Some(Arc::new(cors_policy(&pb, &kpath)?));
    }
    Ok(policy)
}

fn cors_policy(p: &PbCorsPolicy, path: &str) -> Result<CorsPolicy> {
    let value = |v: &str, field: &str| -> Result<Option<HeaderValue>> {
        if v.is_empty() {
            return Ok(None);
        }
        HeaderValue::from_str(v)
            .map(Some)
            .map_err(|_| FieldError::new(format!("{path}.{field}"), "not a valid header value"))
    };
    let mut allow_origins = Vec::new();
    for (i, m) in p.allow_origin_string_match.iter().enumerate() {
        allow_origins.push(string_match(
            m,
            &format!("{path}.allow_origin_string_match[{i}]"),
        )?);
    }
    let enabled_per_million = match p
        .filter_enabled
        .as_ref()
        .and_then(|f| f.default_value.as_ref())
    {
        None => 1_000_000,
        Some(f) => {
            // HUNDRED, TEN_THOUSAND, MILLION
            let scale = match f.denominator {
                0 => 10_000,
                1 => 100,
                _ => 1,
            };
            f.numerator.saturating_mul(scale).min(1_000_000)
        }
    };
    Ok(CorsPolicy {
        allow_origins,
        allow_methods: value(&p.allow_methods, "allow_methods")?,
        allow_headers: value(&p.allow_headers, "allow_headers")?,
        expose_headers: value(&p.expose_headers, "expose_headers")?,
        max_age: value(&p.max_age, "max_age")?,
        allow_credentials: p.allow_credentials.as_ref().map(|b| b.value),
        allow_private_network_access: p.allow_private_network_access.as_ref().map(|b| b.value),
        forward_not_matching_preflights: p
            .forward_not_matching_preflights
            .as_ref()
            .map(|b| b.value),
        enabled_per_million,
    })
}
