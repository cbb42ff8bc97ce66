//! The control plane's push loop: one translation per connected proxy whenever the inputs
//! change, a cache update only for proxies whose resources changed, and per-type versions that
//! move only when that type's resources did, so that an unchanged type is never sent again.
//! Config changes are debounced as istiod does: pushed after 100 ms without another change, and
//! at most 1 s after the first.

use crate::ads::{AdsServer, Cache, ConnectionStatus, Resources, Snapshot, lock};
use crate::translate::{self, Generated, Inputs, Proxy};
use envoy_types::pb::envoy::config::core::v3::Node;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// istiod's PILOT_DEBOUNCE_AFTER and PILOT_DEBOUNCE_MAX.
pub const DEBOUNCE_AFTER: Duration = Duration::from_millis(100);
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// What the control plane knows of one proxy. Proxies that translate alike share one snapshot.
#[derive(Debug, Clone)]
pub struct ProxyState {
    pub proxy: Proxy,
    pub snapshot: Arc<Snapshot>,
    /// Translation's problems for this proxy.
    pub problems: Arc<Vec<String>>,
    /// Its listeners that conflicted (`pilot_conflict_*`, address).
    pub conflicts: Arc<Vec<(&'static str, String)>>,
    /// What translation read of it, under the inputs of the last push.
    shape: Shape,
}

/// What translation reads of a proxy. Its name and address only matter when it serves
/// something itself (its inbound listener); otherwise proxies that differ only there get the
/// same resources, and one translation serves them all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    kind: bool,
    namespace: String,
    labels: Vec<(String, String)>,
    redirect: bool,
    http_proxy_port: Option<u16>,
    gateway: (String, Vec<(u16, u16)>),
    instance: Option<(String, String)>,
    /// It runs istio-proxy's network filters (a Weft proxy): stock Envoy gets none.
    istio_extensions: bool,
}

fn shape(inputs: &Inputs, p: &Proxy) -> Shape {
    // A Sidecar `ingress` binds at the proxy's own address.
    let ingress = p.kind == crate::translate::ProxyKind::Sidecar
        && crate::translate::find_sidecar(inputs, p).is_some_and(|s| !s.spec.ingress.is_empty());
    let serves = ingress
        || inputs
            .registry
            .services
            .iter()
            .any(|s| s.endpoints.iter().any(|e| p.is_instance(e)));
    Shape {
        kind: p.kind == crate::translate::ProxyKind::Router,
        namespace: p.namespace.clone(),
        labels: p
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        redirect: p.interception == crate::translate::Interception::Redirect,
        http_proxy_port: p.http_proxy_port,
        gateway: (
            p.gateway_address.clone(),
            p.gateway_ports.iter().map(|(a, b)| (*a, *b)).collect(),
        ),
        instance: serves.then(|| (p.name.clone(), p.ip.clone())),
        istio_extensions: p.istio_extensions,
    }
}

/// Translations made during one push, by shape.
type Made = std::collections::HashMap<Shape, Translated>;

/// One translation: the snapshot, its problems and its conflicts.
type Translated = (
    Arc<Snapshot>,
    Arc<Vec<String>>,
    Arc<Vec<(&'static str, String)>>,
);

/// The snapshot for `proxy`: shared with an alike proxy already done in this push, else made.
fn translate_once(
    made: &mut Made,
    inputs: &Inputs,
    key: &Shape,
    proxy: &Proxy,
    previous: Option<&Snapshot>,
    generation: u64,
) -> Translated {
    if let Some(done) = made.get(key) {
        return done.clone();
    }
    let generated = translate::generate(inputs, proxy);
    let snapshot = Arc::new(versioned(&generated, previous, generation));
    let done = (
        snapshot,
        Arc::new(generated.problems),
        Arc::new(generated.conflicts),
    );
    made.insert(key.clone(), done.clone());
    done
}

/// Whether two snapshots hold the same resources: per type, the same version (a version moves
/// only when its type's resources do).
fn same_versions(a: &Snapshot, b: &Snapshot) -> bool {
    a.types.len() == b.types.len()
        && a.types
            .iter()
            .all(|(t, r)| b.types.get(t).is_some_and(|o| o.version == r.version))
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
        let connected: std::collections::HashSet<String> =
            self.server.status().into_iter().map(|c| c.node).collect();
        let mut state = lock(&self.state);
        // A proxy that went away is forgotten; it is translated afresh if it comes back.
        state.proxies.retain(|id, _| connected.contains(id));
        state.generation += 1;
        state.inputs = Arc::new(inputs);
        let generation = state.generation;
        let inputs = state.inputs.clone();
        let cache = self.server.cache().clone();
        let mut made = Made::new();
        let mut pushed = 0;
        for (id, p) in state.proxies.iter_mut() {
            p.shape = shape(&inputs, &p.proxy);
            let (snapshot, problems, conflicts) = translate_once(
                &mut made,
                &inputs,
                &p.shape,
                &p.proxy,
                Some(&p.snapshot),
                generation,
            );
            p.conflicts = conflicts;
            if !same_versions(&snapshot, &p.snapshot) {
                cache.set_node_shared(id, snapshot.clone());
                pushed += 1;
            }
            // What an edit newly makes untranslatable is told as it happens, as at connect.
            for problem in problems.iter().filter(|x| !p.problems.contains(x)) {
                tracing::warn!(proxy = %id, "{problem}");
            }
            p.snapshot = snapshot;
            p.problems = problems;
        }
        pushed
    }

    /// The proxies connected at the last push, or since, by node id.
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
            self.server
                .metrics()
                .push_started("config", started.into_std());
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
    let previous = state.proxies.get(&node.id).map(|p| p.snapshot.clone());
    let mut made = Made::new();
    let inputs = state.inputs.clone();
    // Another connected proxy of the same shape already has its snapshot: share it.
    let key = shape(&inputs, &proxy);
    let alike = state
        .proxies
        .values()
        .find(|p| p.shape == key)
        .map(|p| (p.snapshot.clone(), p.problems.clone(), p.conflicts.clone()));
    let (snapshot, problems, conflicts) = match alike {
        Some(done) => done,
        None => translate_once(
            &mut made,
            &inputs,
            &key,
            &proxy,
            previous.as_deref(),
            generation,
        ),
    };
    cache.set_node_shared(&node.id, snapshot.clone());
    for problem in problems.iter() {
        tracing::warn!(proxy = %node.id, "{problem}");
    }
    state.proxies.insert(
        node.id.clone(),
        ProxyState {
            proxy,
            snapshot,
            problems,
            conflicts,
            shape: key,
        },
    );
}

/// The snapshot of `generated`, each type keeping its previous version when its resources are
/// unchanged, else taking the generation's.
fn versioned(generated: &Generated, previous: Option<&Snapshot>, generation: u64) -> Snapshot {
    let fresh = generated.snapshot("");
    let mut out = Snapshot::default();
    for (type_url, resources) in fresh.types {
        let before = previous.and_then(|p| p.resources(&type_url));
        // A resource equal to the one sent before keeps its bytes: protobuf maps (metadata,
        // per-filter configs) encode in hash order, so equal messages can encode differently,
        // and new bytes would mean a new version and a push of what did not change.
        let items: BTreeMap<String, envoy_types::pb::google::protobuf::Any> = resources
            .items
            .into_iter()
            .map(|(name, any)| {
                let kept = before
                    .and_then(|b| b.items.get(&name))
                    .filter(|old| same_message(&type_url, old, &any))
                    .cloned();
                (name, kept.unwrap_or(any))
            })
            .collect();
        // Unchanged resources stay the same object, wire forms included: streams see at a
        // glance that they have them.
        let resources = match before.filter(|b| b.items == items) {
            Some(before) => before.same_as(items),
            None => Resources::new(format!("{generation}"), items),
        };
        out.types.insert(type_url, resources);
    }
    out
}

/// Whether two encoded resources hold the same message, whatever order their maps were
/// written in.
fn same_message(
    type_url: &str,
    a: &envoy_types::pb::google::protobuf::Any,
    b: &envoy_types::pb::google::protobuf::Any,
) -> bool {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use prost::Message;
    fn eq<M: Message + Default + PartialEq>(a: &[u8], b: &[u8]) -> bool {
        matches!((M::decode(a), M::decode(b)), (Ok(x), Ok(y)) if x == y)
    }
    if a.value == b.value {
        return true;
    }
    match type_url {
        crate::type_url::LISTENER => eq::<Listener>(&a.value, &b.value),
        crate::type_url::ROUTE => eq::<RouteConfiguration>(&a.value, &b.value),
        crate::type_url::CLUSTER => eq::<Cluster>(&a.value, &b.value),
        crate::type_url::ENDPOINT => eq::<ClusterLoadAssignment>(&a.value, &b.value),
        _ => false,
    }
}
