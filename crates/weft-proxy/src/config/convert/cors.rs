//! A `typed_per_filter_config` CORS policy → the policy of a route or virtual host.

use super::headers::string_match;
use super::{Result, decode_any};
use crate::config::FieldError;
use crate::http::filter::cors::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as PbCorsPolicy;
use envoy_types::pb::google::protobuf::Any;
use http::HeaderValue;

/// A route's `CorsPolicy`.
pub(crate) fn cors_policy(any: &Any, path: &str) -> Result<CorsPolicy> {
    let p: PbCorsPolicy = decode_any(any, path)?;
    let p = &p;
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
