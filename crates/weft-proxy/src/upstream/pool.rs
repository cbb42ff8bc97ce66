//! The per-worker connection pools and the circuit breakers' part in handing out connections.
//!
//! Each worker keeps its own pools (thread-local: a worker's connections are only ever used by
//! that worker, so no lock is needed), keyed by host address, HTTP version, TLS config and
//! priority. Idle HTTP/1.1 connections are reused; one HTTP/2 connection per host carries many
//! streams. A request that finds no ready connection is pending: it opens one if
//! `max_connections` allows, or waits for one to be given back, and `max_pending_requests`
//! bounds how many may wait. As in Envoy, a pool with no connection at all may always open one,
//! or its requests could wait for connections that other workers hold.

use super::{ConnectError, Http1, Purpose, Sender, Version, open};
use crate::cluster::circuit::{Priority, Resources, Thresholds};
use crate::cluster::{Cluster, Host};
use crate::http::body::ProxyBody;
use crate::stats;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

struct Idle {
    conn: Http1,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    idle_http1: Vec<Idle>,
    /// The HTTP/2 connection, with the streams it has been given.
    http2: Option<(
        http2::SendRequest<ProxyBody>,
        u32,
        Option<std::net::SocketAddr>,
    )>,
    /// An HTTP/2 connection is being opened: requests wait for it rather than open another.
    h2_connecting: bool,
    /// Connections of this pool, open or opening.
    open: usize,
}

/// Host address, HTTP version, TLS config, cluster, priority. Plaintext and TLS connections to
/// one address never mix, nor do two clusters' connections (each has its own circuit breakers);
/// the TLS config and the cluster are told apart by addresses in memory (the cluster by its
/// breakers, which its successive versions share).
type PoolKey = (SocketAddr, Version, usize, usize, Priority);

thread_local! {
    static POOLS: RefCell<HashMap<PoolKey, Pool>> = RefCell::new(HashMap::new());
}

fn pool_key(cluster: &Cluster, host: &Host, version: Version, priority: Priority) -> PoolKey {
    let tls = cluster.tls_for(host).map_or(0, |t| Arc::as_ptr(t) as usize);
    let owner = Arc::as_ptr(&cluster.breakers) as usize;
    (host.address, version, tls, owner, priority)
}

/// Gives back an HTTP/1.1 connection whose response was read to the end, for the next request,
/// unless it has carried `max_requests_per_connection` requests.
pub fn release_http1(cluster: &Cluster, host: &Host, priority: Priority, conn: Http1) {
    if conn.sender.is_closed() {
        return;
    }
    if cluster
        .config
        .max_requests_per_connection
        .is_some_and(|max| conn.uses >= max)
    {
        stats::inc(&cluster.stats.upstream_cx_max_requests);
        return;
    }
    let key = pool_key(cluster, host, Version::Http1, priority);
    POOLS.with(|p| {
        // A connection outlives its pool only if the bookkeeping went wrong; it is then closed.
        if let Some(pool) = p.borrow_mut().get_mut(&key) {
            pool.idle_http1.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    });
    cluster.breakers.at(priority).wake();
}

/// A request waiting for a connection; gives its place back when dropped.
struct Pending<'a>(&'a Cluster, &'a Resources);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        Resources::give(&self.1.pending);
        stats::dec(&self.0.stats.upstream_rq_pending_active);
    }
}

/// A connection to `host`: a pooled one if there is one, else a new one, as the circuit
/// breakers allow.
pub async fn checkout(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    version: Version,
    priority: Priority,
) -> Result<Sender, ConnectError> {
    let key = pool_key(cluster, host, version, priority);
    if let Some(s) = pooled(cluster, &key).await {
        return Ok(s);
    }
    let limits = cluster.config.circuit_breakers.thresholds(priority);
    let resources = cluster.breakers.at(priority);
    if !Resources::try_take(&resources.pending, limits.max_pending_requests) {
        stats::inc(&cluster.stats.upstream_rq_pending_overflow);
        return Err(ConnectError::Overflow);
    }
    stats::inc(&cluster.stats.upstream_rq_pending_total);
    stats::inc(&cluster.stats.upstream_rq_pending_active);
    let _pending = Pending(cluster, resources);
    loop {
        // Listen before looking, so that a connection given back in between is not missed.
        let released = resources.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if let Some(s) = pooled(cluster, &key).await {
            return Ok(s);
        }
        match may_open(cluster, key, limits, resources) {
            May::Open => return connect(cluster, host, key).await,
            May::Wait => released.await,
            May::PoolOverflow => {
                stats::inc(&cluster.stats.upstream_cx_pool_overflow);
                return Err(ConnectError::Overflow);
            }
        }
    }
}

/// A ready connection from the pool, if it has one. Idle HTTP/1.1 connections past the
/// cluster's idle timeout are closed on the way.
async fn pooled(cluster: &Cluster, key: &PoolKey) -> Option<Sender> {
    let max_uses = cluster.config.max_requests_per_connection;
    loop {
        let found = POOLS.with(|p| {
            let mut pools = p.borrow_mut();
            let pool = pools.get_mut(key)?;
            match key.1 {
                Version::Http1 => {
                    if let Some(limit) = cluster.config.idle_timeout {
                        // Connections are given back in time order, so the expired ones are the
                        // oldest: a prefix, found without looking at every idle connection.
                        let now = Instant::now();
                        let expired = pool
                            .idle_http1
                            .partition_point(|i| now.duration_since(i.since) >= limit);
                        pool.idle_http1.drain(..expired);
                        let closed = expired as u64;
                        if closed > 0 {
                            cluster
                                .stats
                                .upstream_cx_idle_timeout
                                .fetch_add(closed, Ordering::Relaxed);
                        }
                    }
                    pool.idle_http1.pop().map(|i| Sender::Http1(i.conn))
                }
                Version::Http2 => {
                    let (sender, uses, local) = pool.http2.as_mut()?;
                    let local = *local;
                    if sender.is_closed() {
                        pool.http2 = None;
                        return None;
                    }
                    *uses += 1;
                    let s = sender.clone();
                    // A connection that has carried its share of streams takes no more; it
                    // closes once the streams it carries are done.
                    if max_uses.is_some_and(|max| *uses >= max) {
                        pool.http2 = None;
                        stats::inc(&cluster.stats.upstream_cx_max_requests);
                    }
                    Some(Sender::Http2(s, local))
                }
            }
        })?;
        match found {
            Sender::Http1(mut c) => {
                if c.sender.is_closed() {
                    continue;
                }
                // The previous response is fully read; the connection becomes ready at once.
                if c.sender.ready().await.is_ok() {
                    c.uses += 1;
                    return Some(Sender::Http1(c));
                }
            }
            h2 => return Some(h2),
        }
    }
}

enum May {
    Open,
    Wait,
    PoolOverflow,
}

/// Whether a pending request may open a connection now, counting it if so.
fn may_open(cluster: &Cluster, key: PoolKey, limits: &Thresholds, r: &Resources) -> May {
    POOLS.with(|p| {
        let mut pools = p.borrow_mut();
        let pool = match pools.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                if !Resources::try_take(&r.pools, limits.max_connection_pools) {
                    return May::PoolOverflow;
                }
                e.insert(Pool::default())
            }
        };
        if key.1 == Version::Http2 && pool.h2_connecting {
            return May::Wait;
        }
        if !Resources::try_take(&r.connections, limits.max_connections) {
            stats::inc(&cluster.stats.upstream_cx_overflow);
            if pool.open > 0 {
                return May::Wait;
            }
            r.connections.fetch_add(1, Ordering::Relaxed);
        }
        pool.open += 1;
        pool.h2_connecting = key.1 == Version::Http2;
        May::Open
    })
}

/// A connection of `key`'s pool is gone (closed, or never made): its place in the pool and
/// under `max_connections` is free again. A pool left with nothing is dropped.
fn closed(cluster: &Cluster, key: PoolKey) {
    let r = cluster.breakers.at(key.4);
    Resources::give(&r.connections);
    POOLS.with(|p| {
        let mut pools = p.borrow_mut();
        let Some(pool) = pools.get_mut(&key) else {
            return;
        };
        pool.open = pool.open.saturating_sub(1);
        if pool.open == 0 {
            pools.remove(&key);
            Resources::give(&r.pools);
        }
    });
    r.wake();
}

/// A connection being opened. If opening fails, or the request stops waiting (a timeout drops
/// the future), its place is given back, so that a pool never waits on a connection that will
/// not come.
struct Opening<'a> {
    cluster: &'a Cluster,
    key: PoolKey,
    done: bool,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if self.key.1 == Version::Http2 {
            POOLS.with(|p| {
                if let Some(pool) = p.borrow_mut().get_mut(&self.key) {
                    pool.h2_connecting = false;
                }
            });
        }
        if !self.done {
            closed(self.cluster, self.key);
        } else {
            self.cluster.breakers.at(self.key.4).wake();
        }
    }
}

async fn connect(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    key: PoolKey,
) -> Result<Sender, ConnectError> {
    let mut opening = Opening {
        cluster,
        key,
        done: false,
    };
    let made = handshake(cluster, host, key).await?;
    if let Sender::Http2(s, local) = &made {
        POOLS.with(|p| {
            if let Some(pool) = p.borrow_mut().get_mut(&key) {
                pool.http2 = Some((s.clone(), 1, *local));
            }
        });
    }
    // From here the connection's task gives its place back when it ends.
    opening.done = true;
    Ok(made)
}

async fn handshake(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    key: PoolKey,
) -> Result<Sender, ConnectError> {
    let version = key.1;
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
    let local = stream.local_addr();
    let io = TokioIo::new(stream);
    let cluster_for_task = cluster.clone();
    // The connection task runs on this worker (a current-thread runtime), so it may reach this
    // worker's pools when the connection ends.
    let on_close = move || {
        let c = &cluster_for_task;
        stats::dec(&c.stats.upstream_cx_active);
        stats::inc(&c.stats.upstream_cx_destroy);
        closed(c, key);
    };
    match version {
        Version::Http1 => {
            stats::inc(&s.upstream_cx_http1_total);
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            stats::inc(&s.upstream_cx_active);
            tokio::spawn(async move {
                // with_upgrades: a 101 answer hands the connection to a websocket tunnel.
                let _ = conn.with_upgrades().await;
                on_close();
            });
            Ok(Sender::Http1(Http1 {
                sender,
                uses: 1,
                local,
            }))
        }
        Version::Http2 => {
            stats::inc(&s.upstream_cx_http2_total);
            let mut builder = http2::Builder::new(TokioExecutor::new());
            if let Some(max) = cluster.config.h2_max_concurrent_streams {
                builder.max_concurrent_streams(max);
            }
            let (sender, conn) = builder
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            stats::inc(&s.upstream_cx_active);
            tokio::spawn(async move {
                let _ = conn.await;
                on_close();
            });
            Ok(Sender::Http2(sender, local))
        }
    }
}
