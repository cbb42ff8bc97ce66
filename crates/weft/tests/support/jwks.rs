//! Servers of JWKS documents for the control plane to fetch: one that answers, one that never
//! does.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// Answers every GET with `body` (as JSON).
pub async fn serve(body: String) -> SocketAddr {
    super::serve_each(move |stream| {
        let body = body.clone();
        async move {
            let service = service_fn(move |_req: http::Request<Incoming>| {
                let body = body.clone();
                async move {
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

/// Takes connections and never answers.
pub async fn hang() -> SocketAddr {
    super::serve_each(|stream| async move {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        drop(stream);
    })
    .await
}
