//! Responses built from resources encoded once. A thousand proxies with the same clusters get
//! the same bytes: each resource is encoded into its place in a `DiscoveryResponse` (and in a
//! `DeltaDiscoveryResponse`) when its snapshot is first served, and a response is a list of
//! shared chunks plus its own version, type and nonce, copied only as it is written to the
//! connection. The gRPC service is the ADS one; its response body hands those chunks to
//! HTTP/2 as they are.

use super::AdsServer;
use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost::encoding::{message, string};
use std::convert::Infallible;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};

/// One resource in its two wire forms, with its delta version.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// A hash of its bytes, the delta version: unchanged bytes keep the version across
    /// restarts.
    pub hash: u64,
    /// `DiscoveryResponse.resources` (field 2): the `Any`.
    pub sotw: Bytes,
    /// `DeltaDiscoveryResponse.resources` (field 2): a `Resource` with name, version and `Any`.
    pub delta: Bytes,
}

impl Encoded {
    pub fn new(name: &str, any: &Any) -> Encoded {
        let version = super::resource_version(any);
        let hash = u64::from_str_radix(&version, 16).unwrap_or(0);
        let mut sotw = BytesMut::new();
        message::encode(2, any, &mut sotw);
        let resource = Resource {
            name: name.to_string(),
            version,
            resource: Some(any.clone()),
            ..Default::default()
        };
        let mut delta = BytesMut::new();
        message::encode(2, &resource, &mut delta);
        Encoded {
            hash,
            sotw: sotw.freeze(),
            delta: delta.freeze(),
        }
    }
}

/// A response as chunks of encoded fields.
#[derive(Debug, Default)]
pub struct Prepared(pub Vec<Bytes>);

impl Prepared {
    fn field(&mut self, tag: u32, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut b = BytesMut::new();
        string::encode(tag, &value.to_string(), &mut b);
        self.0.push(b.freeze());
    }

    /// A `DiscoveryResponse`.
    pub fn sotw<'a>(
        version: &str,
        resources: impl Iterator<Item = &'a Bytes>,
        type_url: &str,
        nonce: &str,
    ) -> Prepared {
        let mut p = Prepared::default();
        p.field(1, version);
        p.0.extend(resources.cloned());
        p.field(4, type_url);
        p.field(5, nonce);
        p
    }

    /// A `DeltaDiscoveryResponse`.
    pub fn delta(
        system_version: &str,
        resources: Vec<Bytes>,
        type_url: &str,
        removed: &[String],
        nonce: &str,
    ) -> Prepared {
        let mut p = Prepared::default();
        p.field(1, system_version);
        p.0.extend(resources);
        p.field(4, type_url);
        p.field(5, nonce);
        for r in removed {
            p.field(6, r);
        }
        p
    }

    /// The bytes, for tests and tools that want the message.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        for c in &self.0 {
            b.put_slice(c);
        }
        b.freeze()
    }
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

type Responses = tokio_stream::wrappers::ReceiverStream<Result<Prepared, Status>>;

/// A gRPC response body written from prepared responses: each message is its 5-byte gRPC
/// header and then its chunks, handed to HTTP/2 as they are (shared, never copied here), so
/// that a stream waiting on flow control holds references, not a buffer of its own.
struct GrpcBody {
    responses: Responses,
    /// The gRPC header of the message being written, until it is.
    header: Option<Bytes>,
    /// The rest of the message being written. Its list goes when it is written: a list of
    /// thousands of chunks kept for each idle stream added up to tens of megabytes.
    chunks: std::vec::IntoIter<Bytes>,
    done: bool,
}

/// Small chunks are joined into frames of about this size: one HTTP/2 frame per resource
/// would cost more than the copy.
const FRAME: usize = 32 << 10;

impl GrpcBody {
    fn next_chunk(&mut self) -> Option<Bytes> {
        let next = self.header.take().or_else(|| self.chunks.next());
        if self.chunks.len() == 0 {
            self.chunks = Vec::new().into_iter();
        }
        next
    }

    fn peek_len(&self) -> Option<usize> {
        self.header
            .as_ref()
            .or(self.chunks.as_slice().first())
            .map(Bytes::len)
    }

    /// The next frame: a large chunk as it is, else small ones copied together. Only what HTTP/2
    /// asks for is copied, so a stream waiting on flow control holds no copy.
    fn next_frame(&mut self) -> Option<Bytes> {
        let first = self.next_chunk()?;
        if first.len() >= FRAME || self.peek_len().is_none_or(|n| first.len() + n > FRAME) {
            return Some(first);
        }
        let mut frame = BytesMut::with_capacity(FRAME);
        frame.put_slice(&first);
        while self.peek_len().is_some_and(|n| frame.len() + n <= FRAME) {
            if let Some(next) = self.next_chunk() {
                frame.put_slice(&next);
            }
        }
        Some(frame.freeze())
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        use futures::Stream;
        if let Some(frame) = self.next_frame() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(frame))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut self.responses).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(prepared))) => {
                let len: usize = prepared.0.iter().map(Bytes::len).sum();
                let mut header = BytesMut::with_capacity(5);
                header.put_u8(0);
                header.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
                self.header = Some(header.freeze());
                self.chunks = prepared.0.into_iter();
                let frame = self.next_frame().unwrap_or_default();
                Poll::Ready(Some(Ok(http_body::Frame::data(frame))))
            }
            Poll::Ready(end) => {
                self.done = true;
                let status = match end {
                    Some(Err(status)) => status,
                    _ => Status::ok(""),
                };
                let mut trailers = http::HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
            }
        }
    }
}

/// The ADS gRPC service.
#[derive(Clone)]
pub struct AdsService(pub AdsServer);

impl tonic::server::NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

/// Answers one ADS call of protocol `P`.
async fn call<P, B>(server: AdsServer, req: http::Request<B>) -> http::Response<tonic::body::Body>
where
    P: super::Protocol,
    P::Request: Message + Default,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let requests = super::requests::Requests::new(req.into_body());
    match server.open::<P>(requests).await {
        Ok(response) => {
            let body = GrpcBody {
                responses: response.into_inner(),
                header: None,
                chunks: Vec::new().into_iter(),
                done: false,
            };
            let mut r = http::Response::new(tonic::body::Body::new(body));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            r
        }
        Err(status) => status.into_http(),
    }
}

impl<B> Service<http::Request<B>> for AdsService
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
        let server = self.0.clone();
        match req.uri().path() {
            SOTW_PATH => {
                Box::pin(async move { Ok(call::<super::sotw::Sotw, B>(server, req).await) })
            }
            DELTA_PATH => {
                Box::pin(async move { Ok(call::<super::delta::Delta, B>(server, req).await) })
            }
            _ => {
                Box::pin(async move { Ok(Status::unimplemented("not an ADS method").into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };

    fn any(n: u8) -> Any {
        Any {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            value: vec![n; usize::from(n) * 100],
        }
    }

    #[test]
    fn prepared_responses_decode_as_the_messages_they_stand_for() {
        let items = [("a", any(1)), ("b", any(2))];
        let encoded: Vec<Encoded> = items.iter().map(|(n, a)| Encoded::new(n, a)).collect();

        let sotw = Prepared::sotw("v7", encoded.iter().map(|e| &e.sotw), "T", "3");
        let decoded = DiscoveryResponse::decode(sotw.to_bytes()).unwrap();
        assert_eq!(
            decoded,
            DiscoveryResponse {
                version_info: "v7".into(),
                resources: vec![any(1), any(2)],
                type_url: "T".into(),
                nonce: "3".into(),
                ..Default::default()
            }
        );

        let removed = ["gone".to_string()];
        let delta = Prepared::delta("v8", vec![encoded[1].delta.clone()], "T", &removed, "4");
        let decoded = DeltaDiscoveryResponse::decode(delta.to_bytes()).unwrap();
        assert_eq!(decoded.system_version_info, "v8");
        assert_eq!(decoded.removed_resources, removed);
        assert_eq!(decoded.nonce, "4");
        let r = &decoded.resources[0];
        assert_eq!((r.name.as_str(), r.resource.as_ref()), ("b", Some(&any(2))));
        assert_eq!(r.version, super::super::resource_version(&any(2)));
    }
}
