//! `RouteAction.hash_policy`: the request key that RING_HASH and MAGLEV clusters place a request
//! by, computed as Envoy computes it, so that both proxies send a key to the same host.

use crate::cluster::hash;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum HashKey {
    Header(HeaderName),
    /// With a `ttl`, a missing cookie is created and set on the response.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug, Clone)]
pub struct HashPolicy {
    pub key: HashKey,
    /// Stop at this policy if it produced a hash.
    pub terminal: bool,
}

/// What the request hashes to, and the `set-cookie` the response must carry if a cookie was
/// generated.
pub fn request_hash(
    policies: &[HashPolicy],
    headers: &HeaderMap,
    query: Option<&str>,
    peer: SocketAddr,
    local: SocketAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    let mut acc = None;
    let mut set_cookie = None;
    for policy in policies {
        let value = match &policy.key {
            HashKey::Header(name) => headers.get(name).map(|v| hash::hash(v.as_bytes())),
            HashKey::SourceIp => Some(hash::hash(peer.ip().to_string().as_bytes())),
            HashKey::QueryParameter(name) => {
                query_value(query, name).map(|v| hash::hash(v.as_bytes()))
            }
            HashKey::Cookie { name, ttl, path } => match cookie_value(headers, name) {
                Some(v) => Some(hash::hash(v.as_bytes())),
                None => match ttl {
                    // The same connection always gets the same cookie, as in Envoy.
                    Some(ttl) => {
                        let value =
                            format!("{:016x}", hash::hash(format!("{peer}{local}").as_bytes()));
                        set_cookie = set_cookie_value(name, &value, *ttl, path.as_deref());
                        Some(hash::hash(value.as_bytes()))
                    }
                    None => None,
                },
            },
        };
        if let Some(v) = value {
            acc = Some(hash::combine(acc, v));
            if policy.terminal {
                break;
            }
        }
    }
    (acc, set_cookie)
}

fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    for header in headers.get_all(http::header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k == name {
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(v.to_string());
            }
        }
    }
    None
}

fn set_cookie_value(
    name: &str,
    value: &str,
    ttl: Duration,
    path: Option<&str>,
) -> Option<HeaderValue> {
    let mut cookie = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        cookie.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        cookie.push_str(&format!("; Path={path}"));
    }
    cookie.push_str("; HttpOnly");
    HeaderValue::from_str(&cookie).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_quoted_or_not_and_generated_with_their_attributes() {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1; session=\"abc\""));
        assert_eq!(cookie_value(&h, "session").as_deref(), Some("abc"));
        assert_eq!(cookie_value(&h, "a").as_deref(), Some("1"));
        assert_eq!(cookie_value(&h, "b"), None);
        let v = set_cookie_value("s", "00ff", Duration::from_secs(60), Some("/p")).unwrap();
        assert_eq!(v, "s=\"00ff\"; Max-Age=60; Path=/p; HttpOnly");
    }

    #[test]
    fn a_terminal_policy_that_hashes_ends_the_list() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let policies = |terminal| {
            vec![
                HashPolicy {
                    key: HashKey::QueryParameter("user".into()),
                    terminal,
                },
                HashPolicy {
                    key: HashKey::SourceIp,
                    terminal: false,
                },
            ]
        };
        let h = HeaderMap::new();
        let user = hash::hash(b"7");
        let (t, _) = request_hash(&policies(true), &h, Some("user=7"), peer, peer);
        assert_eq!(t, Some(user));
        let (both, _) = request_hash(&policies(false), &h, Some("user=7"), peer, peer);
        assert_eq!(both, Some(user.rotate_left(1) ^ hash::hash(b"10.0.0.1")));
    }
}
