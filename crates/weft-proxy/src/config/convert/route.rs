//! RouteConfiguration → `route::RouteConfig`.

use super::headers::{header_matcher, header_name, header_ops, header_value, string_match};
use super::{Result, duration, full_regex, not_negative, regex};
use crate::config::FieldError;
use crate::http::mirror::MirrorPolicy;
use crate::http::replay;
use crate::route::hash_policy::{HashKey, HashPolicy};
use crate::route::{
    Action, AttemptCount, ClusterTarget, Forward, PathMatch, PathRedirect, QueryMatch, Redirect,
    RequireTls, Route, RouteConfig, RouteMatch, VirtualHost, WeightedCluster,
};
use crate::route::{GrpcTimeout, StreamDuration};
use crate::server::StatsStore;
use envoy_types::pb::envoy::config::core::v3::data_source;
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use http::{HeaderName, StatusCode};
use std::time::Duration;

/// Envoy's route timeout when none is given.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// `validate_by_default`: Envoy checks the clusters of a static route table unless told not to,
/// and those of an RDS one only when told to.
pub fn route_configuration(
    rc: &pb::RouteConfiguration,
    path: &str,
    validate_by_default: bool,
    store: &StatsStore,
) -> Result<RouteConfig> {
    let mut config = RouteConfig {
        name: rc.name.clone(),
        validate_clusters: rc
            .validate_clusters
            .as_ref()
            .map_or(validate_by_default, |b| b.value),
        exact: Default::default(),
        suffixes: Vec::new(),
        prefixes: Vec::new(),
        catch_all: None,
        virtual_hosts: Vec::new(),
        headers: header_ops(
            &rc.request_headers_to_add,
            &rc.request_headers_to_remove,
            &rc.response_headers_to_add,
            &rc.response_headers_to_remove,
            path,
        )?,
        filter_overrides: super::http_filters::filter_overrides(
            &rc.typed_per_filter_config,
            &format!("{path}.typed_per_filter_config"),
            store,
        )?,
    };
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let vpath = format!("{path}.virtual_hosts[{i}]");
        if vh.domains.is_empty() {
            return Err(FieldError::new(
                format!("{vpath}.domains"),
                "at least one domain is required",
            ));
        }
        for (d, domain) in vh.domains.iter().enumerate() {
            let domain = domain.to_ascii_lowercase();
            let dpath = format!("{vpath}.domains[{d}]");
            let duplicate = || {
                FieldError::new(
                    &dpath,
                    format!("domain {domain} is already used by another virtual host"),
                )
            };
            if domain == "*" {
                if config.catch_all.replace(i).is_some() {
                    return Err(duplicate());
                }
            } else if let Some(suffix) = domain.strip_prefix('*') {
                if config.suffixes.iter().any(|(s, _)| s == suffix) {
                    return Err(duplicate());
                }
                config.suffixes.push((suffix.to_string(), i));
            } else if let Some(prefix) = domain.strip_suffix('*') {
                if config.prefixes.iter().any(|(p, _)| p == prefix) {
                    return Err(duplicate());
                }
                config.prefixes.push((prefix.to_string(), i));
            } else if domain.contains('*') {
                return Err(FieldError::new(
                    dpath,
                    "a wildcard must be the first or last character",
                ));
            } else if config.exact.insert(domain.clone(), i).is_some() {
                return Err(duplicate());
            }
        }
        let vhost = VhostDefaults {
            attempt_count: AttemptCount {
                request: vh.include_request_attempt_count,
                response: vh.include_attempt_count_in_response,
            },
            #[allow(deprecated)]
            buffer_limit: buffer_limit(
                vh.per_request_buffer_limit_bytes.as_ref(),
                vh.request_body_buffer_limit.as_ref(),
                &vpath,
            )?,
        };
        let mut routes = Vec::new();
        for (r, route) in vh.routes.iter().enumerate() {
            routes.push(convert_route(
                route,
                &format!("{vpath}.routes[{r}]"),
                store,
                &vhost,
            )?);
        }
        let filter_overrides = super::http_filters::filter_overrides(
            &vh.typed_per_filter_config,
            &format!("{vpath}.typed_per_filter_config"),
            store,
        )?;
        config.virtual_hosts.push(VirtualHost {
            name: vh.name.clone(),
            require_tls: match vh.require_tls {
                0 => None,
                1 => Some(RequireTls::ExternalOnly),
                2 => Some(RequireTls::All),
                other => {
                    return Err(FieldError::new(
                        format!("{vpath}.require_tls"),
                        format!("unknown value {other}"),
                    ));
                }
            },
            routes,
            headers: header_ops(
                &vh.request_headers_to_add,
                &vh.request_headers_to_remove,
                &vh.response_headers_to_add,
                &vh.response_headers_to_remove,
                &vpath,
            )?,
            filter_overrides,
        });
    }
    // Longest wildcard wins.
    config
        .suffixes
        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    config
        .prefixes
        .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    Ok(config)
}

/// What a virtual host gives each of its routes.
struct VhostDefaults {
    attempt_count: AttemptCount,
    buffer_limit: Option<u64>,
}

/// A request body buffer limit, as Envoy picks it: `request_body_buffer_limit` as given, or
/// `per_request_buffer_limit_bytes` up to the connection's limit; only one may be set.
fn buffer_limit(
    per_request: Option<&envoy_types::pb::google::protobuf::UInt32Value>,
    request_body: Option<&envoy_types::pb::google::protobuf::UInt64Value>,
    path: &str,
) -> Result<Option<u64>> {
    match (per_request, request_body) {
        (Some(_), Some(_)) => Err(FieldError::new(
            format!("{path}.request_body_buffer_limit"),
            "only one of per_request_buffer_limit_bytes and request_body_buffer_limit may be set",
        )),
        (Some(p), None) => Ok(Some(u64::from(p.value.min(replay::DEFAULT_LIMIT)))),
        (None, Some(r)) => Ok(Some(r.value)),
        (None, None) => Ok(None),
    }
}

fn convert_route(
    route: &pb::Route,
    path: &str,
    store: &StatsStore,
    vhost: &VhostDefaults,
) -> Result<Route> {
    let m = route
        .r#match
        .as_ref()
        .ok_or_else(|| FieldError::new(format!("{path}.match"), "is required"))?;
    let mpath = format!("{path}.match");
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let path_match = match &m.path_specifier {
        Some(pb::route_match::PathSpecifier::Prefix(p)) => PathMatch::Prefix {
            prefix: p.clone(),
            case_sensitive,
        },
        Some(pb::route_match::PathSpecifier::Path(p)) => PathMatch::Exact {
            path: p.clone(),
            case_sensitive,
        },
        Some(pb::route_match::PathSpecifier::SafeRegex(re)) => {
            PathMatch::Regex(full_regex(&re.regex, &format!("{mpath}.safe_regex.regex"))?)
        }
        Some(pb::route_match::PathSpecifier::PathSeparatedPrefix(p)) => {
            if p.contains(['?', '#']) || (p.ends_with('/') && p.len() > 1) {
                return Err(FieldError::new(
                    format!("{mpath}.path_separated_prefix"),
                    "must not contain ? or # or end with /",
                ));
            }
            PathMatch::SeparatedPrefix {
                prefix: p.clone(),
                case_sensitive,
            }
        }
        Some(_) => {
            return Err(FieldError::new(
                &mpath,
                "this path specifier is not supported by the Weft proxy",
            ));
        }
        None => {
            return Err(FieldError::new(
                &mpath,
                "one of prefix, path, safe_regex or path_separated_prefix is required",
            ));
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        headers.push(header_matcher(h, &format!("{mpath}.headers[{i}]"))?);
    }
    let mut query = Vec::new();
    for (i, q) in m.query_parameters.iter().enumerate() {
        let qpath = format!("{mpath}.query_parameters[{i}]");
        let value = match &q.query_parameter_match_specifier {
            Some(pb::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(sm)) => {
                Some(string_match(sm, &format!("{qpath}.string_match"))?)
            }
            Some(pb::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(_))
            | None => None,
        };
        query.push(QueryMatch {
            name: q.name.clone(),
            value,
        });
    }
    let action = match &route.action {
        Some(pb::route::Action::Route(ra)) => {
            let mut f = forward(ra, &format!("{path}.route"), &path_match)?;
            f.attempt_count = vhost.attempt_count;
            #[allow(deprecated)]
            let own = buffer_limit(
                route.per_request_buffer_limit_bytes.as_ref(),
                route.request_body_buffer_limit.as_ref(),
                path,
            )?;
            f.buffer_limit = own
                .or(vhost.buffer_limit)
                .unwrap_or(u64::from(replay::DEFAULT_LIMIT));
            Action::Forward(Box::new(f))
        }
        Some(pb::route::Action::Redirect(ra)) => {
            Action::Redirect(Box::new(redirect(ra, &format!("{path}.redirect"))?))
        }
        Some(pb::route::Action::DirectResponse(dr)) => {
            let dpath = format!("{path}.direct_response");
            let status = u16::try_from(dr.status)
                .ok()
                .filter(|s| (200..600).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| {
                    FieldError::new(format!("{dpath}.status"), "must be between 200 and 599")
                })?;
            let body = match dr.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                Some(data_source::Specifier::InlineString(s)) => {
                    Some(bytes::Bytes::from(s.clone()))
                }
                Some(data_source::Specifier::InlineBytes(b)) => Some(bytes::Bytes::from(b.clone())),
                Some(_) => {
                    return Err(FieldError::new(
                        format!("{dpath}.body"),
                        "only inline_string and inline_bytes are supported",
                    ));
                }
                None => None,
            };
            Action::Direct { status, body }
        }
        Some(_) => {
            return Err(FieldError::new(
                path,
                "this route action is not supported by the Weft proxy",
            ));
        }
        None => {
            return Err(FieldError::new(
                path,
                "one of route, redirect or direct_response is required",
            ));
        }
    };
    let filter_overrides = super::http_filters::filter_overrides(
        &route.typed_per_filter_config,
        &format!("{path}.typed_per_filter_config"),
        store,
    )?;
    Ok(Route {
        name: route.name.clone(),
        matcher: RouteMatch {
            path: path_match,
            headers,
            query,
        },
        action,
        headers: header_ops(
            &route.request_headers_to_add,
            &route.request_headers_to_remove,
            &route.response_headers_to_add,
            &route.response_headers_to_remove,
            path,
        )?,
        filter_overrides,
    })
}

fn forward(ra: &pb::RouteAction, path: &str, path_match: &PathMatch) -> Result<Forward> {
    let target = match &ra.cluster_specifier {
        Some(pb::route_action::ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
            ClusterTarget::Named(c.clone())
        }
        Some(pb::route_action::ClusterSpecifier::ClusterHeader(h)) => {
            ClusterTarget::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                FieldError::new(format!("{path}.cluster_header"), "not a valid header name")
            })?)
        }
        Some(pb::route_action::ClusterSpecifier::WeightedClusters(wc)) => {
            let wpath = format!("{path}.weighted_clusters");
            let mut clusters = Vec::new();
            for (i, c) in wc.clusters.iter().enumerate() {
                let cpath = format!("{wpath}.clusters[{i}]");
                if c.name.is_empty() {
                    return Err(FieldError::new(format!("{cpath}.name"), "is required"));
                }
                let host_rewrite = match &c.host_rewrite_specifier {
                    Some(pb::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
                        Some(header_value(h, &format!("{cpath}.host_rewrite_literal"))?)
                    }
                    None => None,
                };
                clusters.push(WeightedCluster {
                    name: c.name.clone(),
                    weight: u64::from(c.weight.as_ref().map_or(0, |w| w.value)),
                    headers: header_ops(
                        &c.request_headers_to_add,
                        &c.request_headers_to_remove,
                        &c.response_headers_to_add,
                        &c.response_headers_to_remove,
                        &cpath,
                    )?,
                    host_rewrite,
                });
            }
            let sum: u64 = clusters.iter().map(|c| c.weight).sum();
            #[allow(deprecated)]
            let total = wc.total_weight.as_ref().map_or(sum, |t| u64::from(t.value));
            if clusters.is_empty() || sum == 0 {
                return Err(FieldError::new(
                    format!("{wpath}.clusters"),
                    "at least one cluster with a weight is required",
                ));
            }
            if total != sum {
                return Err(FieldError::new(
                    format!("{wpath}.total_weight"),
                    format!("is {total} but the cluster weights add up to {sum}"),
                ));
            }
            ClusterTarget::Weighted { clusters, total }
        }
        _ => {
            return Err(FieldError::new(
                path,
                "one of cluster, cluster_header or weighted_clusters is required",
            ));
        }
    };
    let prefix_rewrite = (!ra.prefix_rewrite.is_empty()).then_some(&ra.prefix_rewrite);
    let (prefix_rewrite, regex_rewrite) = match (prefix_rewrite, &ra.regex_rewrite) {
        (Some(p), None) => {
            if matches!(path_match, PathMatch::Regex(_)) {
                return Err(FieldError::new(
                    format!("{path}.prefix_rewrite"),
                    "cannot be used with a safe_regex match",
                ));
            }
            (Some(p.clone()), None)
        }
        (None, Some(r)) => (None, Some(regex_rewrite(r, path)?)),
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                format!("{path}.regex_rewrite"),
                "only one of prefix_rewrite or regex_rewrite may be set",
            ));
        }
        (None, None) => (None, None),
    };
    let host_rewrite = match &ra.host_rewrite_specifier {
        Some(pb::route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            Some(header_value(h, &format!("{path}.host_rewrite_literal"))?)
        }
        Some(_) => {
            return Err(FieldError::new(
                path,
                "only host_rewrite_literal is supported by the Weft proxy",
            ));
        }
        None => None,
    };
    let timeout = match duration(ra.timeout.as_ref()) {
        // A route with max_stream_duration uses Envoy's "new timeouts": the stream's duration
        // bounds it, and the route timeout (even its default) no longer applies.
        _ if ra.max_stream_duration.is_some() => None,
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    };
    let cluster_not_found = match ra.cluster_not_found_response_code {
        1 => StatusCode::NOT_FOUND,
        2 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut hash_policy = Vec::new();
    for (i, h) in ra.hash_policy.iter().enumerate() {
        hash_policy.push(hash_key(h, &format!("{path}.hash_policy[{i}]"))?);
    }
    let retry = match &ra.retry_policy {
        Some(p) => Some(std::sync::Arc::new(super::retry::retry_policy(
            p,
            &format!("{path}.retry_policy"),
        )?)),
        None => None,
    };
    let mut mirrors = Vec::new();
    for (i, m) in ra.request_mirror_policies.iter().enumerate() {
        let mpath = format!("{path}.request_mirror_policies[{i}]");
        if m.cluster.is_empty() {
            return Err(FieldError::new(format!("{mpath}.cluster"), "is required"));
        }
        mirrors.push(MirrorPolicy {
            cluster: m.cluster.clone(),
            per_million: super::fault::per_million(
                m.runtime_fraction
                    .as_ref()
                    .and_then(|f| f.default_value.as_ref()),
            ),
            shadow_suffix: !m.disable_shadow_host_suffix_append,
        });
    }
    let stream_duration = match &ra.max_stream_duration {
        Some(m) => {
            let mpath = format!("{path}.max_stream_duration");
            let field = |d: Option<&envoy_types::pb::google::protobuf::Duration>, name: &str| {
                not_negative(d, format!("{mpath}.{name}"))
            };
            Some(StreamDuration {
                max: field(m.max_stream_duration.as_ref(), "max_stream_duration")?,
                grpc_timeout_header_max: field(
                    m.grpc_timeout_header_max.as_ref(),
                    "grpc_timeout_header_max",
                )?,
                grpc_timeout_header_offset: field(
                    m.grpc_timeout_header_offset.as_ref(),
                    "grpc_timeout_header_offset",
                )?,
            })
        }
        None => None,
    };
    #[allow(deprecated)]
    let grpc_timeout = match &ra.max_grpc_timeout {
        Some(max) => Some(GrpcTimeout {
            max: not_negative(Some(max), format!("{path}.max_grpc_timeout"))?.unwrap_or_default(),
            offset: not_negative(
                ra.grpc_timeout_offset.as_ref(),
                format!("{path}.grpc_timeout_offset"),
            )?,
        }),
        None => None,
    };
    Ok(Forward {
        stream_duration,
        grpc_timeout,
        priority: if ra.priority == 1 {
            crate::cluster::circuit::Priority::High
        } else {
            crate::cluster::circuit::Priority::Default
        },
        retry,
        mirrors,
        attempt_count: AttemptCount::default(),
        buffer_limit: u64::from(replay::DEFAULT_LIMIT),
        target,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        timeout,
        cluster_not_found,
        hash_policy,
    })
}

fn hash_key(h: &pb::route_action::HashPolicy, path: &str) -> Result<HashPolicy> {
    use pb::route_action::hash_policy::PolicySpecifier;
    let key = match &h.policy_specifier {
        Some(PolicySpecifier::Header(header)) => HashKey::Header(header_name(
            &header.header_name,
            &format!("{path}.header.header_name"),
        )?),
        Some(PolicySpecifier::Cookie(c)) => {
            if c.name.is_empty() {
                return Err(FieldError::new(
                    format!("{path}.cookie.name"),
                    "is required",
                ));
            }
            HashKey::Cookie {
                name: c.name.clone(),
                ttl: duration(c.ttl.as_ref()),
                path: (!c.path.is_empty()).then(|| c.path.clone()),
            }
        }
        Some(PolicySpecifier::ConnectionProperties(p)) if p.source_ip => HashKey::SourceIp,
        Some(PolicySpecifier::QueryParameter(q)) if !q.name.is_empty() => {
            HashKey::QueryParameter(q.name.clone())
        }
        _ => {
            return Err(FieldError::new(
                path,
                "one of header, cookie, connection_properties.source_ip or query_parameter.name is required",
            ));
        }
    };
    Ok(HashPolicy {
        key,
        terminal: h.terminal,
    })
}

/// `regex_rewrite` of a route or redirect: the pattern compiled, the substitution translated.
fn regex_rewrite(r: &RegexMatchAndSubstitute, path: &str) -> Result<(regex::Regex, String)> {
    let pattern = r.pattern.as_ref().map_or("", |p| p.regex.as_str());
    let re = regex(pattern, &format!("{path}.regex_rewrite.pattern.regex"))?;
    Ok((re, envoy_substitution(&r.substitution)))
}

/// RE2 substitutions write groups as `\1`; the regex crate wants `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn redirect(r: &pb::RedirectAction, path: &str) -> Result<Redirect> {
    let scheme = match &r.scheme_rewrite_specifier {
        Some(pb::redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => {
            Some("https".to_string())
        }
        Some(pb::redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => {
            Some(s.to_ascii_lowercase())
        }
        _ => None,
    };
    let path_redirect = match &r.path_rewrite_specifier {
        Some(pb::redirect_action::PathRewriteSpecifier::PathRedirect(p)) => {
            PathRedirect::Path(p.clone())
        }
        Some(pb::redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => {
            PathRedirect::Prefix(p.clone())
        }
        Some(pb::redirect_action::PathRewriteSpecifier::RegexRewrite(rr)) => {
            let (re, substitution) = regex_rewrite(rr, path)?;
            PathRedirect::Regex(re, substitution)
        }
        Some(_) => {
            return Err(FieldError::new(
                path,
                "path_rewrite is not supported by the Weft proxy",
            ));
        }
        None => PathRedirect::Keep,
    };
    let status = match r.response_code {
        0 => StatusCode::MOVED_PERMANENTLY,
        1 => StatusCode::FOUND,
        2 => StatusCode::SEE_OTHER,
        3 => StatusCode::TEMPORARY_REDIRECT,
        4 => StatusCode::PERMANENT_REDIRECT,
        other => {
            return Err(FieldError::new(
                format!("{path}.response_code"),
                format!("unknown value {other}"),
            ));
        }
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| {
            FieldError::new(format!("{path}.port_redirect"), "must be a port number")
        })?),
    };
    Ok(Redirect {
        scheme,
        host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
        port,
        path: path_redirect,
        strip_query: r.strip_query,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;

    #[test]
    fn prefix_and_regex_rewrite_together_are_refused() {
        let action = pb::RouteAction {
            cluster_specifier: Some(pb::route_action::ClusterSpecifier::Cluster("c".into())),
            prefix_rewrite: "/new".into(),
            regex_rewrite: Some(RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: "^/old".into(),
                    ..Default::default()
                }),
                substitution: "/new".into(),
            }),
            ..Default::default()
        };
        let matcher = PathMatch::Prefix {
            prefix: "/".into(),
            case_sensitive: true,
        };
        let err = forward(&action, "r.route", &matcher).unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.route.regex_rewrite: only one of prefix_rewrite or regex_rewrite may be set"
        );
    }
}
