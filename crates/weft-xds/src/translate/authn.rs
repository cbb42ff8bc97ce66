//! RequestAuthentication → Envoy's `envoy.filters.http.jwt_authn`, as istiod's policy applier
//! (`pilot/pkg/security/authn/policy_applier.go`) writes it: one provider `origins-N` per JWT
//! rule of every RequestAuthentication that applies (sorted by issuer), the payload in the
//! dynamic metadata under `payload` (where AuthorizationPolicy's request principals and claims
//! are read), and one rule for every path: a token that is there must be valid; no token passes
//! and is left to AuthorizationPolicy.
//!
//! The keys are inline, as istiod sends them by default: a rule's `jwks`, or what the control
//! plane fetched from its `jwksUri` (`Inputs::jwks`). Keys that cannot be had are replaced by
//! a public key whose private key no one has, so that every token fails (istiod's
//! `PublicOnlyJwks`), and the problem is reported.

use super::config::Obj;
use super::pb;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RequirementRule, jwt_provider, jwt_requirement,
    requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use weft_api::types::common::Labels;
use weft_api::types::security::{JwtRule, RequestAuthentication};

pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";

/// An RSA public key whose private key was thrown away: no token verifies with it.
const PUBLIC_ONLY_JWKS: &str = concat!(
    r#"{"keys":[{"kty":"RSA","e":"AQAB","kid":"weft-public-only","n":""#,
    "z4qeqmYvhnVfVxXMkWXYY12aXFKZI5-8ei9bsDHgT6yuLW49FOeNeCgs43P0KxLNIza47W5GcTiXiP6d9IGH8oq1Z_U9sxLQn7xp1ef0ftYF0GZnBCEPiVUZTQyHllCbslBvPcijogOVOn0c5p4zsHh1DpV-CKio5usKNNZwsb3bcIUm3B_rKpG8RtAErN0Qim86VLFnykcFSBVvOF3kH5ehOlaH2CDjtDDuaEj0rNV1EwWvVc72u9-Uiq2WJ3NBTKaiVx-1xfJrzJeShqAwiUHU3iGkyNhfxM7kT3TQkl3R726g5INug_cn53uVk6CaIQnSkQkpJp4TvNpDMKUfhw",
    r#""}]}"#
);

/// Whether `text` is a JWKS with a key the proxies can use: a key type they know.
fn usable(text: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return false;
    };
    doc.get("keys")
        .and_then(|k| k.as_array())
        .is_some_and(|keys| {
            keys.iter()
                .any(|k| match k.get("kty").and_then(|t| t.as_str()) {
                    Some("RSA" | "EC" | "oct") => true,
                    Some("OKP") => k.get("crv").and_then(|c| c.as_str()) == Some("Ed25519"),
                    _ => false,
                })
        })
}

/// The keys of `rule`, or the public-only set with the problem said.
fn jwks_of(
    inputs: &super::Inputs,
    ra: &Obj<RequestAuthentication>,
    i: usize,
    rule: &JwtRule,
    problem: &dyn Fn(String),
) -> String {
    let field = format!("{}: spec.jwtRules[{i}]", ra.label());
    let (text, source) = match (&rule.jwks, rule.jwks_uri()) {
        (Some(inline), _) => (Ok(inline.clone()), "jwks".to_string()),
        (None, Some(uri)) => (
            inputs
                .jwks
                .get(uri)
                .cloned()
                .unwrap_or_else(|| Err("not fetched yet".into())),
            format!("jwksUri {uri}"),
        ),
        (None, None) => (
            Err("neither jwks nor jwksUri is set (OpenID discovery is not supported yet)".into()),
            "the issuer".to_string(),
        ),
    };
    match text {
        Ok(t) if usable(&t) => t,
        Ok(_) => {
            problem(format!(
                "{field}: {source} has no key the proxies can use: every token of this issuer is refused"
            ));
            PUBLIC_ONLY_JWKS.to_string()
        }
        Err(why) => {
            problem(format!(
                "{field}: no keys from {source} ({why}): every token of this issuer is refused"
            ));
            PUBLIC_ONLY_JWKS.to_string()
        }
    }
}

fn requirement(t: jwt_requirement::RequiresType) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(t),
    }
}

/// The jwt_authn filter for a workload, if a RequestAuthentication applies. `gateway`: the
/// route is chosen again after claims become headers (istiod's `clear_route_cache`).
pub fn jwt_filter(
    inputs: &super::Inputs,
    namespace: &str,
    labels: &Labels,
    gateway: bool,
    problem: &dyn Fn(String),
) -> Option<HttpFilter> {
    let applying = super::authz::applicable(
        inputs,
        &inputs.config.request_authentications,
        |ra| ra,
        namespace,
        labels,
        problem,
    );
    let mut rules: Vec<(&Obj<RequestAuthentication>, usize, &JwtRule)> = applying
        .into_iter()
        .flat_map(|ra| {
            ra.spec
                .jwt_rules
                .iter()
                .enumerate()
                .map(move |(i, r)| (ra, i, r))
        })
        .collect();
    if rules.is_empty() {
        return None;
    }
    rules.sort_by(|a, b| a.2.issuer.cmp(&b.2.issuer));
    let mut providers = std::collections::HashMap::new();
    let mut names = Vec::new();
    for (n, (ra, i, rule)) in rules.iter().enumerate() {
        let name = format!("origins-{n}");
        let mut claims: Vec<String> = rule.space_delimited_claims.clone();
        claims.extend(["permission".to_string(), "scope".to_string()]);
        claims.sort();
        claims.dedup();
        let provider = JwtProvider {
            issuer: rule.issuer.clone().unwrap_or_default(),
            audiences: rule.audiences.clone(),
            forward: rule.forward_original_token.unwrap_or(false),
            from_headers: rule
                .from_headers
                .iter()
                .map(|h| JwtHeader {
                    name: h.name.clone().unwrap_or_default(),
                    value_prefix: h.prefix.clone().unwrap_or_default(),
                })
                .collect(),
            from_params: rule.from_params.clone(),
            from_cookies: rule.from_cookies.clone(),
            forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
            payload_in_metadata: "payload".into(),
            normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
                space_delimited_claims: claims,
            }),
            claim_to_headers: rule
                .output_claim_to_headers
                .iter()
                .map(|c| JwtClaimToHeader {
                    header_name: c.header.clone().unwrap_or_default(),
                    claim_name: c.claim.clone().unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
            clear_route_cache: gateway,
            jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
                specifier: Some(data_source::Specifier::InlineString(jwks_of(
                    inputs, ra, *i, rule, problem,
                ))),
                ..Default::default()
            })),
            ..Default::default()
        };
        providers.insert(name.clone(), provider);
        names.push(name);
    }
    let provider = |n: &String| requirement(jwt_requirement::RequiresType::ProviderName(n.clone()));
    let allow_missing = || {
        requirement(jwt_requirement::RequiresType::AllowMissing(
            Default::default(),
        ))
    };
    let requires = if let [only] = names.as_slice() {
        requirement(jwt_requirement::RequiresType::RequiresAny(
            JwtRequirementOrList {
                requirements: vec![provider(only), allow_missing()],
            },
        ))
    } else {
        // Any provider's valid token; and whatever token is there, valid for its provider.
        let mut any: Vec<JwtRequirement> = names.iter().map(provider).collect();
        any.push(requirement(jwt_requirement::RequiresType::RequiresAll(
            JwtRequirementAndList {
                requirements: names
                    .iter()
                    .map(|n| {
                        requirement(jwt_requirement::RequiresType::RequiresAny(
                            JwtRequirementOrList {
                                requirements: vec![provider(n), allow_missing()],
                            },
                        ))
                    })
                    .collect(),
            },
        )));
        requirement(jwt_requirement::RequiresType::RequiresAny(
            JwtRequirementOrList { requirements: any },
        ))
    };
    let config = JwtAuthentication {
        providers,
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    };
    Some(HttpFilter {
        name: JWT_AUTHN.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pb::any(&config))),
        ..Default::default()
    })
}
