//! `istio.stats` (istio-proxy's `stats.PluginConfig`): Istio's standard request metrics,
//! counted when a request is done (`crate::istio::metrics`). The reporter is the listener's
//! direction: `destination` on inbound listeners, `source` elsewhere (outbound, gateways).
//!
//! Telemetry overrides: `drop`, `tags_to_remove`, and `dimensions` whose value is a string
//! literal (`"'canary'"`) or a request attribute (`request.host`, `request.method`,
//! `request.path`, `request.url_path`, `request.scheme`, `request.protocol`,
//! `request.headers['NAME']`, `response.code`, `destination.port`, `source.address`, bare or
//! in `string(...)`); any other expression is refused, naming it, rather than reported as
//! `unknown` on every request. A missing attribute (a header not sent) is `unknown`.

use crate::config::FieldError;
use crate::istio::metrics::{
    Attribute, Destination, Dimension, Key, MetricOverride, Principal, Registry, Sample,
    StatsConfig,
};
use std::sync::Arc;

pub const TYPE: &str = "stats.PluginConfig";

#[derive(Debug)]
pub struct IstioStats {
    config: Arc<StatsConfig>,
    registry: Arc<Registry>,
}

const METRICS: [&str; 10] = [
    "requests_total",
    "request_duration_milliseconds",
    "request_bytes",
    "response_bytes",
    "request_messages_total",
    "response_messages_total",
    "tcp_sent_bytes_total",
    "tcp_received_bytes_total",
    "tcp_connections_opened_total",
    "tcp_connections_closed_total",
];

/// A CEL string literal, single- or double-quoted.
fn literal(expr: &str) -> Option<String> {
    let e = expr.trim();
    let inner = e
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| e.strip_prefix('"').and_then(|r| r.strip_suffix('"')))?;
    (!inner.contains(['\'', '"', '\\'])).then(|| inner.to_string())
}

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: None,
    build: |any, cx| {
        let pb: weft_proto::PluginConfig = crate::config::convert::decode_any(any, cx.path)?;
        Ok(Arc::new(IstioStats {
            config: Arc::new(stats_config(&pb, cx.path, cx.inbound)?),
            registry: cx.store.istio.clone(),
        }))
    },
    build_per_route: |_, cx| {
        Err(FieldError::new(
            cx.path,
            "per-route stats config is not supported by the Weft proxy",
        ))
    },
    supported: &[
        (
            TYPE,
            "disable_host_header_fallback tcp_reporting_duration metrics definitions reporter",
        ),
        (
            "stats.MetricConfig",
            "dimensions name tags_to_remove match drop",
        ),
    ],
};

/// A `PluginConfig` (the HTTP filter's or the network filter's) on a listener that is
/// inbound or not.
pub fn stats_config(
    pb: &weft_proto::PluginConfig,
    path: &str,
    inbound: bool,
) -> Result<StatsConfig, FieldError> {
    if !pb.definitions.is_empty() {
        return Err(FieldError::new(
            format!("{path}.definitions"),
            "custom metrics are not supported by the Weft proxy",
        ));
    }
    if pb.reporter != 0 {
        return Err(FieldError::new(
            format!("{path}.reporter"),
            "SERVER_GATEWAY (waypoints) is not supported by the Weft proxy",
        ));
    }
    let mut overrides = Vec::new();
    let mut attributes = Vec::new();
    for (i, m) in pb.metrics.iter().enumerate() {
        let mpath = format!("{path}.metrics[{i}]");
        if !m.name.is_empty() && !METRICS.contains(&m.name.as_str()) {
            return Err(FieldError::new(
                format!("{mpath}.name"),
                format!("{:?} is not one of Istio's standard metrics", m.name),
            ));
        }
        if !m.r#match.is_empty() {
            return Err(FieldError::new(
                format!("{mpath}.match"),
                "is not supported by the Weft proxy",
            ));
        }
        let mut dimensions = Vec::new();
        for (tag, expr) in &m.dimensions {
            let value = match (literal(expr), Attribute::parse(expr)) {
                (Some(v), _) => Dimension::Literal(v),
                (None, Some(a)) => {
                    let i = match attributes.iter().position(|x| *x == a) {
                        Some(i) => i,
                        None => {
                            attributes.push(a);
                            attributes.len() - 1
                        }
                    };
                    Dimension::Attribute(i)
                }
                (None, None) => {
                    return Err(FieldError::new(
                        format!("{mpath}.dimensions[{tag}]"),
                        format!(
                            "{expr:?}: the Weft proxy takes string literals (\"'v1'\") and request attributes (request.host, request.headers['x'], response.code...) as tag values"
                        ),
                    ));
                }
            };
            dimensions.push((tag.clone(), value));
        }
        overrides.push((
            m.name.clone(),
            MetricOverride {
                drop: m.drop,
                remove: m.tags_to_remove.clone(),
                dimensions,
            },
        ));
    }
    Ok(StatsConfig {
        server: inbound,
        disable_host_header_fallback: pb.disable_host_header_fallback,
        overrides,
        attributes,
    })
}

/// Clusters whose name is the service name (istio-proxy's list).
const SPECIAL_CLUSTERS: [&str; 5] = [
    "BlackHoleCluster",
    "PassthroughCluster",
    "InboundPassthroughCluster",
    "InboundPassthroughClusterIpv4",
    "InboundPassthroughClusterIpv6",
];

/// The name a special cluster (passthrough, black hole) gives `destination_service_name`.
pub(crate) fn special_cluster(name: &str) -> Option<&'static str> {
    SPECIAL_CLUSTERS.iter().copied().find(|s| *s == name)
}

impl super::HttpFilter for IstioStats {
    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        _: super::PerRoute<'_>,
    ) -> super::Decode {
        // The request's side of the attributes the overrides read, kept for when it is done.
        if !self.config.attributes.is_empty() {
            let head = &*cx.head;
            let values: Vec<Box<str>> = self
                .config
                .attributes
                .iter()
                .map(|a| {
                    let text = |v: Option<&http::HeaderValue>| {
                        v.and_then(|v| v.to_str().ok())
                            .map_or_else(|| "unknown".into(), Box::from)
                    };
                    match a {
                        Attribute::RequestHost => head
                            .uri
                            .authority()
                            .map(|a| Box::from(a.as_str()))
                            .unwrap_or_else(|| text(head.headers.get(http::header::HOST))),
                        Attribute::RequestMethod => head.method.as_str().into(),
                        Attribute::RequestPath => {
                            head.uri.path_and_query().map_or("/", |p| p.as_str()).into()
                        }
                        Attribute::RequestUrlPath => head.uri.path().into(),
                        Attribute::RequestScheme => head
                            .uri
                            .scheme_str()
                            .unwrap_or(if cx.conn.tls { "https" } else { "http" })
                            .into(),
                        Attribute::RequestProtocol => format!("{:?}", head.version).into(),
                        Attribute::RequestHeader(name) => text(head.headers.get(name)),
                        Attribute::DestinationPort => cx.conn.local.port().to_string().into(),
                        Attribute::SourceAddress => cx.remote.ip().to_string().into(),
                        // Filled in when the response is done.
                        Attribute::ResponseCode => "".into(),
                    }
                })
                .collect();
            cx.stream.stats_attributes = Some(values.into_boxed_slice());
        }
        super::Decode::Continue
    }

    fn reads_peer(&self) -> bool {
        self.config.server
    }

    fn completes(&self) -> bool {
        true
    }

    fn on_complete(&self, done: &super::Completed<'_>) {
        let c = &self.config;
        let host = (!c.disable_host_header_fallback)
            .then(|| done.authority.cloned())
            .flatten();
        let cluster_name = done.cluster.map(|cl| cl.config.name.as_str());
        let special = match (done.route_name, cluster_name) {
            ("block_all", _) => Some("BlackHoleCluster"),
            ("allow_any", _) => Some("PassthroughCluster"),
            (_, Some(n)) => SPECIAL_CLUSTERS.iter().copied().find(|s| *s == n),
            _ => None,
        };
        let destination = match (
            special,
            done.cluster.and_then(|cl| cl.config.istio_service.clone()),
        ) {
            (Some(name), _) => Destination::Special(name, host),
            (None, Some(s)) => Destination::Cluster(s),
            (None, None) => host.map_or(Destination::None, Destination::Host),
        };
        let peer = done.stream.exchange.as_ref().and_then(|x| x.peer.clone());
        let (peer_principal, local_principal) = if c.server {
            let peer_id = done
                .conn
                .peer_identity
                .clone()
                .filter(|p| !p.uris.is_empty())
                .map_or(Principal::None, Principal::Cert);
            (peer_id, done.conn.tls.then(local_identity).flatten())
        } else {
            // The upstream spoke the mesh's mTLS: this proxy's identity on its side, the one
            // the peer announced on the other.
            let mtls =
                matches!((done.cluster, done.host), (Some(cl), Some(h)) if cl.tls_for(h).is_some());
            let peer_id = peer
                .clone()
                .filter(|p| mtls && !p.identity.is_empty())
                .map_or(Principal::None, Principal::Announced);
            (peer_id, mtls.then(local_identity).flatten())
        };
        let key = Key {
            config: c.clone(),
            peer,
            destination,
            peer_principal,
            local_principal,
            tcp: false,
            grpc: done.stream.grpc,
            code: done.status,
            grpc_status: done.grpc_status,
            flags: done.stream.flags,
            attributes: done.stream.stats_attributes.as_ref().map(|values| {
                c.attributes
                    .iter()
                    .zip(values.iter())
                    .map(|(a, v)| match a {
                        Attribute::ResponseCode => done.status.to_string().into(),
                        _ => v.clone(),
                    })
                    .collect()
            }),
        };
        self.registry.record(
            key,
            &Sample {
                duration_ms: done.duration.as_millis() as u64,
                request_bytes: done.bytes_received,
                response_bytes: done.bytes_sent,
                messages: done
                    .stream
                    .grpc_messages
                    .as_ref()
                    .filter(|m| m.emitted)
                    .map(|m| {
                        (
                            m.request.load(std::sync::atomic::Ordering::Relaxed),
                            m.response.load(std::sync::atomic::Ordering::Relaxed),
                        )
                    }),
            },
        );
    }
}

/// This proxy's SPIFFE identity: its workload certificate's, when it has one. Kept per thread
/// until the certificate changes, so a request copies no string for it.
pub(crate) fn local_identity() -> Option<Arc<str>> {
    thread_local! {
        static IDENTITY: std::cell::RefCell<(usize, Option<Arc<str>>)> =
            const { std::cell::RefCell::new((0, None)) };
    }
    let cert = crate::agent::secrets().current.load();
    let at = cert.as_ref().map_or(0, |c| Arc::as_ptr(c) as usize);
    IDENTITY.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != at {
            let id = cert
                .as_ref()
                .and_then(|c| c.identities.first())
                .map(|s| Arc::from(s.as_str()));
            *cached = (at, id);
        }
        cached.1.clone()
    })
}
