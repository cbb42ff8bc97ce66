//! The `location` of a route's redirect.

use super::router::rewrite_prefix;
use crate::route::{PathRedirect, Redirect, Route};

pub(super) fn location(
    r: &Redirect,
    route: &Route,
    scheme: &str,
    authority: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (orig_host, orig_port) = split_port(authority);
    let host = r.host.as_deref().unwrap_or(orig_host);
    let port = r
        .port
        .map(|p| p.to_string())
        .or_else(|| orig_port.map(str::to_string));
    // The default port of either scheme is left out of the new URL.
    let port = port.filter(|p| p != "80" && p != "443");
    let mut new_path = match &r.path {
        PathRedirect::Keep => path.to_string(),
        PathRedirect::Path(p) => p.clone(),
        PathRedirect::Prefix(p) => rewrite_prefix(&route.matcher.path, path, p),
        PathRedirect::Regex(re, sub) => re.replace_all(path, sub.as_str()).into_owned(),
    };
    let path_has_query = matches!(&r.path, PathRedirect::Path(p) if p.contains('?'));
    if let (false, false, Some(q)) = (r.strip_query, path_has_query, query) {
        new_path.push('?');
        new_path.push_str(q);
    }
    match port {
        Some(p) => format!("{scheme}://{host}:{p}{new_path}"),
        None => format!("{scheme}://{host}{new_path}"),
    }
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.rfind("]:") {
            Some(i) => (&authority[..=i], Some(&authority[i + 2..])),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

/// Whether `require_tls` turns a request away: it did not come over TLS (as the connection
/// manager recorded in `x-forwarded-proto`), and for `EXTERNAL_ONLY`, it is not internal.
pub(super) fn needs_tls_redirect(
    require: crate::route::RequireTls,
    headers: &http::HeaderMap,
) -> bool {
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let internal = headers
        .get("x-envoy-internal")
        .is_some_and(|v| v.as_bytes() == b"true");
    !https && (require == crate::route::RequireTls::All || !internal)
}
