//! AuthorizationPolicy translation against istiod: each case's expected RBAC filter is what
//! istiod's authz builder writes for the same policy (its `builder/testdata`, and Istio's
//! documented examples), written out here by hand in Envoy's JSON, not taken from Weft's
//! output. The workload is `httpbin` v1 in `foo`, with an HTTP port (8000) and a TCP one
//! (9000), under capture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
  - { name: tcp, port: 9000 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: httpbin-v1, namespace: foo }
spec:
  address: 10.0.0.1
  labels: { app: httpbin, version: v1 }
"#;

pub struct Translated {
    pub http: Vec<Value>,
    pub tcp: Vec<Value>,
    pub problems: Vec<String>,
}

fn render(any: &envoy_types::pb::google::protobuf::Any) -> Value {
    let pool = weft_proxy::config::pool();
    let name = any.type_url.rsplit('/').next().unwrap();
    let d = pool.get_message_by_name(name).unwrap();
    let m = DynamicMessage::decode(d, any.value.as_slice()).unwrap();
    serde_json::to_value(&m).unwrap()
}

/// The RBAC filters httpbin's inbound chains get under `policies` (and `mesh`).
pub fn translate(policies: &str, mesh: &str) -> Translated {
    let mut loaded = LoadResult::default();
    loaded.load_str("policies.yaml", &format!("{WORKLOAD}---\n{policies}"));
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
    let inbound = &g.listeners["virtualInbound"];
    let chain = |name: &str| {
        inbound
            .filter_chains
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no chain {name}"))
    };
    let typed = |f: &envoy_types::pb::envoy::config::listener::v3::Filter| match &f.config_type {
        Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) => {
            a.clone()
        }
        _ => panic!("untyped filter"),
    };
    let hcm = typed(&chain("0.0.0.0_8000").filters[0]);
    let hcm = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(hcm.value.as_slice()).unwrap();
    let http = hcm
        .http_filters
        .iter()
        .filter(|f| f.name == "envoy.filters.http.rbac")
        .map(|f| match &f.config_type {
            Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(a)) => render(a),
            _ => panic!("untyped"),
        })
        .collect();
    let tcp = chain("0.0.0.0_9000")
        .filters
        .iter()
        .filter(|f| f.name == "envoy.filters.network.rbac")
        .map(|f| render(&typed(f)))
        .collect();
    Translated {
        http,
        tcp,
        problems: g.problems,
    }
}

fn policies(filter: &Value) -> &Value {
    &filter["rules"]["policies"]
}

#[test]
fn trust_domains_are_prefixes_and_wildcards_stay_in_the_domain() {
    let t = translate(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: httpbin, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin, version: v1 } }
  rules:
  - from:
    - source: { trustDomains: ["cluster.local", "another.local"] }
    - source: { notTrustDomains: ["bad*", "untrusted"] }
"#,
        "",
    );
    let authenticated = |m: Value| json!({"authenticated": {"principalName": m}});
    assert_eq!(
        t.http,
        vec![json!({
            "rules": {"policies": {"ns[foo]-policy[httpbin]-rule[0]": {
                "permissions": [{"andRules": {"rules": [{"any": true}]}}],
                "principals": [
                    {"andIds": {"ids": [{"orIds": {"ids": [
                        authenticated(json!({"prefix": "spiffe://cluster.local/"})),
                        authenticated(json!({"prefix": "spiffe://another.local/"})),
                    ]}}]}},
                    {"andIds": {"ids": [{"notId": {"orIds": {"ids": [
                        authenticated(json!({"safeRegex": {"regex": "spiffe://bad[^/]*/.*"}})),
                        authenticated(json!({"prefix": "spiffe://untrusted/"})),
                    ]}}}]}},
                ],
            }}},
            "shadowRulesStatPrefix": "istio_dry_run_allow_",
        })]
    );
    // The same rule on TCP: nothing in it is HTTP's.
    assert_eq!(policies(&t.tcp[0]), policies(&t.http[0]));
    assert_eq!(t.tcp[0]["statPrefix"], "tcp.");
}
