//! A route's retry policy (`RouteAction.retry_policy`) and the decisions it makes: whether an
//! attempt's outcome is worth another try, and how long to back off first. Envoy's meanings:
//! `5xx` covers any 5xx answer and an upstream that never answered (connect failure, reset,
//! per-try timeout); `gateway-error` the same with only 502, 503 and 504; the gRPC conditions
//! read `grpc-status` of a trailers-only answer.

use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// `retry_on` conditions, as bits.
pub mod on {
    pub const FIVE_XX: u32 = 1;
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    pub const RESET: u32 = 1 << 2;
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    pub const RETRIABLE_4XX: u32 = 1 << 4;
    pub const REFUSED_STREAM: u32 = 1 << 5;
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    pub const GRPC_CANCELLED: u32 = 1 << 7;
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 8;
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 9;
    pub const GRPC_UNAVAILABLE: u32 = 1 << 10;
    pub const GRPC_INTERNAL: u32 = 1 << 11;
    pub const RESET_BEFORE_REQUEST: u32 = 1 << 12;
    pub const ENVOY_RATELIMITED: u32 = 1 << 13;
    /// Only with `retriable_headers`, which the proxy refuses: alone it never fires, in Envoy too.
    pub const RETRIABLE_HEADERS: u32 = 1 << 14;
    /// The Weft proxy has no HTTP/3 upstreams, so it never fires.
    pub const HTTP3_POST_CONNECT_FAILURE: u32 = 1 << 15;

    /// Envoy's names for the conditions.
    pub fn parse(token: &str) -> Option<u32> {
        Some(match token {
            "5xx" => FIVE_XX,
            "gateway-error" => GATEWAY_ERROR,
            "reset" => RESET,
            "connect-failure" => CONNECT_FAILURE,
            "retriable-4xx" => RETRIABLE_4XX,
            "refused-stream" => REFUSED_STREAM,
            "retriable-status-codes" => RETRIABLE_STATUS_CODES,
            "cancelled" => GRPC_CANCELLED,
            "deadline-exceeded" => GRPC_DEADLINE_EXCEEDED,
            "resource-exhausted" => GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => GRPC_UNAVAILABLE,
            "internal" => GRPC_INTERNAL,
            "reset-before-request" => RESET_BEFORE_REQUEST,
            "envoy-ratelimited" => ENVOY_RATELIMITED,
            "retriable-headers" => RETRIABLE_HEADERS,
            "http3-post-connect-failure" => HTTP3_POST_CONNECT_FAILURE,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub retry_on: u32,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    /// `per_try_idle_timeout`: an attempt ends once it has moved no bytes for this long
    /// (before the response; once it streams, `stream_idle_timeout` governs).
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// `envoy.retry_host_predicates.previous_hosts`: a retry avoids the hosts already tried.
    pub avoid_previous_hosts: bool,
    /// How many times host selection is redone to find a host the predicate accepts.
    pub host_selection_max_attempts: u32,
    pub base_interval: Duration,
    pub max_interval: Duration,
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    ConnectFailure,
    /// The stream was reset before an answer (REFUSED_STREAM when `refused`); `unsent` when
    /// not a byte of the request reached the connection (it closed first).
    Reset {
        refused: bool,
        unsent: bool,
    },
    PerTryTimeout,
}

impl RetryPolicy {
    fn has(&self, bit: u32) -> bool {
        self.retry_on & bit != 0
    }

    /// Whether an upstream's answer calls for a retry.
    pub fn retries_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        let code = status.as_u16();
        if self.has(on::FIVE_XX) && status.is_server_error() {
            return true;
        }
        if self.has(on::GATEWAY_ERROR) && matches!(code, 502..=504) {
            return true;
        }
        if self.has(on::RETRIABLE_4XX) && code == 409 {
            return true;
        }
        if self.has(on::RETRIABLE_STATUS_CODES) && self.retriable_status_codes.contains(&code) {
            return true;
        }
        if self.has(on::ENVOY_RATELIMITED) && headers.contains_key("x-envoy-ratelimited") {
            return true;
        }
        let grpc = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        match grpc {
            Some(1) => self.has(on::GRPC_CANCELLED),
            Some(4) => self.has(on::GRPC_DEADLINE_EXCEEDED),
            Some(8) => self.has(on::GRPC_RESOURCE_EXHAUSTED),
            Some(13) => self.has(on::GRPC_INTERNAL),
            Some(14) => self.has(on::GRPC_UNAVAILABLE),
            _ => false,
        }
    }

    /// Whether an attempt that got no answer calls for a retry. `started`: some attempt of
    /// this request has already sent bytes upstream, which ends `reset-before-request` for
    /// the request, as Envoy's router keeps it.
    pub fn retries_failure(&self, why: NoAnswer, started: bool) -> bool {
        let any = self.has(on::FIVE_XX) || self.has(on::GATEWAY_ERROR) || self.has(on::RESET);
        let before_request = !started && self.has(on::RESET_BEFORE_REQUEST);
        match why {
            NoAnswer::ConnectFailure => any || self.has(on::CONNECT_FAILURE) || before_request,
            NoAnswer::Reset { refused, unsent } => {
                any || (refused && self.has(on::REFUSED_STREAM)) || (unsent && before_request)
            }
            NoAnswer::PerTryTimeout => any,
        }
    }

    /// Envoy's jittered exponential back-off before retry `n` (1 for the first): a random
    /// time below `base × 2^(n-1)`, capped at `max_interval`.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        let ceiling = self
            .base_interval
            .saturating_mul(factor)
            .min(self.max_interval);
        let ms = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(fastrand::u64(..ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: u32) -> RetryPolicy {
        RetryPolicy {
            retry_on,
            num_retries: 1,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: vec![418],
            avoid_previous_hosts: false,
            host_selection_max_attempts: 1,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
        }
    }

    #[test]
    fn conditions_select_the_outcomes_envoy_retries() {
        let h = HeaderMap::new();
        let p = policy(on::GATEWAY_ERROR);
        assert!(p.retries_response(StatusCode::SERVICE_UNAVAILABLE, &h));
        assert!(!p.retries_response(StatusCode::INTERNAL_SERVER_ERROR, &h));
        assert!(p.retries_failure(NoAnswer::PerTryTimeout, false));
        let p = policy(on::CONNECT_FAILURE | on::RETRIABLE_STATUS_CODES);
        assert!(p.retries_failure(NoAnswer::ConnectFailure, false));
        let reset = NoAnswer::Reset {
            refused: false,
            unsent: false,
        };
        assert!(!p.retries_failure(reset, false));
        assert!(p.retries_response(StatusCode::IM_A_TEAPOT, &h));
        assert!(!p.retries_response(StatusCode::SERVICE_UNAVAILABLE, &h));
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert!(policy(on::GRPC_UNAVAILABLE).retries_response(StatusCode::OK, &grpc));
        assert!(!policy(on::GRPC_CANCELLED).retries_response(StatusCode::OK, &grpc));
        let refused = NoAnswer::Reset {
            refused: true,
            unsent: false,
        };
        assert!(policy(on::REFUSED_STREAM).retries_failure(refused, false));
        let mut limited = HeaderMap::new();
        limited.insert("x-envoy-ratelimited", "true".parse().unwrap());
        assert!(
            policy(on::ENVOY_RATELIMITED).retries_response(StatusCode::TOO_MANY_REQUESTS, &limited)
        );
        assert!(!policy(on::ENVOY_RATELIMITED).retries_response(StatusCode::TOO_MANY_REQUESTS, &h));
    }

    #[test]
    fn reset_before_request_retries_only_what_never_left() {
        let p = policy(on::RESET_BEFORE_REQUEST);
        let unsent = NoAnswer::Reset {
            refused: false,
            unsent: true,
        };
        let sent = NoAnswer::Reset {
            refused: false,
            unsent: false,
        };
        assert!(p.retries_failure(unsent, false));
        assert!(p.retries_failure(NoAnswer::ConnectFailure, false));
        assert!(!p.retries_failure(sent, false));
        assert!(!p.retries_failure(NoAnswer::PerTryTimeout, false));
        // Once an earlier attempt sent bytes, the request has started for good.
        assert!(!p.retries_failure(unsent, true));
        assert!(!p.retries_failure(NoAnswer::ConnectFailure, true));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy(0);
        for _ in 0..200 {
            assert!(p.backoff(1) < Duration::from_millis(25));
            assert!(p.backoff(2) < Duration::from_millis(50));
            assert!(p.backoff(9) < Duration::from_millis(250));
        }
    }
}
