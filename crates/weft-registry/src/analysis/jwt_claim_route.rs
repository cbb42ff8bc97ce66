//! `virtualservice.JWTClaimRouteAnalyzer`: a VirtualService that routes on a JWT claim
//! (`@request.auth.claims...` in a match's `headers` or `withoutHeaders`) through a gateway whose
//! pods no RequestAuthentication covers (IST0149). Without one the proxy never validates the
//! token, so the claims it would route on are never there.

use super::json::{array, is_kind, string_map};
use super::{Context, Findings};
use crate::selects;
use serde_json::Value;
use std::collections::BTreeMap;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;

/// The header prefix istiod turns into a claim match (`constant.HeaderJWTClaim`).
const JWT_CLAIM_PREFIX: &str = "@request.auth.claims";

/// Istio looks in this namespace, not the configured root namespace, for policies that cover
/// every pod (`constants.IstioSystemNamespace`).
const ISTIO_SYSTEM: &str = "istio-system";

/// The first claim header a route matches on (or requires absent), if any.
fn claim_key(vs: &Value) -> Option<String> {
    for route in array(vs.get("spec"), "http") {
        for m in array(Some(route), "match") {
            for field in ["headers", "withoutHeaders"] {
                let keys = m.get(field).and_then(Value::as_object);
                if let Some(k) = keys
                    .into_iter()
                    .flat_map(|h| h.keys())
                    .find(|k| k.starts_with(JWT_CLAIM_PREFIX))
                {
                    return Some(k.clone());
                }
            }
        }
    }
    None
}

pub fn jwt_claim_routes(ctx: &Context, out: &mut Findings) {
    // Namespace -> the `matchLabels` of its RequestAuthentications (empty: all its pods).
    let mut authn: BTreeMap<&str, Vec<Labels>> = BTreeMap::new();
    for o in ctx
        .objects
        .iter()
        .filter(|o| is_kind(o, "security.istio.io", "RequestAuthentication"))
    {
        let json = Context::json(o);
        authn
            .entry(Context::namespace(o))
            .or_default()
            .push(string_map(json.pointer("/spec/selector/matchLabels")));
    }
    let pods: Vec<(&str, &str, &Labels)> = ctx
        .objects
        .iter()
        .filter(|o| is_kind(o, "", "Pod"))
        .map(|o| {
            (
                Context::namespace(o),
                o.resource.name(),
                &o.resource.metadata().labels,
            )
        })
        .collect();
    for o in ctx
        .objects
        .iter()
        .filter(|o| is_kind(o, "networking.istio.io", "VirtualService"))
    {
        let json = Context::json(o);
        let Some(key) = claim_key(&json) else {
            continue;
        };
        let vs_ns = Context::namespace(o);
        for gw in array(json.get("spec"), "gateways")
            .iter()
            .filter_map(Value::as_str)
        {
            if gw == "mesh" {
                continue;
            }
            let (gw_ns, gw_name) = gw.split_once('/').unwrap_or((vs_ns, gw));
            // A gateway that does not exist is the gateway analyzer's to report.
            let Some(gateway) = ctx.objects.iter().find(|g| {
                is_kind(g, "networking.istio.io", "Gateway")
                    && Context::namespace(g) == gw_ns
                    && g.resource.name() == gw_name
            }) else {
                continue;
            };
            let selector = string_map(Context::json(gateway).pointer("/spec/selector"));
            let gw_full = if gw_ns.is_empty() {
                gw_name.to_string()
            } else {
                format!("{gw_ns}/{gw_name}")
            };
            for (pod_ns, pod_name, labels) in &pods {
                if !selects(&selector, labels) {
                    continue;
                }
                let covered = [ISTIO_SYSTEM, *pod_ns]
                    .iter()
                    .filter_map(|ns| authn.get(ns))
                    .flatten()
                    .any(|s| selects(s, labels));
                if !covered {
                    let args = [key.clone(), gw_full.clone(), pod_name.to_string()];
                    out.add(o, &FieldPath::root(), "IST0149", &args);
                }
            }
        }
    }
}
