//! VirtualService rules.

use std::collections::BTreeMap;

use super::rules::{self, Rule};
use super::{Findings, export_to};
use crate::path::FieldPath;
use crate::types::common::StringMatch;
use crate::types::virtual_service::*;

const SUPPORTED_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(super) fn validate(f: &mut Findings, spec: &FieldPath, vs: &VirtualService) {
    let delegate = vs.hosts.is_empty();
    if delegate {
        if !vs.gateways.is_empty() {
            f.err(
                &spec.key("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !vs.tls.is_empty() {
            f.err(
                &spec.key("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !vs.tcp.is_empty() {
            f.err(
                &spec.key("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    // Bound to gateways only, unless the reserved `mesh` gateway is listed.
    let applies_to_gateway = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh");
    let applies_to_mesh = !applies_to_gateway;
    gateway_names(f, &spec.key("gateways"), &vs.gateways);

    let mut all_hosts_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let p = spec.key("hosts").index(i);
        let r = rules::validate_wildcard_domain(host);
        match r {
            Err(e) if !rules::is_ip(host) => {
                f.err(&p, e);
                all_hosts_valid = false;
            }
            Ok(()) if applies_to_mesh && host == "*" => {
                f.err(
                    &p,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_hosts_valid = false;
            }
            _ => {}
        }
    }
    if all_hosts_valid {
        for i in 0..vs.hosts.len() {
            for j in i + 1..vs.hosts.len() {
                if rules::hosts_overlap(&vs.hosts[i], &vs.hosts[j]) {
                    f.err(
                        &spec.key("hosts").index(j),
                        format!(
                            "duplicate hosts in virtual service: {} & {}",
                            vs.hosts[i], vs.hosts[j]
                        ),
                    );
                }
            }
        }
    }
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        f.err(spec, "http, tcp or tls must be provided in virtual service");
    }
    for (i, r) in vs.http.iter().enumerate() {
        http_route(f, &spec.key("http").index(i), r, delegate);
    }
    for (i, r) in vs.tls.iter().enumerate() {
        tls_route(f, &spec.key("tls").index(i), r, vs);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        tcp_route(f, &spec.key("tcp").index(i), r);
    }
    export_to(f, &spec.key("exportTo"), &vs.export_to, false);
}

/// `namespace/name`, `name`, or the legacy FQDN form `name.namespace.svc.cluster.local`.
pub(super) fn gateway_names(f: &mut Findings, path: &FieldPath, names: &[String]) {
    for (i, g) in names.iter().enumerate() {
        let p = path.index(i);
        match g.split_once('/') {
            None => {
                if g.contains('.') {
                    let mut parts = g.split('.');
                    let (name, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    f.warn(
                        &p,
                        format!("using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{ns}/{name}\""),
                    );
                }
                f.check(&p, rules::validate_fqdn(g));
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    f.err(&p, "config namespace and gateway name cannot be empty");
                }
                if !rules::is_dns1123_label(ns) {
                    f.err(&p, format!("invalid value for namespace: {ns:?}"));
                }
                if !rules::is_dns1123_label(name) {
                    f.err(&p, format!("invalid value for gateway name: {name:?}"));
                }
            }
        }
    }
}

fn string_match_regex(f: &mut Findings, path: &FieldPath, m: Option<&StringMatch>) {
    if let Some(StringMatch::Regex(re)) = m {
        f.check(&path.key("regex"), rules::validate_regex(re));
    }
}

/// Which map of string matches: header names are checked, and `withoutHeaders` takes
/// `regex: "*"` (a presence match, which is not a regex).
#[derive(PartialEq)]
enum MatchMap {
    Headers,
    WithoutHeaders,
    QueryParams,
}

fn match_map(
    f: &mut Findings,
    path: &FieldPath,
    m: Option<&BTreeMap<String, StringMatch>>,
    kind: MatchMap,
) {
    for (name, sm) in m.into_iter().flatten() {
        let p = path.key(name.clone());
        if kind != MatchMap::QueryParams {
            f.check(&p, rules::validate_route_header_name(name));
        }
        if kind == MatchMap::WithoutHeaders && matches!(sm, StringMatch::Regex(r) if r == "*") {
            continue;
        }
        string_match_regex(f, &p, Some(sm));
    }
}

fn http_route(f: &mut Findings, p: &FieldPath, r: &HttpRoute, delegate_vs: bool) {
    let has_route = r.route.as_ref().is_some_and(|v| !v.is_empty());
    if r.delegate.is_some() {
        if delegate_vs {
            f.err(
                &p.key("delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if r.redirect.is_some() {
            f.err(
                &p.key("redirect"),
                "root HTTP route must not specify redirect",
            );
        }
        if r.route.is_some() {
            f.err(&p.key("route"), "root HTTP route must not specify route");
        }
    } else if r.redirect.is_some() {
        if has_route {
            f.err(p, "HTTP route cannot contain both route and redirect");
        }
        if r.fault.is_some() {
            f.err(p, "HTTP route cannot contain both fault and redirect");
        }
        if r.rewrite.is_some() {
            f.err(
                p,
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if r.direct_response.is_some() {
            f.err(
                p,
                "HTTP route cannot contain both redirect and directResponse",
            );
        }
    } else if r.direct_response.is_some() {
        if has_route {
            f.err(p, "HTTP route cannot contain both route and directResponse");
        }
    } else if !has_route {
        f.err(p, "HTTP route, redirect or directResponse is required");
    }

    for (i, m) in r.matches.iter().enumerate() {
        let mp = p.key("match").index(i);
        string_match_regex(f, &mp.key("uri"), m.uri.as_ref());
        string_match_regex(f, &mp.key("scheme"), m.scheme.as_ref());
        string_match_regex(f, &mp.key("method"), m.method.as_ref());
        string_match_regex(f, &mp.key("authority"), m.authority.as_ref());
        match_map(f, &mp.key("headers"), m.headers.as_ref(), MatchMap::Headers);
        match_map(
            f,
            &mp.key("withoutHeaders"),
            m.without_headers.as_ref(),
            MatchMap::WithoutHeaders,
        );
        match_map(
            f,
            &mp.key("queryParams"),
            m.query_params.as_ref(),
            MatchMap::QueryParams,
        );
        if let Some(port) = m.port {
            f.check(&mp.key("port"), rules::validate_port(port));
        }
        if let Some(l) = &m.source_labels {
            f.labels(&mp.key("sourceLabels"), l);
        }
        gateway_names(f, &mp.key("gateways"), m.gateways.as_deref().unwrap_or(&[]));
        if let Some(ns) = &m.source_namespace
            && !rules::is_dns1123_label(ns)
        {
            f.err(
                &mp.key("sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }
    headers(f, &p.key("headers"), r.headers.as_ref());
    if let Some(c) = &r.cors_policy {
        cors(f, &p.key("corsPolicy"), c);
    }
    if let Some(fault) = &r.fault {
        fault_injection(f, &p.key("fault"), fault);
    }
    for (key, v) in [
        ("mirrorPercent", r.mirror_percent),
        ("mirror_percent", r.mirror_percent_snake),
    ] {
        if let Some(v) = v {
            if !(0..=100).contains(&v) {
                f.err(
                    &p.key(key),
                    format!("mirror_percent must have a max value of 100 (it has {v})"),
                );
            }
            f.warn(
                &p.key(key),
                "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
            );
        }
    }
    if let Some(v) = r.mirror_percentage.as_ref().and_then(|m| m.value) {
        if v > 100.0 {
            f.err(
                &p.key("mirrorPercentage").key("value"),
                format!("mirror_percentage must have a max value of 100 (it has {v})"),
            );
        }
        if v < 0.0 {
            f.err(
                &p.key("mirrorPercentage").key("value"),
                format!("mirror_percentage must have a min value of 0 (it has {v})"),
            );
        }
    }
    if let Some(m) = &r.mirror {
        destination(f, &p.key("mirror"), m);
    }
    for (i, m) in r.mirrors.iter().flatten().enumerate() {
        let mp = p.key("mirrors").index(i);
        match &m.destination {
            None => f.err(&mp, "destination is required for mirrors"),
            Some(d) => destination(f, &mp.key("destination"), d),
        }
        if let Some(v) = m.percentage.as_ref().and_then(|x| x.value)
            && !(0.0..=100.0).contains(&v)
        {
            f.err(
                &mp.key("percentage").key("value"),
                format!("mirror percentage must be in range 0..100 (it has {v})"),
            );
        }
    }
    if let Some(rd) = &r.redirect {
        f.check(&p.key("redirect"), redirect(rd));
    }
    if let Some(d) = &r.direct_response {
        direct_response(f, &p.key("directResponse"), d);
    }
    if let Some(rt) = &r.retries {
        retries(f, &p.key("retries"), rt);
    }
    if let Some(rw) = &r.rewrite {
        rewrite(f, &p.key("rewrite"), rw);
    }
    authority_rewrite(f, p, r);
    if let Some(routes) = &r.route {
        http_destinations(f, &p.key("route"), routes);
    }
    if let Some(t) = &r.timeout {
        f.check(&p.key("timeout"), rules::validate_duration(t));
    }
}

fn headers(f: &mut Findings, p: &FieldPath, h: Option<&Headers>) {
    let Some(h) = h else { return };
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let sp = p.key(side);
        for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map.iter().flatten() {
                let np = sp.key(op).key(name.clone());
                let name_rule = if side == "request" {
                    request_header_op_name(name)
                } else {
                    header_op_name(name)
                };
                f.check(&np, name_rule);
                f.check(&np, rules::validate_header_value(value));
            }
        }
        for (i, name) in ops.remove.iter().flatten().enumerate() {
            f.check(&sp.key("remove").index(i), header_op_name(name));
        }
    }
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Request set/add may rewrite the authority; nothing else internal.
fn request_header_op_name(name: &str) -> Rule {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

fn header_op_name(name: &str) -> Rule {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if is_internal_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

fn authority_rewrite(f: &mut Findings, p: &FieldPath, r: &HttpRoute) {
    let mut current = r.rewrite.as_ref().and_then(|rw| rw.authority.clone());
    let req = r.headers.as_ref().and_then(|h| h.request.as_ref());
    let sets = req.and_then(|o| o.set.as_ref()).into_iter().flatten();
    let adds = req.and_then(|o| o.add.as_ref()).into_iter().flatten();
    for (k, v) in sets.chain(adds) {
        if !is_authority_header(k) {
            continue;
        }
        if let Some(c) = &current {
            f.err(
                &p.key("headers"),
                format!("authority header cannot be set multiple times: have {c:?}, attempting to set {v:?}"),
            );
            return;
        }
        current = Some(v.clone());
    }
}

fn cors(f: &mut Findings, p: &FieldPath, c: &CorsPolicy) {
    for (i, o) in c.allow_origins.iter().flatten().enumerate() {
        let op = p.key("allowOrigins").index(i);
        let value = match o {
            StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Regex(s) => s,
        };
        if value.is_empty() {
            f.err(&op, "'' is not a valid match type for CORS allow origins");
        } else {
            string_match_regex(f, &op, Some(o));
        }
    }
    for (i, m) in c.allow_methods.iter().flatten().enumerate() {
        if !SUPPORTED_METHODS.contains(&m.as_str()) {
            f.err(
                &p.key("allowMethods").index(i),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (key, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().flatten().enumerate() {
            if h != "*" {
                f.check(&p.key(key).index(i), rules::validate_header_name(h));
            }
        }
    }
    if let Some(age) = &c.max_age {
        f.check(&p.key("maxAge"), rules::validate_duration(age));
        if age.as_nanos() % 1_000_000_000 != 0 {
            f.err(
                &p.key("maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
}

fn fault_injection(f: &mut Findings, p: &FieldPath, fault: &HttpFaultInjection) {
    if fault.abort.is_none() && fault.delay.is_none() {
        f.err(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &fault.abort {
        let ap = p.key("abort");
        if let Some(v) = a.percentage.as_ref().and_then(|x| x.value) {
            f.check(
                &ap.key("percentage").key("value"),
                rules::validate_percentage(v),
            );
        }
        let kinds = usize::from(a.http_status.is_some())
            + usize::from(a.grpc_status.is_some())
            + usize::from(a.http2_error.is_some());
        if kinds > 1 {
            f.err(
                &ap,
                "only one of httpStatus, grpcStatus or http2Error may be set",
            );
        }
        if let Some(s) = a.http_status
            && !(200..=599).contains(&s)
        {
            f.err(
                &ap.key("httpStatus"),
                format!("HTTP status {s} is not in range 200-599"),
            );
        }
        if let Some(g) = &a.grpc_status
            && !rules::GRPC_STATUSES.contains(&g.as_str())
        {
            f.err(
                &ap.key("grpcStatus"),
                format!("gRPC status {g:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
            );
        }
        if a.http2_error.is_some() {
            f.err(
                &ap.key("http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        }
        if kinds == 0 {
            f.err(
                &ap,
                "abort configured, but error type not set (httpStatus or grpcStatus)",
            );
        }
    }
    if let Some(d) = &fault.delay {
        let dp = p.key("delay");
        if let Some(v) = d.percentage.as_ref().and_then(|x| x.value) {
            f.check(
                &dp.key("percentage").key("value"),
                rules::validate_percentage(v),
            );
        }
        if let Some(v) = d.percent {
            f.check(&dp.key("percent"), rules::validate_percent(v));
        }
        match (&d.fixed_delay, &d.exponential_delay) {
            (Some(fd), _) => f.check(&dp.key("fixedDelay"), rules::validate_duration(fd)),
            (None, Some(_)) => f.err(
                &dp.key("exponentialDelay"),
                "exponentialDelay not supported yet",
            ),
            (None, None) => f.err(&dp.key("fixedDelay"), "delay must have fixedDelay"),
        }
    }
}

pub(super) fn destination(f: &mut Findings, p: &FieldPath, d: &Destination) {
    match d.host.as_deref() {
        None | Some("") => f.err(&p.key("host"), "empty domain name not allowed"),
        Some("*") => f.err(&p.key("host"), "invalid destination host *"),
        Some(h) => f.check(&p.key("host"), rules::validate_wildcard_domain(h)),
    }
    if let Some(s) = &d.subset {
        f.check(&p.key("subset"), subset_name(s));
    }
    if let Some(port) = &d.port {
        match port.number {
            Some(n) => f.check(&p.key("port").key("number"), rules::validate_port(n)),
            None => f.err(
                &p.key("port").key("number"),
                "port number 0 must be in the range 1..65535",
            ),
        }
    }
}

pub(super) fn subset_name(name: &str) -> Rule {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !rules::is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

fn redirect(r: &HttpRedirect) -> Rule {
    if r.uri.is_none()
        && r.authority.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
        && r.scheme.is_none()
        && r.prefix_rewrite.is_none()
    {
        return Err("redirect must specify URI, authority, scheme, or port".into());
    }
    if let Some(code) = r.redirect_code
        && !(300..=399).contains(&code)
    {
        return Err(format!("{code} is not a valid redirect code, must be 3xx"));
    }
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        return Err("invalid redirect scheme, must be \"http\" or \"https\"".into());
    }
    if let Some(port) = r.port {
        rules::validate_port(port)?;
    }
    Ok(())
}

fn direct_response(f: &mut Findings, p: &FieldPath, d: &HttpDirectResponse) {
    match d.status {
        Some(s) if (200..=599).contains(&s) => {}
        Some(s) => f.err(
            &p.key("status"),
            format!("HTTP status {s} is not in range 200-599"),
        ),
        None => f.err(&p.key("status"), "status is required"),
    }
    if let Some(b) = &d.body {
        if b.string.is_some() && b.bytes.is_some() {
            f.err(&p.key("body"), "only one of string or bytes may be set");
        }
        let size = b.string.as_ref().map_or(0, String::len)
            + b.bytes.as_ref().map_or(0, |s| s.len() * 3 / 4);
        if size > 1024 * 1024 {
            f.err(&p.key("body"), "large direct_responses may impact control plane performance, must be less than 1MB");
        } else if size > 100 * 1024 {
            f.warn(
                &p.key("body"),
                "large direct_responses may impact control plane performance",
            );
        }
    }
}

fn retries(f: &mut Findings, p: &FieldPath, r: &HttpRetry) {
    let attempts = r.attempts.unwrap_or(0);
    if attempts < 0 {
        f.err(&p.key("attempts"), "attempts cannot be negative");
    }
    if attempts == 0
        && (r.per_try_timeout.is_some()
            || r.retry_on.is_some()
            || r.retry_remote_localities.is_some())
    {
        f.err(
            &p.key("attempts"),
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    if let Some(t) = &r.per_try_timeout {
        f.check(&p.key("perTryTimeout"), rules::validate_duration(t));
    }
    if let Some(b) = &r.backoff {
        f.check(&p.key("backoff"), rules::validate_duration(b));
    }
    if let Some(on) = &r.retry_on {
        for policy in on.split(',') {
            let policy = policy.trim();
            let status_code = policy
                .parse::<u16>()
                .is_ok_and(|c| (100..=599).contains(&c));
            if !status_code && !RETRY_ON.contains(&policy) {
                f.err(
                    &p.key("retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn rewrite(f: &mut Findings, p: &FieldPath, rw: &HttpRewrite) {
    if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
        f.err(p, "rewrite may only contain one of URI or UriRegexRewrite");
    }
    if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
        f.err(p, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
    }
    if let Some(rr) = &rw.uri_regex_rewrite {
        let rp = p.key("uriRegexRewrite");
        match (&rr.pattern, &rr.rewrite) {
            (Some(m), Some(_)) if !m.is_empty() => {
                f.check(&rp.key("match"), rules::validate_regex(m))
            }
            _ => f.err(
                &rp,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            ),
        }
    }
}

fn weight(f: &mut Findings, p: &FieldPath, w: Option<i64>) -> i64 {
    let w = w.unwrap_or(0);
    if !(0..=100).contains(&w) {
        f.err(p, format!("weight {w} is not in range 0..100"));
    }
    w
}

fn http_destinations(f: &mut Findings, p: &FieldPath, routes: &[HttpRouteDestination]) {
    let items = routes
        .iter()
        .map(|r| (r.destination.as_ref(), r.weight, r.headers.as_ref()));
    weighted_destinations(f, p, items);
}

fn route_destinations(f: &mut Findings, p: &FieldPath, routes: &[RouteDestination]) {
    let items = routes
        .iter()
        .map(|r| (r.destination.as_ref(), r.weight, None));
    weighted_destinations(f, p, items);
}

/// Destinations with weights (and, for HTTP, header operations). With several destinations
/// the weights split the traffic and must add up to 100.
fn weighted_destinations<'a>(
    f: &mut Findings,
    p: &FieldPath,
    items: impl ExactSizeIterator<Item = (Option<&'a Destination>, Option<i64>, Option<&'a Headers>)>,
) {
    let n = items.len();
    let mut total = 0;
    for (i, (dest, w, hdrs)) in items.enumerate() {
        let rp = p.index(i);
        match dest {
            None => f.err(&rp.key("destination"), "destination is required"),
            Some(d) => destination(f, &rp.key("destination"), d),
        }
        headers(f, &rp.key("headers"), hdrs);
        total += weight(f, &rp.key("weight"), w);
    }
    if n > 1 && total != 100 {
        f.err(p, format!("total destination weight {total} != 100"));
    }
}

fn l4_common(
    f: &mut Findings,
    p: &FieldPath,
    subnets: &[String],
    port: Option<i64>,
    labels: Option<&crate::types::common::Labels>,
    gateways: &[String],
) {
    for (i, s) in subnets.iter().enumerate() {
        f.check(
            &p.key("destinationSubnets").index(i),
            rules::validate_ip_subnet(s),
        );
    }
    if let Some(port) = port {
        f.check(&p.key("port"), rules::validate_port(port));
    }
    if let Some(l) = labels {
        f.labels(&p.key("sourceLabels"), l);
    }
    gateway_names(f, &p.key("gateways"), gateways);
}

fn tcp_route(f: &mut Findings, p: &FieldPath, r: &TcpRoute) {
    for (i, m) in r.matches.iter().enumerate() {
        let mp = p.key("match").index(i);
        l4_common(
            f,
            &mp,
            &m.destination_subnets,
            m.port,
            m.source_labels.as_ref(),
            &m.gateways,
        );
        if let Some(s) = &m.source_subnet {
            f.check(&mp.key("sourceSubnet"), rules::validate_ip_subnet(s));
        }
    }
    if r.route.is_empty() {
        f.err(&p.key("route"), "TCP route is required");
    }
    route_destinations(f, &p.key("route"), &r.route);
}

fn tls_route(f: &mut Findings, p: &FieldPath, r: &TlsRoute, vs: &VirtualService) {
    if r.matches.is_empty() {
        f.err(
            &p.key("match"),
            "TLS route must have at least one match condition",
        );
    }
    for (i, m) in r.matches.iter().enumerate() {
        let mp = p.key("match").index(i);
        if m.sni_hosts.is_empty() {
            f.err(
                &mp.key("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (j, sni) in m.sni_hosts.iter().enumerate() {
            let sp = mp.key("sniHosts").index(j);
            let r = rules::validate_wildcard_domain(sni);
            if let Err(e) = r {
                if rules::is_ip(sni) {
                    f.warn(&sp, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
                } else {
                    f.err(&sp, e);
                }
                continue;
            }
            if !vs.hosts.iter().any(|h| rules::host_subset_of(sni, h)) {
                f.err(&sp, format!("SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]", vs.hosts.join(", ")));
            }
        }
        l4_common(
            f,
            &mp,
            &m.destination_subnets,
            m.port,
            m.source_labels.as_ref(),
            &m.gateways,
        );
    }
    if r.route.is_empty() {
        f.err(&p.key("route"), "TLS route is required");
    }
    route_destinations(f, &p.key("route"), &r.route);
}
