//! Envoy's RBAC engine (`envoy.config.rbac.v3.RBAC`), as its HTTP filter runs it: policies in
//! the lexicographic order of their names, the first whose permissions and principals both
//! match decides. ALLOW lets a request through when one matches, DENY when none does, LOG
//! always. Each permission and principal list is an OR; `and_*`, `or_*` and `not_*` nest.
//!
//! What a principal or permission reads of a request: its headers and path (query and fragment
//! left off, as the connection manager passes them), the connection's local address (the
//! destination), its peer (`direct_remote_ip`), the client address the connection manager
//! trusted after `x-forwarded-for` (`remote_ip`), the SNI, and the identity of the client's
//! certificate (`authenticated`: every URI SAN, then every DNS SAN, then the subject).

pub mod metadata;
mod uri_template;

pub use uri_template::UriTemplate;

use crate::listener::Cidr;
use crate::route::{HeaderMatch, RequestView, StringMatch};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    Header(HeaderMatch),
    UrlPath(StringMatch),
    /// `uri_template`: the path against a URI template.
    UriTemplate(UriTemplate),
    DestinationIp(Cidr),
    DestinationPort(u16),
    /// Half-open: `start <= port < end`.
    DestinationPortRange(u32, u32),
    RequestedServerName(StringMatch),
    /// A matcher of the request's dynamic metadata (what `jwt_authn` wrote).
    Metadata(metadata::MetadataMatch),
}

#[derive(Debug, Clone)]
pub enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    /// `None`: any TLS connection.
    Authenticated(Option<StringMatch>),
    /// `source_ip` and `direct_remote_ip`: the connection's peer.
    DirectRemoteIp(Cidr),
    /// The client address after `x-forwarded-for`.
    RemoteIp(Cidr),
    Header(HeaderMatch),
    UrlPath(StringMatch),
    /// As `Permission::Metadata`.
    Metadata(metadata::MetadataMatch),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Log,
}

#[derive(Debug)]
pub struct Policy {
    pub name: String,
    /// `rbac_access_denied_matched_policy[NAME]`, made once.
    pub details: &'static str,
    pub permissions: Vec<Permission>,
    pub principals: Vec<Principal>,
}

#[derive(Debug)]
pub struct Engine {
    pub action: Action,
    /// Sorted by name.
    pub policies: Vec<Policy>,
}

/// What the client's certificate says, read once per connection.
#[derive(Debug, Default)]
pub struct PeerIdentity {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// RFC 2253, as Envoy prints it.
    pub subject: String,
}

/// A request as the engine sees it.
pub struct Subject<'a> {
    pub request: Option<&'a RequestView<'a>>,
    pub local: SocketAddr,
    pub direct_remote: SocketAddr,
    pub remote: SocketAddr,
    pub sni: Option<&'a str>,
    /// The connection is TLS; with the client's certificate, when it gave one.
    pub tls: bool,
    pub peer: Option<&'a PeerIdentity>,
    /// What filters before this one wrote (`jwt_authn`'s payload).
    pub metadata: Option<&'a metadata::DynamicMetadata>,
}

impl Permission {
    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(s)),
            Permission::Or(any) => any.iter().any(|p| p.matches(s)),
            Permission::Not(p) => !p.matches(s),
            Permission::Header(h) => s.request.is_some_and(|r| h.matches(r)),
            Permission::UrlPath(m) => s.request.is_some_and(|r| m.matches(r.path)),
            Permission::UriTemplate(t) => s.request.is_some_and(|r| t.matches(r.path)),
            Permission::DestinationIp(c) => c.contains(s.local.ip()),
            Permission::DestinationPort(p) => s.local.port() == *p,
            Permission::DestinationPortRange(start, end) => {
                (*start..*end).contains(&u32::from(s.local.port()))
            }
            Permission::RequestedServerName(m) => m.matches(s.sni.unwrap_or("")),
            Permission::Metadata(m) => m.matches(s.metadata),
        }
    }
}

impl Principal {
    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(s)),
            Principal::Or(any) => any.iter().any(|p| p.matches(s)),
            Principal::Not(p) => !p.matches(s),
            Principal::Authenticated(None) => s.tls,
            Principal::Authenticated(Some(m)) => s.peer.is_some_and(|peer| {
                peer.uris.iter().any(|u| m.matches(u))
                    || peer.dns.iter().any(|d| m.matches(d))
                    || m.matches(&peer.subject)
            }),
            Principal::DirectRemoteIp(c) => c.contains(s.direct_remote.ip()),
            Principal::RemoteIp(c) => c.contains(s.remote.ip()),
            Principal::Header(h) => s.request.is_some_and(|r| h.matches(r)),
            Principal::UrlPath(m) => s.request.is_some_and(|r| m.matches(r.path)),
            Principal::Metadata(m) => m.matches(s.metadata),
        }
    }
}

impl Engine {
    /// Whether the request may go on, and the policy that matched, if one did.
    pub fn check(&self, s: &Subject<'_>) -> (bool, Option<&Policy>) {
        let matched = self.policies.iter().find(|p| {
            p.permissions.iter().any(|x| x.matches(s)) && p.principals.iter().any(|x| x.matches(s))
        });
        let allowed = match self.action {
            Action::Allow => matched.is_some(),
            Action::Deny => matched.is_none(),
            Action::Log => true,
        };
        (allowed, matched)
    }
}

/// One RBAC filter's engines and counters, HTTP or network: the shadow engine is evaluated
/// and counted first and never blocks; then the enforced one decides. Without enforced rules
/// everything is allowed (and nothing counted as allowed or denied).
#[derive(Debug)]
pub struct Enforcer {
    pub rules: Option<Engine>,
    pub shadow: Option<Engine>,
    pub stats: RbacStats,
}

/// What the shadow engine said of a request: the filter writes it to the dynamic metadata
/// (`shadow_effective_policy_id`, `shadow_engine_result`), where ext_authz reads it.
pub struct ShadowOutcome<'a> {
    pub allowed: bool,
    pub policy: Option<&'a str>,
}

impl Enforcer {
    /// `Err` carries the denial's details (`rbac_access_denied_matched_policy[...]`).
    pub fn decide(&self, subject: &Subject<'_>) -> Result<(), &'static str> {
        self.decide_with_shadow(subject).1
    }

    /// `decide`, with the shadow engine's outcome when there is one.
    pub fn decide_with_shadow(
        &self,
        subject: &Subject<'_>,
    ) -> (Option<ShadowOutcome<'_>>, Result<(), &'static str>) {
        use crate::stats::inc;
        let s = &self.stats;
        let shadow = self.shadow.as_ref().map(|shadow| {
            let (allowed, matched) = shadow.check(subject);
            inc(if allowed {
                &s.shadow.allowed
            } else {
                &s.shadow.denied
            });
            ShadowOutcome {
                allowed,
                policy: matched.map(|p| p.name.as_str()),
            }
        });
        let Some(rules) = &self.rules else {
            return (shadow, Ok(()));
        };
        let (allowed, matched) = rules.check(subject);
        if allowed {
            inc(&s.enforced.allowed);
            return (shadow, Ok(()));
        }
        inc(&s.enforced.denied);
        (
            shadow,
            Err(matched.map_or_else(|| details(None), |p| p.details)),
        )
    }
}

/// Envoy's details for a denial by `policy` (`none` when no policy matched), whitespace made
/// `_`; each distinct text is kept for the life of the process, so configs may come and go.
pub fn details(policy: Option<&str>) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let name: String = policy
        .unwrap_or("none")
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    let text = format!("rbac_access_denied_matched_policy[{name}]");
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(s) = seen.get(text.as_str()) {
        return s;
    }
    let leaked: &'static str = Box::leak(text.into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// Two counters under one prefix: `allowed`/`denied`, or `shadow_allowed`/`shadow_denied`.
/// Filters whose prefixes are the same share them, as Envoy's stats of one name are one.
#[derive(Debug, Default)]
pub struct RbacCounters {
    pub allowed: std::sync::atomic::AtomicU64,
    pub denied: std::sync::atomic::AtomicU64,
}

/// `rbac.*` counters of one filter (`http.<stat_prefix>.rbac.[<rules_stat_prefix>.]…`).
#[derive(Debug)]
pub struct RbacStats {
    pub enforced: Arc<RbacCounters>,
    pub shadow: Arc<RbacCounters>,
}

/// Envoy's `statPrefixJoin`: a dot between, unless the left side is empty or ends in one.
pub fn join(left: &str, right: &str) -> String {
    if left.is_empty() || left.ends_with('.') {
        format!("{left}{right}")
    } else {
        format!("{left}.{right}")
    }
}
