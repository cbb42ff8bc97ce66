//! Compatibility with Istio's own data: its samples load and validate, its CRD schemas are fully
//! covered by our types, and every object survives parse → serialize → parse.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use weft_api::de::{Context, from_node};
use weft_api::load::{LoadResult, Severity};
use weft_api::path::FieldPath;
use weft_api::resource::{KINDS, Lookup, lookup};
use weft_api::validate::check_loaded;
use weft_api::yaml::{Node, Value, parse_stream};

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

fn fixtures(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn load(paths: &[PathBuf]) -> LoadResult {
    let mut r = LoadResult::default();
    for p in paths {
        r.load_path(p);
    }
    r
}

#[test]
fn istio_samples_load_and_validate() {
    let r = load(&[shared("istio/samples")]);
    let errors: Vec<String> = r
        .problems
        .iter()
        .cloned()
        .chain(r.objects.iter().flat_map(|o| check_loaded(o, true)))
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "errors in Istio's samples:\n{}",
        errors.join("\n")
    );
    // Every Istio config object in the samples was read (counted from the files themselves).
    let istio_docs = count_docs_of_groups(
        &shared("istio/samples"),
        &[
            "networking.istio.io",
            "security.istio.io",
            "telemetry.istio.io",
        ],
    );
    let istio_objects = r
        .objects
        .iter()
        .filter(|o| o.resource.api_version().contains(".istio.io/"))
        .count();
    assert!(
        istio_docs > 60,
        "the samples hold {istio_docs} Istio objects"
    );
    assert_eq!(istio_objects, istio_docs);
}

/// Counts documents whose top-level `apiVersion:` line names one of `groups`, by reading the
/// text, independently of the loader.
fn count_docs_of_groups(dir: &Path, groups: &[&str]) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                let text = std::fs::read_to_string(&p).unwrap();
                n += text
                    .lines()
                    .filter(|l| l.starts_with("apiVersion:"))
                    .filter(|l| groups.iter().any(|g| l.contains(g)))
                    .count();
            }
        }
    }
    n
}

/// Leaf paths with a value (not null, not an empty list or mapping).
fn leaves(v: &serde_json::Value, prefix: String, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Null => {}
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{prefix}[{i}]"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                leaves(x, format!("{prefix}.{k}"), out);
            }
        }
        _ => {
            out.insert(prefix);
        }
    }
}

#[test]
fn parse_serialize_parse_is_lossless() {
    let r = load(&[
        shared("istio/samples"),
        fixtures("seeds"),
        fixtures("invalid"),
        fixtures("warnings"),
    ]);
    assert!(r.objects.len() > 300, "{} objects", r.objects.len());
    for o in &r.objects {
        let json = o.resource.to_json();
        let text = serde_json::to_string_pretty(&json).unwrap();
        let mut again = LoadResult::default();
        again.load_str("roundtrip.json", &text);
        assert!(
            again.problems.is_empty(),
            "{}: {:?}",
            o.origin,
            again.problems
        );
        assert_eq!(again.objects.len(), 1, "{}", o.origin);
        assert_eq!(
            again.objects[0].resource, o.resource,
            "{}: changed by a round trip",
            o.origin
        );
        assert!(again.objects[0].unknown_fields.is_empty(), "{}", o.origin);

        // Nothing the user wrote is dropped, except fields the schema does not know.
        let mut written = BTreeSet::new();
        leaves(&o.raw.to_json(), String::new(), &mut written);
        let mut kept = BTreeSet::new();
        leaves(&json, String::new(), &mut kept);
        let unknown: Vec<String> = o
            .unknown_fields
            .iter()
            .map(|u| format!(".{}", u.path))
            .collect();
        let lost: Vec<&String> = written
            .iter()
            .filter(|p| !kept.contains(*p))
            .filter(|p| !unknown.iter().any(|u| p.starts_with(u.as_str())))
            .collect();
        assert!(lost.is_empty(), "{}: lost {lost:?}", o.origin);
    }
}

/// For every field in Istio's CRD schemas, a document setting just that field is read without
/// an unknown-field report: our types know every field Istio's API has.
#[test]
fn types_cover_every_crd_field() {
    let text = std::fs::read_to_string(shared("istio/crd/crd-all.gen.yaml")).unwrap();
    let crds = parse_stream(&text).unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    for crd in &crds {
        let spec = crd.get("spec").unwrap();
        let group = spec.get("group").unwrap().as_str().unwrap();
        let kind = spec
            .get("names")
            .unwrap()
            .get("kind")
            .unwrap()
            .as_str()
            .unwrap();
        let Value::Seq(versions) = &spec.get("versions").unwrap().value else {
            panic!()
        };
        for v in versions {
            let version = v.get("name").unwrap().as_str().unwrap();
            let api_version = format!("{group}/{version}");
            let Lookup::Known(info) = lookup(&api_version, kind) else {
                continue;
            };
            let schema = v.get("schema").unwrap().get("openAPIV3Schema").unwrap();
            let Some(spec_schema) = schema.get("properties").and_then(|p| p.get("spec")) else {
                continue;
            };
            let mut paths = Vec::new();
            field_paths(spec_schema, &mut Vec::new(), &mut paths);
            for p in paths {
                let doc = serde_json::json!({
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {"name": "x"},
                    "spec": build(spec_schema, &p),
                });
                let ctx = Context::default();
                let result = info.parse(&Node::from_json(&doc), &ctx);
                let unknown = ctx.into_unknown();
                let variant_unknown = result
                    .as_ref()
                    .err()
                    .is_some_and(|e| e.message.contains("unknown variant"));
                if !unknown.is_empty() || variant_unknown {
                    missing.push(format!("{kind} {version}: spec.{}", p.join(".")));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 2000, "checked only {checked} field paths");
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "fields of Istio's API our types do not read:\n{}",
        missing.join("\n")
    );
    assert!(KINDS.len() >= 25);
}

/// Every property path in a schema; array items add `[]`, map values `{}`.
fn field_paths(schema: &Node, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Some(Value::Map(props)) = schema.get("properties").map(|p| &p.value) {
        for e in props {
            prefix.push(e.key.clone());
            out.push(prefix.clone());
            field_paths(&e.value, prefix, out);
            prefix.pop();
        }
    }
    if let Some(items) = schema.get("items") {
        prefix.push("[]".into());
        field_paths(items, prefix, out);
        prefix.pop();
    }
    if let Some(ap) = schema
        .get("additionalProperties")
        .filter(|a| matches!(a.value, Value::Map(_)))
    {
        prefix.push("{}".into());
        field_paths(ap, prefix, out);
        prefix.pop();
    }
}

/// A value at `path` of `schema`, with a plausible leaf: "1s" reads as a string and a duration.
fn build(schema: &Node, path: &[String]) -> serde_json::Value {
    let Some((first, rest)) = path.split_first() else {
        return leaf(schema);
    };
    match first.as_str() {
        "[]" => serde_json::json!([build(schema.get("items").unwrap(), rest)]),
        "{}" => serde_json::json!({"k": build(schema.get("additionalProperties").unwrap(), rest)}),
        key => {
            let child = schema.get("properties").unwrap().get(key).unwrap();
            let mut m = serde_json::Map::new();
            m.insert(key.to_string(), build(child, rest));
            serde_json::Value::Object(m)
        }
    }
}

fn leaf(schema: &Node) -> serde_json::Value {
    if let Some(Value::Seq(values)) = schema.get("enum").map(|e| &e.value) {
        return values[0].to_json();
    }
    match schema.get("type").and_then(Node::as_str) {
        Some("integer") => serde_json::json!(1),
        Some("number") => serde_json::json!(1.5),
        Some("boolean") => serde_json::json!(true),
        Some("array") => serde_json::json!([]),
        Some("object") => serde_json::json!({}),
        _ => serde_json::json!("1s"),
    }
}

#[test]
fn field_path_of_a_missing_field_locates_its_parent() {
    let doc = &parse_stream("spec:\n  hosts: [a]\n").unwrap()[0];
    assert_eq!(FieldPath::parse("spec.http").unwrap().locate(doc).line, 1);
    let ctx = Context::default();
    let r: Result<serde_json::Value, _> = from_node(doc, FieldPath::root(), &ctx);
    assert!(r.is_ok());
}
