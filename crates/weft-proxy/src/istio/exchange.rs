//! Istio's metadata exchange on a connection (`istio.metadata_exchange` as a listener's network
//! filter and as a cluster's upstream filter), in istio-proxy's wire format: once both sides
//! agreed on the ALPN protocol `istio-peer-exchange`, each writes first an 8-byte header (the
//! magic `0x3D230467` and the length of what follows, both big-endian), then a serialized
//! `google.protobuf.Any` holding a `Struct` with `x-envoy-peer-metadata` (its node metadata)
//! and `x-envoy-peer-metadata-id` (its node id). Each side reads and removes the other's before
//! passing any bytes on.
//!
//! Both sides write theirs as soon as the handshake is done (istio-proxy writes it with its
//! first byte either way), so neither waits for the other. Bytes that do not start with the
//! magic are no exchange: they pass through untouched and the peer stays unknown, as
//! istio-proxy does; a connection is never closed for it.

use super::{LocalNode, Workload};
use envoy_types::pb::google::protobuf::{Any, Value, value::Kind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use weft_proto::SortedStruct;

pub const MAGIC: u32 = 0x3D23_0467;
/// The ALPN protocol under which the exchange happens (`MetadataExchange.protocol`).
pub const PROTOCOL: &str = "istio-peer-exchange";
/// Past this, a header is no exchange (istio-proxy reads any size; a peer's metadata is a few
/// hundred bytes).
const MAX_PAYLOAD: usize = 64 * 1024;

/// The `istio.metadata_exchange` network filter's config (`MetadataExchange`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    pub protocol: String,
}

/// Who the other side of a connection said it is: unset until its header was read (or found
/// missing), then `None` for no exchange.
#[derive(Debug, Default)]
pub struct PeerSlot(OnceLock<Option<Arc<Workload>>>);

impl PeerSlot {
    pub fn peer(&self) -> Option<Arc<Workload>> {
        self.0.get().cloned().flatten()
    }

    /// The exchange is over (the peer known, or known to be unknown).
    pub fn settled(&self) -> bool {
        self.0.get().is_some()
    }

    fn set(&self, peer: Option<Workload>) {
        let _ = self.0.set(peer.map(Arc::new));
    }
}

/// What this proxy writes: the header and its payload.
pub fn header(local: &LocalNode) -> Vec<u8> {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "x-envoy-peer-metadata".to_string(),
        Value {
            kind: Some(Kind::StructValue(
                envoy_types::pb::google::protobuf::Struct {
                    fields: local.announced().into_iter().collect(),
                },
            )),
        },
    );
    fields.insert(
        "x-envoy-peer-metadata-id".to_string(),
        Value {
            kind: Some(Kind::StringValue(local.id.clone())),
        },
    );
    let any = Any {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: prost::Message::encode_to_vec(&SortedStruct { fields }),
    };
    let payload = prost::Message::encode_to_vec(&any);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The peer a payload (the `Any` after the header) names.
pub fn parse(payload: &[u8]) -> Option<Workload> {
    let any: Any = prost::Message::decode(payload).ok()?;
    if !any.type_url.ends_with("google.protobuf.Struct") {
        return None;
    }
    let outer: SortedStruct = prost::Message::decode(any.value.as_slice()).ok()?;
    let Some(Kind::StructValue(meta)) = outer
        .fields
        .get("x-envoy-peer-metadata")
        .and_then(|v| v.kind.as_ref())
    else {
        return None;
    };
    super::decode_struct(&prost::Message::encode_to_vec(meta))
}

/// A connection whose first bytes from the other side are its exchange header: the header is
/// read into `slot` and never passed on; everything after it (or everything, when there is no
/// header) reads as usual. Writes go straight through.
pub struct ExchangeStream<S> {
    inner: S,
    slot: Arc<PeerSlot>,
    /// The header's bytes so far, while it is being read; after it, what came with it.
    buf: Vec<u8>,
    /// Bytes of `buf` already handed on (once reading is done).
    passed: usize,
    reading: bool,
}

impl<S> ExchangeStream<S> {
    pub fn new(inner: S, slot: Arc<PeerSlot>) -> Self {
        ExchangeStream {
            inner,
            slot,
            buf: Vec::new(),
            passed: 0,
            reading: true,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Looks at what was read so far: done (the header parsed or found missing) or not.
    fn settle(&mut self, eof: bool) -> bool {
        if self.buf.len() >= 4 && self.buf[..4] != MAGIC.to_be_bytes() {
            self.slot.set(None);
            return true;
        }
        if self.buf.len() >= 8 {
            let len =
                u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if len > MAX_PAYLOAD {
                self.slot.set(None);
                return true;
            }
            if self.buf.len() >= 8 + len {
                let peer = self.buf.get(8..8 + len).and_then(parse);
                if peer.is_none() {
                    tracing::debug!("metadata exchange: a header that is not a peer's metadata");
                }
                self.slot.set(peer);
                self.passed = 8 + len;
                return true;
            }
        }
        if eof {
            self.slot.set(None);
            return true;
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ExchangeStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while this.reading {
            let mut chunk = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let eof = rb.filled().is_empty();
                    this.buf.extend_from_slice(rb.filled());
                    if this.settle(eof) {
                        this.reading = false;
                    }
                }
            }
        }
        if this.passed < this.buf.len() {
            let rest = this.buf.get(this.passed..).unwrap_or_default();
            let n = rest.len().min(out.remaining());
            out.put_slice(rest.get(..n).unwrap_or_default());
            this.passed += n;
            if this.passed == this.buf.len() {
                this.buf = Vec::new();
                this.passed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ExchangeStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The process's proxy, for its upstream connections' exchange (one proxy per process: the
/// first `ServerState` made registers it).
static LOCAL: OnceLock<Arc<super::metrics::Registry>> = OnceLock::new();

pub fn register(registry: Arc<super::metrics::Registry>) {
    let _ = LOCAL.set(registry);
}

/// Who this process's proxy is.
pub fn local() -> Option<&'static LocalNode> {
    LOCAL.get().map(|r| r.local())
}

/// Writes this proxy's header on `stream` and wraps it to read the peer's.
pub async fn start<S>(
    mut stream: S,
    local: &LocalNode,
) -> std::io::Result<(ExchangeStream<S>, Arc<PeerSlot>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    stream.write_all(&header(local)).await?;
    let slot = Arc::new(PeerSlot::default());
    Ok((ExchangeStream::new(stream, slot.clone()), slot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn node() -> LocalNode {
        LocalNode::from_node(&json!({
            "id": "sidecar~10.0.0.2~db-v1.data~data.svc.cluster.local",
            "metadata": {
                "NAME": "db-v1", "NAMESPACE": "data", "WORKLOAD_NAME": "db-v1",
                "CLUSTER_ID": "Kubernetes",
                "LABELS": { "app": "db", "version": "v1",
                            "service.istio.io/canonical-name": "db" }
            }
        }))
    }

    #[test]
    fn the_header_is_istio_proxys() {
        let local = node();
        let h = header(&local);
        assert_eq!(h[..4], [0x3D, 0x23, 0x04, 0x67]);
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        assert_eq!(h.len(), 8 + len);
        let any: Any = prost::Message::decode(&h[8..]).unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.Struct");
        let outer: SortedStruct = prost::Message::decode(any.value.as_slice()).unwrap();
        assert_eq!(
            outer.fields["x-envoy-peer-metadata-id"].kind,
            Some(Kind::StringValue(local.id.clone()))
        );
        assert_eq!(parse(&h[8..]).unwrap(), local.workload);
    }

    #[tokio::test]
    async fn the_peer_header_is_read_and_removed_however_it_arrives() {
        let local = node();
        let mut wire = header(&local);
        wire.extend_from_slice(b"hello after the header");
        for split in [1, 3, 9, wire.len()] {
            let (mut a, b) = tokio::io::duplex(64);
            let wire = wire.clone();
            tokio::spawn(async move {
                for piece in wire.chunks(split) {
                    a.write_all(piece).await.unwrap();
                }
            });
            let slot = Arc::new(PeerSlot::default());
            let mut s = ExchangeStream::new(b, slot.clone());
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello after the header", "split {split}");
            assert_eq!(slot.peer().as_deref(), Some(&local.workload));
        }
    }

    #[tokio::test]
    async fn bytes_without_the_magic_pass_untouched() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        });
        let slot = Arc::new(PeerSlot::default());
        let mut s = ExchangeStream::new(b, slot.clone());
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
        assert!(slot.settled());
        assert_eq!(slot.peer(), None);
        // Too short to say, then closed: passed on, no peer.
        let (mut a, b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            a.write_all(&[0x3D, 0x23]).await.unwrap();
        });
        let slot = Arc::new(PeerSlot::default());
        let mut s = ExchangeStream::new(b, slot.clone());
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [0x3D, 0x23]);
        assert_eq!(slot.peer(), None);
    }
}
