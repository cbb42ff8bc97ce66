//! Accepting connections on a worker and handing each to its filter chain.

use super::inspect::{self, Detected, Peek};
use super::tls::DownstreamTls;
use super::{ConnectionFacts, FilterChain, Listener, NetworkFilter};
use crate::http;
use crate::server::ServerState;
use crate::stats;
use crate::tcp;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Accepts until `stop` is set. The listener config is read from the snapshot per connection,
/// so a config update reaches new connections at once.
pub async fn run(
    name: String,
    worker: usize,
    socket: TcpListener,
    shared: Arc<ServerState>,
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
        tokio::spawn(async move { connection(stream, peer, listener, shared, worker).await });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    shared: Arc<ServerState>,
    worker: usize,
) {
    let _ = stream.set_nodelay(true);
    let mut local = stream.local_addr().unwrap_or(listener.address);
    let mut listener = listener;
    let mut inspect_tls = listener.listener_filters.tls_inspector;
    let mut inspect_http = listener.listener_filters.http_inspector;
    // The destination before an iptables redirect, and the listener that owns it.
    let mut restored = None;
    if listener.listener_filters.original_dst || listener.use_original_dst {
        restored = original_destination(&stream, local);
        if let Some(dst) = restored {
            local = dst;
            let target = owner_of(&shared, dst).filter(|t| t.name != listener.name);
            if let (true, Some(target)) = (listener.use_original_dst, target) {
                // What the first listener's inspectors find stays with the socket in Envoy, so
                // both listeners' inspectors apply.
                inspect_tls |= target.listener_filters.tls_inspector;
                inspect_http |= target.listener_filters.http_inspector;
                listener = target;
            }
        }
    }
    let s = &listener.stats;
    stats::inc(&s.downstream_cx_total);
    stats::inc(&s.downstream_cx_active);
    listener.worker_stats.count(worker);
    let detected = if inspect_tls || inspect_http {
        let inspection = inspect(&stream, inspect_tls, inspect_http);
        match listener.listener_filters.timeout {
            None => Some(inspection.await),
            Some(t) => match tokio::time::timeout(t, inspection).await {
                Ok(d) => Some(d),
                Err(_) => {
                    stats::inc(&s.downstream_pre_cx_timeout);
                    listener
                        .listener_filters
                        .continue_on_timeout
                        .then(Detected::default)
                }
            },
        }
    } else {
        Some(Detected::default())
    };
    let facts = detected.as_ref().map(|detected| ConnectionFacts {
        destination: local,
        source: peer,
        detected,
    });
    let chain = facts.and_then(|f| listener.filter_chain(f));
    // What RBAC reads as the SNI is the TLS inspector's (Envoy's requested server name): none
    // without the inspector, even when the chain terminates TLS.
    let sni = chain
        .filter(|c| reads_peer(c))
        .and(detected.as_ref())
        .filter(|d| !d.server_name.is_empty())
        .map(|d| Arc::<str>::from(d.server_name.as_str()));
    match chain {
        None => {
            if detected.is_some() {
                stats::inc(&s.no_filter_chain_match);
            }
        }
        Some(chain) if !chain.rate_limits.iter().all(|r| r.admit()) => {
            // Envoy's terminal filter was already created for the connection it closes.
            match &chain.filter {
                NetworkFilter::Http(hcm) => {
                    stats::inc(&hcm.stats.downstream_cx_total);
                    stats::inc(&hcm.stats.downstream_cx_destroy);
                }
                NetworkFilter::Tcp(proxy) => stats::inc(&proxy.stats.downstream_cx_total),
            }
        }
        Some(chain) => {
            let ends = tcp::ConnectionAddresses {
                peer,
                local,
                restored,
            };
            match &chain.tls {
                None => {
                    if authorized(chain, &ends, sni.as_deref(), None) {
                        let served = Served {
                            sni,
                            tls: None,
                            peer: None,
                        };
                        serve_chain(stream, chain, &listener, &shared, ends, served).await;
                    }
                }
                Some(tls) => {
                    if let Some(stream) = handshake(stream, tls, &listener).await {
                        let info = tls_info(&stream, chain, tls);
                        if !authorized(chain, &ends, sni.as_deref(), Some(&info)) {
                            // Closed.
                        } else if chain.exchange.as_ref().is_some_and(|x| {
                            stream.get_ref().1.alpn_protocol() == Some(x.protocol.as_bytes())
                        }) {
                            let local = shared.stats.istio.local();
                            if let Ok((stream, slot)) =
                                crate::istio::exchange::start(stream, local).await
                            {
                                let served = Served {
                                    sni,
                                    tls: Some(info),
                                    peer: Some(slot),
                                };
                                serve_chain(stream, chain, &listener, &shared, ends, served).await;
                            }
                        } else {
                            let served = Served {
                                sni,
                                tls: Some(info),
                                peer: None,
                            };
                            serve_chain(stream, chain, &listener, &shared, ends, served).await;
                        }
                    }
                }
            }
        }
    }
    stats::dec(&s.downstream_cx_active);
    stats::inc(&s.downstream_cx_destroy);
}

/// Whether the chain's network RBAC filters let the connection through (each counts its
/// decision); the connection is closed otherwise.
fn authorized(
    chain: &FilterChain,
    ends: &tcp::ConnectionAddresses,
    sni: Option<&str>,
    tls: Option<&TlsInfo>,
) -> bool {
    if chain.rbac.is_empty() {
        return true;
    }
    let subject = crate::rbac::Subject {
        request: None,
        local: ends.local,
        direct_remote: ends.peer,
        remote: ends.peer,
        sni,
        tls: tls.is_some(),
        peer: tls.and_then(|i| i.peer.as_deref()),
        metadata: None,
    };
    for filter in &chain.rbac {
        if let Err(details) = filter.decide(&subject) {
            tracing::debug!(peer = %ends.peer, details, "connection denied by network RBAC");
            return false;
        }
    }
    true
}

/// The TLS handshake of a chain that terminates TLS, counted as Envoy counts it. A listener
/// that starts draining meanwhile ends it.
async fn handshake(
    stream: TcpStream,
    tls: &DownstreamTls,
    listener: &Listener,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accepted = tokio::select! {
        accepted = tls.accept(stream) => accepted,
        true = draining(listener.drain.subscribe()) => return None,
    };
    let ssl = listener.ssl_stats.as_deref();
    match accepted {
        Ok(stream) => {
            if let Some(ssl) = ssl {
                stats::inc(&ssl.handshake);
                if stream.get_ref().1.peer_certificates().is_none() {
                    stats::inc(&ssl.no_certificate);
                }
            }
            Some(stream)
        }
        Err(e) => {
            tracing::debug!(listener = %listener.name, error = %e, "TLS handshake failed");
            if let Some(ssl) = ssl {
                stats::inc(&ssl.connection_error);
            }
            None
        }
    }
}

/// Whether the chain's filters read who the peer is (RBAC): its certificate, its SNI.
fn reads_peer(chain: &FilterChain) -> bool {
    !chain.rbac.is_empty()
        || chain.istio_stats.is_some()
        || matches!(&chain.filter, NetworkFilter::Http(hcm)
            if hcm.filters.filters.iter().any(|f| f.filter.reads_peer()))
}

/// What the connection manager reads of a TLS connection, worked out once for every request
/// it carries: the XFCC element when the client presented a certificate (empty when the
/// manager writes none), and, for chains whose filters read them (RBAC), the SNI and the
/// certificate's names. The certificate is parsed once for both.
#[derive(Default)]
pub(crate) struct TlsInfo {
    client_cert: Option<::http::HeaderValue>,
    peer: Option<Arc<crate::rbac::PeerIdentity>>,
}

fn tls_info(
    stream: &tokio_rustls::server::TlsStream<TcpStream>,
    chain: &FilterChain,
    tls: &DownstreamTls,
) -> TlsInfo {
    use crate::http::xfcc;
    let conn = stream.get_ref().1;
    let certs = conn.peer_certificates().filter(|c| !c.is_empty());
    let (writes, details) = match &chain.filter {
        NetworkFilter::Http(hcm) => (hcm.forward_client_cert.writes(), hcm.client_cert_details),
        NetworkFilter::Tcp(_) => (false, Default::default()),
    };
    let reads_peer = reads_peer(chain);
    let identity = certs
        .and_then(|c| c.first())
        .filter(|_| reads_peer || writes)
        .map(|c| Arc::new(xfcc::peer_identity(c.as_ref())));
    let client_cert = certs.map(|c| match &identity {
        Some(id) if writes => {
            let ders: Vec<&[u8]> = c.iter().map(AsRef::as_ref).collect();
            xfcc::value(&xfcc::element(details, &tls.local_uris(), &ders, id))
        }
        _ => ::http::HeaderValue::from_static(""),
    });
    TlsInfo {
        client_cert,
        peer: identity.filter(|_| reads_peer),
    }
}

/// What is known of a connection when its network filter gets it: the SNI RBAC reads, its
/// TLS (None for plaintext), and who the peer said it is in Istio's exchange.
struct Served {
    sni: Option<Arc<str>>,
    tls: Option<TlsInfo>,
    peer: Option<Arc<crate::istio::exchange::PeerSlot>>,
}

/// Hands the connection (plain or decrypted) to the chain's network filter.
async fn serve_chain<I>(
    io: I,
    chain: &FilterChain,
    listener: &Listener,
    shared: &Arc<ServerState>,
    ends: tcp::ConnectionAddresses,
    served: Served,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Served { sni, tls, peer } = served;
    match &chain.filter {
        NetworkFilter::Http(hcm) => {
            let conn = http::Connection {
                hcm: hcm.clone(),
                shared: shared.clone(),
                peer: ends.peer,
                local: ends.local,
                restored: ends.restored,
                tls: tls.is_some(),
                sni,
                peer_identity: tls.as_ref().and_then(|i| i.peer.clone()),
                client_cert: tls.and_then(|i| i.client_cert),
                idle: None,
            };
            http::serve(io, conn, listener.drain.subscribe()).await;
        }
        NetworkFilter::Tcp(proxy) => {
            let drain = listener.drain.subscribe();
            let telemetry = chain.istio_stats.as_ref().map(|filter| tcp::TcpTelemetry {
                filter: filter.clone(),
                downstream_peer: peer,
                peer_identity: tls.as_ref().and_then(|i| i.peer.clone()),
                tls: tls.is_some(),
            });
            tokio::select! {
                () = tcp::serve(io, proxy.clone(), shared.clone(), ends, telemetry) => {}
                () = drained(drain, shared.drain_time) => {}
            }
        }
    }
}

/// SO_ORIGINAL_DST: where the client was connecting before NAT sent it here. None for a
/// connection that was not redirected (or not tracked).
fn original_destination(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let addr = match local {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    addr.ok()?.as_socket()
}

/// The listener a handed-off connection belongs to: the one bound to exactly its original
/// destination, else one on the wildcard address of the same port and family.
fn owner_of(shared: &ServerState, destination: SocketAddr) -> Option<Arc<Listener>> {
    let snapshot = shared.snapshot.load();
    let exact = snapshot.listeners.iter().find(|l| l.address == destination);
    let wildcard = || {
        snapshot.listeners.iter().find(|l| {
            l.address.port() == destination.port()
                && l.address.ip().is_unspecified()
                && l.address.is_ipv4() == destination.is_ipv4()
        })
    };
    exact.or_else(wildcard).cloned()
}

/// Runs the TLS and HTTP inspectors on the connection's first bytes, peeking so that the
/// network filter still reads them. Stops at the end of the stream or when both have decided.
async fn inspect(stream: &TcpStream, tls: bool, http: bool) -> Detected {
    let mut detected = Detected::default();
    let mut buf = vec![0u8; inspect::MAX_CLIENT_HELLO];
    let (mut tls_open, mut http_open) = (tls, http);
    let mut seen = 0;
    let mut pause = std::time::Duration::from_millis(1);
    while tls_open || http_open {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = &buf[..n];
        if tls_open {
            match inspect::client_hello(bytes) {
                Peek::NeedMore => {}
                Peek::No => tls_open = false,
                Peek::Yes(hello) => {
                    detected.transport_protocol = "tls";
                    detected.server_name = hello.server_name;
                    detected.application_protocols = hello.alpn;
                    tls_open = false;
                    // The HTTP inspector has nothing to say about TLS.
                    http_open = false;
                }
            }
        }
        if http_open && !tls_open {
            match inspect::http_protocol(bytes) {
                Peek::NeedMore => {}
                Peek::No => http_open = false,
                Peek::Yes(p) => {
                    detected.application_protocols = vec![p.to_string()];
                    http_open = false;
                }
            }
        }
        if n == buf.len() {
            break;
        }
        if tls_open || http_open {
            // A peek returns at once while bytes are waiting, so wait for more to arrive
            // instead of spinning on the same ones.
            if n == seen {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            seen = n;
        }
    }
    detected
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
