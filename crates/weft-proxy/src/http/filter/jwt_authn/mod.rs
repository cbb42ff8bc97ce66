//! `envoy.filters.http.jwt_authn`: Envoy's JWT authentication filter. Each provider reads its
//! tokens from its places (by default `Authorization: Bearer` and `?access_token=`) and checks
//! them (`crate::jwt`); the first rule whose path matches names the requirement the request
//! must meet. A valid token's payload goes to the dynamic metadata (`payload_in_metadata`),
//! where RBAC reads it, and to headers if asked; a failure is Envoy's 401 (403 for an
//! audience) with `www-authenticate`.
//!
//! The JWKS comes inline (`local_jwks`), as istiod writes it by default, or from its URI
//! through a cluster (`remote_jwks`, see `remote`): a request that needs keys not fetched yet
//! is held for the fetch, then the filter runs again.

mod config;
mod remote;

use crate::http::local_reply::LocalReply;
use crate::jwt::{self, Checks, Jwks, JwtError, Payload};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

pub const TYPE: &str = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
/// The dynamic metadata namespace payloads are written under.
pub const NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// Where a provider looks for a token.
#[derive(Debug, Clone)]
pub enum Source {
    /// A header; the token follows `prefix` in its value.
    Header(HeaderName, String),
    Param(String),
    Cookie(String),
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub checks: Checks,
    pub from: Vec<Source>,
    pub forward: bool,
    pub forward_payload_header: Option<HeaderName>,
    pub pad_forward_payload_header: bool,
    pub payload_in_metadata: Option<String>,
    pub claim_to_headers: Vec<(HeaderName, String)>,
    pub space_delimited_claims: Vec<String>,
    pub jwks: JwksSource,
}

#[derive(Debug)]
pub enum JwksSource {
    Local(Jwks),
    Remote(Arc<remote::RemoteJwks>),
}

#[derive(Debug, Clone)]
pub enum Requirement {
    Provider(usize),
    Any(Vec<Requirement>),
    All(Vec<Requirement>),
    AllowMissing,
    AllowMissingOrFailed,
}

#[derive(Debug)]
pub struct Rule {
    pub prefix: Option<String>,
    pub path: Option<String>,
    /// `None`: the request needs nothing.
    pub requires: Option<Requirement>,
}

#[derive(Debug)]
pub struct JwtAuthn {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub bypass_cors_preflight: bool,
}

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: None,
    build: |any, cx| {
        let pb = crate::config::convert::decode_any(any, cx.path)?;
        Ok(Arc::new(config::build(&pb, cx.path)?))
    },
    build_per_route: |_, cx| {
        Err(crate::config::FieldError::new(
            cx.path,
            "PerRouteConfig of jwt_authn is not supported by the Weft proxy",
        ))
    },
    supported: config::SUPPORTED,
};

/// What one provider found and made of it.
enum Outcome {
    Missing,
    Valid(Vec<(usize, Payload)>),
    Failed(JwtError),
}

impl Outcome {
    fn error(&self) -> Option<JwtError> {
        match self {
            Outcome::Missing => Some(JwtError::Missing),
            Outcome::Valid(_) => None,
            Outcome::Failed(e) => Some(*e),
        }
    }
}

/// Envoy's preference among the errors of alternatives: a real failure, then an unknown
/// issuer, then a missing token.
fn rank(e: JwtError) -> u8 {
    match e {
        JwtError::Missing => 0,
        JwtError::UnknownIssuer => 1,
        _ => 2,
    }
}

impl JwtAuthn {
    fn tokens(&self, p: &Provider, head: &http::request::Parts) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, from) in p.from.iter().enumerate() {
            match from {
                Source::Header(name, prefix) => {
                    for v in head.headers.get_all(name) {
                        let Ok(v) = v.to_str() else { continue };
                        let Some(at) = v.find(prefix.as_str()) else {
                            continue;
                        };
                        let token: String = v[at + prefix.len()..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || "-_.=".contains(*c))
                            .collect();
                        if !token.is_empty() {
                            out.push((i, token));
                        }
                    }
                }
                Source::Param(name) => {
                    for (k, v) in head
                        .uri
                        .query()
                        .unwrap_or("")
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                    {
                        if k == name && !v.is_empty() {
                            out.push((i, v.to_string()));
                        }
                    }
                }
                Source::Cookie(name) => {
                    for v in head.headers.get_all(http::header::COOKIE) {
                        for c in v.to_str().unwrap_or("").split(';') {
                            if let Some((k, v)) = c.trim().split_once('=')
                                && k == name
                                && !v.is_empty()
                            {
                                out.push((i, v.to_string()));
                            }
                        }
                    }
                }
            }
        }
        out.dedup_by(|a, b| a.1 == b.1);
        out
    }

    fn check(&self, p: &Provider, head: &http::request::Parts, now: u64) -> Outcome {
        let tokens = self.tokens(p, head);
        if tokens.is_empty() {
            return Outcome::Missing;
        }
        let fetched;
        let jwks = match &p.jwks {
            JwksSource::Local(j) => j,
            JwksSource::Remote(r) => match r.keys() {
                remote::Keys::Fresh(k) => {
                    fetched = k;
                    &*fetched
                }
                // `on_request` fetched before it got here; what is left is a failure.
                remote::Keys::Failed | remote::Keys::Stale => {
                    return Outcome::Failed(JwtError::RemoteFetchFailed);
                }
            },
        };
        let mut valid = Vec::new();
        for (from, token) in tokens {
            match jwt::verify(&token, &p.checks, jwks, now) {
                Ok(payload) => valid.push((from, payload)),
                Err(e) => return Outcome::Failed(e),
            }
        }
        Outcome::Valid(valid)
    }

    fn decide(
        &self,
        r: &Requirement,
        outcomes: &[Outcome],
        any_token: bool,
    ) -> Result<(), JwtError> {
        match r {
            Requirement::Provider(i) => outcomes
                .get(*i)
                .and_then(Outcome::error)
                .map_or(Ok(()), Err),
            Requirement::AllowMissingOrFailed => Ok(()),
            Requirement::AllowMissing => {
                if any_token {
                    // A token is there: it must be valid for some provider.
                    let best = outcomes
                        .iter()
                        .filter_map(Outcome::error)
                        .max_by_key(|e| rank(*e));
                    if outcomes.iter().any(|o| matches!(o, Outcome::Valid(_))) {
                        Ok(())
                    } else {
                        Err(best.unwrap_or(JwtError::Missing))
                    }
                } else {
                    Ok(())
                }
            }
            Requirement::Any(all) => {
                let mut best: Option<JwtError> = None;
                for c in all {
                    match self.decide(c, outcomes, any_token) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            if best.is_none_or(|b| rank(e) > rank(b)) {
                                best = Some(e);
                            }
                        }
                    }
                }
                Err(best.unwrap_or(JwtError::Missing))
            }
            Requirement::All(all) => all
                .iter()
                .try_for_each(|c| self.decide(c, outcomes, any_token)),
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl super::HttpFilter for JwtAuthn {
    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        _per_route: super::PerRoute<'_>,
    ) -> super::Decode {
        // What only this filter may say: a client's own claim headers are dropped.
        for p in &self.providers {
            for (h, _) in &p.claim_to_headers {
                cx.head.headers.remove(h);
            }
            if let Some(h) = &p.forward_payload_header {
                cx.head.headers.remove(h);
            }
        }
        let head = &*cx.head;
        let preflight = head.method == http::Method::OPTIONS
            && head.headers.contains_key(http::header::ORIGIN)
            && head
                .headers
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight && self.bypass_cors_preflight {
            return super::Decode::Continue;
        }
        let path = head.uri.path();
        let Some(rule) = self.rules.iter().find(|r| {
            r.prefix.as_deref().is_some_and(|p| path.starts_with(p))
                || r.path.as_deref().is_some_and(|p| path == p)
        }) else {
            return super::Decode::Continue;
        };
        let Some(requires) = &rule.requires else {
            return super::Decode::Continue;
        };
        // Remote keys a token needs and that are not at hand: fetch them, then run again.
        let stale: Vec<&Arc<remote::RemoteJwks>> = self
            .providers
            .iter()
            .filter_map(|p| match &p.jwks {
                JwksSource::Remote(r) if matches!(r.keys(), remote::Keys::Stale) => {
                    (!self.tokens(p, head).is_empty()).then_some(r)
                }
                _ => None,
            })
            .collect();
        if !stale.is_empty() {
            let fetches: Vec<_> = stale
                .into_iter()
                .map(|r| {
                    let address = crate::http::side::endpoint(&cx.conn.shared, &r.cluster);
                    (r.clone(), address)
                })
                .collect();
            return super::Decode::Pause(Box::pin(async move {
                for (r, address) in fetches {
                    r.refresh(address).await;
                }
                super::Decode::Again
            }));
        }
        let now = now();
        let outcomes: Vec<Outcome> = self
            .providers
            .iter()
            .map(|p| self.check(p, head, now))
            .collect();
        let any_token = outcomes.iter().any(|o| !matches!(o, Outcome::Missing));
        if let Err(e) = self.decide(requires, &outcomes, any_token) {
            let scheme = if cx.conn.tls { "https" } else { "http" };
            let host = head
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| head.uri.authority().map(|a| a.as_str()))
                .unwrap_or("");
            let full = head.uri.path_and_query().map_or("/", |p| p.as_str());
            let cut: String = full.chars().take(256).collect();
            let mut value = format!("Bearer realm=\"{scheme}://{host}{cut}\"");
            if e != JwtError::Missing {
                value.push_str(", error=\"invalid_token\"");
            }
            if let Ok(v) = HeaderValue::from_str(&value) {
                let mut h = http::HeaderMap::new();
                h.insert(http::header::WWW_AUTHENTICATE, v);
                cx.stream.add_response_headers(h);
            }
            return super::Decode::Reply(LocalReply::JwtDenied(e));
        }
        self.accept(cx, outcomes);
        super::Decode::Continue
    }
}

impl JwtAuthn {
    /// What valid tokens leave behind: their payloads in the metadata and headers, and their
    /// headers gone when not forwarded.
    fn accept(&self, cx: &mut super::RequestContext<'_>, outcomes: Vec<Outcome>) {
        use base64::Engine as _;
        for (p, outcome) in self.providers.iter().zip(outcomes) {
            let Outcome::Valid(found) = outcome else {
                continue;
            };
            for (from, mut payload) in found {
                if !p.forward
                    && let Some(Source::Header(h, _)) = p.from.get(from)
                {
                    cx.head.headers.remove(h);
                }
                for (header, claim) in &p.claim_to_headers {
                    let mut keys = claim.split('.');
                    let mut v = keys.next().and_then(|k| payload.get(k));
                    for key in keys {
                        v = v.and_then(|v| v.get(key));
                    }
                    let text = match v {
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(n @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                            Some(n.to_string())
                        }
                        _ => None,
                    };
                    if let Some(t) = text.and_then(|t| HeaderValue::from_str(&t).ok()) {
                        cx.head.headers.insert(header.clone(), t);
                    }
                }
                if let Some(h) = &p.forward_payload_header {
                    let json = serde_json::to_string(&payload).unwrap_or_default();
                    let engine = if p.pad_forward_payload_header {
                        base64::engine::general_purpose::URL_SAFE
                    } else {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                    };
                    if let Ok(v) = HeaderValue::from_str(&engine.encode(json)) {
                        cx.head.headers.insert(h.clone(), v);
                    }
                }
                if let Some(key) = &p.payload_in_metadata {
                    for claim in &p.space_delimited_claims {
                        if let Some(serde_json::Value::String(s)) = payload.get(claim) {
                            let parts = s
                                .split(' ')
                                .filter(|x| !x.is_empty())
                                .map(|x| serde_json::Value::String(x.to_string()))
                                .collect();
                            payload.insert(claim.clone(), serde_json::Value::Array(parts));
                        }
                    }
                    cx.stream
                        .metadata
                        .get_or_insert_with(Default::default)
                        .entry(NAMESPACE.to_string())
                        .or_default()
                        .insert(key.clone(), serde_json::Value::Object(payload));
                }
            }
        }
    }
}
