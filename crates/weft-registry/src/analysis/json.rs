//! Helpers for reading objects as written, as JSON, shared by the analyzers.

use serde_json::Value;
use weft_api::load::Loaded;
use weft_api::resource::split_api_version;
use weft_api::types::common::Labels;

/// The API group of an object's `apiVersion` (`""` for the core group's `v1`).
pub(super) fn api_group(o: &Loaded) -> &str {
    split_api_version(o.resource.api_version()).0
}

/// Whether `o` is of `kind` in API `group`, whatever the version.
pub(super) fn is_kind(o: &Loaded, group: &str, kind: &str) -> bool {
    o.resource.kind() == kind && api_group(o) == group
}

/// The value at `key` of a JSON value, unless absent or null.
pub(super) fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// The array at `key` of a JSON value, empty when the value is absent or the key is absent or
/// not an array.
pub(super) fn array<'a>(v: Option<&'a Value>, key: &str) -> &'a [Value] {
    match v.and_then(|v| v.get(key)).and_then(Value::as_array) {
        Some(a) => a.as_slice(),
        None => &[],
    }
}

/// The array at JSON `pointer` in a value, empty when absent or not an array.
pub(super) fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    match v.pointer(pointer).and_then(Value::as_array) {
        Some(a) => a.as_slice(),
        None => &[],
    }
}

/// A label map from the JSON; a missing map is empty, and so selects every pod. Values that are
/// not strings are taken as their JSON text.
pub(super) fn string_map(v: Option<&Value>) -> Labels {
    let mut out = Labels::new();
    if let Some(m) = v.and_then(Value::as_object) {
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.clone(), v);
        }
    }
    out
}

/// A policy's `spec.selector.matchLabels`: `None` when there is no selector at all (Istio tells
/// a missing selector from an empty one, which matches every pod), else its labels, possibly
/// none.
pub(super) fn selector_labels(obj: &Value) -> Option<Labels> {
    let selector = obj.pointer("/spec/selector").filter(|v| !v.is_null())?;
    Some(string_map(selector.get("matchLabels")))
}

/// Kubernetes' `SelectorFromSet(...).String()`: `k=v` pairs sorted by key, comma-separated, `""`
/// for none.
pub(super) fn selector_string(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}
