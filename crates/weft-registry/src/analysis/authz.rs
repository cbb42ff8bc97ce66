//! `auth.AuthorizationPoliciesAnalyzer`: an AuthorizationPolicy that applies to no pod of the
//! mesh (IST0127), and a source `namespaces`/`notNamespaces` pattern that no Namespace matches
//! (IST0101).
//!
//! Which pods count: those with a sidecar (by container, inject label or annotation, or the
//! namespace's `istio-injection` label, as `util.PodInMesh` decides) and those in ambient mode.
//! A policy in the root namespace applies mesh-wide: its selector may match a pod anywhere, and
//! without a selector it is never reported. Elsewhere a policy without a selector needs some pod
//! in its namespace, and one with a selector a matching pod there. Istio's analyzer does not look
//! at `targetRef`/`targetRefs`: a waypoint-bound policy without a selector is judged as
//! namespace-wide, and so it is here.

use super::json::{array, is_kind, selector_labels, selector_string};
use super::{Context, Findings};
use crate::selects;
use serde_json::Value;
use std::collections::BTreeMap;
use weft_api::load::Loaded;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;

const INJECT_KEY: &str = "sidecar.istio.io/inject";
const AMBIENT_REDIRECTION: &str = "ambient.istio.io/redirection";

/// Istio's `util.PodInMesh`: an `istio-proxy` container (the first so named, among containers
/// then init containers) with an image; else the inject label, else the inject annotation; else
/// the pod's Namespace, when there is one, by its `istio-injection=enabled` label.
fn pod_in_mesh(o: &Loaded, json: &Value, namespaces: &BTreeMap<&str, &Labels>) -> bool {
    let spec = json.get("spec");
    let proxy = ["containers", "initContainers"]
        .iter()
        .flat_map(|field| {
            spec.and_then(|s| s.get(*field))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|c| c.get("name").and_then(Value::as_str) == Some("istio-proxy"));
    let has_proxy = proxy.is_some_and(|c| {
        c.get("image")
            .and_then(Value::as_str)
            .is_some_and(|image| !image.is_empty())
    });
    if has_proxy {
        return true;
    }
    let meta = o.resource.metadata();
    for m in [&meta.labels, &meta.annotations] {
        if let Some(v) = m.get(INJECT_KEY) {
            return v == "true";
        }
    }
    namespaces
        .get(Context::namespace(o))
        .is_some_and(|l| l.get("istio-injection").is_some_and(|v| v == "enabled"))
}

/// `istio.io/istio`'s `namespaceMatch`: `*` alone matches all; a leading `*` matches by suffix,
/// a trailing one by prefix; otherwise the names must be equal without regard to case
/// (namespace names are ASCII).
fn namespace_match(ns: &str, exp: &str) -> bool {
    if exp == "*" {
        return true;
    }
    if let Some(suffix) = exp.strip_prefix('*') {
        return ns.ends_with(suffix);
    }
    if let Some(prefix) = exp.strip_suffix('*') {
        return ns.starts_with(prefix);
    }
    ns.eq_ignore_ascii_case(exp)
}

fn strings<'a>(v: Option<&'a Value>, key: &str) -> Vec<&'a str> {
    array(v, key).iter().filter_map(Value::as_str).collect()
}

pub fn authorization_policies(ctx: &Context, out: &mut Findings) {
    let namespaces: BTreeMap<&str, &Labels> = ctx
        .objects
        .iter()
        .filter(|o| is_kind(o, "", "Namespace"))
        .map(|o| (o.resource.name(), &o.resource.metadata().labels))
        .collect();
    // Namespace -> labels of its pods that policies can apply to.
    let mut pods: BTreeMap<&str, Vec<&Labels>> = BTreeMap::new();
    for o in ctx.objects.iter().filter(|o| is_kind(o, "", "Pod")) {
        let meta = o.resource.metadata();
        let ambient = meta
            .annotations
            .get(AMBIENT_REDIRECTION)
            .is_some_and(|v| v == "enabled");
        if ambient || pod_in_mesh(o, &Context::json(o), &namespaces) {
            pods.entry(Context::namespace(o))
                .or_default()
                .push(&meta.labels);
        }
    }
    let root_namespace = ctx.mesh.root_namespace.as_deref().unwrap_or("istio-system");
    let root = FieldPath::root();
    for o in ctx
        .objects
        .iter()
        .filter(|o| is_kind(o, "security.istio.io", "AuthorizationPolicy"))
    {
        let json = Context::json(o);
        let ns = Context::namespace(o);
        let selector = selector_labels(&json);
        let local: &[&Labels] = pods.get(ns).map(Vec::as_slice).unwrap_or_default();
        if ns == root_namespace {
            // Mesh-wide: a selector may pick a pod in any namespace.
            if let Some(sel) = &selector
                && !pods.values().flatten().any(|l| selects(sel, l))
            {
                out.add(o, &root, "IST0127", &[selector_string(sel)]);
            }
        } else {
            match &selector {
                None if local.is_empty() => out.add(o, &root, "IST0127", &[String::new()]),
                Some(sel) if !local.iter().any(|l| selects(sel, l)) => {
                    out.add(o, &root, "IST0127", &[selector_string(sel)]);
                }
                _ => {}
            }
        }
        namespaces_not_found(o, &json, &namespaces, out);
    }
}

/// IST0101 for each source namespace pattern that matches no Namespace object (with none at all,
/// not even `*` matches). Istio's line for a `notNamespaces` entry is looked up under
/// `namespaces` (a slip); the message points at the entry itself here.
fn namespaces_not_found(
    o: &Loaded,
    json: &Value,
    namespaces: &BTreeMap<&str, &Labels>,
    out: &mut Findings,
) {
    for (i, rule) in array(json.get("spec"), "rules").iter().enumerate() {
        for (j, from) in array(Some(rule), "from").iter().enumerate() {
            let source = from.get("source");
            let listed = strings(source, "namespaces");
            let negated = strings(source, "notNamespaces");
            for (k, exp) in listed.iter().chain(negated.iter()).enumerate() {
                if namespaces.keys().any(|ns| namespace_match(ns, exp)) {
                    continue;
                }
                let (field, index) = match k.checked_sub(listed.len()) {
                    Some(index) => ("notNamespaces", index),
                    None => ("namespaces", k),
                };
                let at = FieldPath::root()
                    .key("spec")
                    .key("rules")
                    .index(i)
                    .key("from")
                    .index(j)
                    .key("source")
                    .key(field)
                    .index(index);
                out.add(o, &at, "IST0101", &["namespace".into(), exp.to_string()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::namespace_match;

    #[test]
    fn namespace_patterns() {
        for (ns, exp, hit) in [
            ("prod-httpbin", "prod-*", true),
            ("httpbin-test", "*-test", true),
            ("httpbin", "*-bogus", false),
            ("httpbin", "bogus-*", false),
            ("anything", "*", true),
            ("HttpBin", "httpbin", true),
            ("test", "test-*", false),
        ] {
            assert_eq!(namespace_match(ns, exp), hit, "{ns} {exp}");
        }
    }
}
