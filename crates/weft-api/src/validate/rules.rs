//! Single-value rules (hostnames, ports, durations, addresses, labels, regexes), with the
//! messages Istio's validation gives, so that users searching an error find Istio's docs.

use std::net::IpAddr;

use crate::types::common::{Duration, Labels};

pub type Rule = Result<(), String>;

fn label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Istio's DNS-1123 label for hosts, subset and port names (Istio accepts upper case here).
pub fn is_dns1123_label(s: &str) -> bool {
    label_chars_ok(s)
}

/// Kubernetes' stricter label: lower case only (namespaces, object names' parts).
pub fn is_k8s_dns1123_label(s: &str) -> bool {
    label_chars_ok(s) && !s.bytes().any(|c| c.is_ascii_uppercase())
}

/// Kubernetes object names: DNS-1123 subdomain.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_k8s_dns1123_label)
}

/// `*`, `*foo`, `*-foo` or a plain label: the only places a wildcard may appear in a host.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= 63 && label_chars_ok(rest)
}

fn check_dns1123_preconditions(name: &str) -> Rule {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn validate_dns1123_labels(domain: &str) -> Rule {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts.last().copied().unwrap_or("");
    if !tld.is_empty() && tld.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A host that may start with a wildcard label and may be a short name (`reviews`).
pub fn validate_wildcard_domain(domain: &str) -> Rule {
    check_dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(r) => validate_dns1123_labels(r),
        None => Ok(()),
    }
}

pub fn validate_fqdn(fqdn: &str) -> Rule {
    check_dns1123_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

pub fn validate_partial_wildcard(host: &str) -> Rule {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

pub fn validate_port(port: i64) -> Rule {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

pub fn validate_ip(s: &str) -> Rule {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

/// An address or a CIDR block.
pub fn validate_ip_subnet(s: &str) -> Rule {
    match s.split_once('/') {
        Some((ip, len)) => {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return Err(format!("{s} is not a valid CIDR block")),
            };
            match len.parse::<u8>() {
                Ok(n) if n <= max && !len.starts_with('+') => Ok(()),
                _ => Err(format!("{s} is not a valid CIDR block")),
            }
        }
        None => validate_ip(s),
    }
}

/// Istio's rule for durations in routing and traffic policy: at least 1ms, millisecond precision.
pub fn validate_duration(d: &Duration) -> Rule {
    let n = d.as_nanos();
    if n < 1_000_000 {
        return Err("duration must be greater than 1ms".into());
    }
    if n % 1_000_000 != 0 {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

pub fn validate_percentage(v: f64) -> Rule {
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) || v.is_nan() {
        return Err(format!(
            "percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"
        ));
    }
    Ok(())
}

pub fn validate_percent(v: i64) -> Rule {
    if (0..=100).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} is not in range 0..100"))
    }
}

/// Kubernetes label key: an optional DNS-subdomain prefix and a name of up to 63 characters.
fn validate_label_key(k: &str) -> Rule {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_dns1123_subdomain(p))
    {
        return Err(format!("invalid tag key: {k:?}"));
    }
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag key: {k:?}"))
    }
}

fn validate_label_value(v: &str) -> Rule {
    let b = v.as_bytes();
    let ok = b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag value: {v:?}"))
    }
}

pub fn validate_labels(labels: &Labels) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in labels {
        if let Err(e) = validate_label_key(k) {
            out.push(e);
        }
        if let Err(e) = validate_label_value(v) {
            out.push(e);
        }
    }
    out
}

/// Istio compiles match regexes with RE2; Rust's regex crate has the same design (no
/// backreferences, no look-around), so a pattern it rejects is one Envoy would reject too.
pub fn validate_regex(re: &str) -> Rule {
    if re.len() > 1024 {
        return Err("regex is too large, max length allowed is 1024".into());
    }
    if re.is_empty() {
        return Err("regex string match should not be empty".into());
    }
    if let Some(rep) = re2_repetition_error(re) {
        return Err(format!(
            "invalid regex {re:?}: invalid repeat count: {rep} (over 1000, counts of nested repetitions multiplied); Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        ));
    }
    match regex::Regex::new(re) {
        Ok(_) => Ok(()),
        Err(e) => {
            let detail = e.to_string();
            let last = detail.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            let reason = last.trim().trim_start_matches("error:").trim();
            Err(format!(
                "invalid regex {re:?}: {reason}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
            ))
        }
    }
}

/// (weft-proxy's `config::convert::re2` holds the same walk for Envoy's NACK.)
/// RE2's repetition limit (Envoy's regex engine, and Go's, which Istio validates with): no
/// counted repetition above 1000, nor nested ones whose counts multiply past 1000 (RE2's
/// RepetitionWalker). Returns the repetition that breaks it, as written.
fn re2_repetition_error(re: &str) -> Option<String> {
    use regex_syntax::ast::{Ast, RepetitionKind, RepetitionRange};
    const MAX_REPEAT: u32 = 1000;
    fn walk(ast: &Ast, budget: u32, re: &str) -> Option<String> {
        match ast {
            Ast::Repetition(r) => {
                let count = match &r.op.kind {
                    RepetitionKind::Range(RepetitionRange::Exactly(n))
                    | RepetitionKind::Range(RepetitionRange::AtLeast(n)) => *n,
                    RepetitionKind::Range(RepetitionRange::Bounded(_, n)) => *n,
                    _ => return walk(&r.ast, budget, re),
                };
                let written = || {
                    re.get(r.span.start.offset..r.span.end.offset)
                        .unwrap_or("")
                        .to_string()
                };
                if count > MAX_REPEAT {
                    return Some(written());
                }
                let left = budget.checked_div(count).unwrap_or(budget);
                if left == 0 {
                    return Some(written());
                }
                walk(&r.ast, left, re)
            }
            Ast::Group(g) => walk(&g.ast, budget, re),
            Ast::Alternation(a) => a.asts.iter().find_map(|x| walk(x, budget, re)),
            Ast::Concat(c) => c.asts.iter().find_map(|x| walk(x, budget, re)),
            _ => None,
        }
    }
    let ast = regex_syntax::ast::parse::Parser::new().parse(re).ok()?;
    walk(&ast, MAX_REPEAT, re)
}

/// A header name is an RFC 7230 token (Istio's `validHeaderNameRegex`): letters, digits and
/// ``!#$%&'*+-.^_`|~``, upper case allowed.
pub fn validate_header_name(name: &str) -> Rule {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    let tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if !name.bytes().all(tchar) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

/// The pseudo-headers a route may match on (Istio's `pseudoHeaders`).
const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

/// A header name in an HTTP match (`headers`, `withoutHeaders`): a token, one of the
/// pseudo-headers, or a JWT claim (`@request.auth.claims.NAME`, `@request.auth.claims[NAME]`),
/// as Istio's `ValidateHTTPHeaderNameOrJwtClaimRoute` allows.
pub fn validate_route_header_name(name: &str) -> Rule {
    if PSEUDO_HEADERS.contains(&name) || jwt_claim_route(name).is_some() {
        return Ok(());
    }
    validate_header_name(name)
}

/// The claim path of a `@request.auth.claims` route header, if it is one.
pub fn jwt_claim_route(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("@request.auth.claims")?;
    let claim = match rest.strip_prefix('.') {
        Some(c) => c,
        None => rest.strip_prefix('[')?.strip_suffix(']')?,
    };
    (!claim.is_empty()).then_some(claim)
}

/// Header values go into Envoy's header formatter: control characters are rejected and a `%`
/// must introduce a `%VARIABLE%` or be doubled.
pub fn validate_header_value(value: &str) -> Rule {
    if value
        .chars()
        .any(|c| (c as u32) < 0x20 && c != '\t' || c == '\x7f')
    {
        return Err(format!("header value configuration {value} is invalid"));
    }
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if b.get(i + 1) == Some(&b'%') {
                i += 2;
                continue;
            }
            match value[i + 1..].find('%') {
                Some(end) if end > 0 => i += end + 2,
                _ => {
                    return Err(format!(
                        "header value configuration: invalid header configuration {value:?}: un-terminated variable expression (use %% for a literal %)"
                    ));
                }
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Protocols Istio understands on ports, case-insensitive.
pub fn parse_protocol(p: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "TCP",
        "UDP",
        "GRPC",
        "GRPC-WEB",
        "HTTP",
        "HTTP_PROXY",
        "HTTP2",
        "HTTPS",
        "TLS",
        "MONGO",
        "REDIS",
        "MYSQL",
    ];
    let up = p.to_ascii_uppercase();
    KNOWN.iter().copied().find(|k| *k == up)
}

pub fn protocol_is_http(p: &str) -> bool {
    matches!(
        parse_protocol(p),
        Some("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "HTTP_PROXY")
    )
}

pub fn protocol_is_tls(p: &str) -> bool {
    matches!(parse_protocol(p), Some("HTTPS" | "TLS"))
}

pub fn validate_protocol(p: &str) -> Rule {
    if p.is_empty() || parse_protocol(p).is_some() {
        Ok(())
    } else {
        Err(format!("unsupported protocol: {p}"))
    }
}

pub fn validate_port_name(name: &str) -> Rule {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

pub fn validate_unix_address(addr: &str) -> Rule {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Wildcard-aware host overlap, as Istio's `host.Name.Matches`.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    fn covers(wild: &str, other: &str) -> bool {
        match wild.strip_prefix('*') {
            Some(suffix) => other.ends_with(suffix),
            None => false,
        }
    }
    a == b || covers(a, b) || covers(b, a)
}

/// `sni` is a subset of `host` (equal, or covered by `host`'s wildcard).
pub fn host_subset_of(sni: &str, host: &str) -> bool {
    if sni == host || host == "*" {
        return true;
    }
    match (host.strip_prefix('*'), sni.strip_prefix('*')) {
        (Some(hs), Some(ss)) => ss.ends_with(hs),
        (Some(hs), None) => sni.ends_with(hs),
        _ => false,
    }
}

pub fn is_prime(x: i64) -> bool {
    if x < 2 {
        return false;
    }
    if x < 4 {
        return true;
    }
    if x % 2 == 0 {
        return false;
    }
    let mut f = 3;
    while f * f <= x {
        if x % f == 0 {
            return false;
        }
        f += 2;
    }
    true
}

/// gRPC status names Istio accepts for fault aborts.
pub const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_past_re2s_repeat_limit_are_refused_as_go_refuses_them() {
        for ok in ["a{1000}", "(a{2}){500}", "[a-z]{3,}", "^/api/v[0-9]+"] {
            assert!(validate_regex(ok).is_ok(), "{ok}");
        }
        for (bad, rep) in [("(a|b){2000}", "(a|b){2000}"), ("(a{2}){501}", "a{2}")] {
            let err = validate_regex(bad).err().unwrap_or_default();
            assert!(
                err.contains("invalid repeat count") && err.contains(rep),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "reviews",
            "*.example.com",
            "*",
            "a.b.c",
            "istio.io.",
            "Foo.Example.com",
        ] {
            assert_eq!(validate_wildcard_domain(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a.*.com", "foo..com", "-a.com", "a.123", "a_b.com"] {
            assert!(validate_wildcard_domain(bad).is_err(), "{bad}");
        }
        assert!(validate_fqdn("*.a.com").is_err());
    }

    #[test]
    fn regexes_follow_re2() {
        assert!(validate_regex("^/api/v[0-9]+/.*$").is_ok());
        let e = validate_regex(r"(a)\1").unwrap_err();
        assert!(e.contains("backreferences"), "{e}");
        let e = validate_regex(r"foo(?=bar)").unwrap_err();
        assert!(e.contains("look-around"), "{e}");
    }

    #[test]
    fn cidrs() {
        assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
        assert!(validate_ip_subnet("2001:db8::/32").is_ok());
        assert!(validate_ip_subnet("10.0.0.0/33").is_err());
        assert!(validate_ip_subnet("10.0.0/8").is_err());
    }

    #[test]
    fn header_values() {
        assert!(validate_header_value("%HOSTNAME%").is_ok());
        assert!(validate_header_value("100%%").is_ok());
        assert!(validate_header_value("abc%123").is_err());
    }

    #[test]
    fn primes_and_overlap() {
        assert!(is_prime(65537) && !is_prime(65536));
        assert!(hosts_overlap("*.foo.com", "bar.foo.com"));
        assert!(!hosts_overlap("a.com", "b.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
    }
}
