//! `envoy.filters.network.local_ratelimit`: a token bucket in front of a filter chain's
//! terminal filter. Each new connection takes a token; a connection that finds none is closed
//! at once, before any TLS handshake or byte is read, and counted under
//! `local_rate_limit.<stat_prefix>.rate_limited`.

use crate::http::filter::local_ratelimit::TokenBucket;
use crate::stats;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[derive(Debug)]
pub struct ConnectionRateLimit {
    pub stat_prefix: String,
    pub bucket: TokenBucket,
    /// `runtime_enabled`'s default value (on when unset).
    pub enabled: bool,
    /// `local_rate_limit.<stat_prefix>.rate_limited`, shared by filters with the prefix.
    pub rate_limited: Arc<AtomicU64>,
}

impl ConnectionRateLimit {
    /// Whether a new connection may go on; counts the one that may not.
    pub fn admit(&self) -> bool {
        if !self.enabled || self.bucket.try_take() {
            return true;
        }
        stats::inc(&self.rate_limited);
        false
    }
}
