//! A filter's own call to a service of the mesh (an authorization service, a JWKS server): an
//! endpoint of the service's cluster in the current config, and one HTTP/1.1 request on a new
//! connection to it (or a connection the caller keeps, as the trace exporter does). Not the
//! cluster's pool, counters or circuit breakers.

use crate::server::ServerState;
use hyper::client::conn::http1::SendRequest;
use std::net::SocketAddr;

/// An endpoint of `cluster`, if the current config has the cluster and it has one.
pub fn endpoint(shared: &ServerState, cluster: &str) -> Option<SocketAddr> {
    let snapshot = shared.snapshot.load();
    let c = snapshot.clusters.get(cluster)?;
    let hosts = c.hosts.load();
    hosts.choose_hashed(None).map(|h| h.address)
}

/// `request` on a new HTTP/1.1 connection to `addr`: its response, or why there is none.
pub async fn send<B>(
    addr: SocketAddr,
    request: http::Request<B>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    connect(addr)
        .await?
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// A new HTTP/1.1 connection to `addr`, driven by a task of its own.
pub async fn connect<B>(addr: SocketAddr) -> Result<SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}
