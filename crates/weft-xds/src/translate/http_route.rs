//! One VirtualService `http` entry into Envoy routes: one route per match that applies here
//! (Istio ORs a route's matches; Envoy routes match one condition set each), with the
//! destination clusters, rewrites, redirect, timeout, retries, fault, mirror, CORS and header
//! operations istiod writes.

use super::cluster::outbound_name;
use super::config::{DOMAIN_SUFFIX, Obj, Scope};
use super::pb;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryBackOff, RetryHostPredicate, retry_host_predicate,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HashPolicy, HostRewriteSpecifier, RequestMirrorPolicy, hash_policy,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteMatch, WeightedCluster, header_matcher, query_parameter_matcher,
    redirect_action, route, route_match,
    weighted_cluster::{ClusterWeight, cluster_weight},
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use std::collections::BTreeMap;
use weft_api::types::common::{Percent, StringMatch};
use weft_api::types::virtual_service::{
    CorsPolicy as IstioCors, Destination, HeaderOperations, HttpFaultInjection, HttpMatchRequest,
    HttpRetry, HttpRoute, UnmatchedPreflights, VirtualService,
};
use weft_registry::host;

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Where a route table is being built: the port it serves, and which `gateways` name applies
/// (`mesh` for sidecars, `namespace/name` of each Gateway for a gateway).
pub struct Context<'s, 'a> {
    pub scope: &'s Scope<'a>,
    pub port: u16,
    pub gateways: Vec<String>,
    /// The server terminates TLS: a redirect's scheme is https unless it says otherwise.
    pub tls: bool,
}

impl Context<'_, '_> {
    /// Whether a `gateways` list written in an object of `namespace` names this context.
    pub fn binds(&self, gateways: &[String], namespace: &str) -> bool {
        self.gateways
            .iter()
            .any(|own| super::config::binds(gateways, namespace, own))
    }
}

/// The Envoy routes of one http entry, or none when no match applies here.
pub fn routes(
    ctx: &Context<'_, '_>,
    vs: &Obj<VirtualService>,
    index: usize,
    http: &HttpRoute,
) -> Vec<Route> {
    if http.delegate.is_some() {
        return super::delegate::routes(ctx, vs, index, http);
    }
    let field = format!("{}: http[{index}]", vs.label());
    let applicable: Vec<Option<&HttpMatchRequest>> = if http.matches.is_empty() {
        vec![None]
    } else {
        http.matches
            .iter()
            .filter(|m| applies(ctx, vs, m))
            .map(Some)
            .collect()
    };
    let mut out = Vec::new();
    for m in applicable {
        if let Some(claim) = m.and_then(claim_match) {
            // istiod matches these on the JWT filter's metadata; matched as a header it would
            // be a name Envoy refuses, and dropped it would route requests without the claim.
            ctx.scope.problem(format!(
                "{field}: match on {claim}: routing on JWT claims needs RequestAuthentication, which Weft does not apply yet; this match is left out"
            ));
            continue;
        }
        let mut r = Route {
            name: route_name(http, m),
            r#match: Some(route_match(m)),
            metadata: Some(pb::provenance(&vs.config_path())),
            ..Default::default()
        };
        let mut authority = None;
        if let Some(h) = &http.headers {
            authority = apply_headers(
                &mut r.request_headers_to_add,
                &mut r.request_headers_to_remove,
                h.request.as_ref(),
            );
            apply_headers(
                &mut r.response_headers_to_add,
                &mut r.response_headers_to_remove,
                h.response.as_ref(),
            );
        }
        if let Some(redirect) = &http.redirect {
            let Some(action) = redirect_action(ctx, redirect, &field) else {
                continue;
            };
            r.action = Some(route::Action::Redirect(action));
        } else if let Some(direct) = &http.direct_response {
            let body = match direct.body.as_ref() {
                Some(b) => match (&b.string, &b.bytes) {
                    (Some(s), _) => Some(data_source::Specifier::InlineString(s.clone())),
                    (None, Some(encoded)) => {
                        use base64::Engine;
                        match base64::engine::general_purpose::STANDARD.decode(encoded) {
                            Ok(bytes) => Some(data_source::Specifier::InlineBytes(bytes)),
                            Err(e) => {
                                ctx.scope.problem(format!(
                                    "{field}.directResponse.body.bytes: not base64 ({e}); the route is left out"
                                ));
                                continue;
                            }
                        }
                    }
                    (None, None) => None,
                },
                None => None,
            };
            r.action = Some(route::Action::DirectResponse(DirectResponseAction {
                status: direct
                    .status
                    .and_then(|s| u32::try_from(s).ok())
                    .unwrap_or(200),
                body: body.map(|specifier| DataSource {
                    specifier: Some(specifier),
                    ..Default::default()
                }),
                ..Default::default()
            }));
        } else {
            let Some(action) = route_action(ctx, vs, http, authority, &field) else {
                continue;
            };
            r.action = Some(route::Action::Route(action));
        }
        if let Some(fault) = &http.fault {
            r.typed_per_filter_config
                .insert(FAULT_FILTER.into(), pb::any(&fault_config(fault)));
        }
        if let Some(cors) = &http.cors_policy {
            r.typed_per_filter_config
                .insert(CORS_FILTER.into(), pb::any(&cors_policy(cors)));
        }
        out.push(r);
    }
    out
}

/// Whether a match's port, gateways, source labels and source namespace fit this proxy.
fn applies(ctx: &Context<'_, '_>, vs: &Obj<VirtualService>, m: &HttpMatchRequest) -> bool {
    if let Some(p) = m.port
        && p != i64::from(ctx.port)
    {
        return false;
    }
    let gateways = match &m.gateways {
        Some(g) if !g.is_empty() => g.clone(),
        _ if vs.spec.gateways.is_empty() => vec!["mesh".to_string()],
        _ => vs.spec.gateways.clone(),
    };
    if !ctx.binds(&gateways, &vs.namespace) {
        return false;
    }
    if let Some(labels) = &m.source_labels
        && !weft_registry::selects(labels, ctx.scope.labels)
    {
        return false;
    }
    if let Some(ns) = &m.source_namespace
        && ns != ctx.scope.namespace
    {
        return false;
    }
    true
}

/// The first `@request.auth.claims` header of a match.
fn claim_match(m: &HttpMatchRequest) -> Option<&str> {
    m.headers
        .iter()
        .flatten()
        .chain(m.without_headers.iter().flatten())
        .map(|(name, _)| name.as_str())
        .find(|name| weft_api::validate::rules::jwt_claim_route(name).is_some())
}

fn route_name(http: &HttpRoute, m: Option<&HttpMatchRequest>) -> String {
    match (http.name.as_deref(), m.and_then(|m| m.name.as_deref())) {
        (Some(r), Some(m)) => format!("{r}.{m}"),
        (Some(r), None) => r.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => String::new(),
    }
}

fn string_matcher(m: &StringMatch, ignore_case: bool) -> StringMatcher {
    let pattern = match m {
        StringMatch::Exact(s) => string_matcher::MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => string_matcher::MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(s) => string_matcher::MatchPattern::SafeRegex(regex(s)),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

fn regex(s: &str) -> RegexMatcher {
    RegexMatcher {
        regex: s.to_string(),
        ..Default::default()
    }
}

/// A header match as istiod's `translateHeaderMatch` writes it: `regex: "*"` is a presence
/// match. A `withoutHeaders` entry is the same, inverted, and (unless a presence match) treats a
/// missing header as empty, so that a request without the header is one that lacks the value:
/// it matches. Without that flag Envoy fails an inverted match on a missing header.
fn header(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    let present = matches!(m, StringMatch::Regex(r) if r == "*");
    let specifier = if present {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(m, false))
    };
    HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        treat_missing_header_as_empty: invert && !present,
        header_match_specifier: Some(specifier),
    }
}

/// Istio's match into Envoy's: the URI as the path specifier, method, authority and scheme as
/// pseudo-header matchers.
pub fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let prefix = || route_match::PathSpecifier::Prefix("/".into());
    let Some(m) = m else {
        return RouteMatch {
            path_specifier: Some(prefix()),
            ..Default::default()
        };
    };
    let path = match &m.uri {
        None => prefix(),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => route_match::PathSpecifier::SafeRegex(regex(r)),
    };
    let mut headers = Vec::new();
    for (name, field) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(v) = field {
            headers.push(header(name, v, false));
        }
    }
    for (name, v) in m.headers.iter().flatten() {
        headers.push(header(name, v, false));
    }
    for (name, v) in m.without_headers.iter().flatten() {
        headers.push(header(name, v, true));
    }
    let query_parameters = m
        .query_params
        .iter()
        .flatten()
        .map(|(name, v)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_matcher(
                    v, false,
                )),
            ),
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m
            .ignore_uri_case
            .filter(|i| *i)
            .map(|_| BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// The cluster a destination names: its host as an FQDN relative to the VirtualService, its
/// port (the service's only port when unset), its subset.
fn destination_cluster(
    ctx: &Context<'_, '_>,
    vs: &Obj<VirtualService>,
    d: &Destination,
    field: &str,
) -> Option<(String, String)> {
    let Some(h) = d.host.as_deref().filter(|h| !h.is_empty()) else {
        ctx.scope.problem(format!(
            "{field}: destination.host: missing; the route is left out"
        ));
        return None;
    };
    let hostname = host::fqdn(h, &vs.namespace, DOMAIN_SUFFIX);
    let service = ctx.scope.service(&hostname);
    let port = match d.port.as_ref().and_then(|p| p.number) {
        Some(n) => u16::try_from(n).ok(),
        None => match service.map(|s| s.ports.as_slice()) {
            Some([only]) => Some(only.number),
            // Istio uses the port the request came in on when the service has several.
            Some(ports) => ports
                .iter()
                .find(|p| p.number == ctx.port)
                .map(|p| p.number),
            None => Some(ctx.port),
        },
    };
    let Some(port) = port else {
        ctx.scope.problem(format!(
            "{field}: destination.port: {hostname} has several ports; name one"
        ));
        return None;
    };
    let subset = d.subset.clone().unwrap_or_default();
    match service {
        None => ctx.scope.problem(format!(
            "{field}: destination.host: no service {hostname} is known to this proxy; requests get 503 (NC)"
        )),
        Some(s) if !subset.is_empty() => {
            let defined = ctx
                .scope
                .destination_rule(&s.hostname, &s.namespace)
                .is_some_and(|dr| dr.spec.subsets.iter().any(|x| x.name.as_deref() == Some(subset.as_str())));
            if !defined {
                ctx.scope.problem(format!(
                    "{field}: destination.subset: subset {subset} of {hostname} is not defined by a DestinationRule; requests get 503 (NC)"
                ));
            }
        }
        Some(_) => {}
    }
    Some((outbound_name(port, &subset, &hostname), hostname))
}

/// `authority`: what the route's own `headers.request` set `:authority` or `Host` to.
fn route_action(
    ctx: &Context<'_, '_>,
    vs: &Obj<VirtualService>,
    http: &HttpRoute,
    authority: Option<String>,
    field: &str,
) -> Option<RouteAction> {
    let destinations = http.route.as_deref().unwrap_or_default();
    if destinations.is_empty() {
        ctx.scope.problem(format!(
            "{field}: route: no destination; the route is left out"
        ));
        return None;
    }
    let mut clusters = Vec::new();
    let mut first_host = None;
    for (i, d) in destinations.iter().enumerate() {
        let dfield = format!("{field}.route[{i}]");
        let Some(dest) = &d.destination else { continue };
        let Some((cluster, hostname)) = destination_cluster(ctx, vs, dest, &dfield) else {
            continue;
        };
        first_host.get_or_insert(hostname);
        let mut cw = ClusterWeight {
            name: cluster,
            weight: Some(UInt32Value {
                value: d
                    .weight
                    .and_then(|w| u32::try_from(w).ok())
                    .unwrap_or(if destinations.len() == 1 { 100 } else { 0 }),
            }),
            ..Default::default()
        };
        let mut dest_authority = None;
        if let Some(h) = &d.headers {
            dest_authority = apply_headers(
                &mut cw.request_headers_to_add,
                &mut cw.request_headers_to_remove,
                h.request.as_ref(),
            );
            apply_headers(
                &mut cw.response_headers_to_add,
                &mut cw.response_headers_to_remove,
                h.response.as_ref(),
            );
        }
        clusters.push((cw, dest_authority));
    }
    // Destinations with weight 0 get no traffic; Envoy refuses them in a weighted list.
    let total: u32 = clusters
        .iter()
        .filter_map(|(c, _)| c.weight.as_ref())
        .map(|w| w.value)
        .sum();
    if clusters.len() > 1 {
        clusters.retain(|(c, _)| c.weight.as_ref().is_some_and(|w| w.value > 0));
    }
    // The host is rewritten as istiod does it: `rewrite.authority`, else the route's headers;
    // one destination's own `:authority` only when neither did, several destinations each on
    // their own weighted cluster.
    let route_authority = http
        .rewrite
        .as_ref()
        .and_then(|rw| rw.authority.clone())
        .or(authority);
    let single_authority = match clusters.as_slice() {
        [(_, a)] => a.clone(),
        _ => None,
    };
    let mut clusters: Vec<ClusterWeight> = clusters
        .into_iter()
        .map(|(mut cw, a)| {
            if let Some(a) = a.filter(|_| single_authority.is_none()) {
                cw.host_rewrite_specifier =
                    Some(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(a));
            }
            cw
        })
        .collect();
    if clusters.is_empty() || total == 0 {
        return None;
    }
    let timeout = http.timeout.map_or_else(|| pb::millis(0), pb::duration);
    #[allow(deprecated)]
    let mut action = RouteAction {
        // As istiod: a gRPC request's own deadline holds, capped by the route's timeout.
        max_grpc_timeout: Some(timeout),
        timeout: Some(timeout),
        retry_policy: retry_policy(http.retries.as_ref()),
        ..Default::default()
    };
    action.cluster_specifier = Some(if clusters.len() == 1 {
        let only = clusters.remove(0);
        if only.request_headers_to_add.is_empty()
            && only.request_headers_to_remove.is_empty()
            && only.response_headers_to_add.is_empty()
            && only.response_headers_to_remove.is_empty()
        {
            ClusterSpecifier::Cluster(only.name)
        } else {
            ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: vec![ClusterWeight {
                    weight: Some(UInt32Value { value: 100 }),
                    ..only
                }],
                ..Default::default()
            })
        }
    } else {
        ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
            ..Default::default()
        })
    });
    if let Some(rw) = &http.rewrite {
        if let Some(uri) = &rw.uri {
            action.prefix_rewrite = uri.clone();
        }
        if let Some(re) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(
                envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute {
                    pattern: Some(regex(re.pattern.as_deref().unwrap_or_default())),
                    substitution: re.rewrite.clone().unwrap_or_default(),
                },
            );
        }
    }
    if let Some(a) = route_authority.or(single_authority) {
        action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a));
    }
    if let Some(h) = &first_host
        && let Some(s) = ctx.scope.service(h)
    {
        action.hash_policy = hash_policy(ctx.scope, s);
    }
    for (i, (dest, percent)) in mirrors(http).into_iter().enumerate() {
        let mfield = format!("{field}.mirror[{i}]");
        if let Some((cluster, _)) = destination_cluster(ctx, vs, dest, &mfield) {
            action.request_mirror_policies.push(RequestMirrorPolicy {
                cluster,
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(fraction(percent.unwrap_or(100.0))),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    Some(action)
}

/// `mirror` with `mirrorPercentage` (or the deprecated integer forms), then `mirrors`.
fn mirrors(http: &HttpRoute) -> Vec<(&Destination, Option<f64>)> {
    let mut out = Vec::new();
    if let Some(m) = &http.mirror {
        let percent = http
            .mirror_percentage
            .as_ref()
            .and_then(|p| p.value)
            .or_else(|| {
                http.mirror_percent
                    .or(http.mirror_percent_snake)
                    .map(|p| p as f64)
            });
        out.push((m, percent));
    }
    for m in http.mirrors.iter().flatten() {
        if let Some(d) = &m.destination {
            out.push((d, m.percentage.as_ref().and_then(|p| p.value)));
        }
    }
    out
}

/// A percentage with up to four decimals, as istiod writes it: per million.
fn fraction(percent: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (percent * 10_000.0).round().clamp(0.0, 1_000_000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

fn percent(p: Option<&Percent>, deprecated: Option<i64>) -> FractionalPercent {
    match (p.and_then(|p| p.value), deprecated) {
        (Some(v), _) => fraction(v),
        (None, Some(n)) => FractionalPercent {
            numerator: u32::try_from(n).unwrap_or(0),
            denominator: DenominatorType::Hundred as i32,
        },
        (None, None) => fraction(100.0),
    }
}

/// Istio's retry policy: its default (2 attempts on connect-failure, refused-stream,
/// unavailable and cancelled) unless the route says otherwise; `attempts: 0` turns retries off.
/// The default retries no 503: istiod stopped (`EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY`, on by
/// default), since a 503 may come after the request did its work; `retriable-status-codes`
/// stays in `retry_on` with no code, as istiod writes it.
pub fn retry_policy(r: Option<&HttpRetry>) -> Option<RetryPolicy> {
    let mut p = RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .into(),
        num_retries: Some(UInt32Value { value: 2 }),
        retriable_status_codes: Vec::new(),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(pb::any(
                &PreviousHostsPredicate {},
            ))),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    };
    let Some(r) = r else { return Some(p) };
    match r.attempts {
        Some(0) => return None,
        Some(n) => p.num_retries = u32::try_from(n).ok().map(|value| UInt32Value { value }),
        None => {}
    }
    if let Some(on) = &r.retry_on {
        // Status codes in the list go to retriable_status_codes, as istiod parses it.
        let mut tokens = Vec::new();
        let mut codes = Vec::new();
        for t in on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match t.parse::<u32>() {
                Ok(code) => codes.push(code),
                Err(_) => tokens.push(t.to_string()),
            }
        }
        if !codes.is_empty() && !tokens.iter().any(|t| t == "retriable-status-codes") {
            tokens.push("retriable-status-codes".into());
        }
        p.retry_on = tokens.join(",");
        p.retriable_status_codes = codes;
    }
    if let Some(t) = r.per_try_timeout {
        p.per_try_timeout = Some(pb::duration(t));
    }
    if r.retry_ignore_previous_hosts == Some(false) {
        p.retry_host_predicate.clear();
        p.host_selection_retry_max_attempts = 0;
    }
    if let Some(b) = r.backoff {
        p.retry_back_off = Some(RetryBackOff {
            base_interval: Some(pb::duration(b)),
            ..Default::default()
        });
    }
    Some(p)
}

fn fault_config(f: &HttpFaultInjection) -> HttpFault {
    let mut out = HttpFault::default();
    if let Some(d) = &f.delay
        && let Some(fixed) = d.fixed_delay
    {
        out.delay = Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(pb::duration(
                fixed,
            ))),
            percentage: Some(percent(d.percentage.as_ref(), d.percent)),
        });
    }
    if let Some(a) = &f.abort {
        let error = match (a.http_status, a.grpc_status.as_deref()) {
            (Some(s), _) => u32::try_from(s)
                .ok()
                .map(fault_abort::ErrorType::HttpStatus),
            (None, Some(g)) => grpc_code(g).map(fault_abort::ErrorType::GrpcStatus),
            _ => None,
        };
        out.abort = Some(FaultAbort {
            error_type: error,
            percentage: Some(percent(a.percentage.as_ref(), None)),
            ..Default::default()
        });
    }
    out
}

/// gRPC status names (Istio takes `UNAVAILABLE`) as their codes: validation's list is in code
/// order.
fn grpc_code(name: &str) -> Option<u32> {
    weft_api::validate::rules::GRPC_STATUSES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

fn cors_policy(c: &IstioCors) -> CorsPolicy {
    let mut origins: Vec<StringMatcher> = c
        .allow_origins
        .iter()
        .flatten()
        .map(|m| string_matcher(m, false))
        .collect();
    for o in c.allow_origin.iter().flatten() {
        origins.push(string_matcher(&StringMatch::Exact(o.clone()), false));
    }
    CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.as_deref().unwrap_or_default().join(","),
        allow_headers: c.allow_headers.as_deref().unwrap_or_default().join(","),
        expose_headers: c.expose_headers.as_deref().unwrap_or_default().join(","),
        max_age: c
            .max_age
            .map(|d| (d.as_nanos() / 1_000_000_000).to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        forward_not_matching_preflights: match c.unmatched_preflights {
            Some(UnmatchedPreflights::Ignore) => Some(BoolValue { value: false }),
            _ => None,
        },
        ..Default::default()
    }
}

/// A redirect as istiod's `ApplyRedirect` writes it: `uri` replaces the whole path (even on a
/// prefix match); `derivePort: FROM_REQUEST_PORT` is the port the route table serves;
/// a port that is its scheme's default is left out; an unknown code leaves the route out.
fn redirect_action(
    ctx: &Context<'_, '_>,
    r: &weft_api::types::virtual_service::HttpRedirect,
    field: &str,
) -> Option<RedirectAction> {
    use weft_api::types::virtual_service::RedirectPortSelection;
    let code = match r.redirect_code.unwrap_or(301) {
        301 => redirect_action::RedirectResponseCode::MovedPermanently,
        302 => redirect_action::RedirectResponseCode::Found,
        303 => redirect_action::RedirectResponseCode::SeeOther,
        307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
        308 => redirect_action::RedirectResponseCode::PermanentRedirect,
        other => {
            ctx.scope.problem(format!(
                "{field}.redirect.redirectCode: {other} is not one Envoy sends (301, 302, 303, 307, 308); the route is left out, as istiod leaves it without an action"
            ));
            return None;
        }
    };
    let mut port = match (r.port, r.derive_port) {
        (Some(p), _) => u32::try_from(p).unwrap_or(0),
        (None, Some(RedirectPortSelection::FromRequestPort)) => u32::from(ctx.port),
        _ => 0,
    };
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if ctx.tls { "https" } else { "http" });
    if (port == 80 && scheme == "http") || (port == 443 && scheme == "https") {
        port = 0;
    }
    Some(RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect: port,
        response_code: code as i32,
        scheme_rewrite_specifier: r
            .scheme
            .clone()
            .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: r
            .uri
            .clone()
            .map(redirect_action::PathRewriteSpecifier::PathRedirect),
        ..Default::default()
    })
}

/// `set` overwrites, `add` appends, `remove` removes, as istiod maps them. `:authority` and
/// `Host` are not headers to Envoy: their value comes back, to become a host rewrite (`set`
/// before `add`), and no pseudo-header or `Host` is added or removed as a header.
pub fn apply_headers(
    add: &mut Vec<HeaderValueOption>,
    remove: &mut Vec<String>,
    ops: Option<&HeaderOperations>,
) -> Option<String> {
    let ops = ops?;
    let internal = |k: &str| k.starts_with(':') || k.eq_ignore_ascii_case("host");
    let authority_of = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .filter(|(k, _)| k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .next_back()
    };
    let entries = |m: &Option<BTreeMap<String, String>>, action: HeaderAppendAction| {
        m.iter()
            .flatten()
            .filter(|(k, _)| !internal(k))
            .map(|(k, v)| HeaderValueOption {
                header: Some(HeaderValue {
                    key: k.clone(),
                    value: v.clone(),
                    ..Default::default()
                }),
                append_action: action as i32,
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    add.extend(entries(
        &ops.set,
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    ));
    add.extend(entries(&ops.add, HeaderAppendAction::AppendIfExistsOrAdd));
    remove.extend(
        ops.remove
            .iter()
            .flatten()
            .filter(|k| !internal(k))
            .cloned(),
    );
    authority_of(&ops.set).or_else(|| authority_of(&ops.add))
}

/// The DestinationRule's consistent hash as the route's hash policy.
fn hash_policy(scope: &Scope<'_>, s: &weft_registry::Service) -> Vec<HashPolicy> {
    let Some(dr) = scope.destination_rule(&s.hostname, &s.namespace) else {
        return Vec::new();
    };
    let Some(ch) = dr
        .spec
        .traffic_policy
        .as_ref()
        .and_then(|t| t.load_balancer.as_ref())
        .and_then(|l| l.consistent_hash.as_ref())
    else {
        return Vec::new();
    };
    let specifier = if let Some(h) = &ch.http_header_name {
        hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: h.clone(),
            ..Default::default()
        })
    } else if let Some(c) = &ch.http_cookie {
        hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: c.name.clone().unwrap_or_default(),
            path: c.path.clone().unwrap_or_default(),
            ttl: c.ttl.map(pb::duration),
            ..Default::default()
        })
    } else if ch.use_source_ip == Some(true) {
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip: true,
        })
    } else if let Some(q) = &ch.http_query_parameter_name {
        hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
            name: q.clone(),
        })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    }]
}
