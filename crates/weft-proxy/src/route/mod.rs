//! Route tables as the data path reads them: virtual host selection by authority, route matching
//! by path, headers and query, and the action to take. Built once per config by `config::convert`.

pub mod hash_policy;
mod matcher;
pub mod retry;

pub use matcher::{HeaderCheck, HeaderMatch, PathMatch, QueryMatch, RequestView, StringMatch};

use crate::http::filter::FilterOverrides;
use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// `validate_clusters`: every named cluster must exist (Envoy's default for inline routes).
    pub validate_clusters: bool,
    /// Exact domains, lowercased, looked up first.
    pub exact: std::collections::HashMap<String, usize>,
    /// `*.suffix` and `suffix` wildcards, longest first: (suffix incl. the dot or dash, vhost).
    pub suffixes: Vec<(String, usize)>,
    /// `prefix.*` wildcards, longest first.
    pub prefixes: Vec<(String, usize)>,
    pub catch_all: Option<usize>,
    pub virtual_hosts: Vec<VirtualHost>,
    pub headers: HeaderOps,
    /// `typed_per_filter_config`, by filter name.
    pub filter_overrides: FilterOverrides,
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    /// `require_tls`: a request that did not arrive over TLS is redirected to `https`.
    pub require_tls: Option<RequireTls>,
    pub routes: Vec<Route>,
    pub headers: HeaderOps,
    /// `typed_per_filter_config`, by filter name.
    pub filter_overrides: FilterOverrides,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireTls {
    /// `ALL`.
    All,
    /// `EXTERNAL_ONLY`: requests marked `x-envoy-internal: true` are let through.
    ExternalOnly,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: Action,
    pub headers: HeaderOps,
    /// `typed_per_filter_config`, by filter name.
    pub filter_overrides: FilterOverrides,
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

#[derive(Debug, Clone)]
pub enum Action {
    Forward(Box<Forward>),
    Redirect(Box<Redirect>),
    Direct {
        status: StatusCode,
        body: Option<bytes::Bytes>,
    },
}

#[derive(Debug, Clone)]
pub struct Forward {
    pub target: ClusterTarget,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(Regex, String)>,
    pub host_rewrite: Option<HeaderValue>,
    /// Route timeout; `None` means disabled (Envoy's `0s`). Envoy's default is 15 s.
    pub timeout: Option<Duration>,
    pub cluster_not_found: StatusCode,
    pub hash_policy: Vec<hash_policy::HashPolicy>,
    pub retry: Option<std::sync::Arc<retry::RetryPolicy>>,
    /// `request_mirror_policies`.
    pub mirrors: Vec<crate::http::mirror::MirrorPolicy>,
    /// `priority`: which of the cluster's circuit breakers count the request.
    pub priority: crate::cluster::circuit::Priority,
    /// The virtual host's `include_request_attempt_count` and
    /// `include_attempt_count_in_response`.
    pub attempt_count: AttemptCount,
    /// How many bytes of a request body are kept so that a retry can resend it:
    /// `request_body_buffer_limit` or `per_request_buffer_limit_bytes`, the route's or else
    /// its virtual host's.
    pub buffer_limit: u64,
    /// `max_stream_duration`; `None` leaves the connection manager's.
    pub stream_duration: Option<StreamDuration>,
    /// `max_grpc_timeout` and `grpc_timeout_offset` (what istiod writes): a gRPC request's
    /// route timeout comes from its `grpc-timeout`.
    pub grpc_timeout: Option<GrpcTimeout>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeout {
    /// The most a `grpc-timeout` may ask for; zero: no cap.
    pub max: Duration,
    pub offset: Option<Duration>,
}

impl Forward {
    /// The route timeout for this request: for a gRPC request on a route with
    /// `max_grpc_timeout`, its `grpc-timeout` less the offset, capped (zero or absent means
    /// none); otherwise `timeout`. `None`: no route timeout.
    pub fn timeout_for(&self, grpc: bool, headers: &http::HeaderMap) -> Option<Duration> {
        let Some(g) = self.grpc_timeout.filter(|_| grpc) else {
            return self.timeout;
        };
        let mut t = crate::http::grpc::timeout(headers).unwrap_or_default();
        if let Some(offset) = g.offset.filter(|o| *o < t) {
            t -= offset;
        }
        if !g.max.is_zero() && (t.is_zero() || t > g.max) {
            t = g.max;
        }
        (!t.is_zero()).then_some(t)
    }
}

/// `RouteAction.max_stream_duration`: how long the whole stream may last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamDuration {
    /// Zero turns the connection manager's limit off for this route.
    pub max: Option<Duration>,
    /// Honour the client's `grpc-timeout`, capped by this (zero: uncapped).
    pub grpc_timeout_header_max: Option<Duration>,
    /// Taken off the `grpc-timeout`, so the proxy's deadline falls before the client's.
    pub grpc_timeout_header_offset: Option<Duration>,
}

impl StreamDuration {
    /// How long a stream with `headers` may last, as Envoy's connection manager decides it:
    /// the client's `grpc-timeout` when the route honours it, else the route's own limit, else
    /// `hcm_max` (the connection manager's). `None`: no limit.
    pub fn limit(
        route: Option<&StreamDuration>,
        headers: &http::HeaderMap,
        hcm_max: Option<Duration>,
    ) -> Option<Duration> {
        let grpc = route
            .and_then(|r| r.grpc_timeout_header_max)
            .and_then(|cap| Some((crate::http::grpc::timeout(headers)?, cap)));
        if let Some((mut t, cap)) = grpc {
            if !cap.is_zero() && t > cap {
                t = cap;
            }
            if let (false, Some(offset)) = (
                t.is_zero(),
                route.and_then(|r| r.grpc_timeout_header_offset),
            ) {
                t = t.saturating_sub(offset);
            }
            return Some(t);
        }
        match route.and_then(|r| r.max) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => hcm_max.filter(|d| !d.is_zero()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptCount {
    /// `x-envoy-attempt-count` on each upstream request.
    pub request: bool,
    /// `x-envoy-attempt-count` on the response to the client.
    pub response: bool,
}

#[derive(Debug, Clone)]
pub enum ClusterTarget {
    Named(String),
    Header(HeaderName),
    Weighted {
        clusters: Vec<WeightedCluster>,
        total: u64,
    },
}

#[derive(Debug, Clone)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u64,
    pub headers: HeaderOps,
    pub host_rewrite: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: PathRedirect,
    pub strip_query: bool,
    pub status: StatusCode,
}

#[derive(Debug, Clone)]
pub enum PathRedirect {
    Keep,
    Path(String),
    Prefix(String),
    Regex(Regex, String),
}

/// Header additions and removals at one level (route, virtual host, route configuration).
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub request_add: Vec<HeaderAdd>,
    pub request_remove: Vec<HeaderName>,
    pub response_add: Vec<HeaderAdd>,
    pub response_remove: Vec<HeaderName>,
}

#[derive(Debug, Clone)]
pub struct HeaderAdd {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub mode: AppendMode,
    pub keep_empty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
}

/// Applies additions after removals, as Envoy does.
pub fn apply_header_ops(headers: &mut http::HeaderMap, remove: &[HeaderName], add: &[HeaderAdd]) {
    for name in remove {
        headers.remove(name);
    }
    for h in add {
        if h.value.is_empty() && !h.keep_empty {
            continue;
        }
        match h.mode {
            AppendMode::AppendIfExistsOrAdd => {
                headers.append(h.name.clone(), h.value.clone());
            }
            AppendMode::AddIfAbsent => {
                if !headers.contains_key(&h.name) {
                    headers.insert(h.name.clone(), h.value.clone());
                }
            }
            AppendMode::OverwriteIfExistsOrAdd => {
                headers.insert(h.name.clone(), h.value.clone());
            }
        }
    }
}

impl RouteConfig {
    /// (virtual host index, route index, cluster) for every cluster a route names statically.
    pub fn named_clusters(&self) -> Vec<(usize, usize, &str)> {
        let mut out = Vec::new();
        for (v, vh) in self.virtual_hosts.iter().enumerate() {
            for (r, route) in vh.routes.iter().enumerate() {
                if let Action::Forward(f) = &route.action {
                    match &f.target {
                        ClusterTarget::Named(n) => out.push((v, r, n.as_str())),
                        ClusterTarget::Weighted { clusters, .. } => {
                            out.extend(clusters.iter().map(|c| (v, r, c.name.as_str())))
                        }
                        ClusterTarget::Header(_) => {}
                    }
                }
            }
        }
        out
    }

    /// The virtual host for an authority, Envoy's order: exact, longest suffix wildcard, longest
    /// prefix wildcard, then `*`.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let host = authority.to_ascii_lowercase();
        let index = self
            .exact
            .get(&host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.catch_all)?;
        self.virtual_hosts.get(index)
    }
}

impl VirtualHost {
    /// The first route whose match accepts the request.
    pub fn route(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }
}

impl RouteMatch {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path.matches(req.path)
            && self.headers.iter().all(|h| h.matches(req))
            && self.query.iter().all(|q| q.matches(req.query))
    }
}
