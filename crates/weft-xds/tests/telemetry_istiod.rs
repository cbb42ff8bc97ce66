//! Telemetry translation against istiod: the metadata exchange and stats filters each side of
//! a workload gets (istiod's `filters.go`, `generateStatsConfig` and its testdata), and access
//! logs (`telemetry_logging.go`), with Telemetry at the root namespace, the namespace and the
//! workload. Expected configs are written out by hand from istiod's code and test outputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use prost::Message;
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};
use weft_api::load::LoadResult;
use weft_api::types::mesh::MeshConfig;
use weft_xds::translate::{Inputs, Proxy, generate};

const WORKLOAD: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: httpbin, namespace: foo }
spec:
  selector: { app: httpbin }
  ports:
  - { name: http, port: 8000 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: httpbin-v1, namespace: foo }
spec:
  address: 10.0.0.1
  labels: { app: httpbin, version: v1 }
"#;

fn render(any: &envoy_types::pb::google::protobuf::Any) -> Value {
    let pool = weft_proxy::config::pool();
    let name = any.type_url.rsplit('/').next().unwrap();
    let d = pool.get_message_by_name(name).unwrap();
    let m = DynamicMessage::decode(d, any.value.as_slice()).unwrap();
    serde_json::to_value(&m).unwrap()
}

/// One side's connection manager: its HTTP filters by name (in order) and config, and its
/// access logs.
struct Side {
    filters: Vec<(String, bool, Value)>,
    logs: Vec<Value>,
}

impl Side {
    fn names(&self) -> Vec<&str> {
        self.filters.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    fn config(&self, name: &str) -> Option<&Value> {
        self.filters
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, c)| c)
    }
}

fn side(hcm: &envoy_types::pb::google::protobuf::Any) -> Side {
    let hcm = HttpConnectionManager::decode(hcm.value.as_slice()).unwrap();
    Side {
        filters: hcm
            .http_filters
            .iter()
            .map(|f| match &f.config_type {
                Some(http_filter::ConfigType::TypedConfig(a)) => {
                    (f.name.clone(), f.is_optional, render(a))
                }
                _ => panic!("untyped"),
            })
            .collect(),
        logs: hcm
            .access_log
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(
                    DynamicMessage::decode(
                        weft_proxy::config::pool()
                            .get_message_by_name("envoy.config.accesslog.v3.AccessLog")
                            .unwrap(),
                        l.encode_to_vec().as_slice(),
                    )
                    .unwrap(),
                )
                .unwrap();
                v.as_object_mut().unwrap().remove("name");
                v
            })
            .collect(),
    }
}

/// The inbound (port 8000) and outbound (to httpbin:8000) connection managers of httpbin's
/// sidecar, and translation's problems.
fn translate(objects: &str, mesh: &str) -> (Side, Side, Vec<String>) {
    let mut loaded = LoadResult::default();
    loaded.load_str("telemetry.yaml", &format!("{WORKLOAD}---\n{objects}"));
    assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    let resources: Vec<_> = loaded.objects.into_iter().map(|o| o.resource).collect();
    let inputs = Inputs::new(&resources, MeshConfig::from_yaml(mesh).unwrap().resolve());
    let labels = [("app", "httpbin"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let g = generate(
        &inputs,
        &Proxy::sidecar("httpbin-v1", "foo", "10.0.0.1", labels),
    );
    let typed = |f: &envoy_types::pb::envoy::config::listener::v3::Filter| match &f.config_type {
        Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) => {
            a.clone()
        }
        _ => panic!("untyped filter"),
    };
    let inbound = g.listeners["virtualInbound"]
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_8000")
        .unwrap();
    let outbound = &g.listeners["0.0.0.0_8000"].filter_chains[0];
    (
        side(&typed(&inbound.filters[0])),
        side(&typed(&outbound.filters[0])),
        g.problems,
    )
}

const TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n";

#[test]
fn every_side_exchanges_metadata_and_counts_by_default() {
    let (inbound, outbound, _) = translate("", "");
    // Exchange first (before authorization), stats just before the router; both optional.
    for s in [&inbound, &outbound] {
        let names = s.names();
        assert_eq!(names[0], "istio.metadata_exchange");
        assert_eq!(
            names[names.len() - 2..],
            ["istio.stats", "envoy.filters.http.router"]
        );
        assert!(s.filters[0].1 && s.filters[names.len() - 2].1);
    }
    let exchange = |discovery: &str, propagation: &str| {
        json!({
            "typeUrl": "type.googleapis.com/io.istio.http.peer_metadata.Config",
            "value": {
                discovery: [{"istio_headers": {}}, {"workload_discovery": {}}],
                propagation: [{"istio_headers": {}}],
            }
        })
    };
    assert_eq!(
        inbound.config("istio.metadata_exchange").unwrap(),
        &exchange("downstream_discovery", "downstream_propagation")
    );
    assert_eq!(
        outbound.config("istio.metadata_exchange").unwrap(),
        &exchange("upstream_discovery", "upstream_propagation")
    );
    // istiod's testdata: `{}` outbound, `{disable_host_header_fallback: true}` inbound.
    assert_eq!(outbound.config("istio.stats").unwrap(), &json!({}));
    assert_eq!(
        inbound.config("istio.stats").unwrap(),
        &json!({"disableHostHeaderFallback": true})
    );
    // gRPC message counts for `istio.stats`, right after the exchange (no authorization
    // here), as istiod's `xdsfilters.GrpcStats`: not optional, Envoy has the filter.
    for s in [&inbound, &outbound] {
        assert_eq!(s.names()[1], "envoy.filters.http.grpc_stats");
        assert!(!s.filters[1].1);
        assert_eq!(
            s.config("envoy.filters.http.grpc_stats").unwrap(),
            &json!({
                "emitFilterState": true,
                "statsForAllMethods": false
            })
        );
    }
    // No access log unless the mesh or a Telemetry asks for one.
    assert!(inbound.logs.is_empty() && outbound.logs.is_empty());
}

#[test]
fn metric_overrides_merge_from_root_to_workload() {
    // istiod's example: `{"metrics":[{"dimensions":{"add":"bar"},"name":"requests_total",
    // "tags_to_remove":["remove"]}]}`; the root's drop of REQUEST_SIZE is undone by the
    // workload's Telemetry; CLIENT-only changes stay off the inbound side.
    let (inbound, outbound, _) = translate(
        &format!(
            "{TELEMETRY}metadata: {{ name: mesh, namespace: istio-system }}\nspec:\n  metrics:\n  - overrides:\n    - match: {{ metric: REQUEST_SIZE }}\n      disabled: true\n    - match: {{ metric: REQUEST_COUNT, mode: CLIENT }}\n      tagOverrides: {{ remove: {{ operation: REMOVE }} }}\n---\n\
             {TELEMETRY}metadata: {{ name: ns, namespace: foo }}\nspec:\n  metrics:\n  - overrides:\n    - match: {{ metric: REQUEST_COUNT, mode: CLIENT }}\n      tagOverrides: {{ add: {{ value: bar }} }}\n---\n\
             {TELEMETRY}metadata: {{ name: workload, namespace: foo }}\nspec:\n  selector: {{ matchLabels: {{ app: httpbin }} }}\n  metrics:\n  - overrides:\n    - match: {{ metric: REQUEST_SIZE, mode: SERVER }}\n      disabled: false\n"
        ),
        "",
    );
    assert_eq!(
        outbound.config("istio.stats").unwrap(),
        &json!({
            "metrics": [
                {"dimensions": {"add": "bar"}, "name": "requests_total", "tagsToRemove": ["remove"]},
                {"name": "request_bytes", "drop": true},
            ]
        })
    );
    assert_eq!(
        inbound.config("istio.stats").unwrap(),
        &json!({"disableHostHeaderFallback": true})
    );
}

#[test]
fn all_metrics_disabled_removes_the_filter_for_that_side_only() {
    let (inbound, outbound, _) = translate(
        &format!(
            "{TELEMETRY}metadata: {{ name: quiet-clients, namespace: foo }}\nspec:\n  metrics:\n  - providers: [ {{ name: prometheus }} ]\n    overrides:\n    - match: {{ metric: ALL_METRICS, mode: CLIENT }}\n      disabled: true\n"
        ),
        "",
    );
    assert!(outbound.config("istio.stats").is_none());
    assert!(inbound.config("istio.stats").is_some());
    // The exchange stays: the other side still counts.
    assert!(outbound.config("istio.metadata_exchange").is_some());
}

#[test]
fn a_provider_that_is_not_prometheus_is_reported() {
    let (inbound, _, problems) = translate(
        &format!(
            "{TELEMETRY}metadata: {{ name: sd, namespace: foo }}\nspec:\n  metrics:\n  - providers: [ {{ name: stackdriver }} ]\n"
        ),
        "",
    );
    // The lowest level names the only provider: no Prometheus, no stats filter.
    assert!(inbound.config("istio.stats").is_none());
    assert!(problems.is_empty() || problems.iter().all(|p| !p.contains("prometheus")));
    let (inbound, _, problems) = translate(
        &format!(
            "{TELEMETRY}metadata: {{ name: sd, namespace: foo }}\nspec:\n  metrics:\n  - providers: [ {{ name: prometheus }}, {{ name: stackdriver }} ]\n"
        ),
        "",
    );
    assert!(inbound.config("istio.stats").is_some());
    assert!(
        problems.iter().any(|p| p.contains("\"stackdriver\"")),
        "{problems:?}"
    );
}

#[test]
fn mesh_access_log_file_in_istios_text_and_json_formats() {
    let text = json!({
        "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": "/dev/stdout",
            "logFormat": { "textFormatSource": { "inlineString":
                "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
            } }
        }
    });
    let (inbound, outbound, _) = translate("", "accessLogFile: /dev/stdout\n");
    assert_eq!(inbound.logs, std::slice::from_ref(&text));
    assert_eq!(outbound.logs, [text]);
    let (inbound, _, _) = translate("", "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n");
    let format = &inbound.logs[0]["typedConfig"]["logFormat"];
    assert_eq!(format["jsonFormat"]["response_code"], "%RESPONSE_CODE%");
    assert_eq!(
        format["jsonFormat"]["upstream_cluster"],
        "%UPSTREAM_CLUSTER_RAW%"
    );
    assert_eq!(format["jsonFormat"].as_object().unwrap().len(), 24);
    // A custom format gets its newline.
    let (inbound, _, _) = translate(
        "",
        "accessLogFile: /tmp/x.log\naccessLogFormat: \"%RESPONSE_CODE%\"\n",
    );
    assert_eq!(
        inbound.logs[0]["typedConfig"]["logFormat"]["textFormatSource"]["inlineString"],
        "%RESPONSE_CODE%\n"
    );
}

#[test]
fn telemetry_access_logging_by_mode_with_filters_and_disabling() {
    let telemetry = format!(
        "{TELEMETRY}metadata: {{ name: mesh, namespace: istio-system }}\nspec:\n  accessLogging:\n  - providers: [ {{ name: envoy }} ]\n    match: {{ mode: SERVER }}\n    filter: {{ expression: \"response.code >= 400\" }}\n"
    );
    let (inbound, outbound, _) = translate(&telemetry, "");
    assert!(outbound.logs.is_empty(), "{:?}", outbound.logs);
    assert_eq!(inbound.logs.len(), 1);
    assert_eq!(
        inbound.logs[0]["filter"],
        json!({"extensionFilter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": "response.code >= 400"
            }
        }})
    );
    assert_eq!(inbound.logs[0]["typedConfig"]["path"], "/dev/stdout");
    // The workload turns it off; the mesh's accessLogFile does not come back.
    let (inbound, _, _) = translate(
        &format!(
            "{telemetry}---\n{TELEMETRY}metadata: {{ name: off, namespace: foo }}\nspec:\n  selector: {{ matchLabels: {{ app: httpbin }} }}\n  accessLogging:\n  - disabled: true\n"
        ),
        "accessLogFile: /dev/stdout\n",
    );
    assert!(inbound.logs.is_empty(), "{:?}", inbound.logs);
    // A file provider with its own labels logs JSON to its path.
    let (_, outbound, _) = translate(
        &format!(
            "{TELEMETRY}metadata: {{ name: json, namespace: foo }}\nspec:\n  accessLogging:\n  - providers: [ {{ name: json-file }} ]\n"
        ),
        "extensionProviders:\n- name: json-file\n  envoyFileAccessLog:\n    path: /var/log/mesh.log\n    logFormat:\n      labels: { code: \"%RESPONSE_CODE%\", peer: \"%DOWNSTREAM_REMOTE_ADDRESS%\" }\n",
    );
    assert_eq!(outbound.logs[0]["typedConfig"]["path"], "/var/log/mesh.log");
    assert_eq!(
        outbound.logs[0]["typedConfig"]["logFormat"]["jsonFormat"],
        json!({"code": "%RESPONSE_CODE%", "peer": "%DOWNSTREAM_REMOTE_ADDRESS%"})
    );
}

/// The HCM `tracing` of each side (inbound, outbound).
fn tracing_of(objects: &str, mesh: &str) -> (Value, Value) {
    let mut loaded = LoadResult::default();
    loaded.load_str("telemetry.yaml", &format!("{WORKLOAD}---\n{objects}"));
    assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    let resources: Vec<_> = loaded.objects.into_iter().map(|o| o.resource).collect();
    let inputs = Inputs::new(&resources, MeshConfig::from_yaml(mesh).unwrap().resolve());
    let labels = [
        ("app", "httpbin"),
        ("version", "v1"),
        ("service.istio.io/canonical-name", "httpbin"),
        ("service.istio.io/canonical-revision", "v1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let g = generate(
        &inputs,
        &Proxy::sidecar("httpbin-v1", "foo", "10.0.0.1", labels),
    );
    let hcm = |l: &envoy_types::pb::envoy::config::listener::v3::Listener, chain: Option<&str>| {
        let c = match chain {
            Some(n) => l.filter_chains.iter().find(|c| c.name == n).unwrap(),
            None => &l.filter_chains[0],
        };
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) =
            &c.filters[0].config_type
        else {
            panic!("untyped")
        };
        let v = render(a);
        v["tracing"].clone()
    };
    (
        hcm(&g.listeners["virtualInbound"], Some("0.0.0.0_8000")),
        hcm(&g.listeners["0.0.0.0_8000"], None),
    )
}

#[test]
fn tracing_from_telemetry_as_istiod_writes_it() {
    let mesh = "extensionProviders:\n- name: zipkin\n  zipkin: { service: zipkin.istio-system.svc.cluster.local, port: 9411, maxTagLength: 100 }\n";
    let service = "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: zipkin, namespace: istio-system }\nspec:\n  hosts: [ zipkin.istio-system.svc.cluster.local ]\n  ports: [ { number: 9411, name: http, protocol: HTTP } ]\n  resolution: DNS\n";
    // No provider anywhere: no tracing.
    let (inbound, outbound) = tracing_of(service.trim_start_matches("---\n"), mesh);
    assert!(inbound.is_null() && outbound.is_null());
    let (inbound, outbound) = tracing_of(
        &format!(
            "{TELEMETRY}metadata: {{ name: mesh, namespace: istio-system }}\nspec:\n  tracing:\n  - providers: [ {{ name: zipkin }} ]\n    randomSamplingPercentage: 10\n    customTags:\n      env: {{ environment: {{ name: POD_NAME, defaultValue: none }} }}\n---\n\
             {TELEMETRY}metadata: {{ name: quiet-server, namespace: foo }}\nspec:\n  tracing:\n  - match: {{ mode: SERVER }}\n    disableSpanReporting: true\n{service}"
        ),
        mesh,
    );
    // The server side reports nothing; the client side traces to Zipkin as istiod configures it.
    assert!(inbound.is_null(), "{inbound}");
    assert_eq!(
        outbound["provider"],
        json!({
            "name": "envoy.tracers.zipkin",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collectorCluster": "outbound|9411||zipkin.istio-system.svc.cluster.local",
                "collectorEndpoint": "/api/v2/spans",
                "traceId128bit": true,
                "sharedSpanContext": false,
                "collectorEndpointVersion": "HTTP_JSON",
                "collectorHostname": "zipkin.istio-system.svc.cluster.local"
            }
        })
    );
    assert_eq!(outbound["randomSampling"], json!({"value": 10.0}));
    assert_eq!(outbound["clientSampling"], json!({"value": 100.0}));
    assert_eq!(outbound["overallSampling"], json!({"value": 100.0}));
    assert_eq!(outbound["maxPathTagLength"], 100);
    let tags: Vec<&str> = outbound["customTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        [
            "env",
            "istio.canonical_revision",
            "istio.canonical_service",
            "istio.cluster_id",
            "istio.mesh_id",
            "istio.namespace"
        ]
    );
    assert_eq!(
        outbound["customTags"][1]["literal"]["value"], "v1",
        "{}",
        outbound["customTags"]
    );
    assert_eq!(
        outbound["customTags"][0]["environment"],
        json!({"name": "POD_NAME", "defaultValue": "none"})
    );
    // Without randomSamplingPercentage: the mesh's defaultConfig.tracing.sampling, else 1%.
    let (_, outbound) = tracing_of(
        &format!(
            "{TELEMETRY}metadata: {{ name: mesh, namespace: istio-system }}\nspec:\n  tracing:\n  - providers: [ {{ name: zipkin }} ]\n{service}"
        ),
        mesh,
    );
    assert_eq!(outbound["randomSampling"], json!({"value": 1.0}));
    let (_, outbound) = tracing_of(
        &format!(
            "{TELEMETRY}metadata: {{ name: mesh, namespace: istio-system }}\nspec:\n  tracing:\n  - providers: [ {{ name: zipkin }} ]\n{service}"
        ),
        &format!("{mesh}defaultConfig:\n  tracing: {{ sampling: 25 }}\n"),
    );
    assert_eq!(outbound["randomSampling"], json!({"value": 25.0}));
}

/// `envoyOtelAls` as istiod's `buildOpenTelemetryAccessLogConfig` writes it: gRPC to the
/// collector's outbound cluster with its host as authority, the deprecated `common_config`,
/// the text as body (Istio's format by default), labels as sorted string attributes, and no
/// built-in resource labels.
#[test]
fn otel_access_log_provider_as_istiod_writes_it() {
    let telemetry = format!(
        "{TELEMETRY}metadata: {{ name: mesh, namespace: istio-system }}\nspec:\n  accessLogging:\n  - providers: [ {{ name: otel }} ]\n"
    );
    let mesh = "extensionProviders:\n- name: otel\n  envoyOtelAls:\n    service: opentelemetry-collector.observability.svc.cluster.local\n    port: 4317\n    logFormat:\n      text: \"%REQ(:METHOD)% %RESPONSE_CODE%\"\n      labels: { zz: \"%RESPONSE_FLAGS%\", aa: \"%REQ(:PATH)%\" }\n";
    let (inbound, outbound, problems) = translate(&telemetry, mesh);
    assert!(problems.is_empty(), "{problems:?}");
    let expected = json!({
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
        "commonConfig": {
            "logName": "otel_envoy_accesslog",
            "grpcService": {"envoyGrpc": {
                "clusterName": "outbound|4317||opentelemetry-collector.observability.svc.cluster.local",
                "authority": "opentelemetry-collector.observability.svc.cluster.local"
            }},
            "transportApiVersion": "V3",
            "filterStateObjectsToLog": [
                "upstream_peer", "downstream_peer", "wasm.upstream_peer",
                "wasm.upstream_peer_id", "wasm.downstream_peer", "wasm.downstream_peer_id"
            ]
        },
        "disableBuiltinLabels": true,
        "body": {"stringValue": "%REQ(:METHOD)% %RESPONSE_CODE%"},
        "attributes": {"values": [
            {"key": "aa", "value": {"stringValue": "%REQ(:PATH)%"}},
            {"key": "zz", "value": {"stringValue": "%RESPONSE_FLAGS%"}}
        ]}
    });
    for side in [&inbound, &outbound] {
        assert_eq!(side.logs.len(), 1, "{:?}", side.logs);
        assert_eq!(side.logs[0]["typedConfig"], expected);
    }
    // Without a text, the body is Istio's own text format, its newline included.
    let (_, outbound, _) = translate(
        &telemetry,
        "extensionProviders:\n- name: otel\n  envoyOtelAls: { service: otel.observability.svc.cluster.local, port: 4317, logName: mine }\n",
    );
    let c = &outbound.logs[0]["typedConfig"];
    assert_eq!(c["commonConfig"]["logName"], "mine");
    let body = c["body"]["stringValue"].as_str().unwrap();
    assert!(
        body.starts_with("[%START_TIME%] \"%REQ(:METHOD)%"),
        "{body}"
    );
    assert!(body.ends_with("%ROUTE_NAME%\n"), "{body}");
    assert!(c.get("attributes").is_none(), "{c}");
}

/// istio-proxy's network filters (istiod's `xdsfilters.TCPListenerMx`, `TCPClusterMx` and the
/// TCP `istio.stats`), for a proxy that runs them: the exchange first on every inbound chain,
/// `istio.stats` just before each `tcp_proxy`, the exchange on every outbound cluster. A
/// proxy without them (stock Envoy) gets none.
#[test]
fn tcp_exchange_and_stats_for_proxies_that_have_them() {
    let objects = "apiVersion: v1\nkind: Service\nmetadata: { name: db, namespace: foo }\nspec:\n  selector: { app: httpbin }\n  ports:\n  - { name: tcp, port: 5432 }\n";
    let mut loaded = LoadResult::default();
    loaded.load_str("tcp.yaml", &format!("{WORKLOAD}---\n{objects}"));
    let resources: Vec<_> = loaded.objects.into_iter().map(|o| o.resource).collect();
    let inputs = Inputs::new(&resources, MeshConfig::from_yaml("").unwrap().resolve());
    let labels = [("app", "httpbin"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut proxy = Proxy::sidecar("httpbin-v1", "foo", "10.0.0.1", labels);
    let plain = generate(&inputs, &proxy);
    proxy.istio_extensions = true;
    let g = generate(&inputs, &proxy);
    let names = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| -> Vec<String> {
        c.filters.iter().map(|f| f.name.clone()).collect()
    };
    let typed = |f: &envoy_types::pb::envoy::config::listener::v3::Filter| match &f.config_type {
        Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) => {
            render(a)
        }
        _ => panic!("untyped"),
    };
    let inbound = &g.listeners["virtualInbound"];
    let tcp = inbound
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_5432")
        .unwrap();
    assert_eq!(
        names(tcp),
        [
            "istio.metadata_exchange",
            "istio.stats",
            "envoy.filters.network.tcp_proxy"
        ]
    );
    assert_eq!(
        typed(&tcp.filters[0]),
        json!({
            "typeUrl": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
            "value": {"enable_discovery": true, "protocol": "istio-peer-exchange"}
        })
    );
    assert_eq!(
        typed(&tcp.filters[1]),
        json!({"disableHostHeaderFallback": true})
    );
    // HTTP inbound chains get the exchange ahead of the connection manager, no TCP stats.
    let http = inbound
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_8000")
        .unwrap();
    assert_eq!(
        names(http),
        [
            "istio.metadata_exchange",
            "envoy.filters.network.http_connection_manager"
        ]
    );
    // Outbound TCP (here the passthrough chain): stats before the proxy, no exchange on the
    // listener; the clusters have it.
    let outbound = &g.listeners["virtualOutbound"];
    assert!(
        outbound
            .filter_chains
            .iter()
            .any(|c| names(c) == ["istio.stats", "envoy.filters.network.tcp_proxy"])
    );
    let cluster = &g.clusters["outbound|5432||db.foo.svc.cluster.local"];
    assert_eq!(cluster.filters.len(), 1);
    assert_eq!(cluster.filters[0].name, "istio.metadata_exchange");
    assert_eq!(g.clusters["PassthroughCluster"].filters.len(), 1);
    assert!(
        g.clusters["inbound|5432||"].filters.is_empty(),
        "inbound clusters have no exchange"
    );
    // Without them: none of it.
    assert!(plain.listeners.values().all(|l| {
        l.filter_chains
            .iter()
            .all(|c| c.filters.iter().all(|f| !f.name.starts_with("istio.")))
    }));
    assert!(plain.clusters.values().all(|c| c.filters.is_empty()));
}

/// Two services give one workload port different protocols: the inbound listener keeps the
/// first's (by host name), and the other is reported and counted as istiod's
/// `pilot_conflict_inbound_listener`. A TCP service without a virtual IP on a port another
/// service serves as HTTP is `pilot_conflict_outbound_listener_tcp_over_current_http`.
#[test]
fn conflicting_listeners_are_reported_and_counted() {
    let objects = "apiVersion: v1\nkind: Service\nmetadata: { name: httpbin-raw, namespace: foo }\nspec:\n  selector: { app: httpbin }\n  ports:\n  - { name: tcp, port: 8000 }\n";
    let mut loaded = LoadResult::default();
    loaded.load_str("c.yaml", &format!("{WORKLOAD}---\n{objects}"));
    let resources: Vec<_> = loaded.objects.into_iter().map(|o| o.resource).collect();
    let inputs = Inputs::new(&resources, MeshConfig::from_yaml("").unwrap().resolve());
    let labels = [("app", "httpbin"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let g = generate(
        &inputs,
        &Proxy::sidecar("httpbin-v1", "foo", "10.0.0.1", labels),
    );
    assert!(
        g.problems
            .iter()
            .any(|p| p.contains("port 8000 of the workload") && p.contains("keeps")),
        "{:?}",
        g.problems
    );
    assert_eq!(
        g.conflicts,
        [
            (
                "pilot_conflict_inbound_listener",
                "10.0.0.1:8000".to_string()
            ),
            (
                "pilot_conflict_outbound_listener_tcp_over_current_http",
                "0.0.0.0:8000".to_string()
            )
        ]
    );
}
