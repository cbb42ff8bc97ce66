//! The router: picks the route, runs the connection manager's filter chain, then answers
//! locally (direct response, redirect, or a `LocalReply`) or forwards to a host of the route's
//! cluster (`forward`). Every reply and response ends in `finish`.

mod finish;
mod forward;

use super::filter::{Answer, Levels, RequestContext, Step, Stream};
use super::local_reply::LocalReply;
use super::{Connection, RouteSource, headers, upgrade};
use crate::cluster::Cluster;
use crate::cluster::circuit::Priority;
use crate::http::body::ProxyBody;
use crate::route::{
    Action, Forward, HeaderOps, PathMatch, RequestView, Route, RouteConfig, VirtualHost,
    apply_header_ops,
};
use crate::stats;
use finish::{Finisher, finish_local, reply};
use http::header::LOCATION;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

/// What the route table gives a request.
enum Selected<'a> {
    /// No virtual host, or no route in it.
    None,
    /// `require_tls` on the virtual host, and the request did not come over TLS.
    TlsRedirect,
    Route(&'a VirtualHost, &'a Route),
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
    let checked = super::request_check::check(&mut parts, &hcm, &conn.shared.codec);
    let remote = headers::on_request(
        &mut parts.headers,
        &hcm,
        conn.peer,
        conn.shared.local_address,
        conn.tls,
        conn.client_cert.as_ref(),
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
        details: "",
        bytes_received: 0,
        cluster: None,
        host: None,
        route_name: String::new(),
        release: None,
        priority: Priority::Default,
        set_cookie: None,
        stream: Stream {
            grpc: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")),
            ..Stream::default()
        },
        filters_ran: 0,
        close_connection: parts.method == http::Method::CONNECT,
        _active: conn.idle.as_ref().map(|t| t.begin()),
        authority: conn
            .hcm
            .filters
            .completes
            .then(|| {
                parts.headers.get(http::header::HOST).cloned().or_else(|| {
                    let a = parts.uri.authority()?;
                    HeaderValue::from_str(a.as_str()).ok()
                })
            })
            .flatten(),
        grpc_status: None,
        upstream_local: None,
        span: None,
        trace: None,
    };
    let authority = match checked {
        Ok(authority) => authority,
        // What the codec refuses is logged without the request, as Envoy logs it.
        Err(LocalReply::Downstream(e)) if e.by_codec() => {
            return reply(finisher, None, LocalReply::Downstream(e), None);
        }
        Err(cause) => return reply(finisher, Some(&parts), cause, None),
    };
    // Envoy refuses an upgrade the connection manager does not list, before any filter.
    if upgrade::requested(&parts)
        .is_some_and(|t| !hcm.upgrades.iter().any(|u| u.eq_ignore_ascii_case(&t)))
    {
        return reply(finisher, Some(&parts), LocalReply::UpgradeRefused, None);
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let (path, query) = split_query(&path_and_query);
    // One snapshot for the whole request: the route table (from RDS) and the clusters it
    // names always come from the same config. An RDS table that has not arrived yet routes
    // nothing, as in Envoy.
    let snapshot = conn.shared.snapshot.load_full();
    let route_config = match &hcm.route {
        RouteSource::Static(rc) => Some(rc.clone()),
        RouteSource::Rds { name, .. } => snapshot.routes.get(name).cloned(),
    };
    // Kept apart from `parts`, which the filters may change; no allocation for http(s).
    let scheme: std::borrow::Cow<'static, str> = match parts.uri.scheme_str() {
        None | Some("http") => "http".into(),
        Some("https") => "https".into(),
        Some(other) => other.to_string().into(),
    };
    if let Some(tracer) = &hcm.tracer {
        let line = crate::trace::RequestLine {
            method: parts.method.as_str(),
            scheme: &scheme,
            authority: &authority,
            path: &path_and_query,
            protocol,
            peer: finisher.remote,
        };
        finisher.span = tracer.start(&mut parts.headers, &line, &mut finisher.trace);
    }
    let selected = match route_config.as_deref() {
        None => Selected::None,
        Some(rc) => {
            let view = RequestView {
                method: parts.method.as_str(),
                scheme: &scheme,
                authority: &authority,
                path,
                query,
                path_and_query: &path_and_query,
                headers: &parts.headers,
            };
            select(rc, &view, &parts.headers)
        }
    };
    // The filters, in their order, with the per-filter configs of what the request matched.
    let levels = match (&selected, route_config.as_deref()) {
        (Selected::Route(vhost, route), Some(rc)) => Levels([
            Some(&route.filter_overrides),
            Some(&vhost.filter_overrides),
            Some(&rc.filter_overrides),
        ]),
        _ => Levels::default(),
    };
    if let Selected::Route(_, route) = &selected {
        finisher.route_name.clone_from(&route.name);
    }
    if !hcm.filters.filters.is_empty() {
        let mut cx = RequestContext {
            head: &mut parts,
            conn: &conn,
            stream: &mut finisher.stream,
            remote: finisher.remote,
        };
        let mut step = hcm.filters.run(&mut cx, levels, 0, 0, None);
        let decoded = loop {
            match step {
                Step::Done(d) => break d,
                Step::Paused { index, ran, wait } => {
                    let decided = wait.await;
                    step = hcm.filters.run(&mut cx, levels, index, ran, Some(decided));
                }
            }
        };
        finisher.filters_ran = decoded.ran;
        match decoded.answer {
            None => {}
            Some(Answer::Reply(cause)) => return reply(finisher, Some(&parts), cause, None),
            Some(Answer::Respond(resp, details)) => {
                finisher.details = details;
                return finish_local(finisher, Some(&parts), *resp);
            }
        }
    }
    let (route_config, vhost, route) = match (selected, route_config.as_deref()) {
        (Selected::Route(vhost, route), Some(rc)) => (rc, vhost, route),
        (Selected::TlsRedirect, _) => {
            // Envoy's answer to `require_tls`: 301 to the same host and path over https.
            stats::inc(&s.rq_redirect);
            let location = format!("https://{authority}{path_and_query}");
            let Ok(location) = HeaderValue::from_str(&location) else {
                let cause = LocalReply::BadRequest {
                    details: "invalid_redirect",
                };
                return reply(finisher, Some(&parts), cause, None);
            };
            let mut resp = Response::new(ProxyBody::Empty);
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            resp.headers_mut().insert(LOCATION, location);
            finisher.details = "direct_response";
            return finish_local(finisher, Some(&parts), resp);
        }
        _ => return reply(finisher, Some(&parts), LocalReply::NoRoute, None),
    };
    // Direct responses and redirects are the proxy's own replies, with the route's headers.
    let mut resp = match &route.action {
        Action::Direct {
            status,
            body: reply_body,
        } => {
            stats::inc(&s.rq_direct_response);
            let mut resp =
                Response::new(reply_body.clone().map_or(ProxyBody::Empty, ProxyBody::full));
            *resp.status_mut() = *status;
            if reply_body.is_some() {
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
            let location =
                super::redirect::location(redirect, route, &scheme, &authority, path, query);
            let Ok(location) = HeaderValue::from_str(&location) else {
                let cause = LocalReply::BadRequest {
                    details: "invalid_redirect",
                };
                return reply(finisher, Some(&parts), cause, None);
            };
            resp.headers_mut().insert(LOCATION, location);
            resp
        }
        Action::Forward(forward) => {
            let matched = Matched {
                clusters: &snapshot.clusters,
                config: route_config,
                vhost,
                route,
                forward,
            };
            return forward::forward_request(
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
        route_config,
        vhost,
        route,
        None,
        Side::Response,
    );
    finisher.details = "direct_response";
    finish_local(finisher, Some(&parts), resp)
}

/// The route for a request, Envoy's way: virtual host by authority, then the first route that
/// matches; a virtual host that requires TLS redirects a request that came without it.
fn select<'a>(
    rc: &'a RouteConfig,
    view: &RequestView<'_>,
    headers: &http::HeaderMap,
) -> Selected<'a> {
    // A CONNECT matches only routes with a `connect_matcher`, which the proxy does not support
    // (an extended CONNECT has become the GET it stands for by now).
    if view.method == "CONNECT" {
        return Selected::None;
    }
    let Some(vhost) = rc.virtual_host(view.authority) else {
        return Selected::None;
    };
    if let Some(require) = vhost.require_tls
        && super::redirect::needs_tls_redirect(require, headers)
    {
        return Selected::TlsRedirect;
    }
    match vhost.route(view) {
        Some(route) => Selected::Route(vhost, route),
        None => Selected::None,
    }
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
