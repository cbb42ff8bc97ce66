//! Connections to upstream hosts. Each worker keeps its own pools (thread-local: a worker's
//! connections are only ever used by that worker, so no lock is needed), keyed by host address and
//! HTTP version: idle HTTP/1.1 connections are reused (keep-alive), one HTTP/2 connection per host
//! carries many streams.

use crate::body::ProxyBody;
use crate::cluster::{Cluster, Host};
use crate::stats;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
}

#[derive(Default)]
struct Pool {
    idle_http1: Vec<http1::SendRequest<ProxyBody>>,
    http2: Option<http2::SendRequest<ProxyBody>>,
}

thread_local! {
    static POOLS: RefCell<HashMap<(SocketAddr, Version), Pool>> = RefCell::new(HashMap::new());
}

/// Returns an HTTP/1.1 connection whose response was read to the end, for the next request.
pub fn release_http1(address: SocketAddr, sender: http1::SendRequest<ProxyBody>) {
    if sender.is_closed() {
        return;
    }
    POOLS.with(|p| {
        p.borrow_mut()
            .entry((address, Version::Http1))
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
    let key = (host.address, version);
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
    let timeout: Duration = cluster.config.connect_timeout;
    let s = &cluster.stats;
    stats::inc(&s.upstream_cx_total);
    stats::inc(&host.stats.cx_total);
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(host.address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            stats::inc(&s.upstream_cx_connect_fail);
            stats::inc(&host.stats.cx_connect_fail);
            return Err(ConnectError::Refused(e));
        }
        Err(_) => {
            stats::inc(&s.upstream_cx_connect_fail);
            stats::inc(&s.upstream_cx_connect_timeout);
            stats::inc(&host.stats.cx_connect_fail);
            return Err(ConnectError::Timeout);
        }
    };
    let _ = stream.set_nodelay(true);
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
