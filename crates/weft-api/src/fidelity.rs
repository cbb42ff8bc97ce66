//! What Weft applies of Istio's traffic-management, security and telemetry kinds, field by field (`fidelity.table`),
//! and the warnings for fields it does not apply, located where the object uses them. Nothing
//! is dropped in silence: a setting Weft does not apply is said wherever it is written.

use crate::load::{Loaded, Problem, Severity};
use crate::path::FieldPath;
use crate::yaml::{Node, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The table as written: `Kind.spec.path  yes|no  test or reason`.
pub const TABLE: &str = include_str!("fidelity.table");

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Translated; the test that shows it.
    Yes(&'static str),
    /// Not applied, and why.
    No(&'static str),
}

/// The rows by path (`VirtualService.spec.http[].timeout`).
pub static FIELDS: LazyLock<BTreeMap<&'static str, Applied>> = LazyLock::new(|| {
    TABLE
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let path = l.split_whitespace().next()?;
            let rest = l[path.len()..].trim_start();
            let (status, note) = rest.split_once(char::is_whitespace)?;
            let note = note.trim();
            match status {
                "yes" => Some((path, Applied::Yes(note))),
                "no" => Some((path, Applied::No(note))),
                _ => None,
            }
        })
        .collect()
});

/// The row a schema path falls under, written as the table writes paths: DestinationRule's
/// subset and port-level policies read as `spec.trafficPolicy`.
pub fn canonical(kind: &str, path: &str) -> String {
    let mut p = path.to_string();
    if kind == "DestinationRule" {
        p = p.replace("spec.subsets[].trafficPolicy", "spec.trafficPolicy");
        if let Some(rest) = p.strip_prefix("spec.trafficPolicy.portLevelSettings[].")
            && rest != "port"
            && !rest.starts_with("port.")
        {
            p = format!("spec.trafficPolicy.{rest}");
        }
    }
    format!("{kind}.{p}")
}

/// Warnings for the fields of `obj` that Weft does not apply, each at the field.
pub fn not_applied(obj: &Loaded) -> Vec<Problem> {
    if !obj.resource.api_version().contains("istio.io") {
        return Vec::new();
    }
    not_applied_in(obj.resource.kind(), &obj.raw)
        .into_iter()
        .map(|(at, why)| obj.problem(Severity::Warning, at, format!("not applied by Weft: {why}")))
        .collect()
}

/// The fields of an object of `kind` (as written, `raw`) that Weft does not apply, with why.
pub fn not_applied_in(kind: &str, raw: &Node) -> Vec<(FieldPath, &'static str)> {
    let mut out = Vec::new();
    let tracked = FIELDS.keys().any(|k| k.split('.').next() == Some(kind));
    if let (true, Some(spec)) = (tracked, raw.get("spec")) {
        walk(kind, spec, "spec", &FieldPath::root().key("spec"), &mut out);
    }
    out
}

fn walk(
    kind: &str,
    node: &Node,
    schema: &str,
    at: &FieldPath,
    out: &mut Vec<(FieldPath, &'static str)>,
) {
    if let Some(Applied::No(why)) = FIELDS.get(canonical(kind, schema).as_str()) {
        out.push((at.clone(), why));
        return;
    }
    match &node.value {
        Value::Map(entries) => {
            // A map whose keys are data (header names, labels) has rows under `path{}`.
            let keyed_prefix = canonical(kind, &format!("{schema}{{}}"));
            let keyed = FIELDS.keys().any(|k| k.starts_with(&keyed_prefix));
            for e in entries {
                let child = if keyed {
                    format!("{schema}{{}}")
                } else {
                    format!("{schema}.{}", e.key)
                };
                walk(kind, &e.value, &child, &at.key(e.key.clone()), out);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(kind, item, &format!("{schema}[]"), &at.index(i), out);
            }
        }
        _ => {}
    }
}
