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
    Http2(http2::SendRequest<ProxyBody>),
}

/// An HTTP/1.1 connection, with how many requests it has been given
/// (`max_requests_per_connection`).
pub struct Http1 {
    pub sender: http1::SendRequest<ProxyBody>,
    uses: u32,
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

/// Opens a connection to `host`: TCP, then TLS when the cluster has a transport socket, both
/// within the cluster's `connect_timeout` (Envoy counts a connection as made after its
/// handshake). Counting is left to the caller.
pub async fn open(
    cluster: &Cluster,
    host: &Host,
    purpose: Purpose,
) -> Result<tls::UpstreamStream, ConnectError> {
    let attempt = async {
        let stream = TcpStream::connect(host.address)
            .await
            .map_err(ConnectError::Refused)?;
        let _ = stream.set_nodelay(true);
        match &cluster.config.tls {
            None => Ok(tls::UpstreamStream::Plain(stream)),
            Some(t) => {
                let config = match purpose {
                    Purpose::Http(Version::Http1) => &t.http1,
                    Purpose::Http(Version::Http2) => &t.http2,
                    Purpose::Tcp => &t.raw,
                };
                t.connect(config, host.address, stream)
                    .await
                    .map_err(ConnectError::Tls)
            }
        }
    };
    tokio::time::timeout(cluster.config.connect_timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}
