//! HCM tracing as istiod writes it (`pilot/pkg/networking/core/tracing.go`,
//! `pilot/pkg/model/telemetry.go`): the provider the Telemetry API (or
//! `defaultProviders.tracing`) names, Zipkin or OpenTelemetry from `extensionProviders`;
//! `randomSamplingPercentage` (else `defaultConfig.tracing.sampling`, else 1%); Istio's own
//! tags and Telemetry's `customTags`. A proxy with no tracing provider gets no `tracing`.

use super::Inputs;
use super::pb;
use super::telemetry::Class;
use envoy_types::pb::envoy::config::core::v3::{HttpService, HttpUri, http_uri};
use envoy_types::pb::envoy::config::trace::v3::{
    OpenTelemetryConfig, ZipkinConfig, tracing, zipkin_config,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::tracing::v3::{CustomTag, custom_tag};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use std::collections::BTreeMap;
use weft_api::types::common::Labels;
use weft_api::types::telemetry::{CustomTag as IstioTag, WorkloadMode};

/// The tracing each side of a workload gets.
#[derive(Debug, Clone, Default)]
pub struct Tracings {
    pub client: Option<Tracing>,
    pub server: Option<Tracing>,
}

impl Tracings {
    pub fn for_class(&self, class: Class) -> Option<Tracing> {
        match class {
            Class::SidecarInbound => self.server.clone(),
            Class::SidecarOutbound | Class::Gateway => self.client.clone(),
        }
    }
}

/// What Telemetry's tracing says for one side, merged from root to workload.
#[derive(Default)]
struct Merged {
    providers: Vec<String>,
    sampling: Option<f64>,
    disabled: bool,
    tags: BTreeMap<String, IstioTag>,
}

/// `defaultConfig.tracing.sampling`, when the mesh config sets it.
fn mesh_sampling(inputs: &Inputs) -> Option<f64> {
    inputs.mesh.default_tracing_sampling
}

pub fn tracings(
    inputs: &Inputs,
    namespace: &str,
    labels: &Labels,
    workload: &str,
    problem: &dyn Fn(String),
) -> Tracings {
    let list = super::telemetry::telemetries(inputs, namespace, labels, problem);
    let defaults = inputs.mesh.default_tracing_providers.clone();
    if defaults.is_empty() && list.iter().all(|t| t.spec.tracing.is_empty()) {
        return Tracings::default();
    }
    let merge = |mode: WorkloadMode| {
        let mut m = Merged {
            providers: defaults.clone(),
            ..Merged::default()
        };
        for t in &list {
            for entry in &t.spec.tracing {
                if !super::telemetry::applies_to(entry.match_.as_ref().and_then(|m| m.mode), mode) {
                    continue;
                }
                let named = super::telemetry::provider_names(&entry.providers);
                if !named.is_empty() {
                    m.providers = named;
                }
                if let Some(s) = entry.random_sampling_percentage {
                    m.sampling = Some(s);
                }
                if let Some(d) = entry.disable_span_reporting {
                    m.disabled = d;
                }
                for (k, v) in &entry.custom_tags {
                    m.tags.insert(k.clone(), v.clone());
                }
                if entry.use_request_id_for_trace_sampling == Some(false) {
                    problem(format!(
                        "{}: tracing useRequestIdForTraceSampling: false is not applied: proxies decide from the request id",
                        t.label()
                    ));
                }
            }
        }
        m
    };
    let build = |m: Merged| -> Option<Tracing> {
        if m.disabled {
            return None;
        }
        let name = m.providers.first()?;
        let provider = provider(inputs, name, namespace, labels, workload, problem)?;
        let (http, max_tag) = provider;
        let sampling = m.sampling.or_else(|| mesh_sampling(inputs)).unwrap_or(1.0);
        let sampling = if sampling > 100.0 { 1.0 } else { sampling };
        let mut tags = istio_tags(inputs, namespace, labels, workload);
        for (tag, t) in &m.tags {
            let ty = match (&t.literal, &t.environment, &t.header) {
                (Some(l), _, _) => custom_tag::Type::Literal(custom_tag::Literal {
                    value: l.value.clone().unwrap_or_default(),
                }),
                (None, Some(e), _) => custom_tag::Type::Environment(custom_tag::Environment {
                    name: e.name.clone().unwrap_or_default(),
                    default_value: e.default_value.clone().unwrap_or_default(),
                }),
                (None, None, Some(h)) => custom_tag::Type::RequestHeader(custom_tag::Header {
                    name: h.name.clone().unwrap_or_default(),
                    default_value: h.default_value.clone().unwrap_or_default(),
                }),
                _ => {
                    problem(format!(
                        "tracing customTags {tag}: only literal, environment and header tags are applied"
                    ));
                    continue;
                }
            };
            tags.push(CustomTag {
                tag: tag.clone(),
                r#type: Some(ty),
            });
        }
        tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        Some(Tracing {
            client_sampling: Some(Percent { value: 100.0 }),
            random_sampling: Some(Percent { value: sampling }),
            overall_sampling: Some(Percent { value: 100.0 }),
            custom_tags: tags,
            max_path_tag_length: max_tag.map(|v| UInt32Value { value: v }),
            provider: Some(http),
            ..Default::default()
        })
    };
    Tracings {
        client: build(merge(WorkloadMode::Client)),
        server: build(merge(WorkloadMode::Server)),
    }
}

/// istiod's literal tags: `istio.canonical_revision`, `.canonical_service`, `.mesh_id`,
/// `.namespace`, `.cluster_id`.
fn istio_tags(inputs: &Inputs, namespace: &str, labels: &Labels, workload: &str) -> Vec<CustomTag> {
    let literal = |tag: &str, value: String| CustomTag {
        tag: tag.into(),
        r#type: Some(custom_tag::Type::Literal(custom_tag::Literal { value })),
    };
    let label = |k: &str| labels.get(k).cloned();
    let _ = workload;
    vec![
        literal(
            "istio.canonical_revision",
            label("service.istio.io/canonical-revision").unwrap_or_else(|| "latest".into()),
        ),
        literal(
            "istio.canonical_service",
            label("service.istio.io/canonical-name").unwrap_or_else(|| "unknown".into()),
        ),
        literal(
            "istio.mesh_id",
            inputs
                .mesh
                .mesh_id
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        ),
        literal("istio.namespace", namespace.to_string()),
        literal("istio.cluster_id", "Kubernetes".into()),
    ]
}

/// The Envoy tracer of extension provider `name`, and its `maxTagLength`.
fn provider(
    inputs: &Inputs,
    name: &str,
    namespace: &str,
    labels: &Labels,
    workload: &str,
    problem: &dyn Fn(String),
) -> Option<(tracing::Http, Option<u32>)> {
    let Some(p) = inputs
        .mesh
        .extension_providers
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
    else {
        problem(format!(
            "tracing provider {name:?} is not one of the mesh's extensionProviders; nothing is traced"
        ));
        return None;
    };
    let get =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let port = |v: &serde_json::Value| v.get("port").and_then(serde_json::Value::as_u64);
    let cluster =
        |service: &str, port: u64| super::telemetry::provider_cluster(service, port, namespace);
    if let Some(z) = p.other.get("zipkin") {
        let (Some(service), Some(port)) = (get(z, "service"), port(z)) else {
            problem(format!(
                "tracing provider {name:?}: zipkin needs service and port"
            ));
            return None;
        };
        let (collector_cluster, host) = cluster(&service, port);
        let config = ZipkinConfig {
            collector_cluster,
            collector_endpoint: get(z, "path").unwrap_or_else(|| "/api/v2/spans".into()),
            trace_id_128bit: !z
                .get("enable64bitTraceId")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            shared_span_context: Some(BoolValue { value: false }),
            collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson as i32,
            collector_hostname: host,
            ..Default::default()
        };
        let max = z.get("maxTagLength").and_then(serde_json::Value::as_u64);
        return Some((
            tracing::Http {
                name: "envoy.tracers.zipkin".into(),
                config_type: Some(tracing::http::ConfigType::TypedConfig(pb::any(&config))),
            },
            max.and_then(|m| u32::try_from(m).ok()),
        ));
    }
    if let Some(o) = p.other.get("opentelemetry") {
        let (Some(service), Some(port)) = (get(o, "service"), port(o)) else {
            problem(format!(
                "tracing provider {name:?}: opentelemetry needs service and port"
            ));
            return None;
        };
        let (cluster_name, host) = cluster(&service, port);
        let app = labels
            .get("service.istio.io/canonical-name")
            .or_else(|| labels.get("app"))
            .cloned()
            .unwrap_or_else(|| workload.to_string());
        let mut config = OpenTelemetryConfig {
            service_name: format!("{app}.{namespace}"),
            ..Default::default()
        };
        match o.get("http") {
            Some(http) => {
                let path = get(http, "path").unwrap_or_else(|| "/v1/traces".into());
                let path = if path.starts_with('/') {
                    path
                } else {
                    format!("/{path}")
                };
                config.http_service = Some(HttpService {
                    http_uri: Some(HttpUri {
                        uri: format!("http://{host}:{port}{path}"),
                        timeout: Some(pb::millis(5000)),
                        http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster_name)),
                    }),
                    ..Default::default()
                });
            }
            None => {
                config.grpc_service = Some(envoy_types::pb::envoy::config::core::v3::GrpcService {
                    target_specifier: Some(
                        envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier::EnvoyGrpc(
                            envoy_types::pb::envoy::config::core::v3::grpc_service::EnvoyGrpc {
                                cluster_name,
                                authority: host,
                                ..Default::default()
                            },
                        ),
                    ),
                    ..Default::default()
                });
            }
        }
        let max = o.get("maxTagLength").and_then(serde_json::Value::as_u64);
        return Some((
            tracing::Http {
                name: "envoy.tracers.opentelemetry".into(),
                config_type: Some(tracing::http::ConfigType::TypedConfig(pb::any(&config))),
            },
            max.and_then(|m| u32::try_from(m).ok()),
        ));
    }
    problem(format!(
        "tracing provider {name:?}: only zipkin and opentelemetry providers are applied; nothing is traced"
    ));
    None
}
