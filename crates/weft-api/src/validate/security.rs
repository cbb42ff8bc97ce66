//! PeerAuthentication, RequestAuthentication and AuthorizationPolicy rules.

use super::rules;
use super::{Findings, policy_target, workload_selector};
use crate::path::FieldPath;
use crate::types::security::*;

pub(super) fn validate_peer_authn(f: &mut Findings, spec: &FieldPath, pa: &PeerAuthentication) {
    let empty_selector = pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    let pp = spec.key("portLevelMtls");
    if let Some(ports) = &pa.port_level_mtls {
        if empty_selector && !ports.is_empty() {
            f.err(
                &pp,
                "mesh/namespace peer authentication cannot have port level mTLS",
            );
        }
        if ports.is_empty() {
            f.err(
                &pp,
                "port level mTLS, if defined, must have at least one element",
            );
        }
        for port in ports.keys() {
            if !(1..=65535).contains(port) {
                f.err(&pp.key(port.to_string()), "port must be in range 1..65535");
            }
        }
    }
    workload_selector(f, &spec.key("selector"), pa.selector.as_ref());
}

pub(super) fn validate_request_authn(
    f: &mut Findings,
    spec: &FieldPath,
    ra: &RequestAuthentication,
) {
    policy_target(
        f,
        spec,
        ra.selector.as_ref(),
        ra.target_ref.as_ref(),
        &ra.target_refs,
    );
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        jwt_rule(f, &spec.key("jwtRules").index(i), rule);
    }
}

fn jwt_rule(f: &mut Findings, p: &FieldPath, r: &JwtRule) {
    if r.issuer.as_deref().unwrap_or("").is_empty() {
        f.err(&p.key("issuer"), "issuer must be set");
    }
    for (i, a) in r.audiences.iter().enumerate() {
        if a.is_empty() {
            f.err(
                &p.key("audiences").index(i),
                "audience must be non-empty string",
            );
        }
    }
    let uri_key = if r.jwks_uri.is_some() {
        "jwksUri"
    } else {
        "jwks_uri"
    };
    if r.jwks_uri.is_some() && r.jwks_uri_snake.is_some() {
        f.err(
            &p.key("jwks_uri"),
            "only one of jwksUri or jwks_uri may be set",
        );
    }
    if let Some(uri) = r.jwks_uri() {
        if r.jwks.is_some() {
            f.err(&p.key(uri_key), "only one of jwksUri or jwks may be set");
        }
        let ok = uri.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.starts_with('/')
        });
        if !ok {
            f.err(
                &p.key(uri_key),
                format!("jwks URI {uri:?} is not a valid http or https URL"),
            );
        }
    }
    if let Some(jwks) = &r.jwks {
        match serde_json::from_str::<serde_json::Value>(jwks) {
            Ok(v) if v.get("keys").is_some_and(serde_json::Value::is_array) => {}
            Ok(_) => f.err(
                &p.key("jwks"),
                "jwks parse error: a JWK set needs a \"keys\" array",
            ),
            Err(e) => f.err(&p.key("jwks"), format!("jwks parse error: {e}")),
        }
    }
    for (i, h) in r.from_headers.iter().enumerate() {
        if h.name.as_deref().unwrap_or("").is_empty() {
            f.err(
                &p.key("fromHeaders").index(i).key("name"),
                "location header name must be non-empty string",
            );
        }
    }
    for (i, q) in r.from_params.iter().enumerate() {
        if q.is_empty() {
            f.err(
                &p.key("fromParams").index(i),
                "location query must be non-empty string",
            );
        }
    }
    for (i, c) in r.from_cookies.iter().enumerate() {
        if c.is_empty() {
            f.err(
                &p.key("fromCookies").index(i),
                "cookie name must be non-empty string",
            );
        }
    }
    for (i, c) in r.output_claim_to_headers.iter().enumerate() {
        let cp = p.key("outputClaimToHeaders").index(i);
        match (
            c.claim.as_deref().unwrap_or(""),
            c.header.as_deref().unwrap_or(""),
        ) {
            ("", _) | (_, "") => f.err(
                &cp,
                "outputClaimToHeaders header and claim value must be non-empty string",
            ),
            (_, h) => f.check(&cp.key("header"), rules::validate_header_name(h)),
        }
    }
    if let Some(t) = &r.timeout {
        f.check(&p.key("timeout"), rules::validate_duration(t));
    }
}

/// A `source` or `operation`: at least one of its lists set, and no empty string in any.
fn attribute_lists(
    f: &mut Findings,
    p: &FieldPath,
    lists: &[(&str, &Option<Vec<String>>)],
    what: &str,
    rule: usize,
) {
    if lists
        .iter()
        .all(|(_, l)| l.as_ref().is_none_or(Vec::is_empty))
    {
        f.err(
            p,
            format!("`{what}` must not be empty, found at rule {rule}"),
        );
    }
    for (field, values) in lists {
        for (i, v) in values.iter().flatten().enumerate() {
            if v.is_empty() {
                f.err(
                    &p.key(*field).index(i),
                    format!("empty value not allowed, found in {field}"),
                );
            }
        }
    }
}

fn ips(f: &mut Findings, p: &FieldPath, field: &str, values: Option<&Vec<String>>) {
    for (i, v) in values.into_iter().flatten().enumerate() {
        f.check(&p.key(field).index(i), rules::validate_ip_subnet(v));
    }
}

/// Istio's path templates: `{*}` (one segment) and `{**}` (the rest, last of the operators),
/// each a whole segment of a path that starts with `/`.
fn path_templates(f: &mut Findings, p: &FieldPath, field: &str, values: Option<&Vec<String>>) {
    for (i, v) in values.into_iter().flatten().enumerate() {
        if !v.contains(['{', '}']) {
            continue;
        }
        let err = |f: &mut Findings, why: &str| {
            f.err(
                &p.key(field).index(i),
                format!("invalid path template {v:?}: {why}"),
            );
        };
        if !v.starts_with('/') {
            err(f, "must start with `/`");
            continue;
        }
        let mut after_rest = false;
        for segment in v.split('/') {
            if !segment.contains(['{', '}']) {
                continue;
            }
            if segment != "{*}" && segment != "{**}" {
                err(
                    f,
                    "`{*}` and `{**}` must each be a whole path segment, and are the only operators",
                );
                break;
            }
            if after_rest {
                err(f, "`{**}` must be the last operator");
                break;
            }
            after_rest = segment == "{**}";
        }
    }
}

fn ports(f: &mut Findings, p: &FieldPath, field: &str, values: Option<&Vec<String>>) {
    for (i, v) in values.into_iter().flatten().enumerate() {
        match v.parse::<i64>() {
            Ok(n) if (0..=65535).contains(&n) => {}
            _ => f.err(&p.key(field).index(i), format!("invalid port: {v:?}")),
        }
    }
}

pub(super) fn validate_authz(f: &mut Findings, spec: &FieldPath, ap: &AuthorizationPolicy) {
    policy_target(
        f,
        spec,
        ap.selector.as_ref(),
        ap.target_ref.as_ref(),
        &ap.target_refs,
    );
    let action = ap.action.unwrap_or_default();
    if action == AuthorizationAction::Custom {
        if ap.rules.is_none() {
            f.err(&spec.key("rules"), "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
        } else if ap
            .provider
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .unwrap_or("")
            .is_empty()
        {
            f.err(
                &spec.key("provider").key("name"),
                "`provider.name` must not be empty",
            );
        }
    }
    if ap.provider.is_some() && action != AuthorizationAction::Custom {
        f.err(
            &spec.key("provider"),
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                action_name(action)
            ),
        );
    }
    if action == AuthorizationAction::Deny && ap.rules.is_none() {
        f.err(&spec.key("rules"), "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
    }
    for (i, rule) in ap.rules.iter().flatten().enumerate() {
        let rp = spec.key("rules").index(i);
        if rule.from.as_ref().is_some_and(Vec::is_empty) {
            f.err(
                &rp.key("from"),
                format!("`from` must not be empty, found at rule {i}"),
            );
        }
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let fp = rp.key("from").index(j);
            let Some(s) = &from.source else {
                f.err(
                    &fp.key("source"),
                    format!("`from.source` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let sp = fp.key("source");
            let lists = [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
                ("trustDomains", &s.trust_domains),
                ("notTrustDomains", &s.not_trust_domains),
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ];
            attribute_lists(f, &sp, &lists, "from.source", i);
            for (name, l) in [
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ] {
                ips(f, &sp, name, l.as_ref());
            }
            if (s.principals.is_some()
                || s.not_principals.is_some()
                || s.namespaces.is_some()
                || s.not_namespaces.is_some())
                && (s.service_accounts.is_some() || s.not_service_accounts.is_some())
            {
                f.err(
                    &sp,
                    format!("cannot set serviceAccounts with namespaces or principals, found at rule {i}"),
                );
            }
        }
        if rule.to.as_ref().is_some_and(Vec::is_empty) {
            f.err(
                &rp.key("to"),
                format!("`to` must not be empty, found at rule {i}"),
            );
        }
        for (j, to) in rule.to.iter().flatten().enumerate() {
            let tp = rp.key("to").index(j);
            let Some(op) = &to.operation else {
                f.err(
                    &tp.key("operation"),
                    format!("`to.operation` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let opp = tp.key("operation");
            let lists = [
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("ports", &op.ports),
                ("notPorts", &op.not_ports),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ];
            attribute_lists(f, &opp, &lists, "to.operation", i);
            path_templates(f, &opp, "paths", op.paths.as_ref());
            path_templates(f, &opp, "notPaths", op.not_paths.as_ref());
            ports(f, &opp, "ports", op.ports.as_ref());
            ports(f, &opp, "notPorts", op.not_ports.as_ref());
        }
        for (j, c) in rule.when.iter().flatten().enumerate() {
            condition(f, &rp.key("when").index(j), c, action);
        }
    }
}

fn action_name(a: AuthorizationAction) -> &'static str {
    match a {
        AuthorizationAction::Allow => "ALLOW",
        AuthorizationAction::Deny => "DENY",
        AuthorizationAction::Audit => "AUDIT",
        AuthorizationAction::Custom => "CUSTOM",
    }
}

/// The `when` keys Istio documents, and what their values must look like.
fn condition(f: &mut Findings, p: &FieldPath, c: &Condition, action: AuthorizationAction) {
    let key = c.key.as_deref().unwrap_or("");
    if key.is_empty() {
        f.err(&p.key("key"), "`key` must not be empty");
        return;
    }
    let values = c.values.as_deref().unwrap_or(&[]);
    let not_values = c.not_values.as_deref().unwrap_or(&[]);
    if values.is_empty() && not_values.is_empty() {
        f.err(
            p,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
        return;
    }
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| rest.len() > 2 && rest.starts_with('[') && rest.ends_with(']'))
    };
    let kind = match key {
        "source.ip" | "remote.ip" | "destination.ip" => "ip",
        "destination.port" => "port",
        "source.namespace"
        | "source.principal"
        | "source.serviceAccount"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => "string",
        _ if bracketed("request.headers") || bracketed("request.auth.claims") => "string",
        _ if key.starts_with("experimental.envoy.filters.") => "string",
        _ => {
            f.err(&p.key("key"), format!("unknown attribute ({key})"));
            return;
        }
    };
    if action == AuthorizationAction::Custom
        && (key == "source.namespace"
            || key == "source.principal"
            || key.starts_with("request.auth."))
    {
        f.err(
            &p.key("key"),
            format!("{key} is currently not supported with CUSTOM action"),
        );
    }
    for (field, list) in [("values", values), ("notValues", not_values)] {
        for (i, v) in list.iter().enumerate() {
            let vp = p.key(field).index(i);
            let r = match kind {
                "ip" => rules::validate_ip_subnet(v),
                "port" => match v.parse::<i64>() {
                    Ok(n) => rules::validate_port(n),
                    Err(_) => Err(format!("invalid port: {v:?}")),
                },
                _ => Ok(()),
            };
            if let Err(e) = r {
                let which = if field == "values" {
                    "value"
                } else {
                    "notValue"
                };
                f.err(&vp, format!("invalid `{which}` for `key` {key}: {e}"));
            }
        }
    }
}
