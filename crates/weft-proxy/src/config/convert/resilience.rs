//! The parts of a cluster that protect it: `circuit_breakers` and the HTTP connection limits of
//! `common_http_protocol_options`.

use super::Result;
use crate::cluster::circuit::{CircuitBreakers, RetryBudget, Thresholds};
use crate::config::FieldError;
use envoy_types::pb::envoy::config::cluster::v3 as pb;

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
    })
}

/// `max_requests_per_connection`: 0 or unset means no limit.
pub fn max_requests_per_connection(value: Option<u32>) -> Option<u32> {
    value.filter(|n| *n > 0)
}
