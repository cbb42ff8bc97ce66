//! `RouteAction.retry_policy` → `route::retry::RetryPolicy`, refusing what Envoy would refuse
//! (an unknown `retry_on` condition, a zero or negative back-off) and what the proxy does not
//! implement (a host predicate other than previous_hosts).

use super::{Result, duration, positive};
use crate::config::FieldError;
use crate::route::retry::{RetryPolicy, on};
use envoy_types::pb::envoy::config::route::v3 as pb;
use std::time::Duration;

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

pub fn retry_policy(p: &pb::RetryPolicy, path: &str) -> Result<RetryPolicy> {
    let mut retry_on = 0;
    for token in p
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        retry_on |= on::parse(token).ok_or_else(|| {
            FieldError::new(
                format!("{path}.retry_on"),
                format!("unknown retry condition {token:?}"),
            )
        })?;
    }
    let mut retriable_status_codes = Vec::new();
    for (i, code) in p.retriable_status_codes.iter().enumerate() {
        let c = u16::try_from(*code)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| {
                FieldError::new(
                    format!("{path}.retriable_status_codes[{i}]"),
                    "not an HTTP status code",
                )
            })?;
        retriable_status_codes.push(c);
    }
    let mut avoid_previous_hosts = false;
    for (i, predicate) in p.retry_host_predicate.iter().enumerate() {
        use pb::retry_policy::retry_host_predicate::ConfigType;
        let by_type = match &predicate.config_type {
            Some(ConfigType::TypedConfig(any)) => any.type_url == PREVIOUS_HOSTS_TYPE,
            None => false,
        };
        if predicate.name != PREVIOUS_HOSTS && !by_type {
            return Err(FieldError::new(
                format!("{path}.retry_host_predicate[{i}]"),
                format!(
                    "{} is not supported by the Weft proxy (supported: {PREVIOUS_HOSTS})",
                    predicate.name
                ),
            ));
        }
        avoid_previous_hosts = true;
    }
    let backoff = p.retry_back_off.as_ref();
    let base_interval = positive(
        backoff.and_then(|b| b.base_interval.as_ref()),
        format!("{path}.retry_back_off.base_interval"),
    )?
    .unwrap_or(Duration::from_millis(25));
    let max_interval = positive(
        backoff.and_then(|b| b.max_interval.as_ref()),
        format!("{path}.retry_back_off.max_interval"),
    )?
    .unwrap_or(base_interval * 10);
    if max_interval < base_interval {
        return Err(FieldError::new(
            format!("{path}.retry_back_off.max_interval"),
            "must be at least base_interval",
        ));
    }
    Ok(RetryPolicy {
        retry_on,
        num_retries: p.num_retries.as_ref().map_or(1, |n| n.value),
        per_try_timeout: duration(p.per_try_timeout.as_ref()).filter(|d| !d.is_zero()),
        per_try_idle_timeout: super::not_negative(
            p.per_try_idle_timeout.as_ref(),
            format!("{path}.per_try_idle_timeout"),
        )?
        .filter(|d| !d.is_zero()),
        retriable_status_codes,
        avoid_previous_hosts,
        host_selection_max_attempts: u32::try_from(p.host_selection_retry_max_attempts.max(1))
            .unwrap_or(u32::MAX),
        base_interval,
        max_interval,
    })
}
