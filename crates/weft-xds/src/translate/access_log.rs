//! Access logs as istiod writes them (`pilot/pkg/model/telemetry_logging.go`,
//! `pilot/pkg/networking/core/accesslog.go`): the mesh's `accessLogFile` in Istio's own text
//! format or its JSON form, or, once a Telemetry or `defaultProviders.accessLogging` names
//! providers, each file provider with its format and filter.

use super::Inputs;
use super::pb;
use super::telemetry::Class;
use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, ExtensionFilter, access_log, access_log_filter,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, data_source, substitution_format_string,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::google::protobuf::{Any, Value};
use std::collections::BTreeMap;
use weft_api::types::common::Labels;
use weft_api::types::mesh::AccessLogEncoding;
use weft_api::types::telemetry::WorkloadMode;

/// istiod's `EnvoyTextLogFormat`.
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// istiod's `EnvoyJSONLogFormatIstio`.
pub const ISTIO_JSON_FORMAT: [(&str, &str); 24] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// The CEL filter of a Telemetry `accessLogging[].filter`.
const CEL_FILTER: &str = "envoy.access_loggers.extension_filters.cel";

/// One provider's log for one side of a workload: the provider, and its filter expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub filter: Option<String>,
}

/// What Telemetry says about access logs for each side; `None` where no Telemetry and no
/// default provider speaks of them, and the mesh's `accessLogFile` applies.
#[derive(Debug, Clone, Default)]
pub struct Logging {
    pub client: Option<Vec<Provider>>,
    pub server: Option<Vec<Provider>>,
}

/// Telemetry's access logging for a workload: root namespace, namespace, then workload
/// Telemetry, the last to name providers deciding which log (istiod's `mergeLogs`).
pub fn logging(
    inputs: &Inputs,
    namespace: &str,
    labels: &Labels,
    problem: &dyn Fn(String),
) -> Logging {
    let list = super::telemetry::telemetries(inputs, namespace, labels, problem);
    let defaults = &inputs.mesh.default_access_log_providers;
    if defaults.is_empty() && list.iter().all(|t| t.spec.access_logging.is_empty()) {
        return Logging::default();
    }
    let for_mode = |mode: WorkloadMode| {
        let mut providers = defaults.clone();
        let mut disabled = false;
        let mut filters: BTreeMap<String, String> = BTreeMap::new();
        for t in &list {
            for entry in &t.spec.access_logging {
                if !super::telemetry::applies_to(entry.match_.as_ref().and_then(|m| m.mode), mode) {
                    continue;
                }
                let named = super::telemetry::provider_names(&entry.providers);
                if !named.is_empty() {
                    providers = named.clone();
                }
                disabled = entry.disabled == Some(true);
                if let Some(expr) = entry.filter.as_ref().and_then(|f| f.expression.clone()) {
                    let targets = if named.is_empty() { &providers } else { &named };
                    for p in targets {
                        filters.insert(p.to_ascii_lowercase(), expr.clone());
                    }
                }
            }
        }
        if disabled {
            return Vec::new();
        }
        let mut out: Vec<Provider> = providers
            .into_iter()
            .map(|name| Provider {
                filter: filters.get(&name.to_ascii_lowercase()).cloned(),
                name,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        out
    };
    Logging {
        client: Some(for_mode(WorkloadMode::Client)),
        server: Some(for_mode(WorkloadMode::Server)),
    }
}

/// The access logs of a connection manager or TCP proxy of `class`.
pub fn access_logs(
    inputs: &Inputs,
    logging: &Logging,
    class: Class,
    namespace: &str,
    problem: &dyn Fn(String),
) -> Vec<AccessLog> {
    let side = match class {
        Class::SidecarInbound => &logging.server,
        Class::SidecarOutbound | Class::Gateway => &logging.client,
    };
    let Some(providers) = side else {
        let mesh = &inputs.mesh;
        if mesh.access_log_file.is_empty() {
            return Vec::new();
        }
        return vec![file_from_mesh(inputs, &mesh.access_log_file, None)];
    };
    let mut out = Vec::new();
    for p in providers {
        let found = inputs
            .mesh
            .extension_providers
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(&p.name));
        let filter = p.filter.as_deref().map(cel_filter);
        match found {
            None if p.name.eq_ignore_ascii_case("envoy") => {
                out.push(file_from_mesh(inputs, "/dev/stdout", filter));
            }
            None => problem(format!(
                "access log provider {:?} is not one of the mesh's extensionProviders; nothing is logged for it",
                p.name
            )),
            Some(e) => match (
                e.other.get("envoyFileAccessLog"),
                e.other.get("envoyOtelAls"),
            ) {
                (Some(file), _) => out.push(file_from_provider(inputs, &e.name, file, filter)),
                (None, Some(otel)) => {
                    if let Some(log) = otel_log(&e.name, otel, namespace, filter, problem) {
                        out.push(log);
                    }
                }
                _ => problem(format!(
                    "access log provider {:?}: only envoyFileAccessLog and envoyOtelAls providers are applied; nothing is logged for it",
                    e.name
                )),
            },
        }
    }
    out
}

fn cel_filter(expression: &str) -> AccessLogFilter {
    let cel =
        envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter {
            expression: expression.to_string(),
            ..Default::default()
        };
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
            ExtensionFilter {
                name: CEL_FILTER.into(),
                config_type: Some(
                    envoy_types::pb::envoy::config::accesslog::v3::extension_filter::ConfigType::TypedConfig(
                        pb::any(&cel),
                    ),
                ),
            },
        )),
    }
}

/// A log format: text, or JSON fields (kept in key order, see `file_log`).
enum LogFormat {
    Text(String),
    Json(BTreeMap<String, Value>),
}

fn text(format: &str) -> LogFormat {
    LogFormat::Text(format.to_string())
}

fn json(fields: impl IntoIterator<Item = (String, Value)>) -> LogFormat {
    LogFormat::Json(fields.into_iter().collect())
}

fn istio_json() -> LogFormat {
    json(
        ISTIO_JSON_FORMAT
            .iter()
            .map(|(k, v)| (k.to_string(), pb::string(v))),
    )
}

/// A text format as istiod completes it: ending in a newline.
fn with_newline(format: &str) -> String {
    if format.ends_with('\n') {
        format.to_string()
    } else {
        format!("{format}\n")
    }
}

/// A `FileAccessLog`. A JSON format's `Struct` is written in key order: prost writes a map
/// in hash order, which would give equal configs different bytes, and every translation a new
/// version to push.
fn file_log(path: &str, format: LogFormat, filter: Option<AccessLogFilter>) -> AccessLog {
    use prost::Message;
    let (substitution, fields) = match format {
        LogFormat::Text(t) => (
            SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(t)),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
            None,
        ),
        LogFormat::Json(fields) => (
            SubstitutionFormatString {
                json_format_options: Some(Default::default()),
                ..Default::default()
            },
            Some(weft_proto::SortedStruct { fields }),
        ),
    };
    let mut format_bytes = substitution.encode_to_vec();
    if let Some(s) = &fields {
        // `SubstitutionFormatString.json_format`.
        prost::encoding::message::encode(2, s, &mut format_bytes);
    }
    let mut value = FileAccessLog {
        path: path.to_string(),
        access_log_format: None,
    }
    .encode_to_vec();
    // `FileAccessLog.log_format`.
    prost::encoding::encode_key(5, prost::encoding::WireType::LengthDelimited, &mut value);
    prost::encoding::encode_varint(format_bytes.len() as u64, &mut value);
    value.extend_from_slice(&format_bytes);
    AccessLog {
        name: "envoy.access_loggers.file".into(),
        filter,
        config_type: Some(access_log::ConfigType::TypedConfig(Any {
            type_url: <FileAccessLog as prost::Name>::type_url(),
            value,
        })),
    }
}

/// The mesh's `accessLogFile` (or the built-in `envoy` provider's path): Istio's text format,
/// or `accessLogFormat`, or its JSON encoding.
fn file_from_mesh(inputs: &Inputs, path: &str, filter: Option<AccessLogFilter>) -> AccessLog {
    let mesh = &inputs.mesh;
    let format = match (mesh.access_log_encoding, &mesh.access_log_format) {
        (AccessLogEncoding::Text, None) => text(ISTIO_TEXT_FORMAT),
        (AccessLogEncoding::Text, Some(f)) => text(&with_newline(f)),
        (AccessLogEncoding::Json, None) => istio_json(),
        (AccessLogEncoding::Json, Some(f)) => {
            match serde_json::from_str::<BTreeMap<String, serde_json::Value>>(f) {
                Ok(map) => json(map.into_iter().map(|(k, v)| (k, json_value(&v)))),
                // istiod falls back to its default map, as here.
                Err(_) => istio_json(),
            }
        }
    };
    file_log(path, format, filter)
}

/// istiod's filter-state objects for its OpenTelemetry logs (`buildOpenTelemetryAccessLogConfig`).
const OTEL_FILTER_STATE: [&str; 6] = [
    "upstream_peer",
    "downstream_peer",
    "wasm.upstream_peer",
    "wasm.upstream_peer_id",
    "wasm.downstream_peer",
    "wasm.downstream_peer_id",
];

/// An `envoyOtelAls` provider, as istiod's `openTelemetryLog` builds it: gRPC to the
/// collector's outbound cluster, the text format (Istio's by default) as the body, `labels` as
/// attributes, and no built-in resource labels.
fn otel_log(
    name: &str,
    provider: &serde_json::Value,
    namespace: &str,
    filter: Option<AccessLogFilter>,
    problem: &dyn Fn(String),
) -> Option<AccessLog> {
    use envoy_types::pb::envoy::config::core::v3::{GrpcService, grpc_service};
    use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::CommonGrpcAccessLogConfig;
    use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3::OpenTelemetryAccessLogConfig;
    use envoy_types::pb::opentelemetry::proto::common::v1::{
        AnyValue, KeyValue, KeyValueList, any_value,
    };
    let get = |k: &str| provider.get(k).and_then(serde_json::Value::as_str);
    let (Some(service), Some(port)) = (
        get("service"),
        provider.get("port").and_then(serde_json::Value::as_u64),
    ) else {
        problem(format!(
            "access log provider {name:?}: envoyOtelAls needs service and port; nothing is logged for it"
        ));
        return None;
    };
    let (cluster_name, host) = super::telemetry::provider_cluster(service, port, namespace);
    let log_format = provider.get("logFormat");
    let text = log_format
        .and_then(|f| f.get("text"))
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or(ISTIO_TEXT_FORMAT);
    let string = |s: &str| AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    };
    let labels: BTreeMap<String, String> = log_format
        .and_then(|f| f.get("labels"))
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    if text.contains("%REQ_WITHOUT_QUERY")
        || labels.values().any(|v| v.contains("%REQ_WITHOUT_QUERY"))
    {
        problem(format!(
            "access log provider {name:?}: %REQ_WITHOUT_QUERY% (istiod's formatter extension) is not applied; nothing is logged for it"
        ));
        return None;
    }
    #[allow(deprecated)] // `common_config` is what istiod still sets.
    let config = OpenTelemetryAccessLogConfig {
        common_config: Some(CommonGrpcAccessLogConfig {
            log_name: get("logName")
                .filter(|n| !n.is_empty())
                .unwrap_or("otel_envoy_accesslog")
                .to_string(),
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name,
                        authority: host,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: envoy_types::pb::envoy::config::core::v3::ApiVersion::V3 as i32,
            filter_state_objects_to_log: OTEL_FILTER_STATE.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        disable_builtin_labels: true,
        body: Some(string(text)),
        attributes: (!labels.is_empty()).then(|| KeyValueList {
            values: labels
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(string(v)),
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    };
    Some(AccessLog {
        name: "envoy.access_loggers.open_telemetry".into(),
        filter,
        config_type: Some(access_log::ConfigType::TypedConfig(pb::any(&config))),
    })
}

fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::String(s) => pb::string(s),
        other => pb::string(&other.to_string()),
    }
}

/// An `envoyFileAccessLog` extension provider: its path (`/dev/stdout` by default) and
/// `logFormat` (`text`, or `labels` as JSON).
fn file_from_provider(
    inputs: &Inputs,
    name: &str,
    provider: &serde_json::Value,
    filter: Option<AccessLogFilter>,
) -> AccessLog {
    let path = provider
        .get("path")
        .and_then(serde_json::Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("/dev/stdout");
    let log_format = provider.get("logFormat");
    if name == "envoy" && log_format.is_none() {
        return file_from_mesh(inputs, path, filter);
    }
    let format = match log_format {
        None => text(ISTIO_TEXT_FORMAT),
        Some(f) => match (f.get("text").and_then(|t| t.as_str()), f.get("labels")) {
            (Some(t), _) => text(&with_newline(t)),
            (None, Some(serde_json::Value::Object(labels))) if !labels.is_empty() => {
                json(labels.iter().map(|(k, v)| (k.clone(), json_value(v))))
            }
            _ => istio_json(),
        },
    };
    file_log(path, format, filter)
}

/// Every `tcp_proxy` of the generated listeners gets the access logs of its side, as istiod's
/// `setTCPAccessLog` gives them (outbound, inbound, gateway, passthrough and black hole).
pub fn tcp_access_logs(
    inputs: &Inputs,
    logging: &Logging,
    namespace: &str,
    gateway: bool,
    out: &mut super::Generated,
    problem: &dyn Fn(String),
) {
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    use prost::Message;
    for listener in out.listeners.values_mut() {
        let class = Class::of_listener(listener, gateway);
        let logs = access_logs(inputs, logging, class, namespace, problem);
        if logs.is_empty() {
            continue;
        }
        for chain in &mut listener.filter_chains {
            for f in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                    continue;
                };
                if any.type_url != <TcpProxy as prost::Name>::type_url() {
                    continue;
                }
                let Ok(mut tcp) = TcpProxy::decode(any.value.as_slice()) else {
                    continue;
                };
                tcp.access_log = logs.clone();
                any.value = tcp.encode_to_vec();
            }
        }
    }
}
