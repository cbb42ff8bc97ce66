//! The fields of Envoy's config that the Weft proxy implements, and the walk that names every
//! other field a config sets.
//!
//! DESIGN.md §1: the proxy never silently ignores config. A field that is set but not listed here
//! makes a static bootstrap fail and an xDS update NACK, naming the field. Listing a field here is a
//! promise that `convert` reads it and the data path honours it.

use super::{FieldError, join, pool};
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Message full name → the fields it may set. `*` accepts every field (messages the proxy keeps
/// as data, such as metadata). `field=A|B` restricts an enum field to the listed values.
const TABLE: &[(&str, &str)] = &[
    // Bootstrap
    (
        "envoy.config.bootstrap.v3.Bootstrap",
        "node static_resources dynamic_resources admin",
    ),
    (
        "envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
        "lds_config cds_config ads_config",
    ),
    // xDS: only ADS over gRPC, which is what Istio's proxies use.
    // `api_config_source` only for SDS (its secrets come from the proxy's own agent, whatever
    // the source names); LDS, CDS, RDS and EDS refuse anything but `ads` where they read it.
    (
        "envoy.config.core.v3.ConfigSource",
        "ads api_config_source resource_api_version=V3 initial_fetch_timeout",
    ),
    ("envoy.config.core.v3.AggregatedConfigSource", ""),
    (
        "envoy.config.core.v3.ApiConfigSource",
        "api_type=GRPC|DELTA_GRPC transport_api_version=V3 grpc_services \
         set_node_on_first_message_only",
    ),
    ("envoy.config.core.v3.GrpcService", "envoy_grpc timeout"),
    (
        "envoy.config.core.v3.GrpcService.EnvoyGrpc",
        "cluster_name authority",
    ),
    (
        "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
        "listeners clusters",
    ),
    ("envoy.config.bootstrap.v3.Admin", "address"),
    ("envoy.config.core.v3.Node", "*"),
    ("envoy.config.core.v3.Metadata", "*"),
    ("envoy.config.core.v3.Locality", "*"),
    // Addresses
    ("envoy.config.core.v3.Address", "socket_address"),
    (
        "envoy.config.core.v3.SocketAddress",
        "address port_value protocol=TCP",
    ),
    // Listeners
    (
        "envoy.config.listener.v3.Listener",
        "name address filter_chains stat_prefix traffic_direction metadata listener_filters \
         listener_filters_timeout continue_on_listener_filters_timeout use_original_dst \
         bind_to_port",
    ),
    (
        "envoy.config.listener.v3.ListenerFilter",
        "name typed_config",
    ),
    (
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "",
    ),
    (
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        "",
    ),
    (
        "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        "",
    ),
    (
        "envoy.config.listener.v3.FilterChain",
        "name filter_chain_match filters metadata transport_socket",
    ),
    (
        "envoy.config.listener.v3.FilterChainMatch",
        "destination_port prefix_ranges server_names transport_protocol application_protocols \
         source_prefix_ranges source_ports",
    ),
    (
        "envoy.config.core.v3.CidrRange",
        "address_prefix prefix_len",
    ),
    ("envoy.config.listener.v3.Filter", "name typed_config"),
    // Network filters
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix codec_type route_config rds http_filters access_log generate_request_id \
         use_remote_address xff_num_trusted_hops request_timeout stream_idle_timeout server_name \
         upgrade_configs http2_protocol_options common_http_protocol_options max_request_headers_kb \
         server_header_transformation=OVERWRITE|APPEND_IF_ABSENT|PASS_THROUGH \
         forward_client_cert_details=SANITIZE|FORWARD_ONLY|APPEND_FORWARD|SANITIZE_SET|ALWAYS_FORWARD_ONLY \
         set_current_client_cert_details tracing",
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing",
        "client_sampling random_sampling overall_sampling max_path_tag_length custom_tags provider \
         spawn_upstream_span",
    ),
    ("envoy.config.trace.v3.Tracing.Http", "name typed_config"),
    (
        "envoy.config.trace.v3.ZipkinConfig",
        "collector_cluster collector_endpoint trace_id_128bit shared_span_context \
         collector_endpoint_version=HTTP_JSON collector_hostname",
    ),
    (
        "envoy.config.trace.v3.OpenTelemetryConfig",
        "grpc_service http_service service_name sampler",
    ),
    ("envoy.config.core.v3.HttpService", "http_uri"),
    (
        "envoy.type.tracing.v3.CustomTag",
        "tag literal environment request_header",
    ),
    ("envoy.type.tracing.v3.CustomTag.Literal", "value"),
    (
        "envoy.type.tracing.v3.CustomTag.Environment",
        "name default_value",
    ),
    (
        "envoy.type.tracing.v3.CustomTag.Header",
        "name default_value",
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails",
        "subject cert chain dns uri",
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
        "config_source route_config_name",
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
        "upgrade_type enabled",
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        "name typed_config is_optional disabled",
    ),
    (
        "envoy.config.route.v3.FilterConfig",
        "config is_optional disabled",
    ),
    (
        "envoy.extensions.filters.http.router.v3.Router",
        "suppress_envoy_headers",
    ),
    (
        "envoy.config.core.v3.RuntimeFractionalPercent",
        "default_value",
    ),
    ("envoy.type.v3.FractionalPercent", "numerator denominator"),
    (
        "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix token_bucket runtime_enabled",
    ),
    // Weft has no runtime layer: a key always reads as its default, as in an Envoy without one.
    (
        "envoy.config.core.v3.RuntimeFeatureFlag",
        "default_value runtime_key",
    ),
    (
        "envoy.type.v3.TokenBucket",
        "max_tokens tokens_per_fill fill_interval",
    ),
    // The network RBAC filter's engine types are listed with the HTTP filter's.
    (
        "envoy.extensions.filters.network.rbac.v3.RBAC",
        "rules shadow_rules stat_prefix shadow_rules_stat_prefix \
         enforcement_type=ONE_TIME_ON_FIRST_BYTE",
    ),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix cluster weighted_clusters idle_timeout access_log",
    ),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster",
        "clusters",
    ),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight",
        "name weight",
    ),
    // Access logs
    (
        "envoy.config.accesslog.v3.AccessLog",
        "name typed_config filter",
    ),
    (
        "envoy.config.accesslog.v3.AccessLogFilter",
        "status_code_filter response_flag_filter and_filter or_filter extension_filter",
    ),
    ("envoy.config.accesslog.v3.StatusCodeFilter", "comparison"),
    ("envoy.config.accesslog.v3.ComparisonFilter", "op value"),
    (
        "envoy.config.core.v3.RuntimeUInt32",
        "default_value runtime_key",
    ),
    ("envoy.config.accesslog.v3.ResponseFlagFilter", "flags"),
    ("envoy.config.accesslog.v3.AndFilter", "filters"),
    ("envoy.config.accesslog.v3.OrFilter", "filters"),
    (
        "envoy.config.accesslog.v3.ExtensionFilter",
        "name typed_config",
    ),
    (
        "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
        "expression",
    ),
    ("envoy.config.core.v3.JsonFormatOptions", "sort_properties"),
    (
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path log_format",
    ),
    // `common_config.filter_state_objects_to_log` is what istiod sets; Envoy's OpenTelemetry
    // logger reads only its own field of that name, so neither proxy logs those objects.
    (
        "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
        "common_config grpc_service disable_builtin_labels resource_attributes body attributes \
         log_name buffer_flush_interval buffer_size_bytes",
    ),
    (
        "envoy.extensions.access_loggers.grpc.v3.CommonGrpcAccessLogConfig",
        "log_name grpc_service transport_api_version=V3 buffer_flush_interval buffer_size_bytes \
         filter_state_objects_to_log",
    ),
    ("opentelemetry.proto.common.v1.AnyValue", "string_value"),
    ("opentelemetry.proto.common.v1.KeyValueList", "values"),
    ("opentelemetry.proto.common.v1.KeyValue", "key value"),
    (
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        "log_format",
    ),
    (
        "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        "log_format",
    ),
    (
        "envoy.config.core.v3.SubstitutionFormatString",
        "text_format_source json_format json_format_options",
    ),
    (
        "envoy.config.core.v3.DataSource",
        "filename inline_string inline_bytes",
    ),
    // TLS, upstream and downstream
    ("envoy.config.core.v3.TransportSocket", "name typed_config"),
    // SDS secrets on the ADS stream (a gateway's credentialName).
    (
        "envoy.extensions.transport_sockets.tls.v3.Secret",
        "name tls_certificate validation_context",
    ),
    (
        "envoy.config.cluster.v3.Cluster.TransportSocketMatch",
        "name match transport_socket",
    ),
    (
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
        "",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context sni",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context require_client_certificate",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        "tls_params tls_certificates validation_context alpn_protocols \
         tls_certificate_sds_secret_configs validation_context_sds_secret_config \
         combined_validation_context",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext",
        "default_validation_context validation_context_sds_secret_config",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig",
        "name sds_config",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher",
        "san_type=DNS|URI|EMAIL|IP_ADDRESS matcher",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
        "tls_minimum_protocol_version tls_maximum_protocol_version",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.TlsCertificate",
        "certificate_chain private_key",
    ),
    (
        "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
        "trusted_ca match_typed_subject_alt_names match_subject_alt_names",
    ),
    // Routes
    (
        "envoy.config.route.v3.RouteConfiguration",
        "name virtual_hosts request_headers_to_add request_headers_to_remove \
         response_headers_to_add response_headers_to_remove validate_clusters \
         typed_per_filter_config",
    ),
    (
        "envoy.config.route.v3.VirtualHost",
        "name domains routes request_headers_to_add request_headers_to_remove \
         response_headers_to_add response_headers_to_remove typed_per_filter_config \
         require_tls include_request_attempt_count include_attempt_count_in_response \
         per_request_buffer_limit_bytes request_body_buffer_limit",
    ),
    (
        "envoy.config.route.v3.Route",
        "name match route redirect direct_response metadata request_headers_to_add \
         request_headers_to_remove response_headers_to_add response_headers_to_remove \
         typed_per_filter_config per_request_buffer_limit_bytes request_body_buffer_limit",
    ),
    (
        "envoy.config.route.v3.RouteMatch",
        "prefix path safe_regex path_separated_prefix case_sensitive headers query_parameters",
    ),
    (
        "envoy.config.route.v3.HeaderMatcher",
        "name exact_match safe_regex_match prefix_match suffix_match contains_match \
         present_match string_match invert_match treat_missing_header_as_empty",
    ),
    (
        "envoy.config.route.v3.QueryParameterMatcher",
        "name string_match present_match",
    ),
    (
        "envoy.type.matcher.v3.StringMatcher",
        "exact prefix suffix contains safe_regex ignore_case",
    ),
    ("envoy.type.matcher.v3.RegexMatcher", "regex google_re2"),
    ("envoy.type.matcher.v3.RegexMatcher.GoogleRE2", ""),
    (
        "envoy.config.route.v3.RouteAction",
        "cluster weighted_clusters cluster_header prefix_rewrite regex_rewrite \
         host_rewrite_literal timeout hash_policy retry_policy request_mirror_policies \
         max_stream_duration max_grpc_timeout grpc_timeout_offset \
         priority=DEFAULT|HIGH \
         cluster_not_found_response_code=SERVICE_UNAVAILABLE|NOT_FOUND|INTERNAL_SERVER_ERROR",
    ),
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy",
        "cluster runtime_fraction trace_sampled disable_shadow_host_suffix_append",
    ),
    (
        "envoy.config.route.v3.RetryPolicy",
        "retry_on num_retries per_try_timeout per_try_idle_timeout retriable_status_codes \
         retry_host_predicate \
         host_selection_retry_max_attempts retry_back_off",
    ),
    (
        "envoy.config.route.v3.RouteAction.MaxStreamDuration",
        "max_stream_duration grpc_timeout_header_max grpc_timeout_header_offset",
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        "name typed_config",
    ),
    (
        "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
        "",
    ),
    (
        "envoy.config.route.v3.RetryPolicy.RetryBackOff",
        "base_interval max_interval",
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy",
        "header cookie connection_properties query_parameter terminal",
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.Header",
        "header_name",
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.Cookie",
        "name ttl path",
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties",
        "source_ip",
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter",
        "name",
    ),
    (
        "envoy.type.matcher.v3.RegexMatchAndSubstitute",
        "pattern substitution",
    ),
    (
        "envoy.config.route.v3.WeightedCluster",
        "clusters total_weight",
    ),
    (
        "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        "name weight request_headers_to_add request_headers_to_remove response_headers_to_add \
         response_headers_to_remove host_rewrite_literal",
    ),
    (
        "envoy.config.route.v3.RedirectAction",
        "https_redirect scheme_redirect host_redirect port_redirect path_redirect prefix_rewrite \
         regex_rewrite response_code strip_query",
    ),
    ("envoy.config.route.v3.DirectResponseAction", "status body"),
    (
        "envoy.config.core.v3.HeaderValueOption",
        "header append append_action=APPEND_IF_EXISTS_OR_ADD|ADD_IF_ABSENT|OVERWRITE_IF_EXISTS_OR_ADD \
         keep_empty_value",
    ),
    ("envoy.config.core.v3.HeaderValue", "key value"),
    // Clusters
    (
        "envoy.config.cluster.v3.Cluster",
        "name alt_stat_name type=STATIC|STRICT_DNS|LOGICAL_DNS|EDS|ORIGINAL_DST eds_cluster_config \
         connect_timeout original_dst_lb_config cleanup_interval \
         lb_policy=ROUND_ROBIN|LEAST_REQUEST|RANDOM|RING_HASH|MAGLEV|CLUSTER_PROVIDED \
         ring_hash_lb_config \
         maglev_lb_config load_assignment transport_socket \
         typed_extension_protocol_options http2_protocol_options http_protocol_options \
         dns_lookup_family=AUTO|V4_ONLY|V6_ONLY|V4_PREFERRED|ALL dns_refresh_rate respect_dns_ttl metadata circuit_breakers \
         common_http_protocol_options max_requests_per_connection outlier_detection \
         common_lb_config health_checks transport_socket_matches filters",
    ),
    ("envoy.config.cluster.v3.Filter", "name typed_config"),
    (
        "envoy.config.core.v3.HealthCheck",
        "timeout interval no_traffic_interval unhealthy_threshold healthy_threshold \
         http_health_check tcp_health_check",
    ),
    (
        "envoy.config.core.v3.HealthCheck.HttpHealthCheck",
        "host path expected_statuses codec_client_type=HTTP1",
    ),
    ("envoy.config.core.v3.HealthCheck.TcpHealthCheck", ""),
    ("envoy.type.v3.Int64Range", "start end"),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        "healthy_panic_threshold locality_weighted_lb_config",
    ),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig",
        "",
    ),
    (
        "envoy.config.cluster.v3.OutlierDetection",
        "consecutive_5xx interval base_ejection_time max_ejection_percent \
         enforcing_consecutive_5xx enforcing_success_rate success_rate_minimum_hosts \
         success_rate_request_volume success_rate_stdev_factor consecutive_gateway_failure \
         enforcing_consecutive_gateway_failure split_external_local_origin_errors \
         consecutive_local_origin_failure enforcing_consecutive_local_origin_failure \
         enforcing_local_origin_success_rate failure_percentage_threshold \
         enforcing_failure_percentage enforcing_failure_percentage_local_origin \
         failure_percentage_minimum_hosts failure_percentage_request_volume max_ejection_time \
         always_eject_one_host",
    ),
    ("envoy.config.cluster.v3.CircuitBreakers", "thresholds"),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        "priority=DEFAULT|HIGH max_connections max_pending_requests max_requests max_retries \
         retry_budget max_connection_pools track_remaining",
    ),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget",
        "budget_percent min_retry_concurrency",
    ),
    ("envoy.type.v3.Percent", "value"),
    (
        "envoy.config.core.v3.HttpProtocolOptions",
        "idle_timeout max_requests_per_connection max_stream_duration max_headers_count \
         headers_with_underscores_action",
    ),
    (
        "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
        "eds_config service_name",
    ),
    (
        "envoy.config.cluster.v3.Cluster.RingHashLbConfig",
        "minimum_ring_size maximum_ring_size hash_function=XX_HASH",
    ),
    (
        "envoy.config.cluster.v3.Cluster.OriginalDstLbConfig",
        "use_http_header http_header_name upstream_port_override",
    ),
    (
        "envoy.config.cluster.v3.Cluster.MaglevLbConfig",
        "table_size",
    ),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name endpoints",
    ),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        "locality lb_endpoints load_balancing_weight priority",
    ),
    (
        "envoy.config.endpoint.v3.LbEndpoint",
        "endpoint health_status=UNKNOWN|HEALTHY|UNHEALTHY|DRAINING|TIMEOUT|DEGRADED \
         load_balancing_weight metadata",
    ),
    ("envoy.config.endpoint.v3.Endpoint", "address hostname"),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config use_downstream_protocol_config common_http_protocol_options",
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        "http_protocol_options http2_protocol_options",
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig",
        "http_protocol_options http2_protocol_options",
    ),
    ("envoy.config.core.v3.Http1ProtocolOptions", ""),
    (
        "envoy.config.core.v3.Http2ProtocolOptions",
        "max_concurrent_streams allow_connect max_outbound_control_frames \
         max_consecutive_inbound_frames_with_empty_payload",
    ),
];

enum Allowed {
    Any,
    Fields(HashMap<&'static str, Option<Vec<&'static str>>>),
}

fn table() -> &'static HashMap<&'static str, Allowed> {
    static TABLE_MAP: OnceLock<HashMap<&'static str, Allowed>> = OnceLock::new();
    TABLE_MAP.get_or_init(|| {
        entries()
            .map(|(message, fields)| {
                let allowed = if *fields == "*" {
                    Allowed::Any
                } else {
                    Allowed::Fields(
                        fields
                            .split_whitespace()
                            .map(|spec| match spec.split_once('=') {
                                Some((name, values)) => (name, Some(values.split('|').collect())),
                                None => (spec, None),
                            })
                            .collect(),
                    )
                };
                (*message, allowed)
            })
            .collect()
    })
}

/// The table, with the config messages of every registered HTTP filter.
fn entries() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    TABLE.iter().chain(
        crate::http::filter::FACTORIES
            .iter()
            .flat_map(|f| f.supported.iter()),
    )
}

/// Message types that are data, accepted whole wherever a listed field holds them.
fn is_plain_data(full_name: &str) -> bool {
    matches!(
        full_name,
        "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Empty"
            | "google.protobuf.BoolValue"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.StringValue"
            | "google.protobuf.DoubleValue"
    )
}

/// Every field of `message` (and of the messages inside it, `Any` included) that is set but not
/// implemented, with its path below `path`.
pub fn check(message: &DynamicMessage, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    walk(message, path, &mut errors);
    errors
}

fn walk(message: &DynamicMessage, path: &str, errors: &mut Vec<FieldError>) {
    let descriptor = message.descriptor();
    let name = descriptor.full_name();
    if is_plain_data(name) {
        return;
    }
    if name == "google.protobuf.Any" {
        walk_any(message, path, errors);
        return;
    }
    for unknown in message.unknown_fields() {
        errors.push(FieldError::new(
            join(path, &format!("#{}", unknown.number())),
            "field unknown to this version of the Weft proxy",
        ));
    }
    let allowed = match table().get(name) {
        Some(Allowed::Any) => return,
        Some(Allowed::Fields(fields)) => fields,
        None => {
            // Reached only through a listed field whose message type has no entry: a gap in TABLE.
            errors.push(FieldError::new(
                path,
                format!("{name} is not supported by the Weft proxy"),
            ));
            return;
        }
    };
    // An optional HTTP filter (or per-filter config) of a type the proxy does not know is left
    // out when converted, as Envoy leaves it out: its config is not walked.
    let optional = matches!(
        name,
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter"
            | "envoy.config.route.v3.FilterConfig"
    ) && message
        .get_field_by_name("is_optional")
        .is_some_and(|v| v.as_bool() == Some(true));
    for (field, value) in message.fields() {
        let field_path = join(path, field.name());
        if optional && matches!(field.name(), "typed_config" | "config") && !known_any(value) {
            continue;
        }
        let Some(values) = allowed.get(field.name()) else {
            errors.push(FieldError::new(
                field_path,
                "not supported by the Weft proxy",
            ));
            continue;
        };
        if let (Some(values), Kind::Enum(kind)) = (values, field.kind()) {
            for number in enum_numbers(value) {
                let value_name = kind.get_value(number).map(|v| v.name().to_string());
                let ok = value_name.as_deref().is_some_and(|n| values.contains(&n));
                if !ok {
                    errors.push(FieldError::new(
                        field_path.clone(),
                        format!(
                            "value {} is not supported by the Weft proxy (supported: {})",
                            value_name.unwrap_or_else(|| number.to_string()),
                            values.join(", ")
                        ),
                    ));
                }
            }
        }
        walk_value(value, &field_path, errors);
    }
}

fn enum_numbers(value: &Value) -> Vec<i32> {
    match value {
        Value::EnumNumber(n) => vec![*n],
        Value::List(items) => items.iter().filter_map(Value::as_enum_number).collect(),
        _ => Vec::new(),
    }
}

fn walk_value(value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::Message(m) => walk(m, path, errors),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Map(entries) => {
            for (key, item) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                walk_value(item, &format!("{path}[{key}]"), errors);
            }
        }
        _ => {}
    }
}

fn walk_any(any: &DynamicMessage, path: &str, errors: &mut Vec<FieldError>) {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_string));
    let value = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned());
    let (Some(type_url), Some(value)) = (type_url, value) else {
        return;
    };
    match decode_any(&type_url, &value) {
        Ok(inner) => walk(&inner, path, errors),
        Err(e) => errors.push(FieldError::new(path, e)),
    }
}

/// Whether an `Any` holds a type the proxy knows.
fn known_any(value: &Value) -> bool {
    let Value::Message(any) = value else {
        return true;
    };
    any.get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_string))
        .is_none_or(|url| {
            let type_name = url.rsplit('/').next().unwrap_or(&url);
            table().contains_key(type_name) || is_plain_data(type_name)
        })
}

/// Decodes the payload of an `Any` by its type URL, if the type is one the proxy knows.
pub fn decode_any(type_url: &str, value: &[u8]) -> Result<DynamicMessage, String> {
    let type_name = type_url.rsplit('/').next().unwrap_or(type_url);
    let known = table().contains_key(type_name) || is_plain_data(type_name);
    let Some(descriptor) = pool().get_message_by_name(type_name).filter(|_| known) else {
        return Err(format!(
            "type {type_name} is not supported by the Weft proxy"
        ));
    };
    DynamicMessage::decode(descriptor, value).map_err(|e| format!("cannot decode {type_name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message listed twice would have one list silently replace the other (a filter's
    /// table once took `filename` from every DataSource).
    #[test]
    fn no_message_is_listed_twice() {
        let mut seen = std::collections::BTreeSet::new();
        let twice: Vec<&str> = entries()
            .map(|(m, _)| *m)
            .filter(|m| !seen.insert(*m))
            .collect();
        assert!(twice.is_empty(), "listed twice: {twice:?}");
    }

    #[test]
    fn every_listed_message_and_field_exists_in_the_descriptors() {
        for (message, fields) in entries() {
            let descriptor = pool()
                .get_message_by_name(message)
                .unwrap_or_else(|| panic!("{message} is not in envoy.bin"));
            if *fields == "*" {
                continue;
            }
            for spec in fields.split_whitespace() {
                let (name, values) = match spec.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (spec, None),
                };
                let field = descriptor
                    .get_field_by_name(name)
                    .unwrap_or_else(|| panic!("{message} has no field {name}"));
                if let Some(values) = values {
                    let Kind::Enum(kind) = field.kind() else {
                        panic!("{message}.{name} is not an enum")
                    };
                    for v in values.split('|') {
                        assert!(
                            kind.get_value_by_name(v).is_some(),
                            "{message}.{name} has no value {v}"
                        );
                    }
                }
            }
        }
    }
}
