//! An HCM's `tracing` → `trace::Tracer`: the Zipkin tracer (HTTP JSON v2 to a collector
//! cluster) and the OpenTelemetry tracer (OTLP over HTTP or gRPC), with Envoy's sampling settings and
//! custom tags. What the proxy does not do (samplers, spawned upstream spans,
//! metadata tags) is refused, naming the field.

use super::{Result, decode_any, type_name};
use crate::config::FieldError;
use crate::trace::{Collector, Provider, TagValue, Tracer, export::Format};
use envoy_types::pb::envoy::config::core::v3::{grpc_service, http_uri};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, ZipkinConfig};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::tracing::v3::custom_tag;
use std::sync::Arc;

const ZIPKIN: &str = "envoy.config.trace.v3.ZipkinConfig";
const OPENTELEMETRY: &str = "envoy.config.trace.v3.OpenTelemetryConfig";

/// A percentage as Envoy keeps it: out of 10 000.
fn ten_thousandths(p: Option<&envoy_types::pb::envoy::r#type::v3::Percent>) -> u32 {
    p.map_or(10_000, |p| {
        (p.value * 100.0).round().clamp(0.0, 10_000.0) as u32
    })
}

pub(super) fn tracer(t: &Tracing, path: &str, inbound: bool) -> Result<Option<Arc<Tracer>>> {
    if t.spawn_upstream_span.is_some_and(|b| b.value) {
        return Err(FieldError::new(
            format!("{path}.spawn_upstream_span"),
            "upstream spans are not supported by the Weft proxy",
        ));
    }
    // Without a provider Envoy traces nothing.
    let Some(provider) = &t.provider else {
        return Ok(None);
    };
    let ppath = format!("{path}.provider.typed_config");
    let Some(envoy_types::pb::envoy::config::trace::v3::tracing::http::ConfigType::TypedConfig(
        any,
    )) = &provider.config_type
    else {
        return Err(FieldError::new(ppath, "is required"));
    };
    let (provider, collector) = match type_name(any) {
        ZIPKIN => {
            let z: ZipkinConfig = decode_any(any, &ppath)?;
            if z.collector_endpoint_version != 1 {
                return Err(FieldError::new(
                    format!("{ppath}.collector_endpoint_version"),
                    "only HTTP_JSON is supported by the Weft proxy",
                ));
            }
            if z.collector_cluster.is_empty() {
                return Err(FieldError::new(
                    format!("{ppath}.collector_cluster"),
                    "is required",
                ));
            }
            (
                Provider::Zipkin {
                    trace_id_128bit: z.trace_id_128bit,
                    shared_span_context: z.shared_span_context.is_none_or(|b| b.value),
                },
                Collector {
                    host: if z.collector_hostname.is_empty() {
                        z.collector_cluster.clone()
                    } else {
                        z.collector_hostname.clone()
                    },
                    cluster: z.collector_cluster,
                    path: z.collector_endpoint,
                    format: Format::ZipkinJson,
                },
            )
        }
        OPENTELEMETRY => {
            let o: OpenTelemetryConfig = decode_any(any, &ppath)?;
            if o.sampler.is_some() {
                return Err(FieldError::new(
                    format!("{ppath}.sampler"),
                    "samplers are not supported by the Weft proxy",
                ));
            }
            let collector = match (&o.grpc_service, &o.http_service) {
                (Some(_), Some(_)) => {
                    return Err(FieldError::new(
                        ppath,
                        "only one of grpc_service and http_service may be set",
                    ));
                }
                (Some(g), None) => {
                    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) = &g.target_specifier
                    else {
                        return Err(FieldError::new(
                            format!("{ppath}.grpc_service.envoy_grpc"),
                            "is required (google_grpc is not supported by the Weft proxy)",
                        ));
                    };
                    Collector {
                        cluster: e.cluster_name.clone(),
                        path: String::new(),
                        host: e.authority.clone(),
                        format: Format::OtlpGrpc,
                    }
                }
                (None, http_service) => {
                    let Some(uri) = http_service.as_ref().and_then(|h| h.http_uri.as_ref()) else {
                        return Err(FieldError::new(
                            format!("{ppath}.http_service"),
                            "is required",
                        ));
                    };
                    let Some(http_uri::HttpUpstreamType::Cluster(cluster)) =
                        &uri.http_upstream_type
                    else {
                        return Err(FieldError::new(
                            format!("{ppath}.http_service.http_uri.cluster"),
                            "is required",
                        ));
                    };
                    let parsed: http::Uri = uri.uri.parse().map_err(|_| {
                        FieldError::new(
                            format!("{ppath}.http_service.http_uri.uri"),
                            format!("{:?} is not a URI", uri.uri),
                        )
                    })?;
                    Collector {
                        cluster: cluster.clone(),
                        path: parsed.path().to_string(),
                        host: parsed
                            .authority()
                            .map_or_else(|| cluster.clone(), |a| a.to_string()),
                        format: Format::OtlpHttp,
                    }
                }
            };
            (
                Provider::OpenTelemetry {
                    service_name: o.service_name,
                },
                collector,
            )
        }
        other => {
            return Err(FieldError::new(
                ppath,
                format!("tracer {other} is not supported by the Weft proxy"),
            ));
        }
    };
    let mut custom_tags = Vec::new();
    for (i, tag) in t.custom_tags.iter().enumerate() {
        let value = match &tag.r#type {
            Some(custom_tag::Type::Literal(l)) => TagValue::Literal(l.value.clone()),
            Some(custom_tag::Type::Environment(e)) => TagValue::Literal(
                std::env::var(&e.name).unwrap_or_else(|_| e.default_value.clone()),
            ),
            Some(custom_tag::Type::RequestHeader(h)) => TagValue::RequestHeader {
                name: h.name.to_ascii_lowercase(),
                default: h.default_value.clone(),
            },
            _ => {
                return Err(FieldError::new(
                    format!("{path}.custom_tags[{i}]"),
                    "only literal, environment and request_header tags are supported by the Weft proxy",
                ));
            }
        };
        custom_tags.push((tag.tag.clone(), value));
    }
    Ok(Some(Arc::new(Tracer {
        provider,
        collector: Arc::new(collector),
        ingress: inbound,
        random_sampling: ten_thousandths(t.random_sampling.as_ref()),
        client_sampling: ten_thousandths(t.client_sampling.as_ref()),
        overall_sampling: ten_thousandths(t.overall_sampling.as_ref()),
        max_path_tag_length: t.max_path_tag_length.map_or(256, |v| v.value as usize),
        custom_tags,
    })))
}
