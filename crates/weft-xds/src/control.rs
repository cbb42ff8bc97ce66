//! The control plane's push loop: one translation per connected proxy whenever the inputs
//! change, a cache update only for proxies whose resources changed, and per-type versions that
//! move only when that type's resources did, so that an unchanged type is never sent again.
//! Config changes are debounced as istiod does: pushed after 100 ms without another change, and
//! at most 1 s after the first.

use crate::ads::{AdsServer, Cache, ConnectionStatus, Resources, Snapshot};
use crate::translate::{self, Generated, Inputs, Proxy};
use envoy_types::pb::envoy::config::core::v3::Node;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// istiod's PILOT_DEBOUNCE_AFTER and PILOT_DEBOUNCE_MAX.
pub const DEBOUNCE_AFTER: Duration = Duration::from_millis(100);
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// What the control plane knows of one proxy.
#[derive(Debug, Clone)]
pub struct ProxyState {
    pub proxy: Proxy,
    pub generated: Generated,
    pub snapshot: Snapshot,
}

#[derive(Default)]
struct State {
    inputs: Arc<Inputs>,
    generation: u64,
    proxies: BTreeMap<String, ProxyState>,
    /// Nodes whose id or metadata could not be read, with the reason.
    refused: BTreeMap<String, String>,
}

/// Translation and push for every proxy connected to one ADS server.
#[derive(Clone)]
pub struct ControlPlane {
    server: AdsServer,
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for ControlPlane {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlPlane {
    pub fn new() -> ControlPlane {
        let state: Arc<Mutex<State>> = Arc::default();
        let cache = Arc::new(Cache::default());
        let hook_state = state.clone();
        let hook_cache = cache.clone();
        let server = AdsServer::new(cache).with_connect_hook(move |node: &Node| {
            connect(&hook_state, &hook_cache, node);
        });
        ControlPlane { server, state }
    }

    /// The ADS service to serve.
    pub fn server(&self) -> AdsServer {
        self.server.clone()
    }

    /// New inputs: every known proxy is translated again; those whose resources changed get
    /// them. Returns how many proxies were pushed.
    pub fn apply(&self, inputs: Inputs) -> usize {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.inputs = Arc::new(inputs);
        let generation = state.generation;
        let inputs = state.inputs.clone();
        let cache = self.server.cache().clone();
        let mut pushed = 0;
        for (id, p) in state.proxies.iter_mut() {
            let generated = translate::generate(&inputs, &p.proxy);
            let snapshot = versioned(&generated, Some(&p.snapshot), generation);
            if snapshot != p.snapshot {
                cache.set_node(id, snapshot.clone());
                pushed += 1;
            }
            p.generated = generated;
            p.snapshot = snapshot;
        }
        pushed
    }

    /// The proxies that ever connected, by node id.
    pub fn proxies(&self) -> BTreeMap<String, ProxyState> {
        lock(&self.state).proxies.clone()
    }

    /// Nodes refused at connection, with the reason.
    pub fn refused(&self) -> BTreeMap<String, String> {
        lock(&self.state).refused.clone()
    }

    pub fn inputs(&self) -> Arc<Inputs> {
        lock(&self.state).inputs.clone()
    }

    /// The ADS streams now open, with what each proxy acknowledged.
    pub fn connections(&self) -> Vec<ConnectionStatus> {
        self.server.status()
    }

    /// Applies the inputs that arrive on `updates`, debounced; ends when the sender goes.
    pub async fn run(self, mut updates: mpsc::UnboundedReceiver<Inputs>) {
        while let Some(first) = updates.recv().await {
            let started = Instant::now();
            let mut latest = first;
            loop {
                let quiet = Instant::now() + DEBOUNCE_AFTER;
                let until = quiet.min(started + DEBOUNCE_MAX);
                match tokio::time::timeout_at(until, updates.recv()).await {
                    Ok(Some(next)) => latest = next,
                    Ok(None) | Err(_) => break,
                }
            }
            let pushed = self.apply(latest);
            tracing::info!(pushed, "configuration pushed");
        }
    }
}

/// A new stream: its node is translated with the current inputs before the stream reads the
/// cache, so that its first responses already hold its configuration.
fn connect(state: &Mutex<State>, cache: &Cache, node: &Node) {
    let proxy = match Proxy::from_node(node) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(node = %node.id, error = %e, "proxy refused");
            lock(state).refused.insert(node.id.clone(), e);
            return;
        }
    };
    let mut state = lock(state);
    let generation = state.generation;
    let generated = translate::generate(&state.inputs, &proxy);
    let previous = state.proxies.get(&node.id).map(|p| &p.snapshot);
    let snapshot = versioned(&generated, previous, generation);
    cache.set_node(&node.id, snapshot.clone());
    for problem in &generated.problems {
        tracing::warn!(proxy = %node.id, "{problem}");
    }
    state.proxies.insert(
        node.id.clone(),
        ProxyState {
            proxy,
            generated,
            snapshot,
        },
    );
}

/// The snapshot of `generated`, each type keeping its previous version when its resources are
/// unchanged, else taking the generation's.
fn versioned(generated: &Generated, previous: Option<&Snapshot>, generation: u64) -> Snapshot {
    let fresh = generated.snapshot("");
    let mut out = Snapshot::default();
    for (type_url, resources) in fresh.types {
        let version = previous
            .and_then(|p| p.resources(&type_url))
            .filter(|p| p.items == resources.items)
            .map(|p| p.version.clone())
            .unwrap_or_else(|| format!("{generation}"));
        out.types.insert(
            type_url,
            Resources {
                version,
                items: resources.items,
            },
        );
    }
    out
}
