//! Connections to upstream hosts. Each worker keeps its own pools (thread-local: a worker's
//! connections are only ever used by that worker, so no lock is needed), keyed by host address and
//! HTTP version: idle HTTP/1.1 connections are reused (keep-alive), one HTTP/2 connection per host
//! carries many streams.

pub mod tls;

use crate::cluster::{Cluster, Host};
use crate::http::body::ProxyBody;
use hyper::client::conn::{http1, http2};
use tokio::net::TcpStream;

pub use pool::{checkout, release_http1};

mod pool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http1,
    Http2,
}

/// A connection ready to carry one request.
pub enum Sender {
    Http1(Http1),
    /// With the connection's local address.
    Http2(http2::SendRequest<ProxyBody>, Option<std::net::SocketAddr>),
}

/// The local address of the connection a response came over, in the response's extensions:
/// `%UPSTREAM_LOCAL_ADDRESS%`.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamLocal(pub std::net::SocketAddr);

/// An HTTP/1.1 connection, with how many requests it has been given
/// (`max_requests_per_connection`).
pub struct Http1 {
    pub sender: http1::SendRequest<ProxyBody>,
    uses: u32,
    pub local: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("delayed connect error: {0}")]
    Refused(std::io::Error),
    #[error("connection timeout")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    #[error("TLS error: {0}")]
    Tls(std::io::Error),
    /// A circuit breaker refused: too many requests waiting for a connection.
    #[error("overflow")]
    Overflow,
}

/// What an upstream connection will carry, which decides its TLS ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Http(Version),
    /// `tcp_proxy`: bytes, with only the ALPN the cluster configures.
    Tcp,
}

/// Where a cluster's connections come from when not from the network: a test's in-memory
/// upstreams (`testing`).
pub trait Connector: Send + Sync + std::fmt::Debug {
    fn connect(
        &self,
        address: std::net::SocketAddr,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<tokio::io::DuplexStream>> + Send>,
    >;
}

/// The cluster's metadata exchange, when it has one and the TLS handshake agreed on its
/// protocol: this proxy's header goes first, the server's is read before anything else.
async fn exchange(
    cluster: &Cluster,
    stream: tls::UpstreamStream,
) -> Result<tls::UpstreamStream, ConnectError> {
    let (Some(config), Some(local), tls::UpstreamStream::Tls(tls)) = (
        cluster.config.exchange.as_ref(),
        crate::istio::exchange::local(),
        &stream,
    ) else {
        return Ok(stream);
    };
    if tls.get_ref().1.alpn_protocol() != Some(config.protocol.as_bytes()) {
        return Ok(stream);
    }
    let tls::UpstreamStream::Tls(tls) = stream else {
        return Ok(stream);
    };
    let (wrapped, slot) = crate::istio::exchange::start(*tls, local)
        .await
        .map_err(ConnectError::Tls)?;
    Ok(tls::UpstreamStream::Exchanged(Box::new(wrapped), slot))
}

/// Opens a connection to `host`: TCP, then TLS when the cluster has a transport socket, both
/// within the cluster's `connect_timeout` (Envoy counts a connection as made after its
/// handshake). Counting is left to the caller.
pub async fn open(
    cluster: &Cluster,
    host: &Host,
    purpose: Purpose,
) -> Result<tls::UpstreamStream, ConnectError> {
    let tls = cluster.tls_for(host);
    if let Some(connector) = cluster.connector.get() {
        let connect = connector.connect(host.address);
        return match tokio::time::timeout(cluster.config.connect_timeout, connect).await {
            Ok(Ok(stream)) if tls.is_none() => Ok(tls::UpstreamStream::Memory(stream)),
            Ok(Ok(_)) => Err(ConnectError::Tls(std::io::Error::other(
                "TLS over an in-memory connection is not supported",
            ))),
            Ok(Err(e)) => Err(ConnectError::Refused(e)),
            Err(_) => Err(ConnectError::Timeout),
        };
    }
    let attempt = async {
        let stream = TcpStream::connect(host.address)
            .await
            .map_err(ConnectError::Refused)?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(tls::UpstreamStream::Plain(stream)),
            Some(t) => {
                let config = match purpose {
                    Purpose::Http(Version::Http1) => &t.http1,
                    Purpose::Http(Version::Http2) => &t.http2,
                    Purpose::Tcp => &t.raw,
                };
                let stream = t
                    .connect(config, host.address, stream)
                    .await
                    .map_err(ConnectError::Tls)?;
                exchange(cluster, stream).await
            }
        }
    };
    tokio::time::timeout(cluster.config.connect_timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}
