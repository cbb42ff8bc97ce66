//! Upstream attempts: one request to one host, and, under a retry policy, more to other hosts
//! until an answer the policy accepts, the retries run out, or the route timeout (which covers
//! every try) expires.

use super::local_reply::LocalReply;
use super::replay::KeptBody;
use crate::cluster::circuit::{Priority, RetrySlot};
use crate::cluster::{Cluster, Discovery, Host};
use crate::http::body::ProxyBody;
use crate::route::retry::{NoAnswer, RetryPolicy};
use crate::stats;
use crate::upstream::{self, Sender, Version};
use http::{HeaderMap, Method, Request, Response, Uri};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(super) const ATTEMPT_COUNT: http::HeaderName =
    http::HeaderName::from_static("x-envoy-attempt-count");

pub(super) enum Failure {
    Connect(upstream::ConnectError),
    Exchange(hyper::Error),
    /// The route timeout.
    Timeout,
    PerTryTimeout,
    /// `per_try_idle_timeout`.
    PerTryIdleTimeout,
    /// A retry found the request body no longer kept (it outgrew the buffer limit).
    BodyAbandoned,
    /// A stream timer expired; whether the request had fully arrived.
    Stream(super::stream_timer::Expired, bool),
}

/// An upstream's answer, with the HTTP/1.1 connection to give back once it is read.
pub(super) type Answer = (Response<Incoming>, Option<upstream::Http1>);

/// How the attempts ended, beyond their outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The policy accepted the outcome, or there was no policy.
    Done,
    /// The retries ran out on a retriable outcome (flag URX).
    Exhausted,
    /// A retry was called for but the circuit breakers refused it (flag UO).
    Overflow,
}

/// What a retry needs to send the request again: its head, and its body as far as it was kept.
pub(super) struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    /// `None` for a request without a body.
    pub body: Option<KeptBody>,
}

impl Head {
    /// The request for one more attempt; `None` when its body can no longer be replayed.
    fn request(&self) -> Option<Request<ProxyBody>> {
        let body = match &self.body {
            None => ProxyBody::Empty,
            Some(kept) => ProxyBody::Replay(kept.replay()?),
        };
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        Some(r)
    }

    fn replayable(&self) -> bool {
        self.body.as_ref().is_none_or(KeptBody::replayable)
    }
}

pub(super) struct Attempts<'a> {
    pub cluster: &'a Arc<Cluster>,
    pub version: Version,
    /// When the route timeout expires.
    pub deadline: Option<Instant>,
    /// The policy, and the head to resend; `None` when the request cannot be retried.
    pub retry: Option<(&'a RetryPolicy, Head)>,
    pub request_hash: Option<u64>,
    pub priority: Priority,
    /// `include_request_attempt_count`: each attempt carries `x-envoy-attempt-count`.
    pub attempt_count_header: bool,
}

/// One request on a connection from the host's pool.
async fn exchange(
    a: &Attempts<'_>,
    host: &Arc<Host>,
    request: Request<ProxyBody>,
) -> Result<Answer, Failure> {
    match upstream::checkout(a.cluster, host, a.version, a.priority)
        .await
        .map_err(Failure::Connect)?
    {
        Sender::Http1(mut c) => {
            let mut resp = c
                .sender
                .send_request(request)
                .await
                .map_err(Failure::Exchange)?;
            if let Some(local) = c.local {
                resp.extensions_mut().insert(upstream::UpstreamLocal(local));
            }
            Ok((resp, Some(c)))
        }
        Sender::Http2(mut s, local) => {
            let mut resp = s.send_request(request).await.map_err(Failure::Exchange)?;
            if let Some(local) = local {
                resp.extensions_mut().insert(upstream::UpstreamLocal(local));
            }
            Ok((resp, None))
        }
    }
}

/// One request to one host, within `timeout`.
async fn once(
    a: &Attempts<'_>,
    host: &Arc<Host>,
    request: Request<ProxyBody>,
    timeout: Option<(Duration, Failure)>,
) -> Result<Answer, Failure> {
    // The peak EWMA balancer learns each host's latency from its answers.
    let measured = async {
        let sent = Instant::now();
        let answer = exchange(a, host, request).await;
        if let (Ok(_), crate::cluster::LbPolicy::PeakEwma { decay }) =
            (&answer, a.cluster.config.lb_policy)
        {
            host.latency.observe(sent.elapsed(), decay);
        }
        answer
    };
    let bounded = async {
        match timeout {
            Some((t, on_expiry)) => tokio::time::timeout(t, measured)
                .await
                .unwrap_or(Err(on_expiry)),
            None => measured.await,
        }
    };
    let idle = a
        .retry
        .as_ref()
        .and_then(|(p, head)| Some((p.per_try_idle_timeout?, head.body.as_ref())));
    match idle {
        Some((idle, body)) => tokio::select! {
            outcome = bounded => outcome,
            () = idle_expired(idle, body) => Err(Failure::PerTryIdleTimeout),
        },
        None => bounded.await,
    }
}

/// Resolves once an attempt has been `idle` long with nothing from the client's body (nor an
/// answer, which ends the wait first).
async fn idle_expired(idle: Duration, body: Option<&KeptBody>) {
    let began = Instant::now();
    loop {
        let last = body
            .and_then(KeptBody::last_read)
            .map_or(began, |l| l.max(began));
        if Instant::now() >= last + idle {
            return;
        }
        tokio::time::sleep_until(last + idle).await;
    }
}

/// Why an attempt that got no answer failed, in retry terms.
fn no_answer(f: &Failure) -> Option<NoAnswer> {
    match f {
        // Envoy never retries a request the circuit breakers refused.
        Failure::Connect(upstream::ConnectError::Overflow) => None,
        Failure::Connect(_) => Some(NoAnswer::ConnectFailure),
        Failure::PerTryTimeout | Failure::PerTryIdleTimeout => Some(NoAnswer::PerTryTimeout),
        // The client's own body failed (a malformed chunk, a reset): not the upstream's doing.
        Failure::Exchange(e) if e.is_user() => None,
        Failure::Exchange(e) => {
            // h2 reports the peer's REFUSED_STREAM in its error's text.
            let refused = format!("{e:?}").contains("REFUSED_STREAM");
            // hyper hands back as canceled a request its connection closed before sending.
            let unsent = e.is_canceled();
            Some(NoAnswer::Reset { refused, unsent })
        }
        Failure::Timeout | Failure::Stream(..) | Failure::BodyAbandoned => None,
    }
}

/// Tells outlier detection what the attempt met (not when the circuit breakers refused it, or
/// the client went away).
fn report(cluster: &Cluster, host: &Host, outcome: &Result<Answer, Failure>) {
    use crate::cluster::outlier::Outcome;
    if cluster.outlier.is_none() {
        return;
    }
    let what = match outcome {
        Ok((resp, _)) => Outcome::Status(resp.status().as_u16()),
        Err(
            Failure::Connect(upstream::ConnectError::Overflow)
            | Failure::Stream(..)
            | Failure::BodyAbandoned,
        ) => {
            return;
        }
        // A request whose body the client broke says nothing about the host.
        Err(Failure::Exchange(e)) if e.is_user() => return,
        Err(Failure::Connect(_) | Failure::Exchange(_)) => Outcome::ConnectFailed,
        Err(Failure::Timeout | Failure::PerTryTimeout | Failure::PerTryIdleTimeout) => {
            Outcome::Timeout
        }
    };
    cluster.report(host, what);
}

/// Another host for a retry: with previous_hosts, one not tried yet if host selection finds
/// one within its attempts.
fn next_host(
    a: &Attempts<'_>,
    policy: &RetryPolicy,
    tried: &[Arc<Host>],
    last: &Arc<Host>,
) -> Option<Arc<Host>> {
    if a.cluster.config.discovery == Discovery::OriginalDst {
        return Some(last.clone());
    }
    let hosts = a.cluster.hosts.load_full();
    let mut pick = None;
    for _ in 0..policy.host_selection_max_attempts.max(1) {
        let candidate = hosts.choose_hashed(a.request_hash).cloned();
        let fresh = candidate
            .as_ref()
            .is_some_and(|c| !tried.iter().any(|t| Arc::ptr_eq(t, c)));
        pick = candidate;
        if !policy.avoid_previous_hosts || fresh {
            break;
        }
    }
    pick
}

/// Sends `request` to `host`, retrying as the policy and the circuit breakers allow. Returns the
/// final outcome, the host that gave it, and how the attempts ended.
///
/// `host` follows the attempts, so that whoever stops waiting early knows which host holds the
/// request's place in `active_requests`.
/// `attempts` counts the attempts made, for `x-envoy-attempt-count`.
pub(super) async fn send(
    a: Attempts<'_>,
    host: &mut Arc<Host>,
    attempts: &mut u32,
    request: Request<ProxyBody>,
) -> (Result<Answer, Failure>, Ended) {
    let cs = &a.cluster.stats;
    let resources = a.cluster.breakers.at(a.priority);
    let limits = a.cluster.config.circuit_breakers.thresholds(a.priority);
    let mut request = Some(request);
    let mut tried: Vec<Arc<Host>> = Vec::new();
    let mut retries = 0u32;
    // Whether any attempt has sent bytes upstream (for `reset-before-request`).
    let mut started = false;
    // The retry in flight holds its place under max_retries (or the budget) until the next
    // decision, as Envoy's retry state does.
    let mut _slot: Option<RetrySlot<'_>> = None;
    loop {
        // The first attempt sends the request itself; a retry, which only a policy with a head
        // to resend makes, sends the head again with the body kept so far.
        let next = request
            .take()
            .or_else(|| a.retry.as_ref().and_then(|(_, head)| head.request()));
        let Some(mut req) = next else {
            // The body outgrew its limit while the retry backed off.
            return (Err(Failure::BodyAbandoned), Ended::Done);
        };
        *attempts += 1;
        if a.attempt_count_header {
            req.headers_mut()
                .insert(ATTEMPT_COUNT, http::HeaderValue::from(*attempts));
        }
        let now = Instant::now();
        let route_left = a.deadline.map(|d| d.saturating_duration_since(now));
        let per_try = a.retry.as_ref().and_then(|(p, _)| p.per_try_timeout);
        let timeout = match (route_left, per_try) {
            (Some(r), Some(p)) if p < r => Some((p, Failure::PerTryTimeout)),
            (Some(r), _) => Some((r, Failure::Timeout)),
            (None, Some(p)) => Some((p, Failure::PerTryTimeout)),
            (None, None) => None,
        };
        let outcome = once(&a, host, req, timeout).await;
        report(a.cluster, host, &outcome);
        match outcome {
            Err(Failure::PerTryTimeout) => stats::inc(&cs.upstream_rq_per_try_timeout),
            Err(Failure::PerTryIdleTimeout) => stats::inc(&cs.upstream_rq_per_try_idle_timeout),
            _ => {}
        }
        let Some((policy, head)) = &a.retry else {
            return (outcome, Ended::Done);
        };
        // A body too large to keep gives up every retry, as Envoy resets its retry state.
        if !head.replayable() {
            return (outcome, Ended::Done);
        }
        _slot = None;
        let retriable = match &outcome {
            Ok((resp, _)) => policy.retries_response(resp.status(), resp.headers()),
            Err(f) => no_answer(f).is_some_and(|w| policy.retries_failure(w, started)),
        };
        started |= match &outcome {
            Ok(_) => true,
            Err(f) => !matches!(
                no_answer(f),
                Some(NoAnswer::ConnectFailure | NoAnswer::Reset { unsent: true, .. })
            ),
        };
        if !retriable {
            if retries > 0 && outcome.is_ok() {
                stats::inc(&cs.upstream_rq_retry_success);
            }
            return (outcome, Ended::Done);
        }
        if retries >= policy.num_retries {
            stats::inc(&cs.upstream_rq_retry_limit_exceeded);
            return (outcome, Ended::Exhausted);
        }
        let Some(taken) = RetrySlot::take(resources, limits) else {
            stats::inc(&cs.upstream_rq_retry_overflow);
            return (outcome, Ended::Overflow);
        };
        _slot = Some(taken);
        tried.push(host.clone());
        let Some(next) = next_host(&a, policy, &tried, host) else {
            return (outcome, Ended::Exhausted);
        };
        // This attempt is over. As in Envoy, only the answer that goes back to the client
        // counts in upstream_rq_<code>; a failed host counts an error.
        if outcome.is_err() {
            stats::inc(&host.stats.rq_error);
        }
        drop(outcome);
        retries += 1;
        stats::inc(&cs.upstream_rq_retry);
        stats::inc(&cs.upstream_rq_retry_backoff_exponential);
        let pause = policy.backoff(retries);
        match a.deadline {
            Some(d) if Instant::now() + pause >= d => {
                tokio::time::sleep_until(d).await;
                return (Err(Failure::Timeout), Ended::Done);
            }
            _ => tokio::time::sleep(pause).await,
        }
        stats::dec(&host.active_requests);
        stats::inc(&next.active_requests);
        stats::inc(&next.stats.rq_total);
        stats::inc(&cs.upstream_rq_total);
        *host = next;
    }
}

impl Failure {
    /// Whether the host's request errors count it: not when the client broke its own body.
    pub(super) fn is_upstreams(&self) -> bool {
        !matches!(self, Failure::Exchange(e) if e.is_user())
    }

    /// Why the proxy answers itself when the attempts got no response.
    pub(super) fn cause(&self) -> LocalReply {
        use super::stream_timer::Expired;
        match self {
            Failure::Connect(e) => LocalReply::from(e),
            Failure::Timeout => LocalReply::UpstreamTimeout,
            Failure::PerTryTimeout => LocalReply::PerTryTimeout,
            Failure::PerTryIdleTimeout => LocalReply::PerTryIdleTimeout,
            Failure::Exchange(e) if e.is_user() => {
                LocalReply::Downstream(super::local_reply::DownstreamError::Codec)
            }
            Failure::Exchange(e) if e.is_parse() => LocalReply::UpstreamProtocolError,
            Failure::Exchange(_) => LocalReply::UpstreamReset,
            Failure::BodyAbandoned => LocalReply::RetryBufferExceeded,
            Failure::Stream(expired, request_complete) => {
                let request_complete = *request_complete;
                match expired {
                    Expired::Idle => LocalReply::StreamIdleTimeout { request_complete },
                    Expired::Request => LocalReply::RequestTimeout { request_complete },
                    Expired::MaxDuration => LocalReply::MaxStreamDuration { request_complete },
                }
            }
        }
    }
}
