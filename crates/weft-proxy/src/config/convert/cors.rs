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

const HTTP_FAULT: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

/// What a route's or virtual host's `typed_per_filter_config` sets for the filters that read
/// one: CORS and fault. Any other type is refused.
#[derive(Default)]
pub struct PerFilter {
    pub cors: Option<Arc<CorsPolicy>>,
    pub fault: Option<Arc<crate::http::fault::FaultPolicy>>,
    pub local_rate_limit: Option<Arc<crate::http::local_ratelimit::LocalRateLimit>>,
}

pub fn per_filter_config(
    configs: &HashMap<String, Any>,
    path: &str,
    store: &crate::server::StatsStore,
) -> Result<PerFilter> {
    let mut out = PerFilter::default();
    for (key, any) in configs {
        let kpath = format!("{path}[{key}]");
        match type_name(any) {
            CORS_POLICY => {
                let pb: PbCorsPolicy = decode_any(any, &kpath)?;
                out.cors = Some(Arc::new(cors_policy(&pb, &kpath)?));
            }
            HTTP_FAULT => {
                let pb: envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault =
                    decode_any(any, &kpath)?;
                out.fault = Some(Arc::new(super::fault::fault_policy(&pb, &kpath)?));
            }
            super::local_ratelimit::TYPE => {
                out.local_rate_limit = Some(Arc::new(super::local_ratelimit::from_any(
                    any, &kpath, store,
                )?));
            }
            other => {
                return Err(FieldError::new(
                    kpath,
                    format!("per-filter config of type {other} is not supported by the Weft proxy"),
                ));
            }
        }
    }
    Ok(out)
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
