//! `remote_jwks`: a provider's keys fetched from its `http_uri`, through an endpoint of the
//! named cluster, and kept for `cache_duration` (10 minutes by default, as Envoy). A request
//! that needs keys not yet fetched (or expired) waits for one fetch; a fetch that fails makes
//! that request's token fail with "Jwks remote fetch is failed", and the next request tries
//! again.

use crate::jwt::Jwks;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A JWKS larger than this is not one.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone)]
pub enum Keys {
    Fresh(Arc<Jwks>),
    /// The last fetch failed just now: this request's tokens fail.
    Failed,
    /// Nothing usable is known: fetch first.
    Stale,
}

#[derive(Debug)]
pub struct RemoteJwks {
    pub cluster: String,
    pub uri: http::Uri,
    pub timeout: Duration,
    pub cache_duration: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    keys: Option<(Instant, Arc<Jwks>)>,
    failed_at: Option<Instant>,
}

impl RemoteJwks {
    pub fn new(
        cluster: String,
        uri: http::Uri,
        timeout: Duration,
        cache_duration: Duration,
    ) -> Self {
        RemoteJwks {
            cluster,
            uri,
            timeout,
            cache_duration,
            state: Mutex::new(State::default()),
        }
    }

    pub fn keys(&self) -> Keys {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, keys)) = &s.keys
            && at.elapsed() < self.cache_duration
        {
            return Keys::Fresh(keys.clone());
        }
        // A failure is the answer for the request that waited for it, not for later ones.
        if s.failed_at
            .is_some_and(|at| at.elapsed() < Duration::from_millis(500))
        {
            return Keys::Failed;
        }
        Keys::Stale
    }

    /// Fetches the keys from `address` (an endpoint of the cluster), and keeps the outcome.
    pub async fn refresh(&self, address: Option<std::net::SocketAddr>) {
        let got = match address {
            Some(a) => tokio::time::timeout(self.timeout, self.fetch(a))
                .await
                .unwrap_or_else(|_| Err("timed out".into())),
            None => Err(format!("cluster {} has no host", self.cluster)),
        };
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match got {
            Ok(keys) => {
                s.keys = Some((Instant::now(), Arc::new(keys)));
                s.failed_at = None;
            }
            Err(e) => {
                tracing::debug!(uri = %self.uri, error = %e, "remote JWKS fetch failed");
                s.failed_at = Some(Instant::now());
            }
        }
    }

    async fn fetch(&self, address: std::net::SocketAddr) -> Result<Jwks, String> {
        let host = self.uri.authority().map_or("", |a| a.as_str()).to_string();
        let req = http::Request::get(self.uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = crate::http::side::send(address, req).await?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Jwks::parse(&String::from_utf8_lossy(&body))
    }
}
