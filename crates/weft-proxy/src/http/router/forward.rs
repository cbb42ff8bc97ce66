//! Forwarding a routed request to a host of its cluster: cluster and host choice, rewrites,
//! the upstream head, mirrors, retries, and the response on its way back.

use super::finish::{Finisher, reply};
use super::{Matched, Side, header_levels, rewrite_prefix, split_query};
use crate::access_log::flags;
use crate::cluster::Discovery;
use crate::http::attempt::{self, Failure};
use crate::http::body::{Guard, ProxyBody};
use crate::http::local_reply::LocalReply;
use crate::http::replay::KeptBody;
use crate::http::stream_timer::{Activity, ResponseTimer};
use crate::http::{Connection, headers, mirror, upgrade, upstream_head};
use crate::route::{ClusterTarget, hash_policy};
use crate::stats;
use crate::upstream::Version;
use http::{HeaderValue, Request, Response};
use hyper::body::{Body as _, Incoming};
use std::sync::Arc;
use tokio::time::Instant;

static X_ENVOY_UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static X_ENVOY_ORIGINAL_PATH: http::HeaderName =
    http::HeaderName::from_static("x-envoy-original-path");

pub(super) async fn forward_request(
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
        let cause = LocalReply::ClusterNotFound(forward.cluster_not_found);
        return reply(finisher, Some(&parts), cause, Some(matched));
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
        let cause = LocalReply::NoHealthyUpstream;
        return reply(finisher, Some(&parts), cause, Some(matched));
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
    let timeout = forward.timeout_for(finisher.stream.grpc, &parts.headers);
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
        let cause = LocalReply::BadRequest {
            details: "invalid_upstream_uri",
        };
        return reply(finisher, Some(&parts), cause, Some(matched));
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
    finisher.keep_request(&parts);

    // max_requests: a request past it is dropped before it reaches the host.
    if !cluster.admit_request(forward.priority) {
        cluster
            .stats
            .count_status(LocalReply::Overflow.status().as_u16());
        return reply(finisher, None, LocalReply::Overflow, Some(matched));
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
    if let Some(counts) = &finisher.stream.grpc_messages {
        body.count_grpc(crate::http::grpc::FrameCounter::new(counts.clone(), false));
    }
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
        deadline: timeout.map(|t| Instant::now() + t),
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
        attempt::Ended::Exhausted => finisher.stream.flags |= flags::URX,
        attempt::Ended::Overflow => finisher.stream.flags |= flags::UO,
    }
    let (mut resp, release) = match outcome {
        Ok(r) => r,
        Err(failure) => {
            if failure.is_upstreams() {
                stats::inc(&host.stats.rq_error);
            }
            if let Failure::Connect(e) = &failure {
                tracing::debug!(cluster = %cluster.config.name, host = %host.address, error = %e, "upstream connect failed");
            }
            if matches!(failure, Failure::Timeout) {
                stats::inc(&cs.upstream_rq_timeout);
            }
            // The request is already in the finisher, as forwarded.
            return reply(finisher, None, failure.cause(), Some(matched));
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
        finisher.filter_response(&mut rparts);
        headers::on_response(&mut rparts.headers, hcm);
        rparts.version = http::Version::default();
        finisher.status = rparts.status.as_u16();
        finisher.details = "via_upstream";
        return Response::from_parts(
            rparts,
            ProxyBody::with_guard(rbody, Guard::new(Box::new(finisher))),
        );
    }
    let (mut rparts, rbody) = resp.into_parts();
    finisher.upstream_local = rparts
        .extensions
        .get::<crate::upstream::UpstreamLocal>()
        .map(|l| l.0);
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
    finisher.filter_response(&mut rparts);
    if let Some(cookie) = finisher.set_cookie.take() {
        rparts.headers.append(http::header::SET_COOKIE, cookie);
    }
    rparts.version = http::Version::default();
    finisher.status = rparts.status.as_u16();
    if finisher.stream.grpc {
        finisher.grpc_status = crate::http::grpc::status(&rparts.headers);
    }
    finisher.details = "via_upstream";
    finisher.release = release;
    if !hcm.access_logs.is_empty() {
        finisher.response_headers = Some(rparts.headers.clone());
    }
    let idle = activity.and_then(|a| {
        a.touch();
        ResponseTimer::new(a, hcm.stream_idle_timeout, deadline, hcm.stats.clone())
    });
    let counter = finisher
        .stream
        .grpc_messages
        .as_ref()
        .map(|c| crate::http::grpc::FrameCounter::new(c.clone(), true));
    let mut body = ProxyBody::response(rbody, Guard::new(Box::new(finisher)), idle);
    if let Some(counter) = counter {
        body.count_grpc(counter);
    }
    Response::from_parts(rparts, body)
}
