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
    /// Every HTTP filter of the HTTP port, in order.
    pub names: Vec<String>,
    pub ext_authz: Option<Value>,
    pub jwt: Option<Value>,
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
    let render_http = |f: &envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter| match &f.config_type {
        Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(a)) => render(a),
        _ => panic!("untyped"),
    };
    let names = hcm.http_filters.iter().map(|f| f.name.clone()).collect();
    let ext_authz = hcm
        .http_filters
        .iter()
        .find(|f| f.name == "envoy.filters.http.ext_authz")
        .map(render_http);
    let jwt = hcm
        .http_filters
        .iter()
        .find(|f| f.name == "envoy.filters.http.jwt_authn")
        .map(render_http);
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
        names,
        ext_authz,
        jwt,
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

#[test]
fn audit_then_deny_then_allow_with_dry_run_in_shadow_rules() {
    let t = translate(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-get, namespace: foo }
spec:
  rules: [ { to: [ { operation: { methods: [GET] } } ] } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: foo }
spec:
  action: DENY
  rules: [ { to: [ { operation: { paths: ["/admin"] } } ] } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: root-deny, namespace: istio-system }
spec:
  action: DENY
  rules: [ { to: [ { operation: { ports: ["9000"] } } ] } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: maybe-deny
  namespace: foo
  annotations: { istio.io/dry-run: "true" }
spec:
  action: DENY
  rules: [ {} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: audit-all, namespace: foo }
spec:
  action: AUDIT
  rules: [ {} ]
"#,
        "",
    );
    let any_rule = json!({
        "permissions": [{"andRules": {"rules": [{"any": true}]}}],
        "principals": [{"andIds": {"ids": [{"any": true}]}}],
    });
    let names = |f: &Value| {
        f["policies"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(t.http.len(), 3, "{:#?}", t.http);
    assert_eq!(t.http[0]["rules"]["action"], "LOG");
    assert_eq!(
        t.http[0]["rules"]["policies"]["ns[foo]-policy[audit-all]-rule[0]"],
        any_rule
    );
    assert_eq!(t.http[1]["rules"]["action"], "DENY");
    assert_eq!(
        names(&t.http[1]["rules"]),
        [
            "ns[foo]-policy[deny-admin]-rule[0]",
            "ns[istio-system]-policy[root-deny]-rule[0]"
        ]
    );
    assert_eq!(t.http[1]["shadowRules"]["action"], "DENY");
    assert_eq!(
        t.http[1]["shadowRules"]["policies"]["ns[foo]-policy[maybe-deny]-rule[0]"],
        any_rule
    );
    assert_eq!(t.http[1]["shadowRulesStatPrefix"], "istio_dry_run_deny_");
    assert!(
        t.http[2]["rules"]["action"].is_null(),
        "ALLOW is the default"
    );
    assert_eq!(
        names(&t.http[2]["rules"]),
        ["ns[foo]-policy[allow-get]-rule[0]"]
    );
    // On TCP the ALLOW rule names a method: it is left out, so the ALLOW filter allows nothing.
    assert_eq!(t.tcp.len(), 3);
    assert_eq!(t.tcp[2]["rules"]["policies"], Value::Null);
    assert!(
        t.problems
            .iter()
            .any(|p| p.contains("allow-get") && p.contains("methods")),
        "{:?}",
        t.problems
    );
}

#[test]
fn request_principals_and_claims_read_the_jwt_payload() {
    let t = translate(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: jwt, namespace: foo }
spec:
  rules:
  - from: [ { source: { requestPrincipals: ["https://issuer.example/*"], notRequestPrincipals: ["*"] } } ]
    when:
    - { key: "request.auth.claims[groups]", values: ["admin", "dev-*"] }
    - { key: "request.auth.claims[realm][role]", notValues: ["guest"] }
    - { key: request.auth.audiences, values: ["api"] }
"#,
        "",
    );
    let claim = |path: &[&str], value: Value| {
        let path: Vec<Value> = path.iter().map(|k| json!({"key": k})).collect();
        json!({"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": path, "value": value}})
    };
    let string_or_list =
        |v: Value| json!({"orMatch": {"valueMatchers": [{"listMatch": {"oneOf": v.clone()}}, v]}});
    let ids = &t.http[0]["rules"]["policies"]["ns[foo]-policy[jwt]-rule[0]"]["principals"][0]["andIds"]
        ["ids"];
    assert_eq!(
        ids,
        &json!([
            {"andIds": {"ids": [
                claim(&["payload", "iss"], json!({"stringMatch": {"exact": "https://issuer.example"}})),
                claim(&["payload", "sub"], json!({"stringMatch": {"safeRegex": {"regex": ".+"}}})),
            ]}},
            {"notId": {"andIds": {"ids": [
                claim(&["payload", "iss"], json!({"stringMatch": {"safeRegex": {"regex": ".+"}}})),
                claim(&["payload", "sub"], json!({"stringMatch": {"safeRegex": {"regex": ".+"}}})),
            ]}}},
            claim(&["payload", "groups"], string_or_list(json!({"orMatch": {"valueMatchers": [
                {"stringMatch": {"exact": "admin"}},
                {"stringMatch": {"prefix": "dev-"}},
            ]}}))),
            {"notId": claim(&["payload", "realm", "role"], string_or_list(json!({"stringMatch": {"exact": "guest"}})))},
            claim(&["payload", "aud"], string_or_list(json!({"stringMatch": {"exact": "api"}}))),
        ])
    );
    // On TCP there is no JWT: under ALLOW the rule is left out.
    assert_eq!(t.tcp[0]["rules"]["policies"], Value::Null);
}

#[test]
fn operations_and_connection_keys() {
    let t = translate(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ops, namespace: foo }
spec:
  rules:
  - to:
    - operation:
        hosts: ["*.example.com", "*"]
        notMethods: ["DELETE"]
        paths: ["/api/{*}/items/{**}", "/static/*"]
        ports: ["8000"]
    when:
    - { key: connection.sni, values: ["outbound_.8000_._.httpbin.foo.svc.cluster.local"] }
    - { key: destination.ip, notValues: ["10.0.0.0/8"] }
    - { key: "experimental.envoy.filters.network.mysql_proxy[db.table]", values: ["[update]"] }
"#,
        "",
    );
    let template = |t: &str| {
        json!({"uriTemplate": {"name": "uri-template", "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
            "pathTemplate": t,
        }}})
    };
    let rules = &t.http[0]["rules"]["policies"]["ns[foo]-policy[ops]-rule[0]"]["permissions"][0]["andRules"]
        ["rules"];
    assert_eq!(
        rules,
        &json!([
            {"orRules": {"rules": [
                {"header": {"name": ":authority", "stringMatch": {"suffix": ".example.com", "ignoreCase": true}}},
                {"header": {"name": ":authority", "presentMatch": true}},
            ]}},
            {"notRule": {"orRules": {"rules": [
                {"header": {"name": ":method", "stringMatch": {"exact": "DELETE"}}},
            ]}}},
            {"orRules": {"rules": [
                template("/api/*/items/**"),
                {"urlPath": {"path": {"prefix": "/static/"}}},
            ]}},
            {"orRules": {"rules": [{"destinationPort": 8000}]}},
            {"orRules": {"rules": [
                {"requestedServerName": {"exact": "outbound_.8000_._.httpbin.foo.svc.cluster.local"}},
            ]}},
            {"notRule": {"orRules": {"rules": [
                {"destinationIp": {"addressPrefix": "10.0.0.0", "prefixLen": 8}},
            ]}}},
            {"metadata": {"filter": "envoy.filters.network.mysql_proxy", "path": [{"key": "db.table"}],
                "value": {"listMatch": {"oneOf": {"stringMatch": {"exact": "update"}}}}}},
        ])
    );
}

#[test]
fn scope_root_namespace_selector_and_target_refs() {
    let t = translate(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: mesh-wide, namespace: istio-system }
spec: { action: DENY, rules: [ { to: [ { operation: { ports: ["1"] } } ] } ] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: other-app, namespace: foo }
spec: { selector: { matchLabels: { app: other } }, action: DENY, rules: [ {} ] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: other-namespace, namespace: bar }
spec: { action: DENY, rules: [ {} ] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: gateway-api, namespace: foo }
spec:
  targetRefs: [ { group: gateway.networking.k8s.io, kind: Gateway, name: gw } ]
  action: DENY
  rules: [ {} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-nothing, namespace: foo }
spec: { selector: { matchLabels: { app: httpbin } } }
"#,
        "rootNamespace: istio-system\n",
    );
    assert_eq!(t.http.len(), 2);
    let names: Vec<&String> = t.http[0]["rules"]["policies"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(names, ["ns[istio-system]-policy[mesh-wide]-rule[0]"]);
    // ALLOW without rules: a policy nothing matches, so everything is denied.
    assert_eq!(
        t.http[1]["rules"]["policies"]["ns[foo]-policy[allow-nothing]-rule[0]"],
        json!({
            "permissions": [{"notRule": {"any": true}}],
            "principals": [{"notId": {"any": true}}],
        })
    );
    assert!(
        t.problems
            .iter()
            .any(|p| p.contains("foo/gateway-api") && p.contains("targetRef"))
    );
}

#[test]
fn trust_domain_aliases_stand_for_cluster_local() {
    let t = translate(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: td, namespace: foo }
spec:
  rules:
  - from: [ { source: { principals: ["cluster.local/ns/foo/sa/sleep", "old-td/ns/foo/sa/x", "elsewhere/ns/foo/sa/y"] } } ]
"#,
        "trustDomain: new-td\ntrustDomainAliases: [old-td]\n",
    );
    let ids = &t.http[0]["rules"]["policies"]["ns[foo]-policy[td]-rule[0]"]["principals"][0]["andIds"]
        ["ids"][0]["orIds"]["ids"];
    let names: Vec<&Value> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["authenticated"]["principalName"]["exact"])
        .collect();
    assert_eq!(
        names,
        [
            "spiffe://new-td/ns/foo/sa/sleep",
            "spiffe://old-td/ns/foo/sa/sleep",
            "spiffe://new-td/ns/foo/sa/x",
            "spiffe://old-td/ns/foo/sa/x",
            "spiffe://elsewhere/ns/foo/sa/y",
        ]
    );
}

#[test]
fn request_authentication_becomes_istiods_jwt_authn() {
    let t = translate(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: b, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  jwtRules:
  - issuer: https://second.example
    jwks: '{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
    audiences: [api, web]
    fromHeaders: [ { name: x-jwt, prefix: "Token " } ]
    fromParams: [ tok ]
    fromCookies: [ session ]
    forwardOriginalToken: true
    outputPayloadToHeader: x-payload
    outputClaimToHeaders: [ { header: x-sub, claim: sub } ]
    spaceDelimitedClaims: [ roles, scope ]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: a, namespace: istio-system }
spec:
  jwtRules:
  - issuer: https://first.example
    jwksUri: http://keys.example/jwks.json
"#,
        "",
    );
    let jwt = t.jwt.expect("a jwt_authn filter");
    let keys = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    // Sorted by issuer: first.example is origins-0. Its JWKS was never fetched here: its keys
    // are a public key nobody can sign for, and the problem is said.
    assert_eq!(
        jwt["providers"]["origins-0"]["issuer"],
        "https://first.example"
    );
    let placeholder = jwt["providers"]["origins-0"]["localJwks"]["inlineString"]
        .as_str()
        .unwrap();
    assert!(placeholder.contains("weft-public-only"), "{placeholder}");
    assert!(
        t.problems
            .iter()
            .any(|p| p.contains("RequestAuthentication istio-system/a")
                && p.contains("every token of this issuer is refused")),
        "{:?}",
        t.problems
    );
    assert_eq!(
        jwt["providers"]["origins-1"],
        json!({
            "issuer": "https://second.example",
            "audiences": ["api", "web"],
            "forward": true,
            "fromHeaders": [{"name": "x-jwt", "valuePrefix": "Token "}],
            "fromParams": ["tok"],
            "fromCookies": ["session"],
            "forwardPayloadHeader": "x-payload",
            "payloadInMetadata": "payload",
            "normalizePayloadInMetadata": {"spaceDelimitedClaims": ["permission", "roles", "scope"]},
            "claimToHeaders": [{"headerName": "x-sub", "claimName": "sub"}],
            "localJwks": {"inlineString": keys},
        })
    );
    let any_or_missing = |p: &str| json!({"requiresAny": {"requirements": [{"providerName": p}, {"allowMissing": {}}]}});
    assert_eq!(
        jwt["rules"],
        json!([{
            "match": {"prefix": "/"},
            "requires": {"requiresAny": {"requirements": [
                {"providerName": "origins-0"},
                {"providerName": "origins-1"},
                {"requiresAll": {"requirements": [any_or_missing("origins-0"), any_or_missing("origins-1")]}},
            ]}},
        }])
    );
    assert_eq!(jwt["bypassCorsPreflight"], true);
}

#[test]
fn unusable_inline_keys_refuse_every_token_instead_of_breaking_the_listener() {
    for jwks in [
        r#"{"keys": [{"kty": "XYZ"}]}"#,
        "not json",
        r#"{"keys": []}"#,
    ] {
        let t = translate(
            &format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{ name: bad, namespace: foo }}\nspec:\n  jwtRules:\n  - issuer: https://bad.example\n    jwks: '{jwks}'\n"
            ),
            "",
        );
        let jwt = t.jwt.expect("a jwt_authn filter");
        let keys = jwt["providers"]["origins-0"]["localJwks"]["inlineString"]
            .as_str()
            .unwrap();
        assert!(keys.contains("weft-public-only"), "{jwks}: {keys}");
        assert!(
            t.problems
                .iter()
                .any(|p| p.contains("RequestAuthentication foo/bad")
                    && p.contains("no key the proxies can use")),
            "{jwks}: {:?}",
            t.problems
        );
    }
}

#[test]
fn custom_policies_ask_the_mesh_configs_provider() {
    let t = translate(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: authz, namespace: foo }
spec:
  hosts: [ my-ext-authz.foo.svc.cluster.local ]
  ports: [ { number: 9000, name: http, protocol: HTTP } ]
  resolution: STATIC
  endpoints: [ { address: 10.0.0.9 } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ext, namespace: foo }
spec:
  action: CUSTOM
  provider: { name: default }
  rules: [ { to: [ { operation: { paths: ["/admin"] } } ] } ]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt, namespace: foo }
spec:
  jwtRules: [ { issuer: x, jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}' } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow, namespace: foo }
spec:
  rules: [ {} ]
"#,
        r#"
extensionProviders:
- name: default
  envoyExtAuthzHttp:
    service: my-ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 10s
    pathPrefix: /check
    failOpen: true
    statusOnError: "403"
    includeRequestHeadersInCheck: ["x-custom-id", "x-prefix-*", "*-suffix"]
    includeAdditionalHeadersInCheck: { x-header-2: value-2, x-header-1: value-1 }
    headersToUpstreamOnAllow: ["x-user"]
    headersToDownstreamOnDeny: ["x-reason"]
"#,
    );
    // istiod's order: metadata exchange, the CUSTOM pair, then JWT, then the other RBAC
    // filters, then the rest, with the stats filter just before the router.
    assert_eq!(
        t.names[t.names.len() - 2..],
        ["istio.stats", "envoy.filters.http.router"]
    );
    assert_eq!(
        t.names[..5],
        [
            "istio.metadata_exchange",
            "envoy.filters.http.rbac",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.rbac",
        ]
    );
    let marker = &t.http[0];
    assert_eq!(marker["shadowRulesStatPrefix"], "istio_ext_authz_");
    assert_eq!(marker["shadowRules"]["action"], "DENY");
    assert!(marker["rules"].is_null());
    assert!(
        marker["shadowRules"]["policies"]["istio-ext-authz-default-ns[foo]-policy[ext]-rule[0]"]
            .is_object()
    );
    let ci = |m: Value| {
        let mut m = m;
        m["ignoreCase"] = json!(true);
        m
    };
    assert_eq!(
        t.ext_authz.expect("an ext_authz filter"),
        json!({
            "transportApiVersion": "V3",
            "failureModeAllow": true,
            "statusOnError": {"code": "Forbidden"},
            "filterEnabledMetadata": {
                "filter": "envoy.filters.http.rbac",
                "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
                "value": {"stringMatch": {"prefix": "istio-ext-authz-default"}},
            },
            "allowedHeaders": {"patterns": [
                ci(json!({"exact": "x-custom-id"})),
                ci(json!({"prefix": "x-prefix-"})),
                ci(json!({"suffix": "-suffix"})),
            ]},
            "httpService": {
                "serverUri": {
                    "uri": "http://my-ext-authz.foo.svc.cluster.local",
                    "cluster": "outbound|9000||my-ext-authz.foo.svc.cluster.local",
                    "timeout": "10s",
                },
                "pathPrefix": "/check",
                "authorizationRequest": {"headersToAdd": [
                    {"key": "x-header-1", "value": "value-1"},
                    {"key": "x-header-2", "value": "value-2"},
                ]},
                "authorizationResponse": {
                    "allowedUpstreamHeaders": {"patterns": [ci(json!({"exact": "x-user"}))]},
                    "allowedClientHeaders": {"patterns": [ci(json!({"exact": "x-reason"}))]},
                },
            },
        })
    );
}
