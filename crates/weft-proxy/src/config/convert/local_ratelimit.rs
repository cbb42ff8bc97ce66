//! `envoy.filters.http.local_ratelimit` config → `http::filter::local_ratelimit::LocalRateLimit`, and
//! `envoy.filters.network.local_ratelimit` → `listener::rate_limit::ConnectionRateLimit`.

use super::{Result, decode_any};
use crate::config::FieldError;
use crate::http::filter::local_ratelimit::{LocalRateLimit, TokenBucket};
use crate::listener::rate_limit::ConnectionRateLimit;
use crate::server::StatsStore;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit as Pb;
use envoy_types::pb::google::protobuf::Any;
use http::StatusCode;

pub(crate) fn local_rate_limit_from_any(
    any: &Any,
    path: &str,
    store: &StatsStore,
) -> Result<LocalRateLimit> {
    let pb: Pb = decode_any(any, path)?;
    local_rate_limit(&pb, path, store)
}

/// `envoy.filters.network.local_ratelimit`: a bucket of connections.
pub fn connection_rate_limit(
    p: &envoy_types::pb::envoy::extensions::filters::network::local_ratelimit::v3::LocalRateLimit,
    path: &str,
    store: &StatsStore,
) -> Result<ConnectionRateLimit> {
    if p.stat_prefix.is_empty() {
        return Err(FieldError::new(
            format!("{path}.stat_prefix"),
            "is required",
        ));
    }
    let Some(b) = &p.token_bucket else {
        return Err(FieldError::new(
            format!("{path}.token_bucket"),
            "is required",
        ));
    };
    let bucket = token_bucket(b, &format!("{path}.token_bucket"))?;
    // Envoy refuses buckets refilled more often than every 50 ms.
    if bucket.fill_interval < std::time::Duration::from_millis(50) {
        return Err(FieldError::new(
            format!("{path}.token_bucket.fill_interval"),
            "must be at least 50ms",
        ));
    }
    Ok(ConnectionRateLimit {
        stat_prefix: p.stat_prefix.clone(),
        bucket,
        enabled: p
            .runtime_enabled
            .as_ref()
            .and_then(|r| r.default_value.as_ref())
            .is_none_or(|b| b.value),
        rate_limited: store.connection_rate_limit(&p.stat_prefix),
    })
}

fn token_bucket(
    b: &envoy_types::pb::envoy::r#type::v3::TokenBucket,
    path: &str,
) -> Result<TokenBucket> {
    if b.max_tokens == 0 {
        return Err(FieldError::new(
            format!("{path}.max_tokens"),
            "must be greater than zero",
        ));
    }
    let fill_interval =
        super::required_positive(b.fill_interval.as_ref(), format!("{path}.fill_interval"))?;
    let per_fill = b.tokens_per_fill.as_ref().map_or(1, |v| v.value);
    if per_fill == 0 {
        return Err(FieldError::new(
            format!("{path}.tokens_per_fill"),
            "must be greater than zero",
        ));
    }
    Ok(TokenBucket::new(
        u64::from(b.max_tokens),
        u64::from(per_fill),
        fill_interval,
    ))
}

fn local_rate_limit(p: &Pb, path: &str, store: &StatsStore) -> Result<LocalRateLimit> {
    if p.stat_prefix.is_empty() {
        return Err(FieldError::new(
            format!("{path}.stat_prefix"),
            "is required",
        ));
    }
    let status = match &p.status {
        None => StatusCode::TOO_MANY_REQUESTS,
        Some(s) => u16::try_from(s.code)
            .ok()
            .filter(|c| (400..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| {
                FieldError::new(
                    format!("{path}.status.code"),
                    format!("{} is not an HTTP error status", s.code),
                )
            })?,
    };
    let bucket = match &p.token_bucket {
        None => None,
        Some(b) => Some(token_bucket(b, &format!("{path}.token_bucket"))?),
    };
    // Unset, a fraction is 0 %: the filter must be turned on explicitly, as in Envoy.
    let fraction =
        |f: &Option<envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent>| {
            f.as_ref()
                .and_then(|f| f.default_value.as_ref())
                .map_or(0, |p| super::fault::per_million(Some(p)))
        };
    let ops = super::headers::header_ops(&[], &[], &p.response_headers_to_add, &[], path)?;
    let response_headers = ops
        .response_add
        .into_iter()
        .map(|a| (a.name, a.value))
        .collect();
    Ok(LocalRateLimit {
        status,
        bucket,
        enabled_per_million: fraction(&p.filter_enabled),
        enforced_per_million: fraction(&p.filter_enforced),
        response_headers,
        x_ratelimit_headers: p.enable_x_ratelimit_headers == 1,
        stats: store.local_rate_limit(&p.stat_prefix),
    })
}
