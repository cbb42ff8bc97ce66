//! `istio.metadata_exchange` (istio-proxy's `io.istio.http.peer_metadata.Config`, given as a
//! `TypedStruct`): each side of a request learns who the other is from Istio's headers
//! (`crate::istio`). Discovery reads and strips the peer's headers (the request's on the server
//! side, the response's on the client side); propagation sends this proxy's own (on the
//! request from the client side; on the response from the server side, only when the request
//! carried them).

use crate::config::FieldError;
use crate::istio::{PEER_METADATA, PEER_METADATA_ID, Workload};
use envoy_types::pb::google::protobuf::value::Kind;
use std::sync::Arc;

pub const TYPE: &str = "io.istio.http.peer_metadata.Config";

#[derive(Debug)]
pub struct MetadataExchange {
    downstream_discovery: bool,
    downstream_propagation: bool,
    upstream_discovery: bool,
    upstream_propagation: bool,
    /// Who this proxy is, for its `x-envoy-peer-metadata` and `-id`.
    registry: Arc<crate::istio::metrics::Registry>,
}

/// What the exchange learnt about one request, for the stats filter.
#[derive(Debug, Default)]
pub struct Exchange {
    /// The other side: the caller on the server side, the upstream on the client side.
    pub peer: Option<Arc<Workload>>,
    /// The request carried the peer's metadata / id: the response carries this proxy's.
    echo_metadata: bool,
    echo_id: bool,
}

/// Which exchange methods a list (`downstream_discovery`...) names: Istio's headers or not.
/// Workload discovery (by address, from the control plane's workload metadata) finds nothing
/// here, as in an istio-proxy without that service; baggage is refused.
fn methods(
    list: &[envoy_types::pb::google::protobuf::Value],
    path: &str,
) -> Result<bool, FieldError> {
    let mut headers = false;
    for (i, m) in list.iter().enumerate() {
        let Some(Kind::StructValue(s)) = &m.kind else {
            return Err(FieldError::new(format!("{path}[{i}]"), "must be an object"));
        };
        for (k, v) in &s.fields {
            match k.as_str() {
                "istio_headers" => {
                    let skip = match &v.kind {
                        Some(Kind::StructValue(o)) => o.fields.get("skip_external_clusters"),
                        _ => None,
                    };
                    if matches!(
                        skip.and_then(|s| s.kind.as_ref()),
                        Some(Kind::BoolValue(true))
                    ) {
                        return Err(FieldError::new(
                            format!("{path}[{i}].istio_headers.skip_external_clusters"),
                            "is not supported by the Weft proxy",
                        ));
                    }
                    headers = true;
                }
                "workload_discovery" => {}
                other => {
                    return Err(FieldError::new(
                        format!("{path}[{i}].{other}"),
                        "is not supported by the Weft proxy",
                    ));
                }
            }
        }
    }
    Ok(headers)
}

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: None,
    build: |any, cx| {
        let ts: weft_proto::TypedStruct = crate::config::convert::decode_any(any, cx.path)?;
        let mut f = MetadataExchange {
            downstream_discovery: false,
            downstream_propagation: false,
            upstream_discovery: false,
            upstream_propagation: false,
            registry: cx.store.istio.clone(),
        };
        for (k, v) in ts.value.map(|s| s.fields).unwrap_or_default() {
            let path = format!("{}.value.{k}", cx.path);
            let list = match &v.kind {
                Some(Kind::ListValue(l)) => l.values.as_slice(),
                _ if k == "shared_with_upstream" || k == "additional_labels" => &[],
                _ => return Err(FieldError::new(path, "must be a list")),
            };
            let slot = match k.as_str() {
                "downstream_discovery" => &mut f.downstream_discovery,
                "downstream_propagation" => &mut f.downstream_propagation,
                "upstream_discovery" => &mut f.upstream_discovery,
                "upstream_propagation" => &mut f.upstream_propagation,
                _ => return Err(FieldError::new(path, "is not supported by the Weft proxy")),
            };
            *slot = methods(list, &path)?;
        }
        Ok(Arc::new(f))
    },
    build_per_route: |_, cx| {
        Err(FieldError::new(
            cx.path,
            "per-route peer metadata config is not supported by the Weft proxy",
        ))
    },
    supported: &[("udpa.type.v1.TypedStruct", "type_url value")],
};

impl super::HttpFilter for MetadataExchange {
    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        _: super::PerRoute<'_>,
    ) -> super::Decode {
        let headers = &mut cx.head.headers;
        if self.downstream_discovery {
            let mut x = Exchange::default();
            if let Some(v) = headers.remove(&PEER_METADATA) {
                x.peer = crate::istio::peer(&v);
                x.echo_metadata = true;
            }
            x.echo_id = headers.remove(&PEER_METADATA_ID).is_some();
            cx.stream.exchange = Some(x);
        }
        if self.upstream_propagation
            && let Some((meta, id)) = self.registry.local().headers()
        {
            headers.insert(PEER_METADATA.clone(), meta.clone());
            headers.insert(PEER_METADATA_ID.clone(), id.clone());
        }
        super::Decode::Continue
    }

    fn on_response(&self, stream: &mut super::Stream, response: &mut http::response::Parts) {
        let headers = &mut response.headers;
        if self.upstream_discovery {
            let peer = headers
                .remove(&PEER_METADATA)
                .and_then(|v| crate::istio::peer(&v));
            headers.remove(&PEER_METADATA_ID);
            stream.exchange = Some(Exchange {
                peer,
                ..Exchange::default()
            });
        }
        if self.downstream_propagation
            && let (Some((meta, id)), Some(x)) = (self.registry.local().headers(), &stream.exchange)
        {
            if x.echo_metadata {
                headers.insert(PEER_METADATA.clone(), meta.clone());
            }
            if x.echo_id {
                headers.insert(PEER_METADATA_ID.clone(), id.clone());
            }
        }
    }
}
