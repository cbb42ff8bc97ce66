//! `conditions.ConditionAnalyzer`: status conditions that controllers wrote as negative on
//! Services, ServiceEntries, AuthorizationPolicies and Gateway API Gateways and routes
//! (IST0171), so that `analyze` surfaces what `kubectl get` would only show deep in `status`.

use super::json::is_kind;
use super::{Context, Findings};
use serde_json::Value;
use weft_api::load::Loaded;
use weft_api::path::FieldPath;

const GATEWAY_API: &str = "gateway.networking.k8s.io";

/// Where a kind keeps its conditions.
#[derive(Clone, Copy)]
enum Layout {
    /// `status.conditions`.
    Direct,
    /// `status.parents[].conditions`, as routes report per parent.
    PerParent,
}

/// The kinds read, where their conditions are, and which condition types are negative when
/// `False`; other types (another controller's, say) are not this analyzer's business.
const KINDS: [(&str, &str, Layout, &[&str]); 6] = [
    ("", "Service", Layout::Direct, &["istio.io/WaypointBound"]),
    (
        "networking.istio.io",
        "ServiceEntry",
        Layout::Direct,
        &["istio.io/WaypointBound"],
    ),
    (
        "security.istio.io",
        "AuthorizationPolicy",
        Layout::Direct,
        &["ZtunnelAccepted", "WaypointAccepted"],
    ),
    (
        GATEWAY_API,
        "Gateway",
        Layout::Direct,
        &["Accepted", "Programmed", "ResolvedRefs"],
    ),
    (
        GATEWAY_API,
        "HTTPRoute",
        Layout::PerParent,
        &["Accepted", "Programmed", "ResolvedRefs"],
    ),
    (
        GATEWAY_API,
        "GRPCRoute",
        Layout::PerParent,
        &["Accepted", "Programmed", "ResolvedRefs"],
    ),
];

/// The `conditions` array of a status or of one of its parents.
fn list(v: &Value) -> &[Value] {
    v.get("conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The conditions of an object's status, with where each one is.
fn conditions(obj: &Value, layout: Layout) -> Vec<(FieldPath, &Value)> {
    let status = FieldPath::root().key("status");
    let Some(s) = obj.get("status") else {
        return Vec::new();
    };
    match layout {
        Layout::Direct => list(s)
            .iter()
            .enumerate()
            .map(|(i, c)| (status.key("conditions").index(i), c))
            .collect(),
        Layout::PerParent => s
            .get("parents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .flat_map(|(p, parent)| {
                let at = status.key("parents").index(p).key("conditions");
                list(parent)
                    .iter()
                    .enumerate()
                    .map(move |(i, c)| (at.index(i), c))
            })
            .collect(),
    }
}

fn text<'a>(c: &'a Value, key: &str) -> &'a str {
    c.get(key).and_then(Value::as_str).unwrap_or("")
}

pub fn negative_conditions(ctx: &Context, out: &mut Findings) {
    for (group, kind, layout, negative) in KINDS {
        let objects = ctx.objects.iter().filter(|o| is_kind(o, group, kind));
        for o in objects {
            report(o, layout, negative, kind == "AuthorizationPolicy", out);
        }
    }
}

fn report(o: &Loaded, layout: Layout, negative: &[&str], policy: bool, out: &mut Findings) {
    let obj = Context::json(o);
    for (at, c) in conditions(&obj, layout) {
        let (kind, reason) = (text(c, "type"), text(c, "reason"));
        let args = [
            kind.to_string(),
            reason.to_string(),
            text(c, "message").to_string(),
        ];
        if text(c, "status") == "False" && negative.contains(&kind) {
            out.add(o, &at, "IST0171", &args);
        }
        // A waypoint accepts a policy with some bad target references under status True;
        // Istio reports it anyway, and a second time when the status is also False.
        if policy && kind == "WaypointAccepted" && reason == "PartiallyInvalid" {
            out.add(o, &at, "IST0171", &args);
        }
    }
}
