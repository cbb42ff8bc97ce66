//! The end of a request: the proxy's own replies (every one from a `LocalReply` cause), the
//! response side of the filter chain, and the work done when the response's last byte is sent
//! (counters, access log, the upstream connection back to its pool).

use super::{Matched, Side, header_levels};
use crate::access_log::{Entry, RequestInfo, flags};
use crate::cluster::circuit::Priority;
use crate::cluster::{Cluster, Host};
use crate::http::body::{Finish, ProxyBody};
use crate::http::filter::{Completed, Stream};
use crate::http::local_reply::LocalReply;
use crate::http::{Connection, headers, local_reply};
use crate::stats;
use crate::upstream;
use http::{HeaderValue, Response, StatusCode};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

static X_ENVOY_OVERLOADED: http::HeaderName = http::HeaderName::from_static("x-envoy-overloaded");

/// What the end of a request needs: for the access log, the counters, and the pool.
pub(super) struct Finisher {
    pub conn: Connection,
    /// The trusted client address (`use_remote_address`, `xff_num_trusted_hops`).
    pub remote: std::net::SocketAddr,
    pub start: Instant,
    pub start_wall: SystemTime,
    pub protocol: &'static str,
    pub request: Option<RequestInfo>,
    pub response_headers: Option<http::HeaderMap>,
    pub status: u16,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: &'static str,
    pub bytes_received: u64,
    pub cluster: Option<Arc<Cluster>>,
    pub host: Option<Arc<Host>>,
    pub route_name: String,
    /// An HTTP/1.1 connection to give back once its response was read to the end.
    pub release: Option<upstream::Http1>,
    /// The route's priority: which circuit breakers count the request.
    pub priority: Priority,
    /// A hash policy cookie generated for this client.
    pub set_cookie: Option<HeaderValue>,
    /// What the filters and the router share about the request (flags among it).
    pub stream: Stream,
    /// The filters whose request sides ran, a bit each: their response sides run.
    pub filters_ran: u64,
    /// The proxy's own reply closes an HTTP/1 connection: what follows the request on it
    /// cannot be trusted to be another request (a CONNECT not tunnelled, a codec error).
    pub close_connection: bool,
    /// Keeps the connection from idling out until the response is done.
    pub _active: Option<crate::http::conn_idle::Active>,
    /// For filters that count finished requests: the request's authority, and the
    /// response's `grpc-status`.
    pub authority: Option<HeaderValue>,
    pub grpc_status: Option<u16>,
    /// This end of the upstream connection (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub upstream_local: Option<std::net::SocketAddr>,
    /// The request's span, when the connection manager traces.
    pub span: Option<Box<crate::trace::Span>>,
    /// The request's trace ids, sampled or not, for the access logs.
    pub trace: Option<crate::trace::Ids>,
}

impl Finisher {
    /// Keeps the request as it is for the access log, unless it is already kept (as forwarded).
    pub fn keep_request(&mut self, parts: &http::request::Parts) {
        if self.request.is_none() && !self.conn.hcm.access_logs.is_empty() {
            self.request = Some(RequestInfo {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
            });
        }
    }

    /// Runs the filters' response sides over a response about to go to the client.
    pub fn filter_response(&mut self, parts: &mut http::response::Parts) {
        self.conn
            .hcm
            .filters
            .on_response(self.filters_ran, &mut self.stream, parts);
    }
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
                    upstream::release_http1(cluster, host, self.priority, sender);
                }
            } else {
                stats::inc(&cluster.stats.upstream_rq_rx_reset);
            }
        }
        if !complete && self.cluster.is_some() {
            self.stream.flags |= flags::DC;
        }
        if let Some(span) = self.span.take() {
            (*span).finish(&crate::trace::Finished {
                status: self.status,
                flags: self.stream.flags,
                bytes_received: self.bytes_received,
                bytes_sent: bytes,
                cluster: self.cluster.as_ref().map(|c| c.config.name.as_str()),
                shared: &self.conn.shared,
            });
        }
        if hcm.filters.completes {
            hcm.filters.complete(&Completed {
                conn: &self.conn,
                stream: &self.stream,
                status: self.status,
                grpc_status: self.grpc_status,
                duration: self.start.elapsed(),
                bytes_received: self.bytes_received,
                bytes_sent: bytes,
                cluster: self.cluster.as_ref(),
                host: self.host.as_ref(),
                route_name: &self.route_name,
                authority: self.authority.as_ref(),
            });
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
            flags: self.stream.flags,
            details: self.details,
            bytes_received: self.bytes_received,
            bytes_sent: bytes,
            duration: self.start.elapsed(),
            upstream_host: self.host.as_ref().map(|h| h.address),
            upstream_cluster: self.cluster.as_ref().map_or("", |c| c.config.name.as_str()),
            upstream_local: self.upstream_local,
            downstream_remote: self.remote,
            downstream_local: self.conn.local,
            route_name: &self.route_name,
            requested_server_name: self.conn.sni.as_deref(),
            trace: self.trace,
        };
        for log in &hcm.access_logs {
            log.log(&entry, &self.conn.shared);
        }
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if self.stream.grpc {
            self.grpc_status = crate::http::grpc::status(trailers).or(self.grpc_status);
        }
    }
}

/// The proxy's own reply for `cause`: its status, flag, details, counter, body and gRPC
/// status all come from the cause. `parts` is the request for the access log (unless the
/// finisher already holds it, as forwarded); `matched` adds the route's response headers, as
/// Envoy's router does to its own replies.
pub(super) fn reply(
    mut finisher: Finisher,
    parts: Option<&http::request::Parts>,
    cause: LocalReply,
    matched: Option<Matched<'_>>,
) -> Response<ProxyBody> {
    let hcm = finisher.conn.hcm.clone();
    cause.count(&hcm.stats);
    finisher.stream.flags |= cause.flag();
    finisher.details = cause.details();
    if cause.counts_as_upstream()
        && let Some(cluster) = &finisher.cluster
    {
        cluster.stats.count_status(cause.status().as_u16());
    }
    let mut resp = local_reply(cause.status(), cause.body());
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
    if finisher.stream.grpc && (resp.status() != StatusCode::OK || cause.grpc_status().is_some()) {
        resp = crate::http::grpc::local_reply(resp, cause.grpc_status());
    }
    if let LocalReply::Downstream(e) = cause
        && e.closes_connection()
    {
        finisher.close_connection = true;
    }
    if cause.overloaded() && !hcm.suppress_envoy_headers {
        resp.headers_mut()
            .insert(X_ENVOY_OVERLOADED.clone(), HeaderValue::from_static("true"));
    }
    finish_local(finisher, parts, resp)
}

/// Sends a response the proxy made (a local reply, a direct response, a redirect, a CORS
/// preflight) through the filters' response sides and finishes the request at once.
pub(super) fn finish_local(
    mut finisher: Finisher,
    parts: Option<&http::request::Parts>,
    resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let (mut rparts, body) = resp.into_parts();
    finisher.filter_response(&mut rparts);
    headers::on_response(&mut rparts.headers, &finisher.conn.hcm);
    if finisher.close_connection && finisher.protocol.starts_with("HTTP/1") {
        rparts
            .headers
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    finisher.status = rparts.status.as_u16();
    if finisher.stream.grpc {
        finisher.grpc_status = crate::http::grpc::status(&rparts.headers);
    }
    if let Some(parts) = parts {
        finisher.keep_request(parts);
    }
    if !finisher.conn.hcm.access_logs.is_empty() {
        finisher.response_headers = Some(rparts.headers.clone());
    }
    let bytes = match &body {
        ProxyBody::Full(Some(b)) => b.len() as u64,
        _ => 0,
    };
    finisher.finish(true, bytes);
    Response::from_parts(rparts, body)
}
