//! The HTTP connection manager: serves HTTP/1.1 and HTTP/2 (prior knowledge or by the client's
//! preface) on a connection and hands each request to the router.

mod attempt;
pub mod body;
pub mod conn_idle;
pub mod filter;
pub mod grpc;
pub mod h2_guard;
mod headers;
pub mod local_reply;
pub mod mirror;
mod redirect;
pub mod replay;
pub mod request_check;
pub mod router;
pub mod side;
pub mod stream_timer;
mod upgrade;
mod upstream_head;
pub mod xfcc;

use crate::access_log::AccessLog;
use crate::http::body::ProxyBody;
use crate::route::RouteConfig;
use crate::server::ServerState;
use crate::stats::{self, HttpStats};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Envoy's default limit on request headers: 60 KiB.
pub const MAX_REQUEST_HEADERS: usize = 60 * 1024;

/// Envoy's default `max_headers_count`, and hyper's.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// How long a client may take to send request headers. Envoy sets no bound unless
/// `request_headers_timeout` is given (not supported); Weft keeps this one against slow clients.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Auto,
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

#[derive(Debug)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    /// `tracing` with a provider: each request's span.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
    pub codec: Codec,
    pub route: RouteSource,
    pub access_logs: Vec<AccessLog>,
    pub generate_request_id: bool,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    /// `request_timeout`: the whole request must arrive within it (none by default).
    pub request_timeout: Option<Duration>,
    /// `stream_idle_timeout`: a stream with no bytes either way for this long ends (5 min by
    /// default, none when 0).
    pub stream_idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.idle_timeout`: a connection with no request in progress
    /// for this long is closed (one hour by default, none when 0).
    pub idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.max_stream_duration`: how long a stream may last, unless
    /// its route says otherwise (none by default).
    pub max_stream_duration: Option<Duration>,
    pub server_name: http::HeaderValue,
    pub server_header: ServerHeader,
    pub suppress_envoy_headers: bool,
    /// `max_request_headers_kb`, in bytes (60 KiB by default).
    pub max_request_headers_bytes: usize,
    /// `common_http_protocol_options.max_headers_count` (100 by default).
    pub max_headers_count: usize,
    /// `common_http_protocol_options.headers_with_underscores_action`.
    pub headers_with_underscores: request_check::UnderscoreAction,
    /// `http_filters`, the router excluded.
    pub filters: filter::FilterChain,
    /// `upgrade_configs`: upgrade types (e.g. `websocket`) passed through, lowercase.
    pub upgrades: Vec<String>,
    /// `http2_protocol_options.allow_connect`: HTTP/2 clients may open upgrades with an
    /// extended CONNECT (RFC 8441); off by default, as in Envoy.
    pub allow_connect: bool,
    /// `http2_protocol_options` flood limits for HTTP/2 clients.
    pub h2_flood: h2_guard::FloodLimits,
    /// `http2_protocol_options.max_concurrent_streams` for HTTP/2 clients.
    pub h2_max_concurrent_streams: Option<u32>,
    /// `forward_client_cert_details` and `set_current_client_cert_details`.
    pub forward_client_cert: xfcc::ForwardClientCert,
    pub client_cert_details: xfcc::CertDetails,
    pub stats: Arc<HttpStats>,
}

/// Where a connection manager's routes come from.
#[derive(Debug)]
pub enum RouteSource {
    /// `route_config`, inline.
    Static(Arc<RouteConfig>),
    /// `rds`: the named `RouteConfiguration` of the current snapshot. A listener that names
    /// one not yet received is warming until it arrives or `initial_fetch_timeout` (15 s by
    /// default, none when 0) runs out.
    Rds {
        name: String,
        initial_fetch_timeout: Option<Duration>,
    },
}

/// Per-connection facts every request of the connection needs.
#[derive(Clone)]
pub struct Connection {
    pub hcm: Arc<HttpConnectionManager>,
    pub shared: Arc<ServerState>,
    pub peer: SocketAddr,
    /// The destination the client connected to (restored after an iptables redirect).
    pub local: SocketAddr,
    /// Set when the destination was restored by `original_dst`: what ORIGINAL_DST clusters
    /// connect to.
    pub restored: Option<SocketAddr>,
    /// The filter chain terminated TLS: `x-forwarded-proto` is `https`.
    pub tls: bool,
    /// The client presented a certificate: this hop's XFCC element for it (empty when the
    /// connection manager writes none).
    pub client_cert: Option<http::HeaderValue>,
    /// TLS: the name the client asked for (SNI), and what its certificate says.
    pub sni: Option<Arc<str>>,
    pub peer_identity: Option<Arc<crate::rbac::PeerIdentity>>,
    /// What the connection's idle timeout watches; set by `serve`.
    pub idle: Option<Arc<conn_idle::Tracker>>,
}

pub async fn serve<I>(io: I, conn: Connection, drain: tokio::sync::watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hcm = conn.hcm.clone();
    let s = &hcm.stats;
    stats::inc(&s.downstream_cx_total);
    stats::inc(&s.downstream_cx_active);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    match hcm.codec {
        Codec::Http1 => builder = builder.http1_only(),
        Codec::Http2 => builder = builder.http2_only(),
        Codec::Auto => {}
    }
    builder
        .http1()
        .max_buf_size(hcm.max_request_headers_bytes.max(MAX_REQUEST_HEADERS) + 16 * 1024)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // hyper's own limit is Envoy's default, 100, kept on the stack; a configured one costs a
    // heap buffer per request, so it is set only when it differs.
    if hcm.max_headers_count != DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(hcm.max_headers_count);
    }
    let mut http2 = builder.http2();
    http2
        .max_header_list_size(u32::try_from(hcm.max_request_headers_bytes).unwrap_or(u32::MAX))
        .timer(TokioTimer::new());
    if hcm.allow_connect {
        http2.enable_connect_protocol();
    }
    if let Some(n) = hcm.h2_max_concurrent_streams {
        http2.max_concurrent_streams(n);
    }
    // Streams a client resets before they are served: h2 closes the connection past this many
    // (CVE-2023-44487). Envoy's premature-reset check lets 200 such streams through and closes
    // a connection that does it 1000 times; this sits between.
    http2.max_pending_accept_reset_streams(Some(500));
    let drain_time = conn.shared.drain_time;
    let conn_shared = conn.shared.clone();
    let idle = hcm.idle_timeout.map(|t| (t, conn_idle::Tracker::new()));
    let mut conn = conn;
    conn.idle = idle.as_ref().map(|(_, tracker)| tracker.clone());
    // Resolves when an idle connection is to be closed: at once if it never carried a request,
    // after Envoy's drain timeout if it did.
    let idle_close = async {
        let Some((timeout, tracker)) = &idle else {
            return std::future::pending().await;
        };
        tracker.expired(*timeout).await;
        stats::inc(&s.downstream_cx_idle_timeout);
        if tracker.used() {
            tokio::time::sleep(conn_idle::DRAIN_TIMEOUT).await;
        }
    };
    let service = service_fn(move |req: http::Request<Incoming>| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(router::handle(req, conn).await) }
    });
    let io = h2_guard::H2Guard::new(io, hcm.h2_flood, conn_shared);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = idle_close => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                () = tokio::time::sleep(drain_time) => Ok(()),
            }
        }
        true = crate::listener::accept::draining(drain.clone()) => {
            // HTTP/1.1: the response in flight says `connection: close`; HTTP/2: GOAWAY.
            connection.as_mut().graceful_shutdown();
            let drained = crate::listener::accept::drained(drain, drain_time);
            tokio::select! {
                result = connection.as_mut() => result,
                () = drained => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream connection ended with an error");
        if is_protocol_error(&*e) {
            stats::inc(&s.downstream_cx_protocol_error);
        }
    }
    stats::dec(&s.downstream_cx_active);
    stats::inc(&s.downstream_cx_destroy);
}

fn is_protocol_error(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(|h| h.is_parse() || h.is_parse_too_large())
}

/// A response the proxy makes itself.
pub fn local_reply(status: http::StatusCode, body: &'static str) -> http::Response<ProxyBody> {
    let mut resp = http::Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
    }
    resp
}
