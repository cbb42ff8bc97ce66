//! The fidelity table (`src/fidelity.table`) against Istio's CRD schemas: every field of the
//! traffic-management, security and telemetry kinds has a row, no row names a field the schema lacks, every `yes` names
//! a test that exists, and every `no` draws its warning where an object uses the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use weft_api::fidelity::{Applied, FIELDS, canonical, not_applied_in};
use weft_api::yaml::{Node, parse_stream};

const KINDS: [&str; 11] = [
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "Sidecar",
    "WorkloadEntry",
    "WorkloadGroup",
    "PeerAuthentication",
    "RequestAuthentication",
    "AuthorizationPolicy",
    "Telemetry",
];

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Every field path of `schema` under `path`: `[]` for list items, `{}` for the values of a
/// map whose keys are data.
fn paths(path: &str, schema: &Value, out: &mut Vec<String>) {
    if schema["type"] == "array" && !schema["items"].is_null() {
        paths(&format!("{path}[]"), &schema["items"], out);
        return;
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            out.push(p.clone());
            paths(&p, v, out);
        }
    } else if schema["additionalProperties"].is_object() {
        paths(&format!("{path}{{}}"), &schema["additionalProperties"], out);
    }
}

/// The table's paths for every field of those kinds, from the storage version's schema.
fn schema_rows() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(repo().join("../shared/istio/crd/crd-all.gen.yaml")).unwrap();
    let mut rows = BTreeSet::new();
    for doc in parse_stream(&text).unwrap() {
        let crd = doc.to_json();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("");
        let istio = [
            "networking.istio.io",
            "security.istio.io",
            "telemetry.istio.io",
        ];
        if !istio.iter().any(|g| crd["spec"]["group"] == *g) || !KINDS.contains(&kind) {
            continue;
        }
        let versions = crd["spec"]["versions"].as_array().unwrap();
        let version = versions
            .iter()
            .find(|v| v["storage"] == true)
            .unwrap_or(&versions[0]);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut found = Vec::new();
        paths("spec", spec, &mut found);
        rows.extend(found.iter().map(|p| canonical(kind, p)));
    }
    rows
}

#[test]
fn every_schema_field_has_a_row_and_every_row_a_field() {
    let schema = schema_rows();
    assert!(schema.len() > 400, "{} fields read", schema.len());
    let table: BTreeSet<String> = FIELDS.keys().map(ToString::to_string).collect();
    let missing: Vec<&String> = schema.difference(&table).collect();
    let stale: Vec<&String> = table.difference(&schema).collect();
    assert!(missing.is_empty(), "fields with no row: {missing:#?}");
    assert!(stale.is_empty(), "rows for no field: {stale:#?}");
}

#[test]
fn every_yes_names_a_test_that_exists() {
    let mut wrong = Vec::new();
    for (path, applied) in FIELDS.iter() {
        let Applied::Yes(test) = applied else {
            continue;
        };
        let (file, func) = test.split_once("::").unwrap_or((test, ""));
        let ok = [
            "crates/weft/tests",
            "crates/weft-xds/tests",
            "crates/weft-api/tests",
            "crates/weft-xds/src/translate",
        ]
        .iter()
        .map(|d| repo().join(d).join(file))
        .filter(|p| p.exists())
        .any(|f| {
            func.is_empty()
                || std::fs::read_to_string(f)
                    .unwrap()
                    .contains(&format!("fn {func}("))
        });
        if !ok {
            wrong.push(format!("{path}: {test}"));
        }
    }
    assert!(wrong.is_empty(), "tests that do not exist: {wrong:#?}");
}

/// A value at `path` (`spec.a[].b{}.c`) and nothing else.
fn object_with(path: &str) -> Value {
    let segments: Vec<&str> = path.split('.').skip(1).collect();
    let mut value = json!("x");
    for seg in segments.iter().rev() {
        let (name, wrap) = match seg.strip_suffix("[]") {
            Some(n) => (n, Some("list")),
            None => match seg.strip_suffix("{}") {
                Some(n) => (n, Some("map")),
                None => (*seg, None),
            },
        };
        value = match wrap {
            Some("list") => json!([value]),
            Some(_) => json!({ "key": value }),
            None => value,
        };
        value = json!({ name: value });
    }
    json!({ "spec": value })
}

#[test]
fn every_no_is_reported_where_the_field_is_used() {
    let mut wrong = Vec::new();
    for (path, applied) in FIELDS.iter() {
        let Applied::No(why) = applied else { continue };
        let (kind, rest) = path.split_once('.').unwrap();
        // A row under another `no` row is reported at that row's field, higher up.
        let parent_no = FIELDS.iter().any(|(p, a)| {
            matches!(a, Applied::No(_))
                && p.len() < path.len()
                && (path.starts_with(&format!("{p}."))
                    || path.starts_with(&format!("{p}["))
                    || path.starts_with(&format!("{p}{{")))
        });
        let raw = Node::from_json(&object_with(rest));
        let found = not_applied_in(kind, &raw);
        let want = rest.replace("[]", "[0]").replace("{}", "[\"key\"]");
        // A map entry's key prints as a field when it is a plain name.
        let want_key = rest.replace("[]", "[0]").replace("{}", ".key");
        let reported = found.iter().any(|(at, w)| {
            let at = at.to_string();
            (at == want
                || at == want_key
                || parent_no && (want.starts_with(&at) || want_key.starts_with(&at)))
                && (parent_no || w == why)
        });
        if found.len() != 1 || !reported {
            wrong.push(format!("{path}: {found:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not reported as the table says: {wrong:#?}"
    );
}

#[test]
fn applied_fields_draw_no_warning() {
    let vs = json!({ "spec": {
        "hosts": ["web"],
        "http": [{ "match": [{ "headers": { "x-a": { "exact": "1" } } }],
                   "route": [{ "destination": { "host": "web", "subset": "v1" }, "weight": 100 }],
                   "retries": { "attempts": 2, "perTryTimeout": "1s" } }] } });
    assert_eq!(
        not_applied_in("VirtualService", &Node::from_json(&vs)),
        vec![]
    );
    let dr = json!({ "spec": { "host": "web", "subsets": [{ "name": "v1",
        "trafficPolicy": { "portLevelSettings": [{ "port": { "number": 80 },
            "loadBalancer": { "zoneAwareLbSetting": { "enabled": true } } }] } }] } });
    let found = not_applied_in("DestinationRule", &Node::from_json(&dr));
    let at: Vec<String> = found.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        at,
        vec!["spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.zoneAwareLbSetting"]
    );
}
