//! `authn.BlockedCIDRsAnalyzer`: RequestAuthentications make istiod fetch JWKS from the URIs they
//! name; without `BLOCKED_CIDRS_IN_JWKS_URIS` on istiod those fetches may reach any network
//! (IST0175, on each istiod Deployment).

use super::{Context, Findings};
use serde_json::Value;
use weft_api::path::FieldPath;

const BLOCKED_CIDRS_ENV: &str = "BLOCKED_CIDRS_IN_JWKS_URIS";

/// How many RequestAuthentications the message names before it only counts the rest.
const NAMED: usize = 5;

/// Whether some container of the pod template sets the variable to a non-empty value (one set
/// only through `valueFrom` does not count, as in Istio).
fn sets_blocked_cidrs(deployment: &Value) -> bool {
    let containers = deployment
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array);
    containers.into_iter().flatten().any(|c| {
        c.get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|e| {
                e.get("name").and_then(Value::as_str) == Some(BLOCKED_CIDRS_ENV)
                    && e.get("value")
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.is_empty())
            })
    })
}

/// The names for the message: up to [`NAMED`], then how many more there are.
fn list_names(names: &[String]) -> String {
    match names.get(NAMED..) {
        Some(rest) if !rest.is_empty() => {
            let shown = names.get(..NAMED).unwrap_or_default();
            format!("{}, and {} more", shown.join(", "), rest.len())
        }
        _ => names.join(", "),
    }
}

pub fn blocked_cidrs(ctx: &Context, out: &mut Findings) {
    let mut names: Vec<String> = ctx
        .objects
        .iter()
        .filter(|o| {
            o.resource.kind() == "RequestAuthentication"
                && o.resource.api_version().starts_with("security.istio.io/")
        })
        .map(Context::full_name)
        .collect();
    if names.is_empty() {
        return;
    }
    // Istio lists them in its store's order; sorting keeps the text stable.
    names.sort();
    let listed = list_names(&names);
    for o in &ctx.objects {
        // istiod is recognised by its own `app` label only, whatever its name or namespace.
        let istiod = o.resource.kind() == "Deployment"
            && o.resource
                .metadata()
                .labels
                .get("app")
                .is_some_and(|a| a == "istiod");
        if !istiod || sets_blocked_cidrs(&Context::json(o)) {
            continue;
        }
        out.add(
            o,
            &FieldPath::root(),
            "IST0175",
            &[names.len().to_string(), listed.clone()],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_five_are_counted() {
        let names: Vec<String> = (1..=7).map(|i| format!("ns/ra{i}")).collect();
        assert_eq!(
            list_names(&names),
            "ns/ra1, ns/ra2, ns/ra3, ns/ra4, ns/ra5, and 2 more"
        );
        assert_eq!(
            list_names(names.get(..2).unwrap_or_default()),
            "ns/ra1, ns/ra2"
        );
    }
}
