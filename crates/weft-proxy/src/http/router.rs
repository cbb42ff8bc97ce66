//! The router filter: picks the route, then answers locally (direct response, redirect, errors
//! as Envoy words them) or forwards to a host of the route's cluster.

use super::attempt::{self, Failure};
use super::fault::Abort;
use super::local_ratelimit::Decision;
use super::replay::KeptBody;
use super::stream_timer::{Activity, ResponseTimer};
use super::{Connection, RouteSource, cors, headers, local_reply, mirror, upgrade, upstream_head};
use crate::access_log::{Entry, RequestInfo, flags};
use crate::body::{Finish, Guard, ProxyBody};
use crate::cluster::circuit::Priority;
use crate::cluster::{Cluster, Discovery, Host};
use crate::route::{
    Action, ClusterTarget, Forward, HeaderOps, PathMatch, RequestView, Route, RouteConfig,
    VirtualHost, apply_header_ops, hash_policy,
};
use crate::stats;
use crate::upstream::{self, Version};
use http::header::{HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

static X_ENVOY_UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static X_ENVOY_OVERLOADED: http::HeaderName = http::HeaderName::from_static("x-envoy-overloaded");
static X_ENVOY_ORIGINAL_PATH: http::HeaderName =
    http::HeaderName::from_static("x-envoy-original-path");

/// What the end of a request needs: for the access log, the counters, and the pool.
struct Finisher {
    conn: Connection,
    /// The trusted client address (`use_remote_address`, `xff_num_trusted_hops`).
    remote: std::net::SocketAddr,
    start: Instant,
    start_wall: SystemTime,
    protocol: &'static str,
    request: Option<RequestInfo>,
    response_headers: Option<http::HeaderMap>,
    status: u16,
    flags: u32,
    bytes_received: u64,
    cluster: Option<Arc<Cluster>>,
    host: Option<Arc<Host>>,
    route_name: String,
    /// An HTTP/1.1 connection to give back once its response was read to the end.
    release: Option<upstream::Http1>,
    /// The route's priority: which circuit breakers count the request.
    priority: Priority,
    /// The circuit breakers dropped the request: the reply says so (`x-envoy-overloaded`),
    /// unless `suppress_envoy_headers`.
    overloaded: bool,
    /// `x-ratelimit-*` headers the local rate limit adds to the response.
    ratelimit_headers: Option<http::HeaderMap>,
    /// CORS headers the response gets (an allowed cross-origin request).
    cors: Option<cors::Simple>,
    /// A hash policy cookie generated for this client.
    set_cookie: Option<HeaderValue>,
    /// A gRPC request: the proxy's own replies are gRPC replies.
    grpc: bool,
    /// The gRPC status such a reply carries, where it is not the one mapped from HTTP.
    grpc_status: Option<u16>,
    /// Keeps the connection from idling out until the response is done.
    _active: Option<super::conn_idle::Active>,
}

impl Finish for Finisher {
    fn finish(&mut self, complete: bool, bytes: u64) {
        let hcm = &self.conn.hcm;
        let s = &hcm.stats;
        stats::dec(&s.downstream_rq_active);
        stats::inc(&s.downstream_rq_completed);
        s.count_status(self.status);
        if let (Some(cluster), Some(host)) = (&self.cluster, &self.host) {
            stats::dec(&cluster.stats.upstream_rq_active);
            cluster.release_request(self.priority);
            stats::dec(&host.active_requests);
            stats::inc(&cluster.stats.upstream_rq_completed);
            cluster.rq_time.record(self.start.elapsed());
            if complete {
                if let Some(sender) = self.release.take() {
                    upstream::release_http1(cluster, host.address, self.priority, sender);
                }
            } else {
                stats::inc(&cluster.stats.upstream_rq_rx_reset);
            }
        }
        if !complete && self.cluster.is_some() {
            self.flags |= flags::DC;
        }
        if hcm.access_logs.is_empty() {
            return;
        }
        let entry = Entry {
            start: self.start_wall,
            protocol: self.protocol,
            request: self.request.as_ref(),
            response: self.response_headers.as_ref(),
            status: self.status,
            flags: self.flags,
            bytes_received: self.bytes_received,
            bytes_sent: bytes,
            duration: self.start.elapsed(),
            upstream_host: self.host.as_ref().map(|h| h.address),
            upstream_cluster: self.cluster.as_ref().map_or("", |c| c.config.name.as_str()),
            downstream_remote: self.remote,
            downstream_local: self.conn.local,
            route_name: &self.route_name,
        };
        for log in &hcm.access_logs {
            log.log(&entry);
        }
    }
}

pub async fn handle(req: Request<Incoming>, conn: Connection) -> Response<ProxyBody> {
    let start = Instant::now();
    let start_wall = SystemTime::now();
    let hcm = conn.hcm.clone();
    let s = &hcm.stats;
    stats::inc(&s.downstream_rq_total);
    stats::inc(&s.downstream_rq_active);
    let protocol = match req.version() {
        http::Version::HTTP_2 => {
            stats::inc(&s.downstream_rq_http2_total);
            "HTTP/2"
        }
        http::Version::HTTP_10 => {
            stats::inc(&s.downstream_rq_http1_total);
            "HTTP/1.0"
        }
        _ => {
            stats::inc(&s.downstream_rq_http1_total);
            "HTTP/1.1"
        }
    };
    let (mut parts, body) = req.into_parts();
    upgrade::from_extended_connect(&mut parts);
    let authority: String = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let remote = headers::on_request(
        &mut parts.headers,
        &hcm,
        conn.peer,
        conn.shared.local_address,
        conn.tls,
    );
    let mut finisher = Finisher {
        conn: conn.clone(),
        remote,
        start,
        start_wall,
        protocol,
        request: None,
        response_headers: None,
        status: 0,
        flags: 0,
        bytes_received: 0,
        cluster: None,
        host: None,
        route_name: String::new(),
        release: None,
        priority: Priority::Default,
        overloaded: false,
        ratelimit_headers: None,
        cors: None,
        set_cookie: None,
        grpc: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")),
        grpc_status: None,
        _active: conn.idle.as_ref().map(|t| t.begin()),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let (path, query) = split_query(&path_and_query);
    let view = RequestView {
        method: parts.method.as_str(),
        scheme: parts.uri.scheme_str().unwrap_or("http"),
        authority: &authority,
        path,
        query,
        path_and_query: &path_and_query,
        headers: &parts.headers,
    };
    // Envoy refuses an upgrade the connection manager does not list.
    if upgrade::requested(&parts)
        .is_some_and(|t| !hcm.upgrades.iter().any(|u| u.eq_ignore_ascii_case(&t)))
    {
        return local(finisher, Some(&parts), StatusCode::FORBIDDEN, "", None);
    }
    // One snapshot for the whole request: the route table (from RDS) and the clusters it
    // names always come from the same config.
    let snapshot = conn.shared.snapshot.load_full();
    let route_config = match &hcm.route {
        RouteSource::Static(rc) => Some(rc.clone()),
        RouteSource::Rds { name, .. } => snapshot.routes.get(name).cloned(),
    };
    // An RDS table that has not arrived yet routes nothing, as in Envoy.
    let Some(route_config) = route_config else {
        stats::inc(&s.no_route);
        finisher.flags |= flags::NR;
        return local(finisher, Some(&parts), StatusCode::NOT_FOUND, "", None);
    };
    let scheme = view.scheme;
    let vhost = route_config.virtual_host(&authority);
    if let Some(require) = vhost.and_then(|v| v.require_tls)
        && super::redirect::needs_tls_redirect(require, &parts.headers)
    {
        // Envoy's answer to `require_tls`: 301 to the same host and path over https, before
        // any route is looked at.
        stats::inc(&s.rq_redirect);
        let location = format!("https://{authority}{path_and_query}");
        let Ok(location) = HeaderValue::from_str(&location) else {
            return local(finisher, Some(&parts), StatusCode::BAD_REQUEST, "", None);
        };
        let mut resp = Response::new(ProxyBody::Empty);
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        resp.headers_mut().insert(LOCATION, location);
        return finish_local(finisher, Some(&parts), resp);
    }
    let selected = vhost.and_then(|vhost| Some((vhost, vhost.route(&view)?)));
    let Some((vhost, route)) = selected else {
        stats::inc(&s.no_route);
        finisher.flags |= flags::NR;
        return local(finisher, Some(&parts), StatusCode::NOT_FOUND, "", None);
    };
    finisher.route_name.clone_from(&route.name);
    // The fault filter comes before CORS and the router, as in Istio's chain; a route's or
    // virtual host's policy replaces the filter's own.
    let fault = hcm.fault.as_ref().and_then(|(filter, stats)| {
        let policy = route.fault.as_deref().or(vhost.fault.as_deref());
        policy.unwrap_or(filter).inject(stats, &parts.headers)
    });
    if let Some(f) = &fault {
        if let Some(d) = f.delay {
            finisher.flags |= flags::DI;
            tokio::time::sleep(d).await;
        }
        if let Some(abort) = f.abort {
            finisher.flags |= flags::FI;
            let resp = match abort {
                Abort::Http(status) => local_reply(status, "fault filter abort"),
                Abort::Grpc(code) if finisher.grpc => {
                    super::grpc::status_reply(code, "fault filter abort")
                }
                // Envoy answers a client that is not gRPC with 200 and the text.
                Abort::Grpc(_) => local_reply(StatusCode::OK, "fault filter abort"),
            };
            return finish_local(finisher, Some(&parts), resp);
        }
    }
    if let Some(filter) = &hcm.local_rate_limit {
        let config = route
            .local_rate_limit
            .as_ref()
            .or(vhost.local_rate_limit.as_ref())
            .unwrap_or(filter);
        match config.check() {
            Decision::Pass(headers) => finisher.ratelimit_headers = headers,
            Decision::Limit(status, headers) => {
                finisher.flags |= flags::RL;
                let mut resp = local_reply(status, "local_rate_limited");
                resp.headers_mut().extend(headers);
                return finish_local(finisher, Some(&parts), resp);
            }
        }
    }
    if hcm.cors {
        match cors::on_request(
            route.cors.as_deref(),
            vhost.cors.as_deref(),
            &parts.method,
            &parts.headers,
        ) {
            cors::Decision::Continue(simple) => finisher.cors = simple,
            cors::Decision::Preflight(headers) => {
                let mut resp = Response::new(ProxyBody::Empty);
                *resp.headers_mut() = headers;
                return finish_local(finisher, Some(&parts), resp);
            }
        }
    }
    // Direct responses and redirects are the proxy's own replies, with the route's headers.
    let mut resp = match &route.action {
        Action::Direct {
            status,
            body: reply,
        } => {
            stats::inc(&s.rq_direct_response);
            let mut resp = Response::new(reply.clone().map_or(ProxyBody::Empty, ProxyBody::full));
            *resp.status_mut() = *status;
            if reply.is_some() {
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
            }
            resp
        }
        Action::Redirect(redirect) => {
            stats::inc(&s.rq_redirect);
            let mut resp = Response::new(ProxyBody::Empty);
            *resp.status_mut() = redirect.status;
            match HeaderValue::from_str(&super::redirect::location(
                redirect, route, scheme, &authority, path, query,
            )) {
                Ok(v) => {
                    resp.headers_mut().insert(LOCATION, v);
                }
                Err(_) => {
                    return local(finisher, Some(&parts), StatusCode::BAD_REQUEST, "", None);
                }
            }
            resp
        }
        Action::Forward(forward) => {
            let matched = Matched {
                clusters: &snapshot.clusters,
                config: &route_config,
                vhost,
                route,
                forward,
            };
            return forward_request(
                parts,
                body,
                conn,
                finisher,
                matched,
                authority,
                &path_and_query,
            )
            .await;
        }
    };
    header_levels(
        resp.headers_mut(),
        &route_config,
        vhost,
        route,
        None,
        Side::Response,
    );
    finish_local(finisher, Some(&parts), resp)
}

/// The route a request matched, with the levels around it whose header operations apply.
#[derive(Clone, Copy)]
struct Matched<'a> {
    /// The clusters of the snapshot the route came from.
    clusters: &'a HashMap<String, Arc<Cluster>>,
    config: &'a RouteConfig,
    vhost: &'a VirtualHost,
    route: &'a Route,
    forward: &'a Forward,
}

fn split_query(path_and_query: &str) -> (&str, Option<&str>) {
    match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    }
}

/// A reply the proxy makes itself. `parts` is the request for the access log, unless the
/// finisher already holds it.
fn local(
    finisher: Finisher,
    parts: Option<&http::request::Parts>,
    status: StatusCode,
    body: &'static str,
    matched: Option<Matched<'_>>,
) -> Response<ProxyBody> {
    let mut resp = local_reply(status, body);
    // Envoy adds the route's response headers to its own replies on a matched route too.
    if let Some(m) = matched {
        header_levels(
            resp.headers_mut(),
            m.config,
            m.vhost,
            m.route,
            None,
            Side::Response,
        );
    }
    finish_local(finisher, parts, resp)
}

fn finish_local(
    mut finisher: Finisher,
    parts: Option<&http::request::Parts>,
    mut resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if finisher.grpc && resp.status() != StatusCode::OK {
        resp = super::grpc::local_reply(resp, finisher.grpc_status);
    }
    if let Some(c) = &finisher.cors {
        c.apply(resp.headers_mut());
    }
    if finisher.overloaded && !finisher.conn.hcm.suppress_envoy_headers {
        resp.headers_mut()
            .insert(X_ENVOY_OVERLOADED.clone(), HeaderValue::from_static("true"));
    }
    if let Some(h) = finisher.ratelimit_headers.take() {
        resp.headers_mut().extend(h);
    }
    headers::on_response(resp.headers_mut(), &finisher.conn.hcm);
    finisher.status = resp.status().as_u16();
    if let (false, Some(parts)) = (finisher.conn.hcm.access_logs.is_empty(), parts) {
        finisher.request = Some(RequestInfo {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        });
    }
    if !finisher.conn.hcm.access_logs.is_empty() {
        finisher.response_headers = Some(resp.headers().clone());
    }
    let bytes = match resp.body() {
        ProxyBody::Full(Some(b)) => b.len() as u64,
        _ => 0,
    };
    finisher.finish(true, bytes);
    resp
}

#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

/// Header operations of every level, most specific first (weighted cluster, route, virtual host,
/// route configuration), so that the outer levels win, as in Envoy.
fn header_levels(
    headers: &mut http::HeaderMap,
    config: &RouteConfig,
    vhost: &VirtualHost,
    route: &Route,
    weighted: Option<&HeaderOps>,
    side: Side,
) {
    let levels = [
        weighted,
        Some(&route.headers),
        Some(&vhost.headers),
        Some(&config.headers),
    ];
    for ops in levels.into_iter().flatten() {
        match side {
            Side::Request => apply_header_ops(headers, &ops.request_remove, &ops.request_add),
            Side::Response => apply_header_ops(headers, &ops.response_remove, &ops.response_add),
        }
    }
}

/// Replaces the prefix the route matched with `replacement`.
pub(super) fn rewrite_prefix(matcher: &PathMatch, path: &str, replacement: &str) -> String {
    let matched = match matcher {
        PathMatch::Prefix { prefix, .. } | PathMatch::SeparatedPrefix { prefix, .. } => {
            prefix.len()
        }
        PathMatch::Exact { path: p, .. } => p.len(),
        PathMatch::Regex(_) => 0,
    };
    let rest = path.get(matched.min(path.len())..).unwrap_or("");
    format!("{replacement}{rest}")
}

async fn forward_request(
    mut parts: http::request::Parts,
    body: Incoming,
    conn: Connection,
    mut finisher: Finisher,
    matched: Matched<'_>,
    authority: String,
    path_and_query: &str,
) -> Response<ProxyBody> {
    let hcm = &conn.hcm;
    let Matched {
        clusters,
        config: route_config,
        vhost,
        route,
        forward,
    } = matched;
    // The cluster, and for weighted routes the header operations that come with it.
    let (cluster_name, weighted) = match &forward.target {
        ClusterTarget::Named(n) => (n.clone(), None),
        ClusterTarget::Header(h) => match parts.headers.get(h).and_then(|v| v.to_str().ok()) {
            Some(v) => (v.to_string(), None),
            None => (String::new(), None),
        },
        ClusterTarget::Weighted { clusters, total } => {
            let mut roll = fastrand::u64(..(*total).max(1));
            let mut chosen = clusters.last();
            for c in clusters {
                if roll < c.weight {
                    chosen = Some(c);
                    break;
                }
                roll -= c.weight;
            }
            match chosen {
                Some(c) => (c.name.clone(), Some(c.clone())),
                None => (String::new(), None),
            }
        }
    };
    let cluster = clusters.get(&cluster_name).cloned();
    let Some(cluster) = cluster else {
        stats::inc(&hcm.stats.no_cluster);
        finisher.flags |= flags::NC;
        return local(
            finisher,
            Some(&parts),
            forward.cluster_not_found,
            "",
            Some(matched),
        );
    };
    let hosts = cluster.hosts.load_full();
    let request_hash = if cluster.config.lb_policy.is_hashing() && !forward.hash_policy.is_empty() {
        let (h, cookie) = hash_policy::request_hash(
            &forward.hash_policy,
            &parts.headers,
            split_query(path_and_query).1,
            finisher.remote,
            conn.local,
        );
        finisher.set_cookie = cookie;
        h
    } else {
        None
    };
    let chosen = if cluster.config.discovery == Discovery::OriginalDst {
        cluster
            .original_destination(Some(&parts.headers), conn.restored)
            .map(|d| cluster.original_dst_host(d))
    } else {
        hosts.choose_hashed(request_hash).cloned()
    };
    let Some(host) = chosen else {
        stats::inc(&cluster.stats.upstream_cx_none_healthy);
        finisher.flags |= flags::UH;
        return local(
            finisher,
            Some(&parts),
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
            Some(matched),
        );
    };
    drop(hosts);

    // Rewrites. The query string is kept; the original path goes upstream in a header.
    let (path, query) = split_query(path_and_query);
    let rewritten = match (&forward.prefix_rewrite, &forward.regex_rewrite) {
        (Some(prefix), _) => Some(rewrite_prefix(&route.matcher.path, path, prefix)),
        (None, Some((re, sub))) => Some(re.replace_all(path, sub.as_str()).into_owned()),
        (None, None) => None,
    };
    let new_path_and_query = match rewritten.filter(|p| p != path) {
        None => path_and_query.to_string(),
        Some(new_path) => {
            if let Ok(v) = HeaderValue::from_str(path_and_query) {
                parts.headers.insert(X_ENVOY_ORIGINAL_PATH.clone(), v);
            }
            match query {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            }
        }
    };
    let host_rewrite = weighted
        .as_ref()
        .and_then(|w| w.host_rewrite.as_ref())
        .or(forward.host_rewrite.as_ref());
    let upstream_authority = match host_rewrite {
        Some(h) => h.to_str().unwrap_or_default().to_string(),
        None => authority,
    };

    // An upgrade (websocket) is carried in each side's own protocol; `handle` has already
    // refused the types the connection manager does not list.
    let upgrade = upgrade::requested(&parts).and_then(|t| HeaderValue::from_str(&t).ok());
    let downstream_upgrade = match upgrade {
        Some(_) => parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        None => None,
    };
    let downstream_version = parts.version;

    headers::strip_hop_by_hop(&mut parts.headers);
    let weighted_ops = weighted.as_ref().map(|w| &w.headers);
    header_levels(
        &mut parts.headers,
        route_config,
        vhost,
        route,
        weighted_ops,
        Side::Request,
    );
    let timeout = forward.timeout_for(finisher.grpc, &parts.headers);
    // What the upstream may expect: one try's time when tries have their own, else the route's.
    let expected = forward
        .retry
        .as_ref()
        .and_then(|r| r.per_try_timeout)
        .or(timeout);
    if let (Some(t), false) = (expected, hcm.suppress_envoy_headers) {
        parts.headers.insert(
            X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(),
            HeaderValue::from(t.as_millis() as u64),
        );
    }

    let version = upstream_head::version(&cluster, parts.version);
    let Ok(uri) = upstream_head::uri(version, &upstream_authority, &new_path_and_query) else {
        return local(
            finisher,
            Some(&parts),
            StatusCode::BAD_REQUEST,
            "",
            Some(matched),
        );
    };
    parts.uri = uri;
    if let Some(u) = &upgrade {
        upgrade::to_upstream(&mut parts, u, version == Version::Http2);
    }
    upstream_head::address(
        version,
        &mut parts.version,
        &mut parts.headers,
        &upstream_authority,
    );
    if !hcm.access_logs.is_empty() {
        finisher.request = Some(RequestInfo {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        });
    }

    // max_requests: a request past it is dropped before it reaches the host.
    if !cluster.admit_request(forward.priority) {
        let r = attempt::reply(Failure::Connect(upstream::ConnectError::Overflow), hcm);
        finisher.flags |= r.flag;
        cluster.stats.count_status(r.status.as_u16());
        finisher.overloaded = r.overloaded;
        return local(finisher, Some(&parts), r.status, r.body, Some(matched));
    }
    finisher.priority = forward.priority;
    finisher.cluster = Some(cluster.clone());
    finisher.host = Some(host.clone());
    let cs = &cluster.stats;
    stats::inc(&cs.upstream_rq_total);
    stats::inc(&cs.upstream_rq_active);
    stats::inc(&host.active_requests);
    stats::inc(&host.stats.rq_total);

    // The stream's allowed duration counts from its start, as Envoy's does.
    let deadline = crate::route::StreamDuration::limit(
        forward.stream_duration.as_ref(),
        &parts.headers,
        hcm.max_stream_duration,
    )
    .map(|d| finisher.start + d);
    let bodiless = body.is_end_stream();
    // The stream timers need to know when bytes last moved and whether the request is all in.
    let activity =
        (hcm.stream_idle_timeout.is_some() || hcm.request_timeout.is_some() || deadline.is_some())
            .then(|| Arc::new(Activity::new(bodiless)));
    if forward.attempt_count.request {
        // Set per attempt by the attempts themselves; a client's own value never goes through.
        parts.headers.remove(&attempt::ATTEMPT_COUNT);
    }
    let tee = if forward.mirrors.is_empty() || upgrade.is_some() {
        None
    } else {
        let original = mirror::Original {
            head: &parts,
            authority: &upstream_authority,
            path_and_query: &new_path_and_query,
            bodiless,
            timeout,
        };
        mirror::start(&forward.mirrors, clusters, &original)
    };
    let mut body = ProxyBody::request(body, activity.clone(), tee);
    // A retry resends the head and, for a request with a body, what was kept of it.
    let retry = match forward.retry.as_deref() {
        Some(policy) if upgrade.is_none() => {
            let kept = (!bodiless)
                .then(|| KeptBody::new(body, forward.buffer_limit, cluster.stats.clone()));
            body = match kept.as_ref().and_then(KeptBody::replay) {
                Some(first) => ProxyBody::Replay(first),
                None => ProxyBody::Empty,
            };
            let head = attempt::Head {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                version: parts.version,
                headers: parts.headers.clone(),
                body: kept,
            };
            Some((policy, head))
        }
        _ => None,
    };
    let request = Request::from_parts(parts, body);
    let upstream_start = Instant::now();
    let attempts = attempt::Attempts {
        cluster: &cluster,
        version,
        deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        retry,
        request_hash,
        priority: forward.priority,
        attempt_count_header: forward.attempt_count.request,
    };
    let mut host = host;
    let mut tries = 0;
    let routed = attempt::send(attempts, &mut host, &mut tries, request);
    let (outcome, ended) = match &activity {
        Some(a) => tokio::select! {
            sent = routed => sent,
            expired = a.expired(hcm.stream_idle_timeout, hcm.request_timeout, deadline) => {
                (Err(Failure::Stream(expired, a.request_complete())), attempt::Ended::Done)
            }
        },
        None => routed.await,
    };
    finisher.host = Some(host.clone());
    match ended {
        attempt::Ended::Done => {}
        attempt::Ended::Exhausted => finisher.flags |= flags::URX,
        attempt::Ended::Overflow => finisher.flags |= flags::UO,
    }
    let (mut resp, release) = match outcome {
        Ok(r) => r,
        Err(failure) => {
            stats::inc(&host.stats.rq_error);
            if let Failure::Connect(e) = &failure {
                tracing::debug!(cluster = %cluster.config.name, host = %host.address, error = %e, "upstream connect failed");
            }
            if matches!(failure, Failure::Timeout) {
                stats::inc(&cs.upstream_rq_timeout);
            }
            let r = attempt::reply(failure, hcm);
            finisher.flags |= r.flag;
            if r.upstream_status {
                cs.count_status(r.status.as_u16());
            }
            finisher.overloaded = r.overloaded;
            finisher.grpc_status = r.grpc_status;
            // The request is already in the finisher, as forwarded.
            return local(finisher, None, r.status, r.body, Some(matched));
        }
    };
    let switching = upgrade::accepted(resp.status(), version == Version::Http2);
    if let (true, Some(downstream), Some(u)) = (switching, downstream_upgrade, &upgrade) {
        stats::inc(&hcm.stats.downstream_cx_upgrades_total);
        // An HTTP/1.1 upstream connection now belongs to this tunnel, not to the pool.
        drop(release);
        upgrade::tunnel(downstream, hyper::upgrade::on(&mut resp));
        let (mut rparts, rbody) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers);
        upgrade::to_downstream(&mut rparts, u, downstream_version);
        headers::on_response(&mut rparts.headers, hcm);
        rparts.version = http::Version::default();
        finisher.status = rparts.status.as_u16();
        return Response::from_parts(
            rparts,
            ProxyBody::with_guard(rbody, Guard::new(Box::new(finisher))),
        );
    }
    let (mut rparts, rbody) = resp.into_parts();
    cs.count_status(rparts.status.as_u16());
    stats::inc(&host.stats.rq_success);
    headers::strip_hop_by_hop(&mut rparts.headers);
    if !hcm.suppress_envoy_headers {
        rparts.headers.insert(
            X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
            HeaderValue::from(upstream_start.elapsed().as_millis() as u64),
        );
    }
    if forward.attempt_count.response {
        rparts
            .headers
            .insert(attempt::ATTEMPT_COUNT, HeaderValue::from(tries));
    }
    headers::on_response(&mut rparts.headers, hcm);
    header_levels(
        &mut rparts.headers,
        route_config,
        vhost,
        route,
        weighted_ops,
        Side::Response,
    );
    if let Some(c) = &finisher.cors {
        c.apply(&mut rparts.headers);
    }
    if let Some(cookie) = finisher.set_cookie.take() {
        rparts.headers.append(http::header::SET_COOKIE, cookie);
    }
    if let Some(h) = finisher.ratelimit_headers.take() {
        rparts.headers.extend(h);
    }
    rparts.version = http::Version::default();
    finisher.status = rparts.status.as_u16();
    finisher.release = release;
    if !hcm.access_logs.is_empty() {
        finisher.response_headers = Some(rparts.headers.clone());
    }
    let idle = activity.and_then(|a| {
        a.touch();
        ResponseTimer::new(a, hcm.stream_idle_timeout, deadline, hcm.stats.clone())
    });
    Response::from_parts(
        rparts,
        ProxyBody::response(rbody, Guard::new(Box::new(finisher)), idle),
    )
}
