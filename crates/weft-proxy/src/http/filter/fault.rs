//! The fault injection filter (`envoy.filters.http.fault`): a fixed delay and an abort, each
//! for a fraction of requests, from the filter's own config or the route's (a route's or
//! virtual host's `typed_per_filter_config` replaces the filter's whole). Counted as Envoy
//! counts them, `http.<prefix>.fault.*`, with `max_active_faults` as the cap.
//!
//! `header_delay` and `header_abort` take the fault from the request instead:
//! `x-envoy-fault-delay-request` (milliseconds), `x-envoy-fault-abort-request` (an HTTP status)
//! or `x-envoy-fault-abort-grpc-request` (a gRPC status), and `…-percentage` headers that may
//! lower, never raise, the configured share.

use crate::stats::{self, FaultStats};
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status, answered as a trailers-only gRPC reply.
    Grpc(u32),
}

/// Where a fault's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<T> {
    Fixed(T),
    /// The request's headers (`header_delay`, `header_abort`).
    Header,
}

/// A share of requests: per million, and what one unit of the configured denominator is worth
/// per million (a percentage header is a numerator over that denominator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub per_million: u32,
    pub unit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultPolicy {
    pub delay: Option<(Source<Duration>, Share)>,
    pub abort: Option<(Source<Abort>, Share)>,
    /// `max_active_faults`: requests with a fault in progress beyond which no more are made.
    pub max_active: Option<u64>,
}

/// What the filter does to one request.
pub struct Injected {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
    /// Holds the request's place in `active_faults` until dropped.
    active: Option<ActiveFault>,
}

pub struct ActiveFault(Arc<FaultStats>);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        stats::dec(&self.0.active_faults);
    }
}

pub(crate) fn rolls(per_million: u32) -> bool {
    per_million >= 1_000_000 || fastrand::u32(..1_000_000) < per_million
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Whether one request gets a fault, and its value: the fixed one, or what the request's
/// headers name. A header-controlled fault's percentage header may lower its share.
fn decide<T: Copy>(
    fault: Option<(Source<T>, Share)>,
    headers: &HeaderMap,
    percentage_header: &str,
    from_headers: impl FnOnce(&HeaderMap) -> Option<T>,
) -> Option<T> {
    let (source, share) = fault?;
    let lowered = header_number(headers, percentage_header)
        .filter(|_| matches!(source, Source::Header))
        .map(|n| {
            u32::try_from(n.saturating_mul(u64::from(share.unit)))
                .unwrap_or(u32::MAX)
                .min(share.per_million)
        });
    if !rolls(lowered.unwrap_or(share.per_million)) {
        return None;
    }
    match source {
        Source::Fixed(v) => Some(v),
        Source::Header => from_headers(headers),
    }
}

fn header_abort(headers: &HeaderMap) -> Option<Abort> {
    if let Some(code) = header_number(headers, "x-envoy-fault-abort-request") {
        return u16::try_from(code)
            .ok()
            .filter(|c| (200..600).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .map(Abort::Http);
    }
    header_number(headers, "x-envoy-fault-abort-grpc-request")
        .and_then(|c| u32::try_from(c).ok())
        .map(Abort::Grpc)
}

impl FaultPolicy {
    /// Rolls the dice for one request; `None` when it gets no fault.
    pub fn inject(&self, stats: &Arc<FaultStats>, headers: &HeaderMap) -> Option<Injected> {
        let delay = decide(
            self.delay,
            headers,
            "x-envoy-fault-delay-request-percentage",
            |h| header_number(h, "x-envoy-fault-delay-request").map(Duration::from_millis),
        );
        let abort = decide(
            self.abort,
            headers,
            "x-envoy-fault-abort-request-percentage",
            header_abort,
        );
        if delay.is_none() && abort.is_none() {
            return None;
        }
        if let Some(max) = self.max_active
            && stats
                .active_faults
                .load(std::sync::atomic::Ordering::Relaxed)
                >= max
        {
            stats::inc(&stats.faults_overflow);
            return None;
        }
        stats::inc(&stats.active_faults);
        if delay.is_some() {
            stats::inc(&stats.delays_injected);
        }
        if abort.is_some() {
            stats::inc(&stats.aborts_injected);
        }
        Some(Injected {
            delay,
            abort,
            active: Some(ActiveFault(stats.clone())),
        })
    }
}

/// `envoy.filters.http.fault` in a chain: its own policy, which a route's replaces whole.
#[derive(Debug)]
pub struct FaultFilter {
    pub policy: Arc<FaultPolicy>,
    pub stats: Arc<FaultStats>,
}

const TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: Some(TYPE),
    build: |any, cx| {
        let policy = crate::config::convert::fault_from_any(any, cx.path)?;
        Ok(Arc::new(FaultFilter {
            policy: Arc::new(policy),
            stats: cx.store.fault(cx.stat_prefix),
        }))
    },
    build_per_route: |any, cx| {
        Ok(Arc::new(crate::config::convert::fault_from_any(
            any, cx.path,
        )?))
    },
    supported: &[
        (TYPE, "delay abort max_active_faults"),
        (
            "envoy.extensions.filters.common.fault.v3.FaultDelay",
            "fixed_delay header_delay percentage",
        ),
        (
            "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay",
            "",
        ),
        (
            "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort",
            "",
        ),
        (
            "envoy.extensions.filters.http.fault.v3.FaultAbort",
            "http_status grpc_status header_abort percentage",
        ),
    ],
};

impl super::HttpFilter for FaultFilter {
    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        per_route: super::PerRoute<'_>,
    ) -> super::Decode {
        use super::Decode;
        use crate::access_log::flags;
        use crate::http::local_reply::LocalReply;
        let policy = per_route
            .most_specific::<FaultPolicy>()
            .unwrap_or(&self.policy);
        let Some(mut fault) = policy.inject(&self.stats, &cx.head.headers) else {
            return Decode::Continue;
        };
        if let Some(active) = fault.active.take() {
            cx.stream.held.push(Box::new(active));
        }
        let abort = fault
            .abort
            .map(|a| Decode::Reply(LocalReply::FaultAbort(a)));
        match fault.delay {
            Some(d) => {
                cx.stream.flags |= flags::DI;
                Decode::Pause(Box::pin(async move {
                    tokio::time::sleep(d).await;
                    abort.unwrap_or(Decode::Continue)
                }))
            }
            None => abort.unwrap_or(Decode::Continue),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_the_active_cap_hold() {
        let stats = Arc::new(FaultStats::default());
        let policy = FaultPolicy {
            delay: None,
            abort: Some((
                Source::Fixed(Abort::Http(StatusCode::SERVICE_UNAVAILABLE)),
                Share {
                    per_million: 300_000,
                    unit: 10_000,
                },
            )),
            max_active: None,
        };
        let none = HeaderMap::new();
        let hits = (0..20_000)
            .filter(|_| policy.inject(&stats, &none).is_some())
            .count();
        // 30 % of 20,000 within 5 standard deviations (324).
        assert!((hits as i64 - 6_000).abs() < 324, "{hits}");
        assert_eq!(
            stats
                .active_faults
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );

        let capped = FaultPolicy {
            delay: Some((
                Source::Fixed(Duration::from_secs(1)),
                Share {
                    per_million: 1_000_000,
                    unit: 10_000,
                },
            )),
            abort: None,
            max_active: Some(1),
        };
        let held = capped.inject(&stats, &none);
        assert!(held.is_some());
        assert!(
            capped.inject(&stats, &none).is_none(),
            "the second is over max_active_faults"
        );
        assert_eq!(
            stats
                .faults_overflow
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        drop(held);
        assert!(capped.inject(&stats, &none).is_some());
    }

    #[test]
    fn header_faults_come_from_the_request_and_its_percentage_only_lowers_the_share() {
        let stats = Arc::new(FaultStats::default());
        let all = Share {
            per_million: 1_000_000,
            unit: 10_000,
        };
        let policy = FaultPolicy {
            delay: Some((Source::Header, all)),
            abort: Some((Source::Header, all)),
            max_active: None,
        };
        let mut h = HeaderMap::new();
        assert!(policy.inject(&stats, &h).is_none(), "no header, no fault");
        h.insert("x-envoy-fault-abort-request", "418".parse().unwrap());
        h.insert("x-envoy-fault-delay-request", "25".parse().unwrap());
        let f = policy.inject(&stats, &h).unwrap();
        assert_eq!(f.abort, Some(Abort::Http(StatusCode::IM_A_TEAPOT)));
        assert_eq!(f.delay, Some(Duration::from_millis(25)));
        drop(f);
        h.insert(
            "x-envoy-fault-abort-request-percentage",
            "0".parse().unwrap(),
        );
        h.insert(
            "x-envoy-fault-delay-request-percentage",
            "0".parse().unwrap(),
        );
        assert!(policy.inject(&stats, &h).is_none(), "lowered to 0 %");
        let mut g = HeaderMap::new();
        g.insert("x-envoy-fault-abort-grpc-request", "14".parse().unwrap());
        assert_eq!(
            policy.inject(&stats, &g).unwrap().abort,
            Some(Abort::Grpc(14))
        );
    }
}
