//! Istio's certificate service, `istio.v1.auth.IstioCertificateService/CreateCertificate`, as
//! istiod serves it on 15012: a CSR in, the signed chain out (leaf first, root last). The caller
//! proves who it is with `authorization: Bearer <credential>`, as Istio's agents send their
//! service-account token; which identities a credential proves is the [`Authenticator`]'s call.

use crate::{Ca, Identity, SignError};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// A CSR is a few KiB; the gRPC layer refuses much larger messages before they are read, and
/// the CA refuses (and counts) requests between its own limit and this one.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// `istio.v1.auth.IstioCertificateRequest` (`metadata`, field 4, is not read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Seconds; zero or less asks for the CA's default.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
}

/// `istio.v1.auth.IstioCertificateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// Who a caller is, from its request's metadata.
pub trait Authenticator: Send + Sync + 'static {
    /// The identities the caller proved, or why it proved none.
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Vec<Identity>, String>;
}

/// Bearer credentials issued to local workloads (`weft up` hands each proxy its own), each
/// proving one identity. Credentials are 256 random bits from the kernel.
#[derive(Default)]
pub struct Credentials {
    by_token: RwLock<HashMap<String, Identity>>,
}

impl Credentials {
    /// A new credential for `identity`.
    pub fn issue(&self, identity: Identity) -> std::io::Result<String> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if let Ok(mut map) = self.by_token.write() {
            map.insert(token.clone(), identity);
        }
        Ok(token)
    }

    /// Withdraws a credential (its workload is gone).
    pub fn revoke(&self, token: &str) {
        if let Ok(mut map) = self.by_token.write() {
            map.remove(token);
        }
    }
}

impl Authenticator for Credentials {
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Vec<Identity>, String> {
        let header = metadata
            .get("authorization")
            .ok_or("no authorization header: a credential (Bearer) is required")?;
        let value = header
            .to_str()
            .map_err(|_| "the authorization header is not text".to_string())?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or("the authorization header is not a Bearer credential")?;
        let map = self
            .by_token
            .read()
            .map_err(|_| "credentials unavailable".to_string())?;
        map.get(token)
            .map(|id| vec![id.clone()])
            .ok_or_else(|| "unknown credential".to_string())
    }
}

/// The gRPC service.
#[derive(Clone)]
pub struct CaService {
    ca: Arc<Ca>,
    auth: Arc<dyn Authenticator>,
}

impl CaService {
    pub fn new(ca: Arc<Ca>, auth: Arc<dyn Authenticator>) -> CaService {
        CaService { ca, auth }
    }

    fn create(
        &self,
        req: &Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let proved = self.auth.authenticate(req.metadata()).map_err(|e| {
            self.ca
                .refusals()
                .authentication_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Status::unauthenticated(e)
        })?;
        let msg = req.get_ref();
        let ttl = u64::try_from(msg.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        match self.ca.sign(&msg.csr, &proved, ttl) {
            Ok(signed) => Ok(IstioCertificateResponse {
                cert_chain: signed.istio_cert_chain(),
            }),
            Err(e @ SignError::ForeignIdentity { .. }) => {
                Err(Status::permission_denied(e.to_string()))
            }
            Err(e @ SignError::Sign(_)) => Err(Status::internal(e.to_string())),
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        }
    }
}

impl tonic::server::NamedService for CaService {
    const NAME: &'static str = "istio.v1.auth.IstioCertificateService";
}

struct CreateCertificate(CaService);

impl tonic::server::UnaryService<IstioCertificateRequest> for CreateCertificate {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<Response<IstioCertificateResponse>, Status>;

    fn call(&mut self, req: Request<IstioCertificateRequest>) -> Self::Future {
        let r = self.0.create(&req).map(Response::new);
        Box::pin(async move { r })
    }
}

impl<B> Service<http::Request<B>> for CaService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CREATE_CERTIFICATE_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("not a method of IstioCertificateService").into_http())
            });
        }
        let method = CreateCertificate(self.clone());
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_MESSAGE_BYTES), None);
            Ok(grpc.unary(method, req).await)
        })
    }
}
