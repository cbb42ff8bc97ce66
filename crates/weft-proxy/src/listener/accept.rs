//! Accepting connections on a worker and handing each to its filter chain.

use super::{Listener, NetworkFilter};
use crate::http;
use crate::server::Shared;
use crate::stats;
use crate::tcp;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Accepts until `stop` is set. The listener config is read from the snapshot per connection,
/// so a config update reaches new connections at once.
pub async fn run(
    name: String,
    socket: TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(listener) = shared
            .snapshot
            .load()
            .listeners
            .iter()
            .find(|l| l.name == name)
            .cloned()
        else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move { connection(stream, peer, listener, shared).await });
    }
}

async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(listener.address);
    let s = &listener.stats;
    stats::inc(&s.downstream_cx_total);
    stats::inc(&s.downstream_cx_active);
    match listener.filter_chain(local).map(|c| &c.filter) {
        None => stats::inc(&s.no_filter_chain_match),
        Some(NetworkFilter::Http(hcm)) => {
            let conn = http::Connection {
                hcm: hcm.clone(),
                shared: shared.clone(),
                peer,
                local,
            };
            http::serve(stream, conn, listener.drain.subscribe()).await;
        }
        Some(NetworkFilter::Tcp(proxy)) => {
            let drain = listener.drain.subscribe();
            tokio::select! {
                () = tcp::serve(stream, proxy.clone(), shared.clone(), peer, local) => {}
                () = drained(drain, shared.drain_time) => {}
            }
        }
    }
    stats::dec(&s.downstream_cx_active);
    stats::inc(&s.downstream_cx_destroy);
}

/// True once the listener starts draining; false if it is dropped without.
pub(crate) async fn draining(mut drain: tokio::sync::watch::Receiver<bool>) -> bool {
    drain.wait_for(|d| *d).await.is_ok()
}

/// Resolves once the listener has been draining for `drain_time`: what is still open then is
/// closed, as Envoy does at the end of its drain period.
pub(crate) async fn drained(
    drain: tokio::sync::watch::Receiver<bool>,
    drain_time: std::time::Duration,
) {
    if !draining(drain).await {
        // The listener is gone without draining: nothing will ever ask to close.
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(drain_time).await;
}
