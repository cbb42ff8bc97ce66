//! The proxy's own unary gRPC calls to a service of the mesh (a trace or log collector), as
//! `envoy_grpc` makes them: HTTP/2 to an endpoint of the cluster, with the configured
//! authority. `unary` opens a connection per call, for callers whose calls are seconds apart;
//! the trace exporter, whose batches leave every few milliseconds under load, keeps a
//! [`channel`] and calls `unary_on` (tonic reconnects a channel whose connection broke).

use std::net::SocketAddr;

/// A new HTTP/2 channel to `addr`, its requests carrying `authority` (the address's, if empty).
pub async fn channel(
    addr: SocketAddr,
    authority: &str,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?;
    let endpoint = if authority.is_empty() {
        endpoint
    } else {
        let uri: http::Uri = format!("http://{authority}")
            .parse()
            .map_err(|e| format!("authority {authority:?}: {e}"))?;
        endpoint.origin(uri)
    };
    endpoint.connect().await.map_err(|e| e.to_string())
}

pub async fn unary<Req, Resp>(
    addr: SocketAddr,
    authority: &str,
    path: &'static str,
    request: Req,
) -> Result<Resp, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    unary_on(channel(addr, authority).await?, path, request).await
}

/// A unary call on an open channel.
pub async fn unary_on<Req, Resp>(
    channel: tonic::transport::Channel,
    path: &'static str,
    request: Req,
) -> Result<Resp, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let response = grpc
        .unary(
            tonic::Request::new(request),
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<Req, Resp>::default(),
        )
        .await
        .map_err(|s| format!("grpc-status {:?}: {}", s.code(), s.message()))?;
    Ok(response.into_inner())
}
