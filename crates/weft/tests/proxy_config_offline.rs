//! `weft proxy-config -f DIR --workload NS/NAME`: what a workload's sidecar would get from a
//! folder, with no mesh running, in Envoy's JSON. Here it shows what policies became: the
//! seeds' AuthorizationPolicy and Istio's documented `details-viewer` and `allow-nothing`
//! examples (istio.io's HTTP authorization task), each compared with the RBAC istiod writes for
//! it, written out by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::process::Command;

const WORKLOADS: &str = r#"apiVersion: v1
kind: Service
metadata: { name: httpbin, namespace: default }
spec:
  selector: { app: httpbin }
  ports: [ { name: http, port: 8000 } ]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: httpbin-v1, namespace: default }
spec: { address: 10.1.2.3, labels: { app: httpbin, version: v1 }, serviceAccount: httpbin }
---
apiVersion: v1
kind: Service
metadata: { name: details, namespace: default }
spec:
  selector: { app: details }
  ports: [ { name: http, port: 9080 } ]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: details-v1, namespace: default }
spec: { address: 10.1.2.4, labels: { app: details, version: v1 }, serviceAccount: bookinfo-details }
"#;

const DOCUMENTED: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: details-viewer
  namespace: default
spec:
  selector:
    matchLabels:
      app: details
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: default
spec: {}
"#;

fn weft(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(support::weft_binary())
        .args(args)
        .arg("-f")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The RBAC filters of the workload's HTTP port on `virtualInbound`.
fn rbac(dir: &std::path::Path, workload: &str, port: u16) -> Vec<Value> {
    let (ok, out, err) = weft(
        &[
            "proxy-config",
            "listeners",
            "--workload",
            workload,
            "-o",
            "json",
        ],
        dir,
    );
    assert!(ok, "{err}");
    let dump: Value = serde_json::from_str(&out).unwrap();
    let chains = dump["listeners"]["virtualInbound"]["filter_chains"]
        .as_array()
        .unwrap();
    let chain = chains
        .iter()
        .find(|c| c["name"] == format!("0.0.0.0_{port}"))
        .unwrap_or_else(|| panic!("no chain for {port}: {out}"));
    chain["filters"][0]["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == "envoy.filters.http.rbac")
        .map(|f| f["typed_config"].clone())
        .collect()
}

fn authenticated(m: Value) -> Value {
    json!({"authenticated": {"principal_name": m}})
}

fn claim(path: &[&str], value: Value) -> Value {
    let path: Vec<Value> = path.iter().map(|k| json!({"key": k})).collect();
    json!({"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": path, "value": value}})
}

#[test]
fn offline_proxy_config_shows_what_policies_became() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../weft-api/tests/fixtures/seeds/27-003-L982.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("seed-policy.yaml"), seed).unwrap();
    std::fs::write(dir.path().join("workloads.yaml"), WORKLOADS).unwrap();
    std::fs::write(dir.path().join("documented.yaml"), DOCUMENTED).unwrap();

    // The seeds' policy: GET to /test/* or */info, from the sleep account without a token or
    // from namespace dev, when the token's issuer is Google's (none without one: the first
    // source can never match with the condition, as in Istio).
    let google = json!({"or_match": {"value_matchers": [
        {"list_match": {"one_of": {"string_match": {"exact": "https://accounts.google.com"}}}},
        {"string_match": {"exact": "https://accounts.google.com"}},
    ]}});
    let any = json!({"string_match": {"safe_regex": {"regex": ".+"}}});
    let httpbin = rbac(dir.path(), "default/httpbin-v1", 8000);
    assert_eq!(httpbin.len(), 1, "{httpbin:#?}");
    assert_eq!(
        httpbin[0]["shadow_rules_stat_prefix"],
        "istio_dry_run_allow_"
    );
    assert_eq!(
        httpbin[0]["rules"]["policies"]["ns[default]-policy[httpbin]-rule[0]"],
        json!({
                "permissions": [{"and_rules": {"rules": [
                    {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}},
                    {"or_rules": {"rules": [
                        {"url_path": {"path": {"prefix": "/test/"}}},
                        {"url_path": {"path": {"suffix": "/info"}}},
                    ]}},
                ]}}],
                "principals": [
                    {"and_ids": {"ids": [
                        {"or_ids": {"ids": [authenticated(json!({"exact": "spiffe://cluster.local/ns/default/sa/sleep"}))]}},
                        {"not_id": {"and_ids": {"ids": [
                            claim(&["payload", "iss"], any.clone()),
                            claim(&["payload", "sub"], any.clone()),
                        ]}}},
                        claim(&["payload", "iss"], google.clone()),
                    ]}},
                    {"and_ids": {"ids": [
                        {"or_ids": {"ids": [authenticated(json!({"safe_regex": {"regex": ".*/ns/dev/.*"}}))]}},
                        claim(&["payload", "iss"], google.clone()),
                    ]}},
                ],
        })
    );
    // allow-nothing has no selector: it is every workload's of the namespace.
    assert!(
        httpbin[0]["rules"]["policies"]["ns[default]-policy[allow-nothing]-rule[0]"].is_object()
    );

    // istio.io's details-viewer, beside allow-nothing (which applies to every workload of
    // the namespace): one ALLOW filter with both.
    let details = rbac(dir.path(), "default/details-v1", 9080);
    assert_eq!(details.len(), 1, "{details:#?}");
    assert_eq!(
        details[0]["rules"]["policies"],
        json!({
            "ns[default]-policy[allow-nothing]-rule[0]": {
                "permissions": [{"not_rule": {"any": true}}],
                "principals": [{"not_id": {"any": true}}],
            },
            "ns[default]-policy[details-viewer]-rule[0]": {
                "permissions": [{"and_rules": {"rules": [
                    {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}},
                ]}}],
                "principals": [{"and_ids": {"ids": [
                    {"or_ids": {"ids": [authenticated(json!({"exact": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"}))]}},
                ]}}],
            },
        })
    );

    // A workload the folder does not have: a clear error, and no output.
    let (ok, out, err) = weft(
        &["proxy-config", "listeners", "--workload", "default/nobody"],
        dir.path(),
    );
    assert!(
        !ok && out.is_empty() && err.contains("no WorkloadEntry or Pod default/nobody"),
        "{err}"
    );
}
