//! Request mirroring (`request_mirror_policies`): for the share of requests a policy's
//! `runtime_fraction` names, a copy goes to the policy's cluster with `-shadow` appended to its
//! host, and its answer is thrown away. A mirror never delays or fails the original: it runs on
//! a task of its own, and a mirror that takes the request body slower than the original is
//! abandoned (reset) rather than waited for.

use super::attempt::{self, Attempts};
use crate::cluster::circuit::Priority;
use crate::cluster::{Cluster, Discovery};
use crate::http::body::{BoxError, ProxyBody};
use crate::stats;
use crate::upstream::{self, Version};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct MirrorPolicy {
    pub cluster: String,
    /// `runtime_fraction`'s default value, per million (all requests when unset).
    pub per_million: u32,
    /// Append `-shadow` to the host (unless `disable_shadow_host_suffix_append`).
    pub shadow_suffix: bool,
}

/// Body frames a mirror may fall behind the original before it is abandoned.
const BACKLOG: usize = 64;

#[derive(Debug)]
enum Copy {
    Frame(Frame<Bytes>),
    End,
}

/// The original request body's side: every frame is copied to each mirror still keeping up.
#[derive(Debug, Default)]
pub struct Tee {
    copies: Vec<mpsc::Sender<Copy>>,
}

impl Tee {
    pub fn copy(&mut self, frame: &Frame<Bytes>) {
        self.copies.retain(|tx| {
            let copy = if let Some(d) = frame.data_ref() {
                Frame::data(d.clone())
            } else if let Some(t) = frame.trailers_ref() {
                Frame::trailers(t.clone())
            } else {
                return true;
            };
            tx.try_send(Copy::Frame(copy)).is_ok()
        });
    }

    pub fn end(&mut self) {
        for tx in self.copies.drain(..) {
            let _ = tx.try_send(Copy::End);
        }
    }
}

/// A mirror's body: the copies. It ends when the original did; if the copies stop before
/// that (the mirror fell behind, or the original broke), it fails, so the mirror is reset
/// instead of sending a truncated request.
#[derive(Debug)]
pub struct Copies {
    rx: mpsc::Receiver<Copy>,
    ended: bool,
}

impl Copies {
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Copy::Frame(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(Some(Copy::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(
                    "the original request's body was not copied whole".into(),
                )))
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.ended
    }

    pub fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::default()
    }
}

/// `host` with `-shadow` before its port, as Envoy writes a mirror's host.
pub fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

/// What the mirrors of one request copy: the request as it goes upstream.
pub(super) struct Original<'a> {
    pub head: &'a http::request::Parts,
    pub authority: &'a str,
    pub path_and_query: &'a str,
    /// The request has no body to copy.
    pub bodiless: bool,
    pub timeout: Option<Duration>,
}

/// Starts the mirrors `policies` pick for this request; the returned tee (when the request
/// has a body) is what feeds their bodies.
pub(super) fn start(
    policies: &[MirrorPolicy],
    clusters: &HashMap<String, Arc<Cluster>>,
    original: &Original<'_>,
) -> Option<Tee> {
    let mut tee = Tee::default();
    for policy in policies {
        if !super::filter::fault::rolls(policy.per_million) {
            continue;
        }
        let Some(cluster) = clusters.get(&policy.cluster) else {
            tracing::debug!(cluster = %policy.cluster, "mirror cluster not found");
            continue;
        };
        let body = if original.bodiless {
            ProxyBody::Empty
        } else {
            let (tx, rx) = mpsc::channel(BACKLOG);
            tee.copies.push(tx);
            ProxyBody::Mirrored(Copies { rx, ended: false })
        };
        let authority = if policy.shadow_suffix {
            shadow_host(original.authority)
        } else {
            original.authority.to_string()
        };
        if let Some(request) = shadow_request(cluster, original, &authority, body) {
            let cluster = cluster.clone();
            let deadline = original.timeout.map(|t| tokio::time::Instant::now() + t);
            tokio::spawn(send(cluster, request, deadline));
        }
    }
    (!tee.copies.is_empty()).then_some(tee)
}

fn shadow_request(
    cluster: &Cluster,
    original: &Original<'_>,
    authority: &str,
    body: ProxyBody,
) -> Option<(Request<ProxyBody>, Version)> {
    // Envoy sends mirrors from a client of its own, with no downstream protocol to follow: a
    // cluster that would follow the client's speaks HTTP/1.1 to mirrors.
    let version = super::upstream_head::version(cluster, http::Version::HTTP_11);
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = original.head.method.clone();
    head.uri = super::upstream_head::uri(version, authority, original.path_and_query).ok()?;
    head.headers = original.head.headers.clone();
    if !super::upstream_head::address(version, &mut head.version, &mut head.headers, authority) {
        return None;
    }
    let request = Request::from_parts(head, body);
    Some((request, version))
}

/// Sends one mirror and reads its answer to the end, counting it on its cluster as Envoy does.
async fn send(
    cluster: Arc<Cluster>,
    (request, version): (Request<ProxyBody>, Version),
    deadline: Option<tokio::time::Instant>,
) {
    let hosts = cluster.hosts.load_full();
    let chosen = if cluster.config.discovery == Discovery::OriginalDst {
        None
    } else {
        hosts.choose_hashed(None).cloned()
    };
    drop(hosts);
    let cs = &cluster.stats;
    let Some(mut host) = chosen else {
        stats::inc(&cs.upstream_cx_none_healthy);
        return;
    };
    // A mirror is a request to its cluster like any other: max_requests holds for it too.
    if !cluster.admit_request(Priority::Default) {
        cs.count_status(503);
        return;
    }
    stats::inc(&cs.upstream_rq_total);
    stats::inc(&cs.upstream_rq_active);
    stats::inc(&host.active_requests);
    stats::inc(&host.stats.rq_total);
    let attempts = Attempts {
        cluster: &cluster,
        version,
        deadline,
        retry: None,
        request_hash: None,
        priority: Priority::Default,
        attempt_count_header: false,
    };
    let (outcome, _) = attempt::send(attempts, &mut host, &mut 0, request).await;
    match outcome {
        Ok((resp, release)) => {
            cs.count_status(resp.status().as_u16());
            let complete = resp.into_body().collect().await.is_ok();
            if let (true, Some(sender)) = (complete, release) {
                upstream::release_http1(&cluster, &host, Priority::Default, sender);
            }
        }
        Err(_) => stats::inc(&host.stats.rq_error),
    }
    cluster.release_request(Priority::Default);
    stats::dec(&cs.upstream_rq_active);
    stats::dec(&host.active_requests);
    stats::inc(&cs.upstream_rq_completed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host("website"), "website-shadow");
        assert_eq!(shadow_host("website:8080"), "website-shadow:8080");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow_host("[::1]"), "[::1]-shadow");
    }
}
