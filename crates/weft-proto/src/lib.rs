//! The messages istiod writes into Envoy config that are not part of Envoy's API: Istio's proxy
//! (istio-proxy) registers them. Translation encodes them and the Weft proxy decodes them, so
//! they live here, once, with the field numbers of Istio's `.proto` files.

use envoy_types::pb::google::protobuf::{Duration, Value};
use std::collections::BTreeMap;

/// `udpa.type.v1.TypedStruct`: an extension's config as a `Struct`, under the extension's own
/// type URL. istiod wraps the metadata exchange filters' configs in it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypedStruct {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<SortedStruct>,
}

/// `google.protobuf.Struct` with its fields in key order: the same bytes every time (prost's
/// `Struct` keeps a `HashMap`, whose order changes from one map to the next, and so would the
/// resource's version).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SortedStruct {
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, Value>,
}

impl prost::Name for TypedStruct {
    const NAME: &'static str = "TypedStruct";
    const PACKAGE: &'static str = "udpa.type.v1";
    fn type_url() -> String {
        format!("type.googleapis.com/{}.{}", Self::PACKAGE, Self::NAME)
    }
}

/// The same message under the xDS name, which Envoy also accepts.
pub const XDS_TYPED_STRUCT: &str = "type.googleapis.com/xds.type.v3.TypedStruct";

/// The inner type of the HTTP metadata exchange filter (`istio.metadata_exchange`).
pub const PEER_METADATA: &str = "type.googleapis.com/io.istio.http.peer_metadata.Config";

/// The inner type of the TCP metadata exchange filter.
pub const TCP_METADATA_EXCHANGE: &str =
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange";

/// `stats.PluginConfig`: the `istio.stats` filter (Istio's standard metrics). Fields 1 to 5
/// are reserved in Istio's proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginConfig {
    /// Inbound and gateways: `destination_service` never comes from the Host header.
    #[prost(bool, tag = "6")]
    pub disable_host_header_fallback: bool,
    /// How often TCP connections report their byte counts (5 s when unset).
    #[prost(message, optional, tag = "7")]
    pub tcp_reporting_duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub metrics: Vec<MetricConfig>,
    #[prost(message, repeated, tag = "9")]
    pub definitions: Vec<MetricDefinition>,
    /// `UNSPECIFIED` (0): sidecars; `SERVER_GATEWAY` (1): waypoints.
    #[prost(int32, tag = "10")]
    pub reporter: i32,
}

impl prost::Name for PluginConfig {
    const NAME: &'static str = "PluginConfig";
    const PACKAGE: &'static str = "stats";
    fn type_url() -> String {
        format!("type.googleapis.com/{}.{}", Self::PACKAGE, Self::NAME)
    }
}

/// Changes to one standard metric (or, with no name, to all of them).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricConfig {
    /// Tag name to a value expression: replaces a standard tag's value, or adds a tag.
    #[prost(btree_map = "string, string", tag = "1")]
    pub dimensions: BTreeMap<String, String>,
    /// The metric without its `istio_` prefix (`requests_total`); empty for every metric.
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub tags_to_remove: Vec<String>,
    /// Not implemented by Istio either.
    #[prost(string, tag = "4")]
    pub r#match: String,
    /// The metric is not reported.
    #[prost(bool, tag = "5")]
    pub drop: bool,
}

/// A custom metric.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricDefinition {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
    /// `COUNTER` (0), `GAUGE` (1), `HISTOGRAM` (2).
    #[prost(int32, tag = "3")]
    pub r#type: i32,
}

/// The `.proto` files of these messages, for a descriptor pool that renders them as JSON
/// (`config_dump`, goldens) and checks which of their fields a proxy honours.
pub fn descriptors() -> Vec<prost_types::FileDescriptorProto> {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto};
    use prost_types::{FieldDescriptorProto, FileDescriptorProto, MessageOptions};
    fn field(name: &str, number: i32, ty: Type, type_name: Option<&str>) -> FieldDescriptorProto {
        let json: String = name
            .split('_')
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    w.to_string()
                } else {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().chain(c).collect())
                        .unwrap_or_default()
                }
            })
            .collect();
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(ty as i32),
            type_name: type_name.map(str::to_string),
            json_name: Some(json),
            ..Default::default()
        }
    }
    fn repeated(mut f: FieldDescriptorProto) -> FieldDescriptorProto {
        f.label = Some(Label::Repeated as i32);
        f
    }
    fn message(name: &str, field: Vec<FieldDescriptorProto>) -> DescriptorProto {
        DescriptorProto {
            name: Some(name.into()),
            field,
            ..Default::default()
        }
    }
    let typed_struct = FileDescriptorProto {
        name: Some("udpa/type/v1/typed_struct.proto".into()),
        package: Some("udpa.type.v1".into()),
        dependency: vec!["google/protobuf/struct.proto".into()],
        message_type: vec![message(
            "TypedStruct",
            vec![
                field("type_url", 1, Type::String, None),
                field("value", 2, Type::Message, Some(".google.protobuf.Struct")),
            ],
        )],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let mut dimensions_entry = message(
        "DimensionsEntry",
        vec![
            field("key", 1, Type::String, None),
            field("value", 2, Type::String, None),
        ],
    );
    dimensions_entry.options = Some(MessageOptions {
        map_entry: Some(true),
        ..Default::default()
    });
    let mut metric_config = message(
        "MetricConfig",
        vec![
            repeated(field(
                "dimensions",
                1,
                Type::Message,
                Some(".stats.MetricConfig.DimensionsEntry"),
            )),
            field("name", 2, Type::String, None),
            repeated(field("tags_to_remove", 3, Type::String, None)),
            field("match", 4, Type::String, None),
            field("drop", 5, Type::Bool, None),
        ],
    );
    metric_config.nested_type = vec![dimensions_entry];
    let enum_of = |name: &str, values: &[(&str, i32)]| EnumDescriptorProto {
        name: Some(name.into()),
        value: values
            .iter()
            .map(|(n, v)| EnumValueDescriptorProto {
                name: Some((*n).into()),
                number: Some(*v),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let definition = message(
        "MetricDefinition",
        vec![
            field("name", 1, Type::String, None),
            field("value", 2, Type::String, None),
            field("type", 3, Type::Enum, Some(".stats.MetricType")),
        ],
    );
    let stats = FileDescriptorProto {
        name: Some("stats/plugin.proto".into()),
        package: Some("stats".into()),
        dependency: vec!["google/protobuf/duration.proto".into()],
        message_type: vec![
            message(
                "PluginConfig",
                vec![
                    field("disable_host_header_fallback", 6, Type::Bool, None),
                    field(
                        "tcp_reporting_duration",
                        7,
                        Type::Message,
                        Some(".google.protobuf.Duration"),
                    ),
                    repeated(field(
                        "metrics",
                        8,
                        Type::Message,
                        Some(".stats.MetricConfig"),
                    )),
                    repeated(field(
                        "definitions",
                        9,
                        Type::Message,
                        Some(".stats.MetricDefinition"),
                    )),
                    field("reporter", 10, Type::Enum, Some(".stats.Reporter")),
                ],
            ),
            metric_config,
            definition,
        ],
        enum_type: vec![
            enum_of(
                "MetricType",
                &[("COUNTER", 0), ("GAUGE", 1), ("HISTOGRAM", 2)],
            ),
            enum_of("Reporter", &[("UNSPECIFIED", 0), ("SERVER_GATEWAY", 1)]),
        ],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    vec![typed_struct, stats]
}

/// OpenTelemetry's trace export (`opentelemetry/proto/collector/trace/v1`, `trace/v1`,
/// `common/v1`, `resource/v1`), as far as a proxy's spans need it: what an OTLP exporter sends
/// and a collector reads.
pub mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    /// `Span.kind`: SERVER is 2, CLIENT 3.
    pub const SPAN_KIND_SERVER: i32 = 2;
    pub const SPAN_KIND_CLIENT: i32 = 3;
    /// `Status.code` ERROR.
    pub const STATUS_ERROR: i32 = 2;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// Only the string form, which is all a proxy's tags are.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }

    /// `collector/logs/v1` and `logs/v1`: what an OpenTelemetry access logger sends.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        #[prost(bytes = "vec", tag = "9")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "10")]
        pub span_id: Vec<u8>,
    }
}
