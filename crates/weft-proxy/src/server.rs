//! The running proxy: one immutable config snapshot, worker threads that each run a
//! current-thread runtime and accept their share of connections, and the admin endpoint on a
//! runtime of its own.

use crate::cluster::Cluster;
use crate::listener::Listener;
use crate::route::RouteConfig;
use crate::stats::{HttpStats, ListenerStats, TcpStats, WorkerStats, XdsStats};
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Everything the data path reads, published whole: a route and the clusters it names always
/// come from the same snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// Route tables delivered by RDS, by name.
    pub routes: HashMap<String, Arc<RouteConfig>>,
    /// The bootstrap as given, JSON, for `/config_dump`.
    pub config_dump: serde_json::Value,
    /// What the control plane sent, for `/config_dump`.
    pub dynamic: Arc<DynamicDump>,
    pub version: String,
    pub last_updated: Option<SystemTime>,
}

/// One resource from the control plane as `/config_dump` shows it.
#[derive(Debug, Clone)]
pub struct DumpEntry {
    pub name: String,
    pub version: String,
    pub last_updated: SystemTime,
    pub json: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct DynamicDump {
    /// Listeners and clusters serving.
    pub listeners: Vec<DumpEntry>,
    pub clusters: Vec<DumpEntry>,
    /// Accepted, waiting for their routes or endpoints.
    pub warming_listeners: Vec<DumpEntry>,
    pub warming_clusters: Vec<DumpEntry>,
    pub routes: Vec<DumpEntry>,
    pub endpoints: Vec<DumpEntry>,
}

/// Stats that outlive a snapshot: a listener or connection manager keeps its counters when the
/// config around it changes.
#[derive(Debug, Default)]
pub struct StatsStore {
    pub http: Mutex<BTreeMap<String, Arc<HttpStats>>>,
    pub fault: Mutex<BTreeMap<String, Arc<crate::stats::FaultStats>>>,
    /// `<stat_prefix>.http_local_rate_limit.*`, shared by every config that names the prefix.
    pub local_rate_limit:
        Mutex<BTreeMap<String, Arc<crate::http::filter::local_ratelimit::LocalRateLimitStats>>>,
    /// `local_rate_limit.<stat_prefix>.rate_limited` of the network local rate limit.
    pub connection_rate_limit: Mutex<BTreeMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    pub listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    pub ssl: Mutex<BTreeMap<String, Arc<crate::stats::SslStats>>>,
    pub tcp: Mutex<BTreeMap<String, Arc<TcpStats>>>,
    pub listener_workers: Mutex<BTreeMap<String, Arc<WorkerStats>>>,
    /// RBAC filters' counters, by (enforced prefix, shadow prefix).
    /// RBAC counters by prefix: `allowed`/`denied` under the enforced ones.
    pub rbac: Mutex<BTreeMap<String, Arc<crate::rbac::RbacCounters>>>,
    /// `shadow_allowed`/`shadow_denied` under the shadow ones.
    pub rbac_shadow: Mutex<BTreeMap<String, Arc<crate::rbac::RbacCounters>>>,
    /// Istio's standard metrics (`istio.stats` filters), and who this proxy is for them.
    pub istio: Arc<crate::istio::metrics::Registry>,
}

/// Locks a stats map. A panic while it was held cannot leave counters half-written, so a
/// poisoned lock is used as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// This thread's index, for picking its shard of a structure every worker writes to (Istio's
/// metrics, finished spans): each thread keeps to one shard, so workers rarely meet on a lock.
pub(crate) fn thread_index() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

fn get_or_insert<T: Default>(map: &Mutex<BTreeMap<String, Arc<T>>>, key: &str) -> Arc<T> {
    lock(map).entry(key.to_string()).or_default().clone()
}

impl StatsStore {
    pub fn http(&self, prefix: &str) -> Arc<HttpStats> {
        get_or_insert(&self.http, prefix)
    }
    pub fn fault(&self, prefix: &str) -> Arc<crate::stats::FaultStats> {
        get_or_insert(&self.fault, prefix)
    }
    pub fn local_rate_limit(
        &self,
        prefix: &str,
    ) -> Arc<crate::http::filter::local_ratelimit::LocalRateLimitStats> {
        get_or_insert(&self.local_rate_limit, prefix)
    }
    pub fn connection_rate_limit(&self, prefix: &str) -> Arc<std::sync::atomic::AtomicU64> {
        get_or_insert(&self.connection_rate_limit, prefix)
    }
    pub fn listener(&self, key: &str) -> Arc<ListenerStats> {
        get_or_insert(&self.listeners, key)
    }
    pub fn ssl(&self, key: &str) -> Arc<crate::stats::SslStats> {
        get_or_insert(&self.ssl, key)
    }
    pub fn listener_workers(&self, key: &str) -> Arc<WorkerStats> {
        get_or_insert(&self.listener_workers, key)
    }
    pub fn tcp(&self, prefix: &str) -> Arc<TcpStats> {
        get_or_insert(&self.tcp, prefix)
    }
    pub fn rbac(&self, enforced: &str, shadow: &str) -> crate::rbac::RbacStats {
        crate::rbac::RbacStats {
            enforced: get_or_insert(&self.rbac, enforced),
            shadow: get_or_insert(&self.rbac_shadow, shadow),
        }
    }
}

#[derive(Debug)]
pub struct ServerState {
    pub snapshot: ArcSwap<Snapshot>,
    pub stats: StatsStore,
    pub started: Instant,
    pub concurrency: usize,
    pub node: serde_json::Value,
    pub admin: Option<SocketAddr>,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// How long a removed listener's connections may take to finish (`--drain-time-s`).
    pub drain_time: Duration,
    /// `/ready`: set once the static config serves, or the first clusters and listeners from
    /// the control plane were accepted.
    pub ready: AtomicBool,
    pub xds: XdsStats,
    /// Envoy's codec-wide `http1.*` / `http2.*` counters.
    pub codec: crate::stats::CodecStats,
    /// This machine's address as Envoy picks it (the first non-loopback IPv4 interface): a
    /// loopback peer is recorded in `x-forwarded-for` as this address.
    pub local_address: IpAddr,
    /// The workload certificate the agent keeps (`default`, `ROOTCA`).
    pub secrets: Arc<crate::agent::SecretStore>,
}

/// The first non-loopback IPv4 address of an interface, in the order the system lists them,
/// else loopback: the address Envoy takes for its own.
fn node_address() -> IpAddr {
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|list| {
            list.into_iter()
                .map(|i| i.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

impl ServerState {
    pub fn new(
        concurrency: usize,
        node: serde_json::Value,
        admin: Option<SocketAddr>,
        drain_time: Duration,
    ) -> Arc<Self> {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let stats = StatsStore::default();
        stats.istio.set_local(&node);
        crate::istio::exchange::register(stats.istio.clone());
        Arc::new(ServerState {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            stats,
            started: Instant::now(),
            concurrency,
            node,
            admin,
            shutdown,
            drain_time,
            ready: AtomicBool::new(false),
            xds: XdsStats::default(),
            codec: crate::stats::CodecStats::default(),
            local_address: node_address(),
            secrets: crate::agent::secrets().clone(),
        })
    }

    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Binds `address`.
pub fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    bind_with(address, false)
}

/// Binds one socket per worker on `address` with SO_REUSEPORT, as Envoy does: the kernel
/// spreads new connections over the workers by their addresses, instead of waking every worker
/// for each one. A port of 0 is chosen by the first bind and shared by the others.
pub fn bind_per_worker(
    address: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind_with(address, true)?;
    let address = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(bind_with(address, true)?);
    }
    Ok(sockets)
}

fn bind_with(address: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let domain = if address.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The worker threads: each runs a current-thread runtime that listeners are handed to (see
/// `listener::manager`).
#[derive(Debug)]
pub struct Workers {
    pub runtimes: Vec<tokio::runtime::Handle>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts `concurrency` worker threads that run until shutdown.
pub fn start_workers(shared: &Arc<ServerState>) -> std::io::Result<Workers> {
    let mut workers = Workers {
        runtimes: Vec::new(),
        threads: Vec::new(),
    };
    for worker in 0..shared.concurrency.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        workers.runtimes.push(runtime.handle().clone());
        let mut shutdown = shared.shutdown.subscribe();
        let thread = std::thread::Builder::new()
            .name(format!("weft-worker-{worker}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                });
            })?;
        workers.threads.push(thread);
    }
    Ok(workers)
}
