//! `deprecation.DeprecationAnalyzer`: the few deprecated fields and types Istio's hand-kept list
//! names (IST0002): a VirtualService route's `fault.delay.percent`, a Sidecar's
//! `outboundTrafficPolicy.egressProxy` (which istiod ignores), and the CustomResourceDefinitions
//! of the removed `rbac.istio.io` types. Istio's list of deprecated collections is empty, so no
//! kind is reported merely for being present.

use super::json::api_group;
use super::{Context, Findings};
use serde_json::Value;
use weft_api::path::FieldPath;

/// Kinds of `rbac.istio.io` whose CRDs Istio no longer ships.
const REMOVED_RBAC_KINDS: [&str; 4] = [
    "ClusterRbacConfig",
    "RbacConfig",
    "ServiceRole",
    "ServiceRoleBinding",
];

/// A proto `int32` as written: a JSON number, or a string holding one.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.trim().parse().ok(),
        other => other.as_f64(),
    }
}

pub fn deprecated_fields(ctx: &Context, out: &mut Findings) {
    // Istio reports these on the object, with no line of their own.
    let root = FieldPath::root();
    for o in &ctx.objects {
        match (api_group(o), o.resource.kind()) {
            ("networking.istio.io", "VirtualService") => {
                let json = Context::json(o);
                let routes = json
                    .pointer("/spec/http")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for route in routes {
                    let percent = route.pointer("/fault/delay/percent").and_then(number);
                    if percent.is_some_and(|p| p > 0.0) {
                        let why = "HTTPRoute.fault.delay.percent is deprecated; \
                                   use HTTPRoute.fault.delay.percentage";
                        out.add(o, &root, "IST0002", &[why.to_string()]);
                    }
                }
            }
            ("networking.istio.io", "Sidecar") => {
                let json = Context::json(o);
                let egress_proxy = json
                    .pointer("/spec/outboundTrafficPolicy/egressProxy")
                    .is_some_and(|v| !v.is_null());
                if egress_proxy {
                    let why = "OutboundTrafficPolicy.EgressProxy ignored";
                    out.add(o, &root, "IST0002", &[why.to_string()]);
                }
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let json = Context::json(o);
                let group = json.pointer("/spec/group").and_then(Value::as_str);
                let kind = json.pointer("/spec/names/kind").and_then(Value::as_str);
                if let (Some("rbac.istio.io"), Some(kind)) = (group, kind)
                    && REMOVED_RBAC_KINDS.contains(&kind)
                {
                    let why = format!("Custom resource type rbac.istio.io {kind} is removed");
                    out.add(o, &root, "IST0002", &[why]);
                }
            }
            _ => {}
        }
    }
}
