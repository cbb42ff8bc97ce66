//! Two of Istio's Deployment analyzers:
//! - `deployment.MultiServiceAnalyzer`: a meshed Deployment's pods are selected by Services that
//!   give one port number different protocols (IST0116), or that send different ports to one
//!   target port (IST0137);
//! - `applicationUID.Analyzer`: a Pod or Deployment runs an application as UID 1337, the UID the
//!   sidecar's traffic capture exempts (IST0144).

use super::json::array_at;
use super::{Context, Findings};
use crate::selects;
use serde_json::Value;
use std::collections::BTreeMap;
use weft_api::load::Loaded;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;

/// The proxy's UID: iptables lets its traffic through, so an application running as it bypasses
/// the sidecar.
const PROXY_UID: i64 = 1337;

const INJECT_KEY: &str = "sidecar.istio.io/inject";

/// A string map from the JSON (labels, annotations, selectors). Scalars that YAML did not read
/// as strings are taken in their written form, as a user would read them.
fn string_map(v: Option<&Value>) -> Labels {
    let mut out = Labels::new();
    if let Some(m) = v.and_then(Value::as_object) {
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            out.insert(k.clone(), s);
        }
    }
    out
}

/// Istio's `util.IsIstioControlPlane`: the object's own labels mark it as Istio's.
fn is_control_plane(o: &Loaded) -> bool {
    let labels = &o.resource.metadata().labels;
    labels.contains_key("istio") || labels.get("release").is_some_and(|r| r == "istio")
}

/// Istio's `util.DeploymentInMesh`, read from the pod template: a proxy container with an image,
/// else the inject label, else the inject annotation, else the namespace's `istio-injection`
/// label, decides.
fn deployment_in_mesh(ctx: &Context, o: &Loaded, json: &Value) -> bool {
    let has_proxy = array_at(json, "/spec/template/spec/containers")
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("istio-proxy"))
        .is_some_and(|c| {
            c.get("image")
                .and_then(Value::as_str)
                .is_some_and(|i| !i.is_empty())
        });
    if has_proxy {
        return true;
    }
    let template_meta = json.pointer("/spec/template/metadata");
    for field in ["labels", "annotations"] {
        let m = string_map(template_meta.and_then(|t| t.get(field)));
        if let Some(v) = m.get(INJECT_KEY) {
            return v == "true";
        }
    }
    let ns = Context::namespace(o);
    ctx.objects
        .iter()
        .find(|n| n.resource.kind() == "Namespace" && n.resource.name() == ns)
        .is_some_and(|n| {
            n.resource
                .metadata()
                .labels
                .get("istio-injection")
                .is_some_and(|v| v == "enabled")
        })
}

/// A matching Service's `ns/name` and its JSON.
struct Matched {
    name: String,
    json: Value,
}

/// Services in the Deployment's namespace whose non-empty selector picks its pod template.
fn matching_services(ctx: &Context, o: &Loaded, json: &Value) -> Vec<Matched> {
    let pod_labels = string_map(json.pointer("/spec/template/metadata/labels"));
    let ns = Context::namespace(o);
    ctx.objects
        .iter()
        .filter(|s| s.resource.kind() == "Service" && Context::namespace(s) == ns)
        .filter_map(|s| {
            let sj = Context::json(s);
            let selector = string_map(sj.pointer("/spec/selector"));
            (!selector.is_empty() && selects(&selector, &pod_labels)).then(|| Matched {
                name: Context::full_name(s),
                json: sj,
            })
        })
        .collect()
}

fn port_number(p: &Value) -> i64 {
    p.get("port").and_then(Value::as_i64).unwrap_or(0)
}

/// The target port as Kubernetes prints it, defaulting to the port when unset or zero.
fn target_port(p: &Value) -> String {
    let t = match p.get("targetPort") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if t.is_empty() || t == "0" {
        port_number(p).to_string()
    } else {
        t
    }
}

pub fn multiple_services(ctx: &Context, out: &mut Findings) {
    for o in &ctx.objects {
        if o.resource.kind() != "Deployment" {
            continue;
        }
        // Waypoints are Istio's own, whatever Services select them.
        let waypoint = o
            .resource
            .metadata()
            .labels
            .get("gateway.istio.io/managed")
            .is_some_and(|v| v == "istio.io-mesh-controller");
        let json = Context::json(o);
        if waypoint || !deployment_in_mesh(ctx, o, &json) {
            continue;
        }
        let services = matching_services(ctx, o, &json);
        let at = FieldPath::root().key("metadata").key("name");
        let name = o.resource.name().to_string();

        // port -> protocol -> Services, to find a port served under two protocols.
        let mut by_port: BTreeMap<i64, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        // target port -> port -> Service (a later Service replaces an earlier one, as in Istio).
        let mut by_target: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
        for svc in &services {
            for p in array_at(&svc.json, "/spec/ports") {
                let number = port_number(p);
                let protocol = match p.get("protocol").and_then(Value::as_str) {
                    Some(s) if !s.is_empty() => s.to_string(),
                    _ => "TCP".to_string(),
                };
                by_port
                    .entry(number)
                    .or_default()
                    .entry(protocol)
                    .or_default()
                    .push(svc.name.clone());
                by_target
                    .entry(target_port(p))
                    .or_default()
                    .insert(number, svc.name.clone());
            }
        }

        for (port, protocols) in &by_port {
            if protocols.len() < 2 {
                continue;
            }
            let mut names: Vec<String> = protocols.values().flatten().cloned().collect();
            names.sort();
            out.add(
                o,
                &at,
                "IST0116",
                &[
                    name.clone(),
                    port.to_string(),
                    super::format::go_list(&names),
                ],
            );
        }
        for (target, ports) in &by_target {
            if ports.len() < 2 {
                continue;
            }
            let mut names: Vec<String> = ports.values().cloned().collect();
            names.sort();
            let numbers: Vec<i64> = ports.keys().copied().collect();
            out.add(
                o,
                &at,
                "IST0137",
                &[
                    name.clone(),
                    super::format::go_list(&names),
                    target.clone(),
                    super::format::go_list(&numbers),
                ],
            );
        }
    }
}

/// Whether a `securityContext` sets `runAsUser` to the proxy's UID.
fn runs_as_proxy(security_context: Option<&Value>) -> bool {
    security_context
        .and_then(|s| s.get("runAsUser"))
        .and_then(Value::as_i64)
        == Some(PROXY_UID)
}

/// Whether a pod spec runs an application as the proxy's UID: at pod level, or in a container
/// other than the proxy's or the operator's (those may rightly run as it).
fn pod_spec_uses_proxy_uid(spec: Option<&Value>) -> bool {
    let Some(spec) = spec else { return false };
    if runs_as_proxy(spec.get("securityContext")) {
        return true;
    }
    array_at(spec, "/containers")
        .iter()
        .filter(|c| {
            !matches!(
                c.get("name").and_then(Value::as_str),
                Some("istio-proxy" | "istio-operator")
            )
        })
        .any(|c| runs_as_proxy(c.get("securityContext")))
}

pub fn application_uid(ctx: &Context, out: &mut Findings) {
    for o in &ctx.objects {
        let pointer = match o.resource.kind() {
            "Pod" => "/spec",
            "Deployment" => "/spec/template/spec",
            _ => continue,
        };
        if is_control_plane(o) {
            continue;
        }
        let json = Context::json(o);
        // Istio reports once per offending field, but every report is the same message and
        // istioctl keeps one of identical messages: one per object.
        if pod_spec_uses_proxy_uid(json.pointer(pointer)) {
            out.add(o, &FieldPath::root(), "IST0144", &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_port_defaults_to_port() {
        let p = serde_json::json!({"port": 9080});
        assert_eq!(target_port(&p), "9080");
        let p = serde_json::json!({"port": 80, "targetPort": "http"});
        assert_eq!(target_port(&p), "http");
        let p = serde_json::json!({"port": 80, "targetPort": 0});
        assert_eq!(target_port(&p), "80");
    }
}
