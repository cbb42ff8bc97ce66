//! The listener lifecycle across config updates: a new listener is bound before the snapshot
//! naming it is published (a port already taken refuses the update, as in Envoy), every worker
//! then accepts on it; a removed or replaced listener stops accepting and its connections drain.

use super::Listener;
use crate::server::{self, ServerState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
#[error("listener {name}: cannot bind {address}: {source}")]
pub struct BindError {
    pub name: String,
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// Sockets bound for an update that is not published yet.
#[derive(Debug, Default)]
pub struct Prepared {
    sockets: HashMap<String, Option<Vec<std::net::TcpListener>>>,
}

#[derive(Debug)]
struct Bound {
    address: SocketAddr,
    listener: Arc<Listener>,
    /// Tells this listener's accept loops (one per worker) to stop.
    stop: watch::Sender<bool>,
}

#[derive(Debug)]
pub struct ListenerManager {
    workers: Vec<Handle>,
    shared: Arc<ServerState>,
    bound: HashMap<String, Bound>,
}

impl ListenerManager {
    pub fn new(workers: Vec<Handle>, shared: Arc<ServerState>) -> Self {
        ListenerManager {
            workers,
            shared,
            bound: HashMap::new(),
        }
    }

    /// Binds what `listeners` adds or moves. On error nothing is kept: the sockets bound so far
    /// close when the error drops them.
    pub fn prepare(&self, listeners: &[Arc<Listener>]) -> Result<Prepared, BindError> {
        let mut prepared = Prepared::default();
        for l in listeners {
            if self.bound.get(&l.name).is_some_and(|b| {
                b.address == l.address && b.listener.bind_to_port == l.bind_to_port
            }) {
                continue;
            }
            // `bind_to_port: false`: reached only by hand-off from a `use_original_dst` listener.
            let socket = if l.bind_to_port {
                Some(
                    server::bind_per_worker(l.address, self.workers.len()).map_err(|source| {
                        BindError {
                            name: l.name.clone(),
                            address: l.address,
                            source,
                        }
                    })?,
                )
            } else {
                None
            };
            prepared.sockets.insert(l.name.clone(), socket);
        }
        Ok(prepared)
    }

    /// Called once the snapshot holding `listeners` is published: accepts on the new sockets,
    /// stops accepting on the listeners that went away, and drains the connections of every
    /// listener version that is no longer current.
    pub fn commit(&mut self, mut prepared: Prepared, listeners: &[Arc<Listener>]) {
        let mut next = HashMap::new();
        for l in listeners {
            match (self.bound.remove(&l.name), prepared.sockets.remove(&l.name)) {
                (Some(mut bound), None) => {
                    if !Arc::ptr_eq(&bound.listener, l) {
                        bound.listener.start_draining();
                        bound.listener = l.clone();
                    }
                    next.insert(l.name.clone(), bound);
                }
                (old, Some(socket)) => {
                    if let Some(old) = old {
                        retire(old);
                    }
                    let stop = match socket {
                        Some(socket) => {
                            tracing::info!(listener = %l.name, address = %l.address, "listening");
                            self.accept(&l.name, socket)
                        }
                        None => watch::channel(false).0,
                    };
                    next.insert(
                        l.name.clone(),
                        Bound {
                            address: l.address,
                            listener: l.clone(),
                            stop,
                        },
                    );
                }
                (None, None) => {
                    tracing::error!(listener = %l.name, "listener was not prepared; not serving it");
                }
            }
        }
        for (_, old) in self.bound.drain() {
            tracing::info!(listener = %old.listener.name, "listener removed; draining");
            retire(old);
        }
        self.bound = next;
    }

    /// Each worker accepts on its own socket of the listener.
    fn accept(&self, name: &str, sockets: Vec<std::net::TcpListener>) -> watch::Sender<bool> {
        let (stop, _) = watch::channel(false);
        for (index, (worker, socket)) in self.workers.iter().zip(sockets).enumerate() {
            let name = name.to_string();
            let shared = self.shared.clone();
            let stop = stop.subscribe();
            worker.spawn(async move {
                match tokio::net::TcpListener::from_std(socket) {
                    Ok(listener) => super::accept::run(name, index, listener, shared, stop).await,
                    Err(e) => {
                        tracing::error!(listener = %name, error = %e, "cannot register listener")
                    }
                }
            });
        }
        stop
    }
}

fn retire(old: Bound) {
    old.stop.send_replace(true);
    old.listener.start_draining();
}
