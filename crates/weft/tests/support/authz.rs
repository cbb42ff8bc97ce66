//! External authorization services for ext_authz tests: one over HTTP, one over gRPC
//! (envoy.service.auth.v3.Authorization). Both allow a request that says `x-ext-authz: allow`
//! (adding `x-ext-authz-check-result: allowed` for the upstream) and deny the rest with their
//! own status, body (saying what it was asked, and the `x-added` header when the check carried
//! it) and `x-ext-authz-check-result: denied`.

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc::Status;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

/// The HTTP service: allows `x-ext-authz: allow`; denies the rest saying what it was asked.
pub async fn http_authorizer() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                        let allow = req
                            .headers()
                            .get("x-ext-authz")
                            .is_some_and(|v| v == "allow");
                        let resp = if allow {
                            http::Response::builder()
                                .header("x-ext-authz-check-result", "allowed")
                                .header("x-not-for-upstream", "1")
                                .body(Full::new(Bytes::new()))
                        } else {
                            http::Response::builder()
                                .status(403)
                                .header("x-ext-authz-check-result", "denied")
                                .header("x-not-for-client", "1")
                                .body(Full::new(Bytes::from(format!(
                                    "denied by ext_authz for {} {}{}",
                                    req.method(),
                                    req.uri(),
                                    req.headers()
                                        .get("x-added")
                                        .map(|v| format!(
                                            " (x-added: {})",
                                            v.to_str().unwrap_or("")
                                        ))
                                        .unwrap_or_default()
                                ))))
                        };
                        Ok::<_, std::convert::Infallible>(resp.unwrap())
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

struct GrpcAuthorizer;

#[tonic::async_trait]
impl Authorization for GrpcAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let header = |k: &str, v: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let allow = http
            .headers
            .get("x-ext-authz")
            .is_some_and(|v| v == "allow");
        let response = if allow {
            CheckResponse {
                status: Some(Status::default()),
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header("x-ext-authz-check-result", "allowed")],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(Status {
                    code: 7,
                    ..Default::default()
                }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(
                    DeniedHttpResponse {
                        status: Some(HttpStatus { code: 401 }),
                        headers: vec![header("x-ext-authz-check-result", "denied")],
                        body: format!("denied by gRPC ext_authz for {} {}", http.method, http.path),
                    },
                )),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(response))
    }
}

pub async fn grpc_authorizer() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(GrpcAuthorizer))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}
