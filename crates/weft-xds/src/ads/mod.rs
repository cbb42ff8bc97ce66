//! The ADS server: every proxy holds one gRPC stream, asks for resource types, and gets them from
//! the cache, again whenever the cache changes. Both of Envoy's protocols are served: state of the
//! world (`StreamAggregatedResources`, each response the full set of a type) and delta
//! (`DeltaAggregatedResources`, only what changed and what went away).
//!
//! Each response's acceptance is tracked per connection and type, so that a NACK, with the
//! proxy's own error message, can be shown to the operator.

mod delta;
mod names;
mod requests;
mod sotw;
pub mod wire;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

/// The resources of one type, with the version a state-of-the-world response reports. Their
/// wire forms are made once, when first served, and shared by every stream; `items` must not
/// change after that.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub version: String,
    pub items: BTreeMap<String, Any>,
    encoded: std::sync::OnceLock<Arc<BTreeMap<String, wire::Encoded>>>,
}

impl PartialEq for Resources {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.items == other.items
    }
}

impl Resources {
    pub fn new(version: impl Into<String>, items: BTreeMap<String, Any>) -> Resources {
        Resources {
            version: version.into(),
            items,
            encoded: std::sync::OnceLock::new(),
        }
    }

    /// `items`, equal to this one's, under this one's version and with its wire forms: a
    /// stream that has these has those.
    pub(crate) fn same_as(&self, items: BTreeMap<String, Any>) -> Resources {
        Resources {
            version: self.version.clone(),
            items,
            encoded: self.encoded.clone(),
        }
    }

    /// The resources in their wire forms, by name.
    pub fn encoded(&self) -> &BTreeMap<String, wire::Encoded> {
        self.encoded_shared()
    }

    /// The delta version of one resource: what a proxy that has it names when it reconnects.
    pub fn resource_version(&self, name: &str) -> Option<String> {
        self.items.get(name).map(resource_version)
    }

    /// The same, as the shared map that streams may keep a reference to.
    pub(crate) fn encoded_shared(&self) -> &Arc<BTreeMap<String, wire::Encoded>> {
        self.encoded.get_or_init(|| {
            Arc::new(
                self.items
                    .iter()
                    .map(|(name, any)| (name.clone(), wire::Encoded::new(name, any)))
                    .collect(),
            )
        })
    }
}

/// What a proxy should have: resources by type URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub types: BTreeMap<String, Resources>,
}

impl Snapshot {
    /// Sets the resources of one type, each message encoded into the `Any` sent on the wire.
    pub fn set<M: prost::Message>(
        &mut self,
        type_url: &str,
        version: impl Into<String>,
        resources: impl IntoIterator<Item = (String, M)>,
    ) -> &mut Self {
        let items = resources
            .into_iter()
            .map(|(name, message)| {
                let any = Any {
                    type_url: type_url.to_string(),
                    value: message.encode_to_vec(),
                };
                (name, any)
            })
            .collect();
        self.types
            .insert(type_url.to_string(), Resources::new(version, items));
        self
    }

    pub fn resources(&self, type_url: &str) -> Option<&Resources> {
        self.types.get(type_url)
    }
}

/// A resource's version in delta xDS: a hash of its bytes, so that an unchanged resource is
/// never sent again, even across control plane restarts.
pub(crate) fn resource_version(any: &Any) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    any.value.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Snapshots per node. A node without one of its own gets the default.
#[derive(Debug)]
pub struct Cache {
    default: watch::Sender<Arc<Snapshot>>,
    nodes: Mutex<HashMap<String, watch::Sender<Arc<Snapshot>>>>,
    own: Mutex<HashSet<String>>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            default: watch::channel(Arc::new(Snapshot::default())).0,
            nodes: Mutex::new(HashMap::new()),
            own: Mutex::new(HashSet::new()),
        }
    }
}

/// A panic while a map was held cannot leave it half-written; keep using it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    /// The snapshot for every node that has none of its own.
    pub fn set_default(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        self.default.send_replace(snapshot.clone());
        let own = lock(&self.own);
        for (node, sender) in lock(&self.nodes).iter() {
            if !own.contains(node) {
                sender.send_replace(snapshot.clone());
            }
        }
    }

    /// The snapshot of one node.
    pub fn set_node(&self, node: &str, snapshot: Snapshot) {
        self.set_node_shared(node, Arc::new(snapshot));
    }

    /// The snapshot of one node, shared with others that have the same.
    pub fn set_node_shared(&self, node: &str, snapshot: Arc<Snapshot>) {
        lock(&self.own).insert(node.to_string());
        self.sender(node).send_replace(snapshot);
    }

    fn sender(&self, node: &str) -> watch::Sender<Arc<Snapshot>> {
        lock(&self.nodes)
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(self.default.borrow().clone()).0)
            .clone()
    }

    pub(crate) fn watch(&self, node: &str) -> watch::Receiver<Arc<Snapshot>> {
        self.sender(node).subscribe()
    }
}

/// Where a proxy stands with one resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent: String,
    /// Version of the last response the proxy accepted.
    pub acked: Option<String>,
    /// The proxy's error message if it rejected the last response.
    pub nack: Option<String>,
}

/// One connected proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub node: String,
    pub delta: bool,
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Debug, Default)]
pub(crate) struct Tracker {
    next: AtomicU64,
    connections: Mutex<BTreeMap<u64, ConnectionStatus>>,
    /// istiod's `pilot_*` metrics of what the streams sent and heard back.
    pub(crate) metrics: crate::metrics::XdsMetrics,
}

impl Tracker {
    fn open(&self, delta: bool) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.connections).insert(
            id,
            ConnectionStatus {
                delta,
                ..Default::default()
            },
        );
        id
    }

    fn close(&self, id: u64) {
        lock(&self.connections).remove(&id);
    }

    pub(crate) fn update(&self, id: u64, f: impl FnOnce(&mut ConnectionStatus)) {
        if let Some(c) = lock(&self.connections).get_mut(&id) {
            f(c);
        }
    }

    pub(crate) fn type_status(&self, id: u64, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        self.update(id, |c| f(c.types.entry(type_url.to_string()).or_default()));
    }
}

/// Called with the node of each new stream before its first response, so that a control
/// plane can make that node's snapshot first.
#[derive(Clone)]
pub struct ConnectHook(pub Arc<dyn Fn(&Node) + Send + Sync>);

impl std::fmt::Debug for ConnectHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectHook")
    }
}

/// The ADS service. Clone it to keep a handle on the cache and the status while tonic owns the
/// service.
#[derive(Debug, Clone)]
pub struct AdsServer {
    cache: Arc<Cache>,
    tracker: Arc<Tracker>,
    on_connect: Option<ConnectHook>,
    /// Streams that may have responses in flight at once: each holds a slot from sending
    /// until the proxy answers every response (or `PUSH_TIMEOUT`), so that a push to
    /// thousands of proxies holds a bounded amount of encoded config, as istiod's push
    /// throttle does.
    push_slots: Arc<tokio::sync::Semaphore>,
    names: Arc<names::NameSets>,
}

impl Default for AdsServer {
    fn default() -> Self {
        AdsServer::new(Arc::default())
    }
}

/// istiod's PILOT_PUSH_THROTTLE.
pub const PUSH_CONCURRENCY: usize = 100;
/// How long a stream keeps its push slot waiting for the proxy's answers.
const PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl AdsServer {
    pub fn new(cache: Arc<Cache>) -> Self {
        AdsServer {
            cache,
            tracker: Arc::default(),
            on_connect: None,
            push_slots: Arc::new(tokio::sync::Semaphore::new(PUSH_CONCURRENCY)),
            names: Arc::default(),
        }
    }

    /// Calls `hook` with the node of every new stream, before the stream reads the cache.
    pub fn with_connect_hook(mut self, hook: impl Fn(&Node) + Send + Sync + 'static) -> Self {
        self.on_connect = Some(ConnectHook(Arc::new(hook)));
        self
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// istiod's `pilot_xds_pushes`, rejections and convergence times.
    pub fn metrics(&self) -> &crate::metrics::XdsMetrics {
        &self.tracker.metrics
    }

    /// The connected proxies, in connection order.
    pub fn status(&self) -> Vec<ConnectionStatus> {
        lock(&self.tracker.connections).values().cloned().collect()
    }

    /// The gRPC service (`envoy.service.discovery.v3.AggregatedDiscoveryService`).
    pub fn into_service(self) -> wire::AdsService {
        wire::AdsService(self)
    }
}

/// Messages a stream may have in flight before the sender waits for the proxy to read.
const RESPONSE_BUFFER: usize = 16;

/// What sets state of the world and delta apart: how a request changes the subscriptions, and
/// what a response holds. Each event calls for at most one response.
pub(crate) trait Protocol: Default + Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    const DELTA: bool;

    /// The node the first request of a stream names.
    fn node(request: &Self::Request) -> Option<&Node>;

    fn on_request(
        &mut self,
        request: Self::Request,
        snapshot: &Snapshot,
        stream: &mut Stream<'_>,
    ) -> Option<wire::Prepared>;

    /// The response a new snapshot calls for on one type.
    fn on_change(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        stream: &mut Stream<'_>,
    ) -> Option<wire::Prepared>;

    /// After clusters were sent again: Envoy warms an updated EDS cluster until endpoints come
    /// for it, and asks for the same names it had, so the endpoints go again even unchanged
    /// (istiod's full push sends EDS after CDS for the same reason).
    fn after_clusters(
        &mut self,
        _snapshot: &Snapshot,
        _stream: &mut Stream<'_>,
    ) -> Option<wire::Prepared> {
        None
    }
}

/// What both protocols keep per stream: the nonces and where acceptance is recorded.
pub(crate) struct Stream<'a> {
    tracker: &'a Tracker,
    names: &'a names::NameSets,
    id: u64,
    nonce: u64,
    /// Types whose latest response is not answered yet.
    pending: HashSet<String>,
}

impl Stream<'_> {
    /// A fresh nonce for a response of `type_url` at `version`, recorded as sent.
    pub(crate) fn next_nonce(&mut self, type_url: &str, version: &str) -> String {
        self.nonce += 1;
        self.pending.insert(type_url.to_string());
        self.tracker.metrics.pushed(type_url);
        let version = version.to_string();
        self.tracker
            .type_status(self.id, type_url, |s| s.sent = version);
        self.nonce.to_string()
    }

    /// Records the proxy's answer to a response: a NACK with its message, or an ACK of
    /// `version` when the response is known.
    pub(crate) fn answered(
        &mut self,
        type_url: &str,
        version: Option<String>,
        error: Option<&envoy_types::pb::google::rpc::Status>,
    ) {
        self.pending.remove(type_url);
        if let Some(error) = error {
            let message = error.message.clone();
            let (mut node, mut sent) = (String::new(), String::new());
            self.tracker.update(self.id, |c| {
                node.clone_from(&c.node);
                let s = c.types.entry(type_url.to_string()).or_default();
                sent.clone_from(&s.sent);
                s.nack = Some(message.clone());
            });
            // An error, not a warning: the proxy serves config older than the folder's, and
            // the message (Envoy's and Weft's both) names the resource it refused.
            self.tracker.metrics.rejected(type_url, &node, &message);
            let kind = type_url.rsplit('.').next().unwrap_or(type_url);
            tracing::error!(
                "NACK: proxy {node} rejected {kind} version {sent}: {message} (it keeps serving what it last accepted)"
            );
        } else if let Some(version) = version {
            let mut node = String::new();
            self.tracker.update(self.id, |c| {
                node.clone_from(&c.node);
                let s = c.types.entry(type_url.to_string()).or_default();
                s.acked = Some(version);
                s.nack = None;
            });
            self.tracker.metrics.accepted(type_url, &node);
        }
    }
}

type Responses = ReceiverStream<Result<wire::Prepared, Status>>;

impl AdsServer {
    /// Opens a stream: the first request names the node, whose snapshots the stream follows
    /// until the proxy or the cache goes away.
    pub(crate) async fn open<P: Protocol>(
        &self,
        mut requests: requests::Requests<P::Request>,
    ) -> Result<Response<Responses>, Status>
    where
        P::Request: prost::Message + Default,
    {
        let Some(first) = requests.message().await? else {
            return Err(Status::invalid_argument(
                "stream closed before the first request",
            ));
        };
        if let (Some(hook), Some(n)) = (&self.on_connect, P::node(&first)) {
            (hook.0)(n);
        }
        let node = P::node(&first).map(|n| n.id.clone()).unwrap_or_default();
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let id = self.tracker.open(P::DELTA);
        self.tracker.update(id, |c| c.node.clone_from(&node));
        let server = self.clone();
        let snapshots = self.cache.watch(&node);
        tokio::spawn(async move {
            run::<P>(first, requests, snapshots, tx, &server, id).await;
            server.tracker.close(id);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A stream's life: answer each request, and push what each new snapshot changes, in Envoy's
/// type order.
async fn run<P: Protocol>(
    first: P::Request,
    mut requests: requests::Requests<P::Request>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    tx: mpsc::Sender<Result<wire::Prepared, Status>>,
    server: &AdsServer,
    id: u64,
) {
    let mut protocol = P::default();
    let mut stream = Stream {
        tracker: &server.tracker,
        names: &server.names,
        id,
        nonce: 0,
        pending: HashSet::new(),
    };
    let snapshot = snapshots.borrow_and_update().clone();
    let mut responses = Vec::new();
    responses.extend(protocol.on_request(first, &snapshot, &mut stream));
    let mut slot: Option<(tokio::sync::OwnedSemaphorePermit, tokio::time::Instant)> = None;
    loop {
        if !responses.is_empty() && slot.is_none() {
            let Ok(permit) = server.push_slots.clone().acquire_owned().await else {
                return;
            };
            slot = Some((permit, tokio::time::Instant::now() + PUSH_TIMEOUT));
        }
        for response in responses.drain(..) {
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
        if stream.pending.is_empty() {
            slot = None;
        }
        let deadline = slot.as_ref().map(|(_, d)| *d);
        tokio::select! {
            request = requests.message() => {
                let Ok(Some(request)) = request else { return };
                let snapshot = snapshots.borrow().clone();
                responses.extend(protocol.on_request(request, &snapshot, &mut stream));
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                for type_url in crate::type_url::ORDER {
                    let response = protocol.on_change(type_url, &snapshot, &mut stream);
                    let clusters = type_url == crate::type_url::CLUSTER && response.is_some();
                    responses.extend(response);
                    if clusters {
                        responses.extend(protocol.after_clusters(&snapshot, &mut stream));
                    }
                }
                if !responses.is_empty() {
                    server.tracker.metrics.converged();
                }
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                // The proxy is slow to answer: let others push meanwhile.
                slot = None;
                stream.pending.clear();
            }
        }
    }
}

/// Runs the ADS server on `listener` until `shutdown` resolves.
pub async fn serve(
    server: AdsServer,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(server.into_service())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
