//! Istio's standard metrics: the `istio.metadata_exchange` filter that tells each side of a
//! request who the other is, and the `istio.stats` filter that counts requests under Istio's
//! names, configured from the Telemetry API as istiod's `generateStatsConfig` does
//! (`pilot/pkg/model/telemetry.go`, `pilot/pkg/xds/filters/filters.go`).
//!
//! One difference from istiod, on purpose: both filters are `is_optional`, so that stock Envoy
//! (which has neither) still takes the config; istio-proxy and the Weft proxy run them.

use super::Inputs;
use super::pb;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use std::collections::BTreeMap;
use weft_api::types::common::Labels;
use weft_api::types::telemetry::{Telemetry, WorkloadMode};
use weft_proto::{MetricConfig, PluginConfig, TypedStruct};

pub const METADATA_EXCHANGE: &str = "istio.metadata_exchange";
pub const STATS: &str = "istio.stats";

/// Which side of a request a connection manager is, for telemetry (istiod's listener class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    SidecarInbound,
    SidecarOutbound,
    Gateway,
}

impl Class {
    /// The side a generated listener serves: inbound by its traffic direction, else a
    /// gateway's or a sidecar's outbound side.
    pub fn of_listener(
        listener: &envoy_types::pb::envoy::config::listener::v3::Listener,
        gateway: bool,
    ) -> Class {
        use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
        if listener.traffic_direction == TrafficDirection::Inbound as i32 {
            Class::SidecarInbound
        } else if gateway {
            Class::Gateway
        } else {
            Class::SidecarOutbound
        }
    }
}

/// The metrics a proxy reports: the stats filter's config for each side, or `None` where a
/// Telemetry turned every metric off.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub client: Option<PluginConfig>,
    pub server: Option<PluginConfig>,
}

/// The Telemetry API's metric names, in the order istiod sorts them (by enum name), with the
/// stats filter's name for each.
const STANDARD: [(&str, &str); 10] = [
    ("GRPC_REQUEST_MESSAGES", "request_messages_total"),
    ("GRPC_RESPONSE_MESSAGES", "response_messages_total"),
    ("REQUEST_COUNT", "requests_total"),
    ("REQUEST_DURATION", "request_duration_milliseconds"),
    ("REQUEST_SIZE", "request_bytes"),
    ("RESPONSE_SIZE", "response_bytes"),
    ("TCP_CLOSED_CONNECTIONS", "tcp_connections_closed_total"),
    ("TCP_OPENED_CONNECTIONS", "tcp_connections_opened_total"),
    ("TCP_RECEIVED_BYTES", "tcp_received_bytes_total"),
    ("TCP_SENT_BYTES", "tcp_sent_bytes_total"),
];

impl super::authz::Attached for Telemetry {
    fn selector(&self) -> Option<&weft_api::types::common::WorkloadSelector> {
        self.selector.as_ref()
    }
    fn names_targets(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// What one metric (by the stats filter's name) is told, for one mode.
#[derive(Default, Clone)]
struct Override {
    drop: bool,
    /// Tag to `Some(value expression)` (upsert) or `None` (remove).
    tags: BTreeMap<String, Option<String>>,
}

/// The Telemetry resources of `namespace` and `labels`, root namespace first, then the
/// namespace's own selector-less one, then those selecting the workload: later ones win.
pub(super) fn telemetries<'a>(
    inputs: &'a Inputs,
    namespace: &str,
    labels: &Labels,
    problem: &dyn Fn(String),
) -> Vec<&'a super::config::Obj<Telemetry>> {
    let mut list = super::authz::applicable(
        inputs,
        &inputs.config.telemetries,
        |t| t,
        namespace,
        labels,
        problem,
    );
    let root = inputs.mesh.root_namespace.as_str();
    list.sort_by_key(|t| {
        (
            t.namespace != root,
            t.spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty()),
        )
    });
    list
}

/// The stats filter's config for each side of a workload, from the Telemetry resources that
/// apply to it.
pub fn metrics(
    inputs: &Inputs,
    namespace: &str,
    labels: &Labels,
    problem: &dyn Fn(String),
) -> Metrics {
    let list = telemetries(inputs, namespace, labels, problem);
    // The lowest level that names providers decides which ones report.
    let mut providers = inputs.mesh.default_metrics_providers.clone();
    let mut interval = None;
    for t in &list {
        for m in &t.spec.metrics {
            if !m.providers.is_empty() {
                providers = provider_names(&m.providers);
            }
            if let Some(d) = m.reporting_interval {
                interval = Some(pb::duration(d));
            }
        }
    }
    if !providers.iter().any(|p| is_prometheus(inputs, p)) {
        return Metrics::default();
    }
    for p in providers.iter().filter(|p| !is_prometheus(inputs, p)) {
        problem(format!(
            "Telemetry metrics provider {p:?}: only Prometheus providers are reported (istio_* metrics on /stats/prometheus); this one is not"
        ));
    }
    // By mode: whether all metrics are off, and each metric's override.
    let mut all_off = [false, false];
    let mut per_metric: [BTreeMap<String, Override>; 2] = Default::default();
    for t in &list {
        for m in &t.spec.metrics {
            let own = m.providers.is_empty()
                || m.providers
                    .iter()
                    .any(|p| p.name.as_deref().is_some_and(|n| is_prometheus(inputs, n)));
            if !own {
                continue;
            }
            for o in &m.overrides {
                let selector = o.match_.as_ref();
                let modes: &[usize] = match selector.and_then(|s| s.mode) {
                    Some(WorkloadMode::Client) => &[0],
                    Some(WorkloadMode::Server) => &[1],
                    _ => &[0, 1],
                };
                let custom = selector.and_then(|s| s.custom_metric.clone());
                let metric = selector.and_then(|s| s.metric.clone());
                let names: Vec<String> = match (&custom, metric.as_deref()) {
                    (Some(c), _) => {
                        problem(format!(
                            "{}: customMetric {c:?}: custom metrics are not supported by the Weft proxy; the override is left out",
                            t.label()
                        ));
                        continue;
                    }
                    (None, None | Some("ALL_METRICS")) => {
                        STANDARD.iter().map(|(_, n)| (*n).to_string()).collect()
                    }
                    (None, Some(m)) => match STANDARD.iter().find(|(e, _)| *e == m) {
                        Some((_, n)) => vec![(*n).to_string()],
                        None => continue,
                    },
                };
                let everything =
                    custom.is_none() && matches!(metric.as_deref(), None | Some("ALL_METRICS"));
                for &mode in modes {
                    if everything {
                        all_off[mode] = o.disabled == Some(true);
                    }
                    for name in &names {
                        let entry = per_metric[mode].entry(name.clone()).or_default();
                        if let Some(d) = o.disabled {
                            entry.drop = d;
                        }
                        for (tag, change) in &o.tag_overrides {
                            let value = match change.operation {
                                Some(weft_api::types::telemetry::TagOperation::Remove) => None,
                                _ => Some(change.value.clone().unwrap_or_default()),
                            };
                            entry.tags.insert(tag.clone(), value);
                        }
                    }
                }
            }
        }
    }
    let config = |mode: usize| {
        (!all_off[mode]).then(|| PluginConfig {
            tcp_reporting_duration: interval,
            metrics: per_metric[mode]
                .iter()
                .filter(|(_, o)| o.drop || !o.tags.is_empty())
                .map(|(name, o)| MetricConfig {
                    name: name.clone(),
                    dimensions: o
                        .tags
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                        .collect(),
                    tags_to_remove: o
                        .tags
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(k, _)| k.clone())
                        .collect(),
                    drop: o.drop,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    let mut out = Metrics {
        client: config(0),
        server: config(1),
    };
    // istiod lists the metrics by their Telemetry enum name.
    for c in [&mut out.client, &mut out.server].into_iter().flatten() {
        c.metrics.sort_by_key(|m| {
            STANDARD
                .iter()
                .position(|(_, n)| *n == m.name)
                .unwrap_or(STANDARD.len())
        });
    }
    out
}

/// The names of a Telemetry entry's `providers`.
pub(super) fn provider_names(refs: &[weft_api::types::telemetry::ProviderRef]) -> Vec<String> {
    refs.iter().filter_map(|p| p.name.clone()).collect()
}

/// Whether a Telemetry entry whose `match.mode` is `selected` applies to the `mode` side; no
/// mode, or CLIENT_AND_SERVER, applies to both.
pub(super) fn applies_to(selected: Option<WorkloadMode>, mode: WorkloadMode) -> bool {
    matches!(selected, None | Some(WorkloadMode::ClientAndServer)) || selected == Some(mode)
}

/// A provider of `defaultProviders` or a Telemetry names Prometheus: Istio's built-in
/// `prometheus`, or an extension provider of that kind.
fn is_prometheus(inputs: &Inputs, name: &str) -> bool {
    inputs
        .mesh
        .extension_providers
        .iter()
        .find(|p| p.name == name)
        .map_or(name == "prometheus", |p| p.other.contains_key("prometheus"))
}

/// `istio.metadata_exchange` for a connection manager of `class`: the inbound side learns its
/// caller from the request and answers with itself; every other side announces itself on the
/// request and learns the upstream from the response.
pub fn metadata_exchange(class: Class) -> HttpFilter {
    let headers = || pb::object([("istio_headers", pb::object([]))]);
    let discovery = || {
        pb::list(vec![
            headers(),
            pb::object([("workload_discovery", pb::object([]))]),
        ])
    };
    let fields = match class {
        Class::SidecarInbound => [
            ("downstream_discovery", discovery()),
            ("downstream_propagation", pb::list(vec![headers()])),
        ],
        Class::SidecarOutbound | Class::Gateway => [
            ("upstream_discovery", discovery()),
            ("upstream_propagation", pb::list(vec![headers()])),
        ],
    };
    let config = TypedStruct {
        type_url: weft_proto::PEER_METADATA.into(),
        value: Some(weft_proto::SortedStruct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }),
    };
    optional(METADATA_EXCHANGE, pb::any(&config))
}

/// `istio.stats` for a connection manager of `class`, unless Telemetry turned it off there.
pub fn stats(metrics: &Metrics, class: Class) -> Option<HttpFilter> {
    let mut config = match class {
        Class::SidecarInbound => metrics.server.clone()?,
        Class::SidecarOutbound | Class::Gateway => metrics.client.clone()?,
    };
    // The server side and gateways name the destination service from the cluster only.
    config.disable_host_header_fallback = class != Class::SidecarOutbound;
    Some(optional(STATS, pb::any(&config)))
}

fn optional(name: &str, config: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        is_optional: true,
        ..Default::default()
    }
}

/// The outbound cluster of an extension provider's `service` (`host` or `namespace/host`) and
/// `port`, and the host's full name: where istiod's `LookupCluster` sends a collector's data.
pub fn provider_cluster(service: &str, port: u64, namespace: &str) -> (String, String) {
    let (host, ns) = match service.split_once('/') {
        Some((ns, host)) => (host.to_string(), ns.to_string()),
        None => (service.to_string(), namespace.to_string()),
    };
    let host = weft_registry::host::fqdn(&host, &ns, super::config::DOMAIN_SUFFIX);
    (
        super::cluster::outbound_name(u16::try_from(port).unwrap_or(0), "", &host),
        host,
    )
}

/// `envoy.tcp.metadataexchange.config.MetadataExchange`, as istiod's `xdsfilters.tcpMx`.
fn tcp_exchange_config() -> envoy_types::pb::google::protobuf::Any {
    pb::any(&TypedStruct {
        type_url: "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange".into(),
        value: Some(weft_proto::SortedStruct {
            fields: [
                ("enable_discovery".to_string(), pb::boolean(true)),
                ("protocol".to_string(), pb::string("istio-peer-exchange")),
            ]
            .into_iter()
            .collect(),
        }),
    })
}

/// istio-proxy's network filters, for a proxy that has them (Weft's, or Istio's own): the
/// metadata exchange on every inbound filter chain (first, as istiod's
/// `buildInboundNetworkFilters` and `buildInboundNetworkFiltersForHTTP` put it) and on every
/// outbound cluster (`applyMetadataExchange`), and `istio.stats` just before each `tcp_proxy`
/// (`buildCompleteNetworkFilters`, the passthrough and black hole chains too). Stock Envoy
/// has neither, and a network filter cannot be optional, so it gets none of them.
pub fn tcp(metrics: &Metrics, gateway: bool, out: &mut super::Generated) {
    use envoy_types::pb::envoy::config::cluster::v3::Filter as ClusterFilter;
    use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
    let network = |name: &str, any| Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(any)),
    };
    for listener in out.listeners.values_mut() {
        let class = Class::of_listener(listener, gateway);
        let inbound = class == Class::SidecarInbound;
        let stats = match class {
            Class::SidecarInbound => metrics.server.clone(),
            _ => metrics.client.clone(),
        }
        .map(|mut c| {
            c.disable_host_header_fallback = class != Class::SidecarOutbound;
            network(STATS, pb::any(&c))
        });
        for chain in &mut listener.filter_chains {
            let last = chain.filters.len().saturating_sub(1);
            if let (Some(stats), Some(terminal)) = (&stats, chain.filters.last())
                && terminal.name == "envoy.filters.network.tcp_proxy"
            {
                chain.filters.insert(last, stats.clone());
            }
            if inbound {
                chain
                    .filters
                    .insert(0, network(METADATA_EXCHANGE, tcp_exchange_config()));
            }
        }
    }
    for (name, cluster) in &mut out.clusters {
        if name.starts_with("outbound|") || name == "PassthroughCluster" {
            cluster.filters.push(ClusterFilter {
                name: METADATA_EXCHANGE.into(),
                typed_config: Some(tcp_exchange_config()),
                ..Default::default()
            });
        }
    }
}
