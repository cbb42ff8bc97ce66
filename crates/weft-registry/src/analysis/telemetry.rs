//! Telemetry analyzers: access logging entries that name no provider while the mesh has no
//! default one (`telemetry.ProviderAnalyzer`, IST0157); selectors that match no pod or pods
//! another Telemetry also selects (`telemetry.SelectorAnalyzer`, IST0101, IST0159); several
//! selector-less Telemetries in one namespace (`telemetry.DefaultSelectorAnalyzer`, IST0160);
//! tracing through a Lightstep extension provider (`telemetry.LightstepAnalyzer`, IST0002).

use super::json::{array, is_kind, selector_labels, selector_string};
use super::{Context, Findings};
use crate::selects;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use weft_api::Resource;
use weft_api::load::Loaded;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;

/// Telemetry objects with their JSON, in input order.
fn telemetries(ctx: &Context) -> Vec<(&Loaded, Value)> {
    ctx.objects
        .iter()
        .filter(|o| is_kind(o, "telemetry.istio.io", "Telemetry"))
        .map(|o| (o, Context::json(o)))
        .collect()
}

/// Go's `%v` of a sorted `[]string` of the objects' names.
fn name_list(list: &[&Loaded]) -> String {
    let mut names: Vec<&str> = list.iter().map(|o| o.resource.name()).collect();
    names.sort_unstable();
    super::format::go_list(&names)
}

/// `telemetry.ProviderAnalyzer`: with no default access log provider in the mesh, an enabled
/// access logging entry without providers configures nothing.
pub fn providers(ctx: &Context, out: &mut Findings) {
    let has_default = ctx
        .mesh
        .other
        .get("defaultProviders")
        .is_some_and(|d| !array(Some(d), "accessLogging").is_empty());
    if has_default {
        return;
    }
    for (o, obj) in telemetries(ctx) {
        let Some(spec) = obj.get("spec") else {
            continue;
        };
        for entry in array(Some(spec), "accessLogging") {
            let disabled = entry.get("disabled").and_then(Value::as_bool) == Some(true);
            if disabled || !array(Some(entry), "providers").is_empty() {
                continue;
            }
            let args = [
                o.resource.name().to_string(),
                Context::namespace(o).to_string(),
            ];
            out.add(o, &FieldPath::root(), "IST0157", &args);
        }
    }
}

/// `telemetry.SelectorAnalyzer`: a Telemetry with a non-empty selector must match a pod of its
/// own namespace, and no pod may be matched by two of them.
pub fn selectors(ctx: &Context, out: &mut Findings) {
    let pods: Vec<(&str, &str, &Labels)> = ctx
        .objects
        .iter()
        .filter(|o| matches!(o.resource, Resource::Pod(_)))
        .map(|o| {
            (
                Context::namespace(o),
                o.resource.name(),
                &o.resource.metadata().labels,
            )
        })
        .collect();
    let mut by_pod: BTreeMap<(&str, &str), Vec<&Loaded>> = BTreeMap::new();
    for (o, obj) in telemetries(ctx) {
        let Some(selector) = selector_labels(&obj).filter(|l| !l.is_empty()) else {
            continue;
        };
        let ns = Context::namespace(o);
        let mut found = false;
        for (pod_ns, pod_name, labels) in &pods {
            if *pod_ns == ns && selects(&selector, labels) {
                found = true;
                by_pod.entry((*pod_ns, *pod_name)).or_default().push(o);
            }
        }
        if !found {
            // Istio points at the first label of the selector.
            let mut at = FieldPath::root()
                .key("spec")
                .key("selector")
                .key("matchLabels");
            if let Some(first) = selector.keys().next() {
                at = at.key(first.as_str());
            }
            let args = ["selector".to_string(), selector_string(&selector)];
            out.add(o, &at, "IST0101", &args);
        }
    }
    let at = FieldPath::root().key("metadata").key("name");
    for ((pod_ns, pod_name), list) in &by_pod {
        if list.len() < 2 {
            continue;
        }
        let names = name_list(list);
        for o in list {
            let args = [names.clone(), pod_ns.to_string(), pod_name.to_string()];
            out.add(o, &at, "IST0159", &args);
        }
    }
}

/// `telemetry.DefaultSelectorAnalyzer`: at most one Telemetry per namespace may leave out the
/// selector, or which one applies is undefined.
pub fn default_selectors(ctx: &Context, out: &mut Findings) {
    let mut by_ns: BTreeMap<&str, Vec<&Loaded>> = BTreeMap::new();
    for (o, obj) in telemetries(ctx) {
        if selector_labels(&obj).is_none() {
            by_ns.entry(Context::namespace(o)).or_default().push(o);
        }
    }
    for (ns, list) in &by_ns {
        if list.len() < 2 {
            continue;
        }
        let names = name_list(list);
        for o in list {
            let args = [names.clone(), ns.to_string()];
            out.add(o, &FieldPath::root(), "IST0160", &args);
        }
    }
}

/// `telemetry.LightstepAnalyzer`: tracing through a mesh extension provider of the Lightstep
/// type, which Istio deprecates in favour of OpenTelemetry.
pub fn lightstep(ctx: &Context, out: &mut Findings) {
    let lightstep: BTreeSet<&str> = ctx
        .mesh
        .extension_providers
        .iter()
        .filter(|p| p.other.get("lightstep").is_some_and(|l| !l.is_null()))
        .map(|p| p.name.as_str())
        .collect();
    if lightstep.is_empty() {
        return;
    }
    for (o, obj) in telemetries(ctx) {
        let Some(spec) = obj.get("spec") else {
            continue;
        };
        for tracing in array(Some(spec), "tracing") {
            for provider in array(Some(tracing), "providers") {
                let name = provider.get("name").and_then(Value::as_str).unwrap_or("");
                if lightstep.contains(name) {
                    let why = format!(
                        "The Lightstep provider {name} is deprecated, please migrate to OpenTelemetry provider."
                    );
                    out.add(o, &FieldPath::root(), "IST0002", &[why]);
                }
            }
        }
    }
}
