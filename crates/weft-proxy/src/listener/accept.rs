//! Accepting connections on a worker and handing each to its filter chain.

use super::{Listener, NetworkFilter};
use crate::http;
use crate::server::Shared;
use crate::stats;
use crate::tcp;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Accepts until the task is dropped. The listener config is read from the snapshot per
/// connection, so a config update reaches new connections at once.
pub async fn run(name: String, socket: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match socket.accept().await {
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
            http::serve(stream, conn).await;
        }
        Some(NetworkFilter::Tcp(proxy)) => {
            tcp::serve(stream, proxy.clone(), shared.clone(), peer, local).await;
        }
    }
    stats::dec(&s.downstream_cx_active);
    stats::inc(&s.downstream_cx_destroy);
}
