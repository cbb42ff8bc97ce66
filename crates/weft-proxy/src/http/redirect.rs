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
    let new_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let new_port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
    let host = match r.host.as_deref() {
        Some(h) => h,
        None => request_host(authority, new_scheme, scheme, !new_port.is_empty()),
    };
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
    format!("{new_scheme}://{host}{new_port}{new_path}")
}

/// The request's host as the redirect keeps it (Envoy's `processRequestHost`): its port goes
/// only when the redirect names a port of its own, or when the scheme changes and the port is
/// the default of the request's scheme (`http://b:80` to `https://b`). `b:80` staying `b:80`
/// on a plain redirect is what Envoy does.
fn request_host<'a>(
    authority: &'a str,
    new_scheme: &str,
    request_scheme: &str,
    new_port: bool,
) -> &'a str {
    let (host, port) = split_port(authority);
    let Some(port) = port else {
        return authority;
    };
    let scheme_changes = !new_scheme.eq_ignore_ascii_case(request_scheme);
    let default_port = (request_scheme.eq_ignore_ascii_case("https") && port == "443")
        || (request_scheme.eq_ignore_ascii_case("http") && port == "80");
    if new_port || (scheme_changes && default_port) {
        host
    } else {
        authority
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
