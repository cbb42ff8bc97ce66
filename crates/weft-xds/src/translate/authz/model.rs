//! One AuthorizationPolicy rule as one Envoy RBAC policy, shaped as istiod's authz model
//! (`pilot/pkg/security/authz/model`) shapes it: one permission per `to` entry and one
//! principal per `from` entry (each an AND of its keys, `any` when it has none), every
//! `when` condition added to each entry of its side; per key, an OR of its values, then a
//! NOT of the OR of its not-values.

// istiod writes `metadata` matchers, which Envoy deprecated for `sourced_metadata`.
#![allow(deprecated)]

use super::matcher::{self, JWT_AUTHN};
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, permission, principal,
};
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{PathMatcher, StringMatcher, path_matcher};
use weft_api::types::security::{Condition, Rule, Source};

/// Why a rule cannot be written for this proxy.
#[derive(Debug, PartialEq)]
pub enum Skip {
    /// An HTTP attribute on a TCP port (istiod: the rule is dropped under ALLOW, the key
    /// under DENY and AUDIT).
    HttpOnly(String),
    /// A value istiod cannot turn into a matcher (validation keeps these out of the mesh).
    Invalid(String),
}

/// What the rule is written for.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub tcp: bool,
    /// Under ALLOW a rule that cannot be written is left out; under DENY and AUDIT only the
    /// part that cannot is, so the rule matches more, never less.
    pub strict: bool,
    /// The policy's namespace: `serviceAccounts` without one are its.
    pub namespace: &'a str,
    /// The mesh's trust domain, then its aliases.
    pub trust_domains: &'a [String],
    /// `(policy port, listener port)`: where the listener the rule is for serves a port
    /// under another number.
    pub ports: &'a [(u16, u16)],
}

/// The policy of one rule, or why it is left out. `skipped` collects what was left out of it.
pub fn policy(rule: &Rule, t: Target<'_>, skipped: &mut Vec<Skip>) -> Result<Policy, Skip> {
    let mut principal_when = Vec::new();
    let mut permission_when = Vec::new();
    for c in rule.when.iter().flatten() {
        let key = c.key.as_deref().unwrap_or("");
        if is_permission_key(key) {
            permission_when.push(c);
        } else {
            principal_when.push(c);
        }
    }
    let mut permissions = Vec::new();
    match &rule.to {
        None => permissions.push(and_rules(t, None, &permission_when, skipped)?),
        Some(to) => {
            for op in to.iter().filter_map(|t| t.operation.as_ref()) {
                permissions.push(and_rules(t, Some(op), &permission_when, skipped)?);
            }
        }
    }
    let mut principals = Vec::new();
    match &rule.from {
        None => principals.push(and_ids(t, None, &principal_when, skipped)?),
        Some(from) => {
            for s in from.iter().filter_map(|f| f.source.as_ref()) {
                principals.push(and_ids(t, Some(s), &principal_when, skipped)?);
            }
        }
    }
    Ok(Policy {
        permissions,
        principals,
        ..Default::default()
    })
}

/// A policy no request matches: an ALLOW policy without rules.
pub fn never() -> Policy {
    Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::NotRule(Box::new(permission_any()))),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(principal_any()))),
        }],
        ..Default::default()
    }
}

fn is_permission_key(key: &str) -> bool {
    matches!(
        key,
        "destination.ip" | "destination.port" | "connection.sni"
    ) || key.starts_with("experimental.envoy.filters.")
}

/// Under ALLOW the first thing that cannot be written ends the rule; otherwise it is noted
/// and the key contributes nothing.
fn keep<T>(t: Target<'_>, r: Result<T, Skip>, skipped: &mut Vec<Skip>) -> Result<Option<T>, Skip> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if t.strict => Err(e),
        Err(e) => {
            skipped.push(e);
            Ok(None)
        }
    }
}

fn permission_any() -> Permission {
    Permission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn principal_any() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Any(true)),
    }
}

fn prule(r: permission::Rule) -> Permission {
    Permission { rule: Some(r) }
}

fn pid(i: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(i),
    }
}

fn http_only(t: Target<'_>, key: &str) -> Result<(), Skip> {
    if t.tcp {
        Err(Skip::HttpOnly(key.into()))
    } else {
        Ok(())
    }
}

fn and_rules(
    t: Target<'_>,
    op: Option<&weft_api::types::security::Operation>,
    when: &[&Condition],
    skipped: &mut Vec<Skip>,
) -> Result<Permission, Skip> {
    let mut rules = Vec::new();
    let list = |l: &Option<Vec<String>>| l.clone().unwrap_or_default();
    if let Some(op) = op {
        let keys: [(&str, Vec<String>, Vec<String>); 4] = [
            ("hosts", list(&op.hosts), list(&op.not_hosts)),
            ("methods", list(&op.methods), list(&op.not_methods)),
            ("paths", list(&op.paths), list(&op.not_paths)),
            ("ports", list(&op.ports), list(&op.not_ports)),
        ];
        for (key, values, not_values) in &keys {
            let r = permission_key(t, key, values, not_values);
            if let Some(mut children) = keep(t, r, skipped)? {
                rules.append(&mut children);
            }
        }
    }
    for c in when {
        let key = c.key.as_deref().unwrap_or("");
        let r = permission_key(t, key, &list(&c.values), &list(&c.not_values));
        if let Some(mut children) = keep(t, r, skipped)? {
            rules.append(&mut children);
        }
    }
    if rules.is_empty() {
        rules.push(permission_any());
    }
    Ok(prule(permission::Rule::AndRules(permission::Set { rules })))
}

fn and_ids(
    t: Target<'_>,
    source: Option<&Source>,
    when: &[&Condition],
    skipped: &mut Vec<Skip>,
) -> Result<Principal, Skip> {
    let mut ids = Vec::new();
    let list = |l: &Option<Vec<String>>| l.clone().unwrap_or_default();
    if let Some(s) = source {
        let keys: [(&str, Vec<String>, Vec<String>); 7] = [
            ("principals", list(&s.principals), list(&s.not_principals)),
            (
                "requestPrincipals",
                list(&s.request_principals),
                list(&s.not_request_principals),
            ),
            (
                "serviceAccounts",
                list(&s.service_accounts),
                list(&s.not_service_accounts),
            ),
            ("namespaces", list(&s.namespaces), list(&s.not_namespaces)),
            (
                "trustDomains",
                list(&s.trust_domains),
                list(&s.not_trust_domains),
            ),
            (
                "remoteIpBlocks",
                list(&s.remote_ip_blocks),
                list(&s.not_remote_ip_blocks),
            ),
            ("ipBlocks", list(&s.ip_blocks), list(&s.not_ip_blocks)),
        ];
        for (key, values, not_values) in &keys {
            let r = principal_key(t, key, values, not_values);
            if let Some(mut children) = keep(t, r, skipped)? {
                ids.append(&mut children);
            }
        }
    }
    for c in when {
        let key = c.key.as_deref().unwrap_or("");
        let r = principal_key(t, key, &list(&c.values), &list(&c.not_values));
        if let Some(mut children) = keep(t, r, skipped)? {
            ids.append(&mut children);
        }
    }
    if ids.is_empty() {
        ids.push(principal_any());
    }
    Ok(pid(principal::Identifier::AndIds(principal::Set { ids })))
}

/// The children one permission key adds: an OR of its values, then a NOT of its not-values.
fn permission_key(
    t: Target<'_>,
    key: &str,
    values: &[String],
    not_values: &[String],
) -> Result<Vec<Permission>, Skip> {
    if values.is_empty() && not_values.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(rest) = key.strip_prefix("experimental.") {
        // The whole list is one matcher of the filter's metadata.
        let whole = |vs: &[String]| -> Result<Permission, Skip> {
            let (filter, field) = rest
                .split_once('[')
                .and_then(|(f, k)| Some((f, k.strip_suffix(']')?)))
                .ok_or_else(|| Skip::Invalid(format!("{key}: not FILTER[KEY]")))?;
            let one = |v: &String| match v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                Some(inner) => {
                    matcher::list_one_of(matcher::any_string(vec![matcher::string(inner, "")]))
                }
                None => matcher::any_string(vec![matcher::string(v, "")]),
            };
            Ok(prule(permission::Rule::Metadata(matcher::metadata(
                filter,
                &[field],
                matcher::any_value(vs.iter().map(one).collect()),
            ))))
        };
        let mut out = Vec::new();
        if !values.is_empty() {
            out.push(whole(values)?);
        }
        if !not_values.is_empty() {
            out.push(prule(permission::Rule::NotRule(Box::new(whole(
                not_values,
            )?))));
        }
        return Ok(out);
    }
    let one = |v: &str| -> Result<Permission, Skip> {
        Ok(prule(match key {
            "hosts" => {
                http_only(t, key)?;
                permission::Rule::Header(matcher::header(":authority", v, true))
            }
            "methods" => {
                http_only(t, key)?;
                permission::Rule::Header(matcher::header(":method", v, false))
            }
            "paths" => {
                http_only(t, key)?;
                path(v)
            }
            "ports" | "destination.port" => {
                let port = v
                    .parse::<u16>()
                    .map_err(|_| Skip::Invalid(format!("{key}: invalid port {v:?}")))?;
                let port = t
                    .ports
                    .iter()
                    .find(|(from, _)| *from == port)
                    .map_or(port, |(_, to)| *to);
                permission::Rule::DestinationPort(port.into())
            }
            "destination.ip" => permission::Rule::DestinationIp(
                matcher::cidr(v).ok_or_else(|| Skip::Invalid(format!("{key}: {v:?}")))?,
            ),
            "connection.sni" => permission::Rule::RequestedServerName(matcher::string(v, "")),
            other => return Err(Skip::Invalid(format!("unknown attribute {other}"))),
        }))
    };
    let or = |vs: &[String]| -> Result<Permission, Skip> {
        let rules = vs.iter().map(|v| one(v)).collect::<Result<Vec<_>, _>>()?;
        Ok(prule(permission::Rule::OrRules(permission::Set { rules })))
    };
    let mut out = Vec::new();
    if !values.is_empty() {
        out.push(or(values)?);
    }
    if !not_values.is_empty() {
        out.push(prule(permission::Rule::NotRule(Box::new(or(not_values)?))));
    }
    Ok(out)
}

/// `paths`: Envoy's URI template for Istio's `{*}` (one segment) and `{**}` (the rest), else
/// the path without its query, with Istio's wildcards.
fn path(v: &str) -> permission::Rule {
    if v.contains("{*}") || v.contains("{**}") {
        let template = v.replace("{**}", "**").replace("{*}", "*");
        return permission::Rule::UriTemplate(TypedExtensionConfig {
            name: "uri-template".into(),
            typed_config: Some(super::super::pb::any(&UriTemplateMatchConfig {
                path_template: template,
            })),
        });
    }
    permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(matcher::string(v, ""))),
    })
}

fn collapse_ids(mut ids: Vec<Principal>) -> Principal {
    if ids.len() == 1 {
        return ids.remove(0);
    }
    pid(principal::Identifier::OrIds(principal::Set { ids }))
}

/// The children one principal key adds.
fn principal_key(
    t: Target<'_>,
    key: &str,
    values: &[String],
    not_values: &[String],
) -> Result<Vec<Principal>, Skip> {
    if values.is_empty() && not_values.is_empty() {
        return Ok(Vec::new());
    }
    // Keys whose whole list is one matcher: a JWT's principal and claims.
    let whole: Option<fn(&[String]) -> Principal> = match key {
        "requestPrincipals" | "request.auth.principal" => Some(request_principals),
        "request.auth.audiences" => Some(|vs| claim(&["aud"], vs)),
        "request.auth.presenter" => Some(|vs| claim(&["azp"], vs)),
        _ => None,
    };
    let claims = key
        .strip_prefix("request.auth.claims")
        .map(claim_path)
        .transpose()?;
    if whole.is_some() || claims.is_some() {
        http_only(t, key)?;
        let build = |vs: &[String]| match (&claims, whole) {
            (Some(path), _) => {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                claim(&path, vs)
            }
            (None, Some(f)) => f(vs),
            (None, None) => principal_any(),
        };
        let mut out = Vec::new();
        if !values.is_empty() {
            out.push(build(values));
        }
        if !not_values.is_empty() {
            out.push(pid(principal::Identifier::NotId(Box::new(build(
                not_values,
            )))));
        }
        return Ok(out);
    }
    let one = |v: &str| -> Result<Vec<Principal>, Skip> {
        let authenticated = |m: StringMatcher| {
            pid(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(m),
                },
            ))
        };
        Ok(match key {
            "principals" | "source.principal" => migrate(v, t.trust_domains)
                .iter()
                .map(|p| authenticated(matcher::string(p, "spiffe://")))
                .collect(),
            // istiod puts these values into regexes as they are; they are escaped here, so
            // that a `.` in a name matches only a `.` (the same for every valid name).
            "namespaces" | "source.namespace" => vec![authenticated(matcher::regex(&format!(
                ".*/ns/{}/.*",
                matcher::escape_with_wildcards(v, ".*")
            )))],
            "serviceAccounts" | "source.serviceAccount" => {
                let (ns, sa) = v.split_once('/').unwrap_or((t.namespace, v));
                vec![authenticated(matcher::regex(&format!(
                    "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                    matcher::escape_with_wildcards(ns, ""),
                    matcher::escape_with_wildcards(sa, "")
                )))]
            }
            // Istio 1.30's trust domains: a prefix, or a regex whose `*` stays within the
            // domain.
            "trustDomains" => vec![authenticated(if v.contains('*') {
                matcher::regex(&format!(
                    "spiffe://{}/.*",
                    matcher::escape_with_wildcards(v, "[^/]*")
                ))
            } else {
                matcher::string(&format!("{v}/*"), "spiffe://")
            })],
            "ipBlocks" | "source.ip" => vec![pid(principal::Identifier::DirectRemoteIp(
                matcher::cidr(v).ok_or_else(|| Skip::Invalid(format!("{key}: {v:?}")))?,
            ))],
            "remoteIpBlocks" | "remote.ip" => vec![pid(principal::Identifier::RemoteIp(
                matcher::cidr(v).ok_or_else(|| Skip::Invalid(format!("{key}: {v:?}")))?,
            ))],
            _ => {
                let name = key
                    .strip_prefix("request.headers[")
                    .and_then(|k| k.strip_suffix(']'))
                    .ok_or_else(|| Skip::Invalid(format!("unknown attribute {key}")))?;
                http_only(t, key)?;
                vec![pid(principal::Identifier::Header(matcher::header(
                    name, v, false,
                )))]
            }
        })
    };
    let or = |vs: &[String]| -> Result<Principal, Skip> {
        let mut ids = Vec::new();
        for v in vs {
            ids.append(&mut one(v)?);
        }
        Ok(pid(principal::Identifier::OrIds(principal::Set { ids })))
    };
    let mut out = Vec::new();
    if !values.is_empty() {
        out.push(or(values)?);
    }
    if !not_values.is_empty() {
        out.push(pid(principal::Identifier::NotId(Box::new(or(not_values)?))));
    }
    Ok(out)
}

/// `request.auth.claims[a][b]` → `[a, b]`.
fn claim_path(rest: &str) -> Result<Vec<String>, Skip> {
    let invalid = || Skip::Invalid(format!("request.auth.claims{rest}: not [CLAIM][...]"));
    let inner = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(invalid)?;
    let path: Vec<String> = inner.split("][").map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(invalid());
    }
    Ok(path)
}

/// A claim that is a string, or a list holding one of `values`.
fn claim(path: &[&str], values: &[String]) -> Principal {
    let mut full = vec!["payload"];
    full.extend_from_slice(path);
    let matchers = values.iter().map(|v| matcher::string(v, "")).collect();
    pid(principal::Identifier::Metadata(matcher::metadata(
        JWT_AUTHN,
        &full,
        matcher::string_or_list(matchers),
    )))
}

/// `iss/sub` pairs (split at the last `/`), each the AND of its issuer and subject.
fn request_principals(values: &[String]) -> Principal {
    use matcher::{exact, regex, string};
    let one = |v: &String| {
        let any = || regex(".+");
        let (iss, sub) = if v == "*" {
            (any(), any())
        } else if let Some(rest) = v.strip_prefix('*') {
            match v.rsplit_once('/') {
                Some((iss, sub)) => {
                    let iss = iss.strip_prefix('*').unwrap_or(iss);
                    let iss = if iss.is_empty() {
                        any()
                    } else {
                        string(&format!("*{iss}"), "")
                    };
                    (iss, exact(sub))
                }
                None => (any(), string(&format!("*{rest}"), "")),
            }
        } else if let Some(rest) = v.strip_suffix('*') {
            match v.rsplit_once('/') {
                Some((iss, sub)) => {
                    let sub = sub.strip_suffix('*').unwrap_or(sub);
                    let sub = if sub.is_empty() {
                        any()
                    } else {
                        string(&format!("{sub}*"), "")
                    };
                    (exact(iss), sub)
                }
                None => (string(&format!("{rest}*"), ""), any()),
            }
        } else {
            match v.rsplit_once('/') {
                Some((iss, sub)) => (exact(iss), exact(sub)),
                None => (exact(v), exact("")),
            }
        };
        pid(principal::Identifier::AndIds(principal::Set {
            ids: vec![
                pid(principal::Identifier::Metadata(matcher::jwt_claim(
                    &["iss"],
                    iss,
                ))),
                pid(principal::Identifier::Metadata(matcher::jwt_claim(
                    &["sub"],
                    sub,
                ))),
            ],
        }))
    };
    collapse_ids(values.iter().map(one).collect())
}

/// Trust domain migration: a principal of `cluster.local`, or of a domain of the mesh, stands
/// for the same workload in every domain of the mesh.
fn migrate(v: &str, domains: &[String]) -> Vec<String> {
    let parts: Vec<&str> = v.split('/').collect();
    if parts.len() != 5 || parts[0] == "*" || domains.is_empty() {
        return vec![v.to_string()];
    }
    let td = parts[0];
    let matches = |d: &str| {
        d == td
            || d == "*"
            || d.strip_prefix('*').is_some_and(|s| td.ends_with(s))
            || d.strip_suffix('*').is_some_and(|p| td.starts_with(p))
            || td.strip_prefix('*').is_some_and(|s| d.ends_with(s))
            || td.strip_suffix('*').is_some_and(|p| d.starts_with(p))
    };
    if td != "cluster.local" && !domains.iter().any(|d| matches(d)) {
        return vec![v.to_string()];
    }
    let rest = parts[1..].join("/");
    let mut out: Vec<String> = Vec::new();
    for d in domains {
        let p = format!("{d}/{rest}");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_of_the_default_domain_stand_for_every_domain_of_the_mesh() {
        let domains = vec!["td1".to_string(), "td2".to_string()];
        assert_eq!(
            migrate("cluster.local/ns/x/sa/y", &domains),
            vec!["td1/ns/x/sa/y", "td2/ns/x/sa/y"]
        );
        assert_eq!(
            migrate("other/ns/x/sa/y", &domains),
            vec!["other/ns/x/sa/y"]
        );
        assert_eq!(migrate("*", &domains), vec!["*"]);
        assert_eq!(migrate("*/ns/x/sa/y", &domains), vec!["*/ns/x/sa/y"]);
    }

    #[test]
    fn claim_paths_nest() {
        assert_eq!(
            claim_path("[a][b]"),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert!(claim_path("[]").is_err());
        assert!(claim_path("a").is_err());
    }
}
