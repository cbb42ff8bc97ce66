//! The requests of one ADS stream, read from the gRPC body.
//!
//! tonic's reader keeps its buffer at the size of the largest message it has seen, for the
//! life of the stream. A sidecar's endpoint ACK names every cluster it uses (tens of kilobytes
//! at a thousand services), so a thousand streams held ~66 MB of idle buffers in the scale
//! benchmark. This reader lets its buffer go as soon as a message has been read.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use std::marker::PhantomData;
use std::pin::Pin;
use tonic::Status;
use tonic::codegen::{Body, StdError};

/// The largest request a proxy may send (tonic's default).
const MAX_REQUEST: usize = 4 << 20;
/// The gRPC message header: a compression flag and a 4-byte length.
const HEADER: usize = 5;

type RequestBody = Pin<Box<dyn Body<Data = Bytes, Error = Status> + Send>>;

/// Decodes length-prefixed protobuf messages of type `Req` from a request body.
pub(crate) struct Requests<Req> {
    body: RequestBody,
    buf: BytesMut,
    ended: bool,
    _request: PhantomData<fn() -> Req>,
}

impl<Req: Message + Default> Requests<Req> {
    pub(crate) fn new<B>(body: B) -> Self
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let body = body
            .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(|e| Status::from_error(e.into()));
        Requests {
            body: Box::pin(body),
            buf: BytesMut::new(),
            ended: false,
            _request: PhantomData,
        }
    }

    /// The next request; `None` when the proxy closed its side of the stream. Cancel-safe: what
    /// was read stays in the buffer.
    pub(crate) async fn message(&mut self) -> Result<Option<Req>, Status> {
        loop {
            if let Some(request) = self.decode()? {
                return Ok(Some(request));
            }
            if self.ended {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::invalid_argument(
                        "the stream ended inside a request",
                    ))
                };
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Err(status)) => return Err(status),
                Some(Ok(frame)) => {
                    // Trailers end a request stream; nothing in them matters here.
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// A whole message from the buffer, if it holds one.
    fn decode(&mut self) -> Result<Option<Req>, Status> {
        let Some(header) = self.buf.get(..HEADER) else {
            return Ok(None);
        };
        if header[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not supported",
            ));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_REQUEST {
            return Err(Status::resource_exhausted(format!(
                "a request of {len} bytes is larger than the limit of {MAX_REQUEST}"
            )));
        }
        if self.buf.len() < HEADER + len {
            self.buf.reserve(HEADER + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER);
        let message = self.buf.split_to(len);
        if self.buf.is_empty() {
            // Let the allocation go with `message`, not stay with the stream.
            self.buf = BytesMut::new();
        }
        Req::decode(message)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("cannot decode the request: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use http_body_util::StreamBody;

    fn framed(request: &DiscoveryRequest) -> Vec<u8> {
        let body = request.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn body_of(
        chunks: Vec<Vec<u8>>,
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static {
        StreamBody::new(futures::stream::iter(chunks.into_iter().map(|c| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(c)))
        })))
    }

    fn request(n: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: "T".into(),
            resource_names: (0..n).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn messages_split_and_joined_across_frames_are_read_whole() {
        let (a, b) = (request(3), request(500));
        let mut bytes = framed(&a);
        bytes.extend(framed(&b));
        // Frames that cut both the header and the body of the second message.
        let cut = framed(&a).len() + 2;
        let chunks = vec![
            bytes[..cut].to_vec(),
            bytes[cut..cut + 100].to_vec(),
            bytes[cut + 100..].to_vec(),
        ];
        let mut requests = Requests::<DiscoveryRequest>::new(body_of(chunks));
        assert_eq!(requests.message().await.unwrap(), Some(a));
        assert_eq!(requests.message().await.unwrap(), Some(b));
        assert_eq!(requests.message().await.unwrap(), None);
        assert_eq!(requests.buf.capacity(), 0, "the buffer is let go");
    }

    #[tokio::test]
    async fn a_truncated_or_compressed_request_is_an_error() {
        let mut whole = framed(&request(2));
        whole.truncate(whole.len() - 1);
        let mut requests = Requests::<DiscoveryRequest>::new(body_of(vec![whole]));
        let err = requests.message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let mut compressed = framed(&request(2));
        compressed[0] = 1;
        let mut requests = Requests::<DiscoveryRequest>::new(body_of(vec![compressed]));
        let err = requests.message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    }
}
