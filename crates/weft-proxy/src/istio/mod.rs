//! Istio's telemetry on the data path: who this proxy is (its node metadata), who the other side
//! of a request is (Istio's metadata exchange, in istio-proxy's wire format, so a Weft sidecar
//! and an Istio sidecar understand each other), and the standard `istio_*` metrics.
//!
//! The exchange: the client side sends `x-envoy-peer-metadata` (base64 of a serialized
//! `google.protobuf.Struct`) and `x-envoy-peer-metadata-id` (its node id) on the request; the
//! server side strips them, and answers with its own on the response only when the request
//! carried them; the client side strips those in turn.

pub mod exchange;
pub mod metrics;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use http::HeaderValue;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use weft_proto::SortedStruct;

pub static PEER_METADATA: http::HeaderName = http::HeaderName::from_static("x-envoy-peer-metadata");
pub static PEER_METADATA_ID: http::HeaderName =
    http::HeaderName::from_static("x-envoy-peer-metadata-id");

const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// Padding is optional on input, as istio-proxy decodes it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A workload as Istio's metrics label it: this proxy's (from its node metadata) or a peer's
/// (from the exchange). Empty when unknown.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub workload: String,
    pub namespace: String,
    pub cluster: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    /// `IDENTITY`, sent by newer proxies: the SPIFFE identity, when the peer has one.
    pub identity: String,
}

/// This proxy, from the bootstrap's node: its metrics labels and the exchange headers it sends.
#[derive(Debug, Default)]
pub struct LocalNode {
    pub workload: Workload,
    pub id: String,
    /// The node's `cluster` and `locality.zone` (Envoy's service cluster and zone).
    pub service_cluster: String,
    pub zone: String,
    /// `x-envoy-peer-metadata` and `x-envoy-peer-metadata-id`, ready to send, before the
    /// proxy has a workload certificate.
    pub headers: Option<(HeaderValue, HeaderValue)>,
    /// The same with `IDENTITY`, once the certificate says it (it stays the same for the
    /// process: one service account per proxy).
    with_identity: std::sync::OnceLock<Option<(HeaderValue, HeaderValue)>>,
    fields: std::collections::BTreeMap<String, Value>,
}

fn text(v: Option<&serde_json::Value>) -> String {
    v.and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl LocalNode {
    /// From the bootstrap's `node` (JSON form): `id` and the metadata keys Istio's agent
    /// writes (`NAME`, `NAMESPACE`, `WORKLOAD_NAME`, `CLUSTER_ID`, `OWNER`, `LABELS`).
    pub fn from_node(node: &serde_json::Value) -> LocalNode {
        let meta = node.get("metadata");
        let get = |k: &str| text(meta.and_then(|m| m.get(k)));
        let labels = meta.and_then(|m| m.get("LABELS"));
        let label = |k: &str| text(labels.and_then(|l| l.get(k)));
        let workload = Workload {
            workload: get("WORKLOAD_NAME"),
            namespace: get("NAMESPACE"),
            cluster: get("CLUSTER_ID"),
            app: label("app"),
            version: label("version"),
            canonical_service: label(CANONICAL_NAME),
            canonical_revision: label(CANONICAL_REVISION),
            identity: String::new(),
        };
        let id = text(node.get("id"));
        // What istio-proxy sends: these keys, the labels cut to the four it reads.
        let mut fields = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: String| {
            if !v.is_empty() {
                fields.insert(k.to_string(), string(v));
            }
        };
        put("NAME", get("NAME"));
        put("NAMESPACE", get("NAMESPACE"));
        put("WORKLOAD_NAME", get("WORKLOAD_NAME"));
        put("CLUSTER_ID", get("CLUSTER_ID"));
        put("OWNER", get("OWNER"));
        let kept: HashMap<String, Value> = [CANONICAL_NAME, CANONICAL_REVISION, "app", "version"]
            .into_iter()
            .map(|k| (k, label(k)))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), string(v)))
            .collect();
        fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: kept })),
            },
        );
        let headers = encode(&fields, &id);
        LocalNode {
            workload,
            id,
            service_cluster: text(node.get("cluster")),
            zone: text(node.get("locality").and_then(|l| l.get("zone"))),
            headers,
            with_identity: std::sync::OnceLock::new(),
            fields,
        }
    }

    /// What this proxy announces of itself, with its SPIFFE identity once it has one.
    pub fn announced(&self) -> std::collections::BTreeMap<String, Value> {
        let mut fields = self.fields.clone();
        let cert = crate::agent::secrets().current.load_full();
        if let Some(identity) = cert.as_ref().and_then(|c| c.identities.first()) {
            fields.insert("IDENTITY".into(), string(identity.clone()));
        }
        fields
    }

    /// The exchange headers to send now: with this proxy's SPIFFE identity once it has a
    /// workload certificate, so that the peer can name it (istio-proxy's `IDENTITY`).
    pub fn headers(&self) -> Option<&(HeaderValue, HeaderValue)> {
        if let Some(h) = self.with_identity.get() {
            return h.as_ref().or(self.headers.as_ref());
        }
        let cert = crate::agent::secrets().current.load_full();
        match cert.as_ref().and_then(|c| c.identities.first()) {
            Some(identity) => {
                let mut fields = self.fields.clone();
                fields.insert("IDENTITY".into(), string(identity.clone()));
                self.with_identity
                    .get_or_init(|| encode(&fields, &self.id))
                    .as_ref()
                    .or(self.headers.as_ref())
            }
            None => self.headers.as_ref(),
        }
    }
}

fn encode(
    fields: &std::collections::BTreeMap<String, Value>,
    id: &str,
) -> Option<(HeaderValue, HeaderValue)> {
    let bytes = prost::Message::encode_to_vec(&SortedStruct {
        fields: fields.clone(),
    });
    HeaderValue::from_str(&BASE64.encode(bytes))
        .ok()
        .zip(HeaderValue::from_str(id).ok())
}

fn string(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

/// A peer's `x-envoy-peer-metadata`, decoded. `None` for a value that is not base64 of a
/// `Struct`.
pub fn decode(header: &[u8]) -> Option<Workload> {
    decode_struct(&BASE64.decode(header).ok()?)
}

/// A peer's metadata from its serialized `Struct`.
pub fn decode_struct(bytes: &[u8]) -> Option<Workload> {
    let s: SortedStruct = prost::Message::decode(bytes).ok()?;
    let get = |k: &str| match s.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => v.clone(),
        _ => String::new(),
    };
    let labels = match s.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(l)) => Some(l),
        _ => None,
    };
    let label = |k: &str| match labels
        .and_then(|l| l.fields.get(k))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(v)) => v.clone(),
        _ => String::new(),
    };
    let first = |a: String, b: String| if a.is_empty() { b } else { a };
    Some(Workload {
        workload: get("WORKLOAD_NAME"),
        namespace: get("NAMESPACE"),
        cluster: get("CLUSTER_ID"),
        app: first(label("app.kubernetes.io/name"), label("app")),
        version: first(label("app.kubernetes.io/version"), label("version")),
        canonical_service: label(CANONICAL_NAME),
        canonical_revision: label(CANONICAL_REVISION),
        identity: get("IDENTITY"),
    })
}

/// Peers seen on this thread, by their header's bytes: a peer is decoded once, not on every
/// request. Bounded as istio-proxy's cache is (500); full, it starts over.
const PEER_CACHE: usize = 500;

thread_local! {
    static PEERS: RefCell<HashMap<bytes::Bytes, Arc<Workload>>> = RefCell::new(HashMap::new());
    /// The last peer seen: a connection's requests all carry the same header, and comparing
    /// it costs less than hashing it.
    static LAST: RefCell<Option<(bytes::Bytes, Arc<Workload>)>> = const { RefCell::new(None) };
}

/// The peer a header names, from this thread's cache when it was seen before.
pub fn peer(header: &HeaderValue) -> Option<Arc<Workload>> {
    let last = LAST.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|(k, _)| k.as_ref() == header.as_bytes())
            .map(|(_, p)| p.clone())
    });
    if last.is_some() {
        return last;
    }
    let found = peer_cached(header)?;
    LAST.with(|l| {
        *l.borrow_mut() = Some((
            bytes::Bytes::copy_from_slice(header.as_bytes()),
            found.clone(),
        ));
    });
    Some(found)
}

fn peer_cached(header: &HeaderValue) -> Option<Arc<Workload>> {
    PEERS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(p) = cache.get(header.as_bytes()) {
            return Some(p.clone());
        }
        let p = Arc::new(decode(header.as_bytes())?);
        if cache.len() >= PEER_CACHE {
            cache.clear();
        }
        cache.insert(bytes::Bytes::copy_from_slice(header.as_bytes()), p.clone());
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_a_node_sends_is_what_a_peer_reads() {
        let node = LocalNode::from_node(&json!({
            "id": "sidecar~10.0.0.1~web-v1.default~default.svc.cluster.local",
            "metadata": {
                "NAME": "web-v1", "NAMESPACE": "default", "WORKLOAD_NAME": "web-v1",
                "CLUSTER_ID": "Kubernetes", "INTERCEPTION_MODE": "NONE",
                "LABELS": { "app": "web", "version": "v1", "team": "a",
                            "service.istio.io/canonical-name": "web",
                            "service.istio.io/canonical-revision": "v1" }
            }
        }));
        let (meta, id) = node.headers.clone().unwrap();
        assert_eq!(
            id,
            "sidecar~10.0.0.1~web-v1.default~default.svc.cluster.local"
        );
        let peer = decode(meta.as_bytes()).unwrap();
        assert_eq!(peer, node.workload);
        assert_eq!(peer.canonical_service, "web");
        // Only the labels istio-proxy reads travel.
        let raw = BASE64.decode(meta.as_bytes()).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("team"));
        assert!(!String::from_utf8_lossy(&raw).contains("INTERCEPTION_MODE"));
    }

    #[test]
    fn padding_is_optional_and_garbage_is_no_peer() {
        let node = LocalNode::from_node(&json!({"id": "x", "metadata": {"NAMESPACE": "ns"}}));
        let (meta, _) = node.headers.unwrap();
        let unpadded = meta.to_str().unwrap().trim_end_matches('=');
        assert_eq!(decode(unpadded.as_bytes()).unwrap().namespace, "ns");
        assert!(decode(b"%%%").is_none());
        assert!(decode(BASE64.encode(b"\xff\xff\xff").as_bytes()).is_none());
    }

    #[test]
    fn istio_proxys_qualified_app_labels_win() {
        let mut fields = std::collections::BTreeMap::new();
        let mut labels = HashMap::new();
        for (k, v) in [
            ("app", "a"),
            ("app.kubernetes.io/name", "b"),
            ("version", "1"),
        ] {
            labels.insert(k.to_string(), string(v.into()));
        }
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        let bytes = prost::Message::encode_to_vec(&SortedStruct { fields });
        let peer = decode(BASE64.encode(bytes).as_bytes()).unwrap();
        assert_eq!((peer.app.as_str(), peer.version.as_str()), ("b", "1"));
    }
}
