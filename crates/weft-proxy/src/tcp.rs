//! The `tcp_proxy` network filter: one upstream connection per downstream connection, bytes
//! copied both ways until either side closes or the idle timeout passes.

use crate::access_log::{AccessLog, Entry, flags};
use crate::cluster::Discovery;
use crate::server::ServerState;
use crate::stats::{self, TcpStats};
use crate::upstream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// (cluster, weight); one entry with weight 1 for `cluster`.
    pub clusters: Vec<(String, u64)>,
    /// Envoy's default is one hour; `None` disables it.
    pub idle_timeout: Option<Duration>,
    pub access_logs: Vec<AccessLog>,
    pub stats: Arc<TcpStats>,
}

impl TcpProxy {
    fn pick_cluster(&self) -> Option<&str> {
        let total: u64 = self.clusters.iter().map(|(_, w)| w).sum();
        let mut roll = fastrand::u64(..total.max(1));
        for (name, weight) in &self.clusters {
            if roll < *weight {
                return Some(name);
            }
            roll -= weight;
        }
        self.clusters.first().map(|(n, _)| n.as_str())
    }
}

/// The two addresses of a downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionAddresses {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The destination `original_dst` restored, if it did: where ORIGINAL_DST clusters go.
    pub restored: Option<SocketAddr>,
}

/// What Istio's TCP metrics need of a connection: the chain's `istio.stats`, and who the
/// downstream peer is (its exchange, its certificate).
pub struct TcpTelemetry {
    pub filter: Arc<crate::istio::metrics::TcpStatsFilter>,
    pub downstream_peer: Option<Arc<crate::istio::exchange::PeerSlot>>,
    pub peer_identity: Option<Arc<crate::rbac::PeerIdentity>>,
    pub tls: bool,
}

/// Reports a connection to Istio's TCP metrics as istio-proxy does: `opened` once the peer
/// is known (its exchange settled) or at the end, bytes since the last report on every tick
/// (`tcp_reporting_duration`) and at the end, `closed` at the end. "Received" is what the
/// downstream sent, "sent" what went back to it, whichever side reports.
struct TcpReport<'a> {
    t: &'a TcpTelemetry,
    cluster: Option<&'a Arc<crate::cluster::Cluster>>,
    host: Option<Arc<crate::cluster::Host>>,
    upstream_peer: Option<Arc<crate::istio::exchange::PeerSlot>>,
    opened: bool,
    received: u64,
    sent: u64,
}

impl TcpReport<'_> {
    fn key(&self, flags: u32) -> crate::istio::metrics::Key {
        use crate::istio::metrics::{Destination, Key, Principal};
        let server = self.t.filter.config.server;
        let (peer, peer_principal, local_principal) = if server {
            let peer = self.t.downstream_peer.as_ref().and_then(|s| s.peer());
            let principal = self
                .t
                .peer_identity
                .clone()
                .filter(|p| !p.uris.is_empty())
                .map_or(Principal::None, Principal::Cert);
            let local = self
                .t
                .tls
                .then(crate::http::filter::istio_stats::local_identity)
                .flatten();
            (peer, principal, local)
        } else {
            let peer = self.upstream_peer.as_ref().and_then(|s| s.peer());
            let mtls =
                matches!((self.cluster, &self.host), (Some(c), Some(h)) if c.tls_for(h).is_some());
            let principal = peer
                .clone()
                .filter(|p| mtls && !p.identity.is_empty())
                .map_or(Principal::None, Principal::Announced);
            let local = mtls
                .then(crate::http::filter::istio_stats::local_identity)
                .flatten();
            (peer, principal, local)
        };
        let destination = match self.cluster {
            None => Destination::None,
            Some(c) => match crate::http::filter::istio_stats::special_cluster(&c.config.name) {
                Some(name) => Destination::Special(name, None),
                None => c
                    .config
                    .istio_service
                    .clone()
                    .map_or(Destination::None, Destination::Cluster),
            },
        };
        Key {
            config: self.t.filter.config.clone(),
            peer,
            destination,
            peer_principal,
            local_principal,
            tcp: true,
            grpc: false,
            code: 0,
            grpc_status: None,
            flags,
            attributes: None,
        }
    }

    /// Counts what happened since the last report; `received`/`sent` are totals so far.
    fn report(&mut self, received: u64, sent: u64, closed: bool, flags: u32) {
        let peer_known = if self.t.filter.config.server {
            self.t.downstream_peer.as_ref().is_none_or(|s| s.settled())
        } else {
            self.upstream_peer.as_ref().is_none_or(|s| s.settled())
        };
        if !closed && !peer_known && !self.opened {
            return;
        }
        let opened = u64::from(!self.opened);
        self.opened = true;
        let key = self.key(flags);
        self.t.filter.registry.record_tcp(
            key,
            opened,
            u64::from(closed),
            sent.saturating_sub(self.sent),
            received.saturating_sub(self.received),
        );
        self.sent = sent;
        self.received = received;
    }
}

pub async fn serve<I>(
    mut downstream: I,
    proxy: Arc<TcpProxy>,
    shared: Arc<ServerState>,
    ends: ConnectionAddresses,
    telemetry: Option<TcpTelemetry>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let ConnectionAddresses { peer, local, .. } = ends;
    let start = Instant::now();
    let start_wall = SystemTime::now();
    stats::inc(&proxy.stats.downstream_cx_total);
    let mut flags_seen = 0;
    let cluster = proxy
        .pick_cluster()
        .and_then(|name| shared.snapshot.load().clusters.get(name).cloned());
    let mut upstream_host = None;
    let mut upstream_local = None;
    let mut report = telemetry.as_ref().map(|t| TcpReport {
        t,
        cluster: cluster.as_ref(),
        host: None,
        upstream_peer: None,
        opened: false,
        received: 0,
        sent: 0,
    });
    let (mut rx, mut tx) = (0u64, 0u64);
    let cluster_name = cluster
        .as_ref()
        .map(|c| c.config.name.clone())
        .unwrap_or_default();
    match &cluster {
        None => {
            stats::inc(&proxy.stats.downstream_cx_no_route);
            flags_seen |= flags::NC;
        }
        Some(cluster) => {
            let host = if cluster.config.discovery == Discovery::OriginalDst {
                cluster
                    .original_destination(None, ends.restored)
                    .map(|d| cluster.original_dst_host(d))
            } else {
                cluster.hosts.load().choose().cloned()
            };
            match &host {
                None => flags_seen |= flags::UH,
                Some(host) => {
                    upstream_host = Some(host.address);
                    stats::inc(&cluster.stats.upstream_cx_total);
                    stats::inc(&host.stats.cx_total);
                    let connect = upstream::open(cluster, host, upstream::Purpose::Tcp);
                    match connect.await {
                        Ok(mut upstream) => {
                            upstream_local = upstream.local_addr();
                            stats::inc(&cluster.stats.upstream_cx_active);
                            if let Some(r) = report.as_mut() {
                                r.host = Some(host.clone());
                                r.upstream_peer = upstream.peer_slot().cloned();
                            }
                            let mut tick = |rx: u64, tx: u64| {
                                if let Some(r) = report.as_mut() {
                                    r.report(rx, tx, false, 0);
                                }
                            };
                            let every = telemetry.as_ref().map(|t| t.filter.reporting);
                            let (r, t, idle) = copy_both(
                                &mut downstream,
                                &mut upstream,
                                proxy.idle_timeout,
                                every.map(|d| (d, &mut tick as &mut Tick<'_>)),
                            )
                            .await;
                            rx = r;
                            tx = t;
                            if idle {
                                stats::inc(&proxy.stats.idle_timeout);
                            }
                            stats::add(&proxy.stats.downstream_cx_rx_bytes_total, rx);
                            stats::add(&proxy.stats.downstream_cx_tx_bytes_total, tx);
                            stats::add(&cluster.stats.upstream_cx_tx_bytes_total, rx);
                            stats::add(&cluster.stats.upstream_cx_rx_bytes_total, tx);
                            stats::dec(&cluster.stats.upstream_cx_active);
                            stats::inc(&cluster.stats.upstream_cx_destroy);
                        }
                        _ => {
                            stats::inc(&cluster.stats.upstream_cx_connect_fail);
                            stats::inc(&host.stats.cx_connect_fail);
                            flags_seen |= flags::UF;
                        }
                    }
                }
            }
        }
    }
    let _ = downstream.shutdown().await;
    if let Some(r) = report.as_mut() {
        r.report(rx, tx, true, flags_seen);
    }
    if proxy.access_logs.is_empty() {
        return;
    }
    let entry = Entry {
        details: "",
        start: start_wall,
        protocol: "",
        request: None,
        response: None,
        status: 0,
        flags: flags_seen,
        bytes_received: rx,
        bytes_sent: tx,
        duration: start.elapsed(),
        upstream_host,
        upstream_cluster: &cluster_name,
        upstream_local,
        downstream_remote: peer,
        downstream_local: local,
        route_name: "",
        requested_server_name: None,
        trace: None,
    };
    for log in &proxy.access_logs {
        log.log(&entry, &shared);
    }
}

/// Called every period with the bytes copied so far (from the downstream, to it).
type Tick<'a> = dyn FnMut(u64, u64) + Send + 'a;

/// Copies both directions; returns bytes (downstream→upstream, upstream→downstream) and whether
/// the idle timeout ended it. A half-close is passed on, as Envoy does.
async fn copy_both<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<Duration>,
    mut tick: Option<(Duration, &mut Tick<'_>)>,
) -> (u64, u64, bool)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut up = 0u64;
    let mut down = 0u64;
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    let far = Duration::from_secs(86_400 * 365);
    let period = tick.as_ref().map_or(far, |(d, _)| *d);
    let mut next_tick = tokio::time::Instant::now() + period;
    while a_open || b_open {
        let sleep = tokio::time::sleep(idle.unwrap_or(far));
        tokio::select! {
            () = tokio::time::sleep_until(next_tick) => {
                next_tick += period;
                if let Some((_, f)) = tick.as_mut() {
                    f(up, down);
                }
                continue;
            }
            n = ar.read(&mut buf_a), if a_open => match n {
                Ok(0) | Err(_) => { a_open = false; let _ = bw.shutdown().await; }
                Ok(n) => { if bw.write_all(&buf_a[..n]).await.is_err() { break; } up += n as u64; }
            },
            n = br.read(&mut buf_b), if b_open => match n {
                Ok(0) | Err(_) => { b_open = false; let _ = aw.shutdown().await; }
                Ok(n) => { if aw.write_all(&buf_b[..n]).await.is_err() { break; } down += n as u64; }
            },
            _ = sleep => return (up, down, true),
        }
    }
    (up, down, false)
}
