//! `envoyfilter.EnvoyPatchAnalyzer`: EnvoyFilter patches whose operation does not fit what they
//! apply to (IST0152 REPLACE, IST0153 ADD, IST0154 REMOVE), and relative operations in filters
//! without a priority (IST0151), or whose filter name a proxy-version-bound patch already used
//! (IST0155).

use super::{Context, Findings};
use serde_json::Value;
use std::collections::BTreeSet;
use weft_api::Resource;
use weft_api::path::FieldPath;

/// `EnvoyFilter.Patch.Operation` by enum number, for patches that give the number.
const OPERATIONS: [&str; 8] = [
    "INVALID",
    "MERGE",
    "ADD",
    "REMOVE",
    "INSERT_BEFORE",
    "INSERT_AFTER",
    "INSERT_FIRST",
    "REPLACE",
];

/// `EnvoyFilter.ApplyTo` by enum number.
const APPLY_TO: [&str; 12] = [
    "INVALID",
    "LISTENER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
    "EXTENSION_CONFIG",
    "BOOTSTRAP",
    "LISTENER_FILTER",
];

/// An enum field as its name, whether written as the name or as the number; absent is INVALID,
/// as protobuf reads it.
fn enum_name<'a>(v: Option<&'a Value>, names: &[&'static str]) -> &'a str {
    match v {
        Some(Value::String(s)) => s.as_str(),
        Some(n) => n
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| names.get(i).copied())
            .unwrap_or("INVALID"),
        None => "INVALID",
    }
}

/// The name Istio keys a patch by when it looks for proxy-version conflicts: the `name` of the
/// patch value when it has one, else the listener filter-chain filter it matches, else empty.
/// Istio takes the value's name in protobuf text form, so it never equals a plain match name;
/// the `value:` prefix keeps the two apart the same way.
fn instance_name(config_patch: &Value, patch: &Value) -> String {
    let Some(fields) = patch.get("value").and_then(Value::as_object) else {
        return String::new();
    };
    if let Some(name) = fields.get("name") {
        return format!("value:{name}");
    }
    config_patch
        .pointer("/match/listener/filterChain")
        .filter(|fc| !fc.is_null())
        .and_then(|fc| fc.pointer("/filter/name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `envoyfilter.EnvoyPatchAnalyzer`. Filters are visited in input order, and the names of
/// patches that carry a `proxyVersion` accumulate across filters, as in Istio.
pub fn patches(ctx: &Context, out: &mut Findings) {
    let mut proxy_versioned: Vec<String> = Vec::new();
    for o in &ctx.objects {
        if !matches!(o.resource, Resource::EnvoyFilter(_)) {
            continue;
        }
        let json = Context::json(o);
        let priority = json
            .pointer("/spec/priority")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let config_patches = json
            .pointer("/spec/configPatches")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Istio points these messages at `patch.value`, a field its line map never holds, so
        // they all land on the object's line and repeats of a code collapse into one.
        let mut codes: BTreeSet<&'static str> = BTreeSet::new();
        for config_patch in config_patches {
            // Istio stops at the first patch without a patch section, not just skips it.
            let Some(patch) = config_patch.get("patch").filter(|p| !p.is_null()) else {
                break;
            };
            let name = instance_name(config_patch, patch);
            let operation = enum_name(patch.get("operation"), &OPERATIONS);
            let apply_to = enum_name(config_patch.get("applyTo"), &APPLY_TO);
            let route_level = matches!(apply_to, "ROUTE_CONFIGURATION" | "HTTP_ROUTE");
            let code = match operation {
                "ADD" if route_level => Some("IST0153"),
                "REMOVE" if route_level => Some("IST0154"),
                // Istio accepts REPLACE on a virtual host as well (istio/istio#59495).
                "REPLACE"
                    if !matches!(apply_to, "NETWORK_FILTER" | "HTTP_FILTER" | "VIRTUAL_HOST") =>
                {
                    Some("IST0152")
                }
                "REMOVE" | "REPLACE" | "INSERT_BEFORE" | "INSERT_AFTER" if priority == 0 => {
                    if proxy_versioned.contains(&name) {
                        Some("IST0155")
                    } else {
                        Some("IST0151")
                    }
                }
                _ => None,
            };
            if let Some(code) = code {
                codes.insert(code);
            }
            if config_patch
                .pointer("/match/proxy/proxyVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
            {
                proxy_versioned.push(name);
            }
        }
        for code in codes {
            out.add(o, &FieldPath::root(), code, &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enum_fields_read_as_names_or_numbers() {
        let by_name = json!("REPLACE");
        let by_number = json!(7);
        let out_of_range = json!(99);
        assert_eq!(enum_name(Some(&by_name), &OPERATIONS), "REPLACE");
        assert_eq!(enum_name(Some(&by_number), &OPERATIONS), "REPLACE");
        assert_eq!(enum_name(Some(&out_of_range), &OPERATIONS), "INVALID");
        assert_eq!(enum_name(None, &APPLY_TO), "INVALID");
    }

    #[test]
    fn instance_names_come_from_the_value_then_the_match() {
        let with_value = json!({"patch": {"value": {"name": "envoy.lua"}}});
        let with_match = json!({
            "match": {"listener": {"filterChain": {"filter": {"name": "hcm"}}}},
            "patch": {"value": {"typed_config": {}}}
        });
        let without_value = json!({
            "match": {"listener": {"filterChain": {"filter": {"name": "hcm"}}}},
            "patch": {"operation": "REMOVE"}
        });
        for (p, want) in [
            (&with_value, "value:\"envoy.lua\""),
            (&with_match, "hcm"),
            (&without_value, ""),
        ] {
            let patch = p.get("patch").cloned().unwrap_or(Value::Null);
            assert_eq!(instance_name(p, &patch), want);
        }
    }
}
