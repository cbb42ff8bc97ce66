//! `envoy.config.rbac.v3.RBAC` → the engine (`crate::rbac`), for the RBAC HTTP filter.

use super::Result;
use crate::config::FieldError;
use crate::rbac::metadata::{MetadataMatch, ValueMatch};
use crate::rbac::{Action, Engine, Permission, Policy, Principal};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3::{MetadataMatcher, PathMatcher, path_matcher};

/// `envoy.filters.network.rbac`: its engines and its `<stat_prefix>rbac.` counters. Envoy
/// decides on a connection's first byte; the Weft proxy decides once the connection is
/// established, before it connects upstream, so a denied client never reaches the upstream.
pub fn network(
    r: &envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac,
    path: &str,
    store: &crate::server::StatsStore,
) -> Result<crate::rbac::Enforcer> {
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::rbac::EnforcementType;
    if r.stat_prefix.is_empty() {
        return Err(FieldError::new(
            format!("{path}.stat_prefix"),
            "is required",
        ));
    }
    if r.enforcement_type != EnforcementType::OneTimeOnFirstByte as i32 {
        return Err(FieldError::new(
            format!("{path}.enforcement_type"),
            "only ONE_TIME_ON_FIRST_BYTE is supported by the Weft proxy",
        ));
    }
    if r.delay_deny.is_some() {
        return Err(FieldError::new(
            format!("{path}.delay_deny"),
            "is not supported by the Weft proxy",
        ));
    }
    if r.matcher.is_some() || r.shadow_matcher.is_some() {
        return Err(FieldError::new(
            format!("{path}.matcher"),
            "matcher trees are not supported by the Weft proxy (rules and shadow_rules are)",
        ));
    }
    for (field, rbac) in [("rules", &r.rules), ("shadow_rules", &r.shadow_rules)] {
        for (name, p) in rbac.iter().flat_map(|x| x.policies.iter()) {
            let ppath = format!("{path}.{field}.policies[\"{name}\"]");
            for (i, x) in p.permissions.iter().enumerate() {
                http_only_permission(x, &format!("{ppath}.permissions[{i}]"))?;
            }
            for (i, x) in p.principals.iter().enumerate() {
                http_only_principal(x, &format!("{ppath}.principals[{i}]"))?;
            }
        }
    }
    let rules = r
        .rules
        .as_ref()
        .map(|x| engine(x, &format!("{path}.rules")))
        .transpose()?;
    let shadow = r
        .shadow_rules
        .as_ref()
        .map(|x| engine(x, &format!("{path}.shadow_rules")))
        .transpose()?;
    let base = crate::rbac::join(&r.stat_prefix, "rbac.");
    let stats = store.rbac(
        &base,
        &crate::rbac::join(&base, &r.shadow_rules_stat_prefix),
    );
    Ok(crate::rbac::Enforcer {
        rules,
        shadow,
        stats,
    })
}

const NOT_ON_TCP: &str =
    "an HTTP rule is not supported by the network RBAC filter (Envoy refuses it)";

/// A connection has no headers or path: Envoy refuses such rules in the network filter.
fn http_only_permission(p: &pb::Permission, path: &str) -> Result<()> {
    use pb::permission::Rule as R;
    match &p.rule {
        Some(R::Header(_) | R::UrlPath(_) | R::UriTemplate(_)) => {
            Err(FieldError::new(path, NOT_ON_TCP))
        }
        Some(R::AndRules(set) | R::OrRules(set)) => set
            .rules
            .iter()
            .enumerate()
            .try_for_each(|(i, r)| http_only_permission(r, &format!("{path}.rules[{i}]"))),
        Some(R::NotRule(r)) => http_only_permission(r, &format!("{path}.not_rule")),
        _ => Ok(()),
    }
}

fn http_only_principal(p: &pb::Principal, path: &str) -> Result<()> {
    use pb::principal::Identifier as I;
    match &p.identifier {
        Some(I::Header(_) | I::UrlPath(_)) => Err(FieldError::new(path, NOT_ON_TCP)),
        Some(I::AndIds(set) | I::OrIds(set)) => set
            .ids
            .iter()
            .enumerate()
            .try_for_each(|(i, r)| http_only_principal(r, &format!("{path}.ids[{i}]"))),
        Some(I::NotId(r)) => http_only_principal(r, &format!("{path}.not_id")),
        _ => Ok(()),
    }
}

pub fn engine(rbac: &pb::Rbac, path: &str) -> Result<Engine> {
    let action = match pb::rbac::Action::try_from(rbac.action) {
        Ok(pb::rbac::Action::Allow) => Action::Allow,
        Ok(pb::rbac::Action::Deny) => Action::Deny,
        Ok(pb::rbac::Action::Log) => Action::Log,
        Err(_) => return Err(FieldError::new(format!("{path}.action"), "unknown action")),
    };
    let mut policies = Vec::new();
    let mut names: Vec<&String> = rbac.policies.keys().collect();
    // Envoy keeps policies in a sorted map: the first match by name decides.
    names.sort();
    for name in names {
        let p = &rbac.policies[name];
        let ppath = format!("{path}.policies[\"{name}\"]");
        if p.condition.is_some() || p.checked_condition.is_some() {
            return Err(FieldError::new(
                format!("{ppath}.condition"),
                "CEL conditions are not supported by the Weft proxy",
            ));
        }
        if p.permissions.is_empty() || p.principals.is_empty() {
            return Err(FieldError::new(
                ppath,
                "permissions and principals each need at least one entry",
            ));
        }
        let permissions = p
            .permissions
            .iter()
            .enumerate()
            .map(|(i, x)| permission(x, &format!("{ppath}.permissions[{i}]")))
            .collect::<Result<_>>()?;
        let principals = p
            .principals
            .iter()
            .enumerate()
            .map(|(i, x)| principal(x, &format!("{ppath}.principals[{i}]")))
            .collect::<Result<_>>()?;
        policies.push(Policy {
            name: name.clone(),
            details: crate::rbac::details(Some(name)),
            permissions,
            principals,
        });
    }
    Ok(Engine { action, policies })
}

fn cidr(c: &CidrRange, path: &str) -> Result<crate::listener::Cidr> {
    let mut all = super::listener::cidrs(std::slice::from_ref(c), path)?;
    all.pop()
        .ok_or_else(|| FieldError::new(path, "is required"))
}

fn url_path(p: &PathMatcher, path: &str) -> Result<crate::route::StringMatch> {
    match &p.rule {
        Some(path_matcher::Rule::Path(sm)) => {
            super::headers::string_match(sm, &format!("{path}.path"))
        }
        None => Err(FieldError::new(format!("{path}.path"), "is required")),
    }
}

pub fn metadata(m: &MetadataMatcher, path: &str) -> Result<MetadataMatch> {
    use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::path_segment::Segment;
    if m.filter.is_empty() {
        return Err(FieldError::new(format!("{path}.filter"), "is required"));
    }
    if m.path.is_empty() {
        return Err(FieldError::new(
            format!("{path}.path"),
            "needs at least one key",
        ));
    }
    let keys = m
        .path
        .iter()
        .enumerate()
        .map(|(i, s)| match &s.segment {
            Some(Segment::Key(k)) if !k.is_empty() => Ok(k.clone()),
            _ => Err(FieldError::new(
                format!("{path}.path[{i}].key"),
                "is required",
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let value = m
        .value
        .as_ref()
        .ok_or_else(|| FieldError::new(format!("{path}.value"), "is required"))?;
    Ok(MetadataMatch {
        filter: m.filter.clone(),
        path: keys,
        value: value_match(value, &format!("{path}.value"))?,
        invert: m.invert,
    })
}

fn value_match(
    v: &envoy_types::pb::envoy::r#type::matcher::v3::ValueMatcher,
    path: &str,
) -> Result<ValueMatch> {
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        double_matcher, list_matcher, value_matcher::MatchPattern as P,
    };
    Ok(match &v.match_pattern {
        Some(P::NullMatch(_)) => ValueMatch::Null,
        Some(P::DoubleMatch(d)) => match &d.match_pattern {
            Some(double_matcher::MatchPattern::Range(r)) => ValueMatch::Double {
                range: Some((r.start, r.end)),
                exact: None,
            },
            Some(double_matcher::MatchPattern::Exact(e)) => ValueMatch::Double {
                range: None,
                exact: Some(*e),
            },
            None => {
                return Err(FieldError::new(
                    format!("{path}.double_match"),
                    "range or exact is required",
                ));
            }
        },
        Some(P::StringMatch(sm)) => ValueMatch::String(super::headers::string_match(
            sm,
            &format!("{path}.string_match"),
        )?),
        Some(P::BoolMatch(b)) => ValueMatch::Bool(*b),
        Some(P::PresentMatch(p)) => ValueMatch::Present(*p),
        Some(P::ListMatch(l)) => match &l.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(inner)) => ValueMatch::OneOf(Box::new(
                value_match(inner, &format!("{path}.list_match.one_of"))?,
            )),
            None => {
                return Err(FieldError::new(
                    format!("{path}.list_match.one_of"),
                    "is required",
                ));
            }
        },
        Some(P::OrMatch(o)) => {
            if o.value_matchers.len() < 2 {
                return Err(FieldError::new(
                    format!("{path}.or_match.value_matchers"),
                    "needs at least two matchers",
                ));
            }
            ValueMatch::Or(
                o.value_matchers
                    .iter()
                    .enumerate()
                    .map(|(i, m)| value_match(m, &format!("{path}.or_match.value_matchers[{i}]")))
                    .collect::<Result<_>>()?,
            )
        }
        None => return Err(FieldError::new(path, "a match pattern is required")),
    })
}

const URI_TEMPLATE: &str = "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig";

fn uri_template(
    ext: &envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig,
    path: &str,
) -> Result<crate::rbac::UriTemplate> {
    use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
    let tpath = format!("{path}.typed_config");
    let any = ext
        .typed_config
        .as_ref()
        .ok_or_else(|| FieldError::new(&tpath, "is required"))?;
    if super::type_name(any) != URI_TEMPLATE {
        return Err(FieldError::new(
            tpath,
            format!(
                "{} is not supported (only {URI_TEMPLATE} is)",
                super::type_name(any)
            ),
        ));
    }
    let config: UriTemplateMatchConfig = super::decode_any(any, &tpath)?;
    crate::rbac::UriTemplate::new(&config.path_template)
        .map_err(|e| FieldError::new(format!("{tpath}.path_template"), e))
}

fn permission(p: &pb::Permission, path: &str) -> Result<Permission> {
    use pb::permission::Rule as R;
    // `metadata` is deprecated for `sourced_metadata`, and is what istiod writes.
    #[allow(deprecated)]
    Ok(match &p.rule {
        Some(R::Any(true)) => Permission::Any,
        Some(R::AndRules(set)) | Some(R::OrRules(set)) => {
            let field = if matches!(p.rule, Some(R::AndRules(_))) {
                "and_rules"
            } else {
                "or_rules"
            };
            if set.rules.is_empty() {
                return Err(FieldError::new(
                    format!("{path}.{field}.rules"),
                    "needs at least one rule",
                ));
            }
            let rules = set
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| permission(r, &format!("{path}.{field}.rules[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            if field == "and_rules" {
                Permission::And(rules)
            } else {
                Permission::Or(rules)
            }
        }
        Some(R::NotRule(r)) => {
            Permission::Not(Box::new(permission(r, &format!("{path}.not_rule"))?))
        }
        Some(R::Header(h)) => Permission::Header(super::headers::header_matcher(
            h,
            &format!("{path}.header"),
        )?),
        Some(R::UrlPath(u)) => Permission::UrlPath(url_path(u, &format!("{path}.url_path"))?),
        Some(R::UriTemplate(ext)) => {
            Permission::UriTemplate(uri_template(ext, &format!("{path}.uri_template"))?)
        }
        Some(R::DestinationIp(c)) => {
            Permission::DestinationIp(cidr(c, &format!("{path}.destination_ip"))?)
        }
        Some(R::DestinationPort(port)) => {
            Permission::DestinationPort(u16::try_from(*port).map_err(|_| {
                FieldError::new(format!("{path}.destination_port"), "must be at most 65535")
            })?)
        }
        Some(R::DestinationPortRange(r)) => {
            let (start, end) = (u32::try_from(r.start).ok(), u32::try_from(r.end).ok());
            match (start, end) {
                (Some(s), Some(e)) if s < e && e <= 65536 => Permission::DestinationPortRange(s, e),
                _ => {
                    return Err(FieldError::new(
                        format!("{path}.destination_port_range"),
                        "needs 0 <= start < end <= 65536",
                    ));
                }
            }
        }
        Some(R::RequestedServerName(sm)) => Permission::RequestedServerName(
            super::headers::string_match(sm, &format!("{path}.requested_server_name"))?,
        ),
        Some(R::Metadata(m)) => Permission::Metadata(metadata(m, &format!("{path}.metadata"))?),
        _ => {
            return Err(FieldError::new(
                path,
                "this permission is not supported by the Weft proxy (any, and_rules, or_rules, not_rule, header, url_path, uri_template, destination_ip, destination_port, destination_port_range, requested_server_name and metadata are)",
            ));
        }
    })
}

fn principal(p: &pb::Principal, path: &str) -> Result<Principal> {
    use pb::principal::Identifier as I;
    #[allow(deprecated)]
    Ok(match &p.identifier {
        Some(I::Any(true)) => Principal::Any,
        Some(I::AndIds(set)) | Some(I::OrIds(set)) => {
            let field = if matches!(p.identifier, Some(I::AndIds(_))) {
                "and_ids"
            } else {
                "or_ids"
            };
            if set.ids.is_empty() {
                return Err(FieldError::new(
                    format!("{path}.{field}.ids"),
                    "needs at least one id",
                ));
            }
            let ids = set
                .ids
                .iter()
                .enumerate()
                .map(|(i, r)| principal(r, &format!("{path}.{field}.ids[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            if field == "and_ids" {
                Principal::And(ids)
            } else {
                Principal::Or(ids)
            }
        }
        Some(I::NotId(r)) => Principal::Not(Box::new(principal(r, &format!("{path}.not_id"))?)),
        Some(I::Authenticated(a)) => Principal::Authenticated(match &a.principal_name {
            Some(sm) => Some(super::headers::string_match(
                sm,
                &format!("{path}.authenticated.principal_name"),
            )?),
            None => None,
        }),
        Some(I::SourceIp(c)) => Principal::DirectRemoteIp(cidr(c, &format!("{path}.source_ip"))?),
        Some(I::DirectRemoteIp(c)) => {
            Principal::DirectRemoteIp(cidr(c, &format!("{path}.direct_remote_ip"))?)
        }
        Some(I::RemoteIp(c)) => Principal::RemoteIp(cidr(c, &format!("{path}.remote_ip"))?),
        Some(I::Header(h)) => Principal::Header(super::headers::header_matcher(
            h,
            &format!("{path}.header"),
        )?),
        Some(I::UrlPath(u)) => Principal::UrlPath(url_path(u, &format!("{path}.url_path"))?),
        Some(I::Metadata(m)) => Principal::Metadata(metadata(m, &format!("{path}.metadata"))?),
        _ => {
            return Err(FieldError::new(
                path,
                "this principal is not supported by the Weft proxy (any, and_ids, or_ids, not_id, authenticated, source_ip, direct_remote_ip, remote_ip, header and url_path are)",
            ));
        }
    })
}
