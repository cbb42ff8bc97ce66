//! `envoy.filters.http.local_ratelimit`: a token bucket per filter, virtual host or route config.
//! A request takes a token; without one it is answered with the configured status (429 by
//! default) when enforcement applies, or only counted when it does not. `filter_enabled` and
//! `filter_enforced` are fractions of requests, 0 % unless set, as in Envoy.
//!
//! The bucket refills `tokens_per_fill` every `fill_interval`, reckoned lazily when a request
//! looks at it, so no timer runs; its state sits behind a mutex held for a few instructions.

use super::fault::rolls;
use crate::stats;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// `<stat_prefix>.http_local_rate_limit.*`
#[derive(Debug, Default)]
pub struct LocalRateLimitStats {
    pub enabled: AtomicU64,
    pub enforced: AtomicU64,
    pub rate_limited: AtomicU64,
    pub ok: AtomicU64,
}

impl LocalRateLimitStats {
    pub fn entries(&self) -> [(&'static str, u64); 4] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("enabled", get(&self.enabled)),
            ("enforced", get(&self.enforced)),
            ("rate_limited", get(&self.rate_limited)),
            ("ok", get(&self.ok)),
        ]
    }
}

#[derive(Debug)]
pub struct TokenBucket {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval: Duration,
    state: Mutex<(u64, Instant)>,
}

impl TokenBucket {
    pub fn new(max_tokens: u64, tokens_per_fill: u64, fill_interval: Duration) -> Self {
        TokenBucket {
            max_tokens,
            tokens_per_fill,
            fill_interval,
            state: Mutex::new((max_tokens, Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&self) -> bool {
        self.take().0
    }

    /// Takes a token if there is one; the tokens left and the time to the next fill.
    fn take(&self) -> (bool, u64, Duration) {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> (bool, u64, Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let interval = self.fill_interval.max(Duration::from_millis(1));
        let fills = now.duration_since(s.1).as_nanos() / interval.as_nanos();
        if fills > 0 {
            let added = u64::try_from(fills)
                .unwrap_or(u64::MAX)
                .saturating_mul(self.tokens_per_fill);
            s.0 = s.0.saturating_add(added).min(self.max_tokens);
            s.1 += interval * u32::try_from(fills).unwrap_or(u32::MAX);
        }
        let taken = s.0 > 0;
        if taken {
            s.0 -= 1;
        }
        let reset = (s.1 + interval).saturating_duration_since(now);
        (taken, s.0, reset)
    }
}

/// One `LocalRateLimit` config.
#[derive(Debug)]
pub struct LocalRateLimit {
    pub status: StatusCode,
    /// No bucket: the filter's own config may leave it to routes.
    pub bucket: Option<TokenBucket>,
    /// Out of a million requests.
    pub enabled_per_million: u32,
    pub enforced_per_million: u32,
    /// `response_headers_to_add`, on rate-limited answers.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
    pub x_ratelimit_headers: bool,
    pub stats: Arc<LocalRateLimitStats>,
}

/// What the filter decided.
pub enum Decision {
    /// Go on; these headers go on the response.
    Pass(Option<HeaderMap>),
    /// Answer with this status, and these headers.
    Limit(StatusCode, HeaderMap),
}

impl LocalRateLimit {
    pub fn check(&self) -> Decision {
        let Some(bucket) = &self.bucket else {
            return Decision::Pass(None);
        };
        if !rolls(self.enabled_per_million) {
            return Decision::Pass(None);
        }
        let s = &self.stats;
        stats::inc(&s.enabled);
        let (taken, left, reset) = bucket.take();
        let mut headers = HeaderMap::new();
        if self.x_ratelimit_headers {
            headers.insert(
                X_RATELIMIT_LIMIT.clone(),
                HeaderValue::from(bucket.max_tokens),
            );
            headers.insert(X_RATELIMIT_REMAINING.clone(), HeaderValue::from(left));
            headers.insert(
                X_RATELIMIT_RESET.clone(),
                HeaderValue::from(reset.as_secs_f64().ceil() as u64),
            );
        }
        if taken {
            stats::inc(&s.ok);
            return Decision::Pass((!headers.is_empty()).then_some(headers));
        }
        stats::inc(&s.rate_limited);
        if !rolls(self.enforced_per_million) {
            return Decision::Pass((!headers.is_empty()).then_some(headers));
        }
        stats::inc(&s.enforced);
        for (k, v) in &self.response_headers {
            headers.append(k.clone(), v.clone());
        }
        Decision::Limit(self.status, headers)
    }
}

/// `envoy.filters.http.local_ratelimit` in a chain: its own bucket, which a route's config
/// replaces.
#[derive(Debug)]
pub struct LocalRateLimitFilter(pub Arc<LocalRateLimit>);

pub const TYPE: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: Some(TYPE),
    build: |any, cx| {
        let config = crate::config::convert::local_rate_limit_from_any(any, cx.path, cx.store)?;
        Ok(Arc::new(LocalRateLimitFilter(Arc::new(config))))
    },
    build_per_route: |any, cx| {
        Ok(Arc::new(crate::config::convert::local_rate_limit_from_any(
            any, cx.path, cx.store,
        )?))
    },
    supported: &[
        (
            TYPE,
            "stat_prefix status token_bucket filter_enabled filter_enforced \
             response_headers_to_add enable_x_ratelimit_headers=OFF|DRAFT_VERSION_03",
        ),
        ("envoy.type.v3.HttpStatus", "code"),
    ],
};

impl super::HttpFilter for LocalRateLimitFilter {
    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        per_route: super::PerRoute<'_>,
    ) -> super::Decode {
        let config = per_route
            .most_specific::<LocalRateLimit>()
            .unwrap_or(&self.0);
        match config.check() {
            Decision::Pass(None) => super::Decode::Continue,
            Decision::Pass(Some(headers)) => {
                cx.stream.add_response_headers(headers);
                super::Decode::Continue
            }
            Decision::Limit(status, headers) => {
                cx.stream.add_response_headers(headers);
                super::Decode::Reply(crate::http::local_reply::LocalReply::RateLimited(status))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_empties_and_refills_by_the_interval() {
        let b = TokenBucket::new(2, 1, Duration::from_secs(1));
        let t0 = b.state.lock().unwrap().1;
        assert!(b.take_at(t0).0);
        assert!(b.take_at(t0).0);
        assert!(!b.take_at(t0).0);
        let (taken, left, reset) = b.take_at(t0 + Duration::from_millis(1100));
        assert!(taken);
        assert_eq!(left, 0);
        assert_eq!(reset, Duration::from_millis(900));
        let later = t0 + Duration::from_secs(20);
        assert!(b.take_at(later).0 && b.take_at(later).0);
        assert!(!b.take_at(later).0, "never above max_tokens");
    }
}
