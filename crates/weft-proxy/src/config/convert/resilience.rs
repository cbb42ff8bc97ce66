//! The parts of a cluster that protect it: `circuit_breakers`, `outlier_detection`,
//! `common_lb_config.healthy_panic_threshold` and the HTTP connection limits of
//! `common_http_protocol_options`.

use super::{Result, positive, required_positive};
use crate::cluster::circuit::{CircuitBreakers, RetryBudget, Thresholds};
use crate::cluster::outlier::OutlierConfig;
use crate::config::FieldError;
use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::google::protobuf::UInt32Value;
use std::time::Duration;

pub fn circuit_breakers(cb: Option<&pb::CircuitBreakers>, path: &str) -> Result<CircuitBreakers> {
    let mut out = CircuitBreakers::default();
    let Some(cb) = cb else { return Ok(out) };
    let mut seen = [false; 2];
    for (i, t) in cb.thresholds.iter().enumerate() {
        let tpath = format!("{path}.thresholds[{i}]");
        let (slot, seen) = match t.priority {
            0 => (&mut out.default, &mut seen[0]),
            1 => (&mut out.high, &mut seen[1]),
            other => {
                return Err(FieldError::new(
                    format!("{tpath}.priority"),
                    format!("unknown priority {other}"),
                ));
            }
        };
        if std::mem::replace(seen, true) {
            return Err(FieldError::new(
                format!("{tpath}.priority"),
                "a priority may have one set of thresholds",
            ));
        }
        *slot = thresholds(t, &tpath)?;
    }
    Ok(out)
}

fn thresholds(t: &pb::circuit_breakers::Thresholds, path: &str) -> Result<Thresholds> {
    let d = Thresholds::default();
    let value = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, default: u64| {
        v.as_ref().map_or(default, |v| u64::from(v.value))
    };
    let retry_budget = match &t.retry_budget {
        None => None,
        Some(b) => {
            let percent = b.budget_percent.as_ref().map_or(20.0, |p| p.value);
            if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
                return Err(FieldError::new(
                    format!("{path}.retry_budget.budget_percent.value"),
                    format!("{percent} is not a percentage between 0 and 100"),
                ));
            }
            Some(RetryBudget {
                percent,
                min_concurrency: value(&b.min_retry_concurrency, 3),
            })
        }
    };
    Ok(Thresholds {
        max_connections: value(&t.max_connections, d.max_connections),
        max_pending_requests: value(&t.max_pending_requests, d.max_pending_requests),
        max_requests: value(&t.max_requests, d.max_requests),
        max_retries: value(&t.max_retries, d.max_retries),
        max_connection_pools: value(&t.max_connection_pools, d.max_connection_pools),
        retry_budget,
        track_remaining: t.track_remaining,
    })
}

/// `max_requests_per_connection`: 0 or unset means no limit.
pub fn max_requests_per_connection(value: Option<u32>) -> Option<u32> {
    value.filter(|n| *n > 0)
}

pub fn outlier_detection(od: &pb::OutlierDetection, path: &str) -> Result<OutlierConfig> {
    let d = OutlierConfig::default();
    let count = |v: &Option<UInt32Value>, default: u32| v.as_ref().map_or(default, |v| v.value);
    let percent = |v: &Option<UInt32Value>, default: u32, name: &str| -> Result<u32> {
        let p = count(v, default);
        if p > 100 {
            return Err(FieldError::new(
                format!("{path}.{name}"),
                format!("{p} is not a percentage (0 to 100)"),
            ));
        }
        Ok(p)
    };
    let interval = positive(od.interval.as_ref(), format!("{path}.interval"))?;
    let base = positive(
        od.base_ejection_time.as_ref(),
        format!("{path}.base_ejection_time"),
    )?;
    let max = positive(
        od.max_ejection_time.as_ref(),
        format!("{path}.max_ejection_time"),
    )?;
    let base_ejection_time = base.unwrap_or(d.base_ejection_time);
    let max_ejection_time = max.unwrap_or(d.max_ejection_time.max(base_ejection_time));
    if max_ejection_time < base_ejection_time {
        return Err(FieldError::new(
            format!("{path}.max_ejection_time"),
            "must be at least base_ejection_time",
        ));
    }
    Ok(OutlierConfig {
        consecutive_5xx: count(&od.consecutive_5xx, d.consecutive_5xx),
        enforcing_consecutive_5xx: percent(
            &od.enforcing_consecutive_5xx,
            d.enforcing_consecutive_5xx,
            "enforcing_consecutive_5xx",
        )?,
        consecutive_gateway_failure: count(
            &od.consecutive_gateway_failure,
            d.consecutive_gateway_failure,
        ),
        enforcing_consecutive_gateway_failure: percent(
            &od.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure",
        )?,
        split_external_local_origin_errors: od.split_external_local_origin_errors,
        consecutive_local_origin_failure: count(
            &od.consecutive_local_origin_failure,
            d.consecutive_local_origin_failure,
        ),
        enforcing_consecutive_local_origin_failure: percent(
            &od.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
            "enforcing_consecutive_local_origin_failure",
        )?,
        interval: interval.unwrap_or(d.interval),
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent: percent(
            &od.max_ejection_percent,
            d.max_ejection_percent,
            "max_ejection_percent",
        )?,
        always_eject_one_host: od.always_eject_one_host.as_ref().is_some_and(|b| b.value),
        success_rate_minimum_hosts: count(
            &od.success_rate_minimum_hosts,
            d.success_rate_minimum_hosts,
        ),
        success_rate_request_volume: count(
            &od.success_rate_request_volume,
            d.success_rate_request_volume,
        ),
        success_rate_stdev_factor: count(
            &od.success_rate_stdev_factor,
            d.success_rate_stdev_factor,
        ),
        enforcing_success_rate: percent(
            &od.enforcing_success_rate,
            d.enforcing_success_rate,
            "enforcing_success_rate",
        )?,
        enforcing_local_origin_success_rate: percent(
            &od.enforcing_local_origin_success_rate,
            d.enforcing_local_origin_success_rate,
            "enforcing_local_origin_success_rate",
        )?,
        failure_percentage_threshold: percent(
            &od.failure_percentage_threshold,
            d.failure_percentage_threshold,
            "failure_percentage_threshold",
        )?,
        failure_percentage_minimum_hosts: count(
            &od.failure_percentage_minimum_hosts,
            d.failure_percentage_minimum_hosts,
        ),
        failure_percentage_request_volume: count(
            &od.failure_percentage_request_volume,
            d.failure_percentage_request_volume,
        ),
        enforcing_failure_percentage: percent(
            &od.enforcing_failure_percentage,
            d.enforcing_failure_percentage,
            "enforcing_failure_percentage",
        )?,
        enforcing_failure_percentage_local_origin: percent(
            &od.enforcing_failure_percentage_local_origin,
            d.enforcing_failure_percentage_local_origin,
            "enforcing_failure_percentage_local_origin",
        )?,
    })
}

/// `common_lb_config.healthy_panic_threshold`: 50 % unless set.
pub fn healthy_panic_threshold(c: Option<&pb::cluster::CommonLbConfig>, path: &str) -> Result<f64> {
    match c.and_then(|c| c.healthy_panic_threshold.as_ref()) {
        None => Ok(crate::cluster::lb::DEFAULT_PANIC_THRESHOLD),
        Some(p) if (0.0..=100.0).contains(&p.value) => Ok(p.value),
        Some(p) => Err(FieldError::new(
            format!("{path}.healthy_panic_threshold.value"),
            format!("{} is not a percentage between 0 and 100", p.value),
        )),
    }
}

/// `health_checks`: at most one, TCP or HTTP/1.1.
pub fn health_checks(
    list: &[envoy_types::pb::envoy::config::core::v3::HealthCheck],
    cluster: &str,
    path: &str,
) -> Result<Option<crate::cluster::health_check::HealthCheckConfig>> {
    use crate::cluster::health_check::{HealthCheckConfig, Probe};
    use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
    let Some(hc) = list.first() else {
        return Ok(None);
    };
    if list.len() > 1 {
        return Err(FieldError::new(
            format!("{path}[1]"),
            "the Weft proxy runs one health check per cluster",
        ));
    }
    let path = format!("{path}[0]");
    let threshold = |v: &Option<UInt32Value>, field: &str| -> Result<u32> {
        match v {
            Some(v) if v.value > 0 => Ok(v.value),
            _ => Err(FieldError::new(
                format!("{path}.{field}"),
                "is required and must be at least 1",
            )),
        }
    };
    let probe = match &hc.health_checker {
        Some(HealthChecker::TcpHealthCheck(_)) => Probe::Tcp,
        Some(HealthChecker::HttpHealthCheck(h)) => {
            if h.path.is_empty() || !h.path.starts_with('/') {
                return Err(FieldError::new(
                    format!("{path}.http_health_check.path"),
                    "must be a path starting with /",
                ));
            }
            let mut expected = Vec::new();
            for (i, r) in h.expected_statuses.iter().enumerate() {
                let range = u16::try_from(r.start)
                    .ok()
                    .zip(u16::try_from(r.end).ok())
                    .filter(|(s, e)| (100..=600).contains(s) && s < e && *e <= 600);
                let Some(range) = range else {
                    return Err(FieldError::new(
                        format!("{path}.http_health_check.expected_statuses[{i}]"),
                        "must be a range [start, end) of statuses from 100 to 599",
                    ));
                };
                expected.push(range);
            }
            if expected.is_empty() {
                expected.push((200, 201));
            }
            Probe::Http {
                path: h.path.clone(),
                authority: if h.host.is_empty() {
                    cluster.to_string()
                } else {
                    h.host.clone()
                },
                expected,
            }
        }
        _ => {
            return Err(FieldError::new(
                path,
                "one of tcp_health_check or http_health_check is required",
            ));
        }
    };
    Ok(Some(HealthCheckConfig {
        timeout: required_positive(hc.timeout.as_ref(), format!("{path}.timeout"))?,
        interval: required_positive(hc.interval.as_ref(), format!("{path}.interval"))?,
        no_traffic_interval: positive(
            hc.no_traffic_interval.as_ref(),
            format!("{path}.no_traffic_interval"),
        )?
        .unwrap_or(Duration::from_secs(60)),
        unhealthy_threshold: threshold(&hc.unhealthy_threshold, "unhealthy_threshold")?,
        healthy_threshold: threshold(&hc.healthy_threshold, "healthy_threshold")?,
        probe,
    }))
}
