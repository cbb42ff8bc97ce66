//! Connections to upstream hosts. Each worker keeps its own pools (thread-local: a worker's
//! connections are only ever used by that worker, so no lock is needed), keyed by host address and
//! HTTP version: idle HTTP/1.1 connections are reused (keep-alive), one HTTP/2 connection per host
//! carries many streams.

pub mod tls;

use crate::body::ProxyBody;
use crate::cluster::{Cluster, Host};
use crate::stats;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http1,
    Http2,
}

/// A connection ready to carry one request.
pub enum Sender {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("delayed connect error: {0}")]
    Refused(std::io::Error),
    #[error("connection timeout")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    #[error("TLS error: {0}")]
    Tls(std::io::Error),
}

/// What an upstream connection will carry, which decides its TLS ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Http(Version),
    /// `tcp_proxy`: bytes, with only the ALPN the cluster configures.
    Tcp,
}

/// Opens a connection to `host`: TCP, then TLS when the cluster has a transport socket, both
/// within the cluster's `connect_timeout` (Envoy counts a connection as made after its
/// handshake). Counting is left to the caller.
pub async fn open(
    cluster: &Cluster,
    host: &Host,
    purpose: Purpose,
) -> Result<tls::UpstreamStream, ConnectError> {
    let attempt = async {
        let stream = TcpStream::connect(host.address)
            .await
            .map_err(ConnectError::Refused)?;
        let _ = stream.set_nodelay(true);
        match &cluster.config.tls {
            None => Ok(tls::UpstreamStream::Plain(stream)),
            Some(t) => {
                let config = match purpose {
                    Purpose::Http(Version::Http1) => &t.http1,
                    Purpose::Http(Version::Http2) => &t.http2,
                    Purpose::Tcp => &t.raw,
                };
                t.connect(config, host.address, stream)
                    .await
                    .map_err(ConnectError::Tls)
            }
        }
    };
    tokio::time::timeout(cluster.config.connect_timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

#[derive(Default)]
struct Pool {
    idle_http1: Vec<http1::SendRequest<ProxyBody>>,
    http2: Option<http2::SendRequest<ProxyBody>>,
}

/// A pool per host address, HTTP version and TLS config (plaintext and TLS connections to one
/// address never mix; the config is told apart by its address in memory).
type PoolKey = (SocketAddr, Version, usize);

thread_local! {
    static POOLS: RefCell<HashMap<PoolKey, Pool>> = RefCell::new(HashMap::new());
}

fn pool_key(cluster: &Cluster, address: SocketAddr, version: Version) -> PoolKey {
    let tls = cluster
        .config
        .tls
        .as_ref()
        .map_or(0, |t| Arc::as_ptr(t) as usize);
    (address, version, tls)
}

/// Returns an HTTP/1.1 connection whose response was read to the end, for the next request.
pub fn release_http1(
    cluster: &Cluster,
    address: SocketAddr,
    sender: http1::SendRequest<ProxyBody>,
) {
    if sender.is_closed() {
        return;
    }
    POOLS.with(|p| {
        p.borrow_mut()
            .entry(pool_key(cluster, address, Version::Http1))
            .or_default()
            .idle_http1
            .push(sender)
    });
}

/// A connection to `host`: a pooled one if there is one, else a new one.
pub async fn checkout(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    version: Version,
) -> Result<Sender, ConnectError> {
    let key = pool_key(cluster, host.address, version);
    loop {
        let pooled = POOLS.with(|p| {
            let mut pools = p.borrow_mut();
            let pool = pools.get_mut(&key)?;
            match version {
                Version::Http1 => pool.idle_http1.pop().map(Sender::Http1),
                Version::Http2 => match &pool.http2 {
                    Some(s) if !s.is_closed() => Some(Sender::Http2(s.clone())),
                    _ => {
                        pool.http2 = None;
                        None
                    }
                },
            }
        });
        match pooled {
            Some(Sender::Http1(mut s)) => {
                if s.is_closed() {
                    continue;
                }
                // The previous response is fully read; the connection becomes ready at once.
                if s.ready().await.is_ok() {
                    return Ok(Sender::Http1(s));
                }
            }
            Some(other) => return Ok(other),
            None => break,
        }
    }
    let sender = connect(cluster, host, version).await?;
    if let Sender::Http2(s) = &sender {
        let s = s.clone();
        POOLS.with(|p| p.borrow_mut().entry(key).or_default().http2 = Some(s));
    }
    Ok(sender)
}

async fn connect(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    version: Version,
) -> Result<Sender, ConnectError> {
    let s = &cluster.stats;
    stats::inc(&s.upstream_cx_total);
    stats::inc(&host.stats.cx_total);
    let stream = match open(cluster, host, Purpose::Http(version)).await {
        Ok(stream) => stream,
        Err(e) => {
            stats::inc(&s.upstream_cx_connect_fail);
            stats::inc(&host.stats.cx_connect_fail);
            if matches!(e, ConnectError::Timeout) {
                stats::inc(&s.upstream_cx_connect_timeout);
            }
            return Err(e);
        }
    };
    let io = TokioIo::new(stream);
    let cluster_for_task = cluster.clone();
    stats::inc(&s.upstream_cx_active);
    match version {
        Version::Http1 => {
            stats::inc(&s.upstream_cx_http1_total);
            let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(|e| {
                stats::dec(&s.upstream_cx_active);
                ConnectError::Handshake(e)
            })?;
            tokio::spawn(async move {
                // with_upgrades: a 101 answer hands the connection to a websocket tunnel.
                let _ = conn.with_upgrades().await;
                stats::dec(&cluster_for_task.stats.upstream_cx_active);
                stats::inc(&cluster_for_task.stats.upstream_cx_destroy);
            });
            Ok(Sender::Http1(sender))
        }
        Version::Http2 => {
            stats::inc(&s.upstream_cx_http2_total);
            let mut builder = http2::Builder::new(TokioExecutor::new());
            if let Some(max) = cluster.config.h2_max_concurrent_streams {
                builder.max_concurrent_streams(max);
            }
            let (sender, conn) = builder.handshake(io).await.map_err(|e| {
                stats::dec(&s.upstream_cx_active);
                ConnectError::Handshake(e)
            })?;
            tokio::spawn(async move {
                let _ = conn.await;
                stats::dec(&cluster_for_task.stats.upstream_cx_active);
                stats::inc(&cluster_for_task.stats.upstream_cx_destroy);
            });
            Ok(Sender::Http2(sender))
        }
    }
}
