//! A request body kept so that a retry can send it again. As in Envoy's router, the body still
//! streams to the first attempt as it arrives; a copy of what has passed is kept beside it, up to
//! the route's buffer limit (`per_request_buffer_limit_bytes`). A retry replays the copy, then
//! goes on reading the client where the previous attempt stopped. A body larger than the limit
//! gives up its copy, and with it every later retry (`retry_or_shadow_abandoned`).
//!
//! Attempts run one after the other, so the shared state is locked only inside `poll_frame`,
//! never across an await, and never contended except by an abandoned attempt's connection
//! still polling its body.

use crate::http::body::{BoxError, ProxyBody};
use crate::stats::{self, ClusterStats};
use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::time::Instant;

/// Envoy's buffer limit when a route sets none: the listener's default
/// `per_connection_buffer_limit_bytes`, 1 MiB.
pub const DEFAULT_LIMIT: u32 = 1024 * 1024;

#[derive(Debug)]
enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
}

struct Recording {
    /// The client's body, still arriving.
    source: ProxyBody,
    kept: Vec<Piece>,
    kept_bytes: usize,
    limit: usize,
    /// The copy grew past `limit` and was dropped: nothing can be replayed any more.
    abandoned: bool,
    /// The client's body has ended.
    ended: bool,
    /// The attempt allowed to read; an earlier attempt's body that is still polled fails.
    generation: u32,
    /// When a frame last came from the client: the attempt's idle clock restarts then.
    last_read: Option<Instant>,
    stats: Arc<ClusterStats>,
}

/// The request body of one attempt.
pub struct Replay {
    shared: Arc<Mutex<Recording>>,
    generation: u32,
    /// Frames of the copy this attempt has sent.
    cursor: usize,
}

/// The kept body, from which each attempt takes its own [`Replay`].
#[derive(Clone)]
pub struct KeptBody {
    shared: Arc<Mutex<Recording>>,
}

impl KeptBody {
    pub fn new(source: ProxyBody, limit: u64, stats: Arc<ClusterStats>) -> Self {
        let ended = source.is_end_stream();
        KeptBody {
            shared: Arc::new(Mutex::new(Recording {
                source,
                kept: Vec::new(),
                kept_bytes: 0,
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
                abandoned: false,
                ended,
                generation: 0,
                last_read: None,
                stats,
            })),
        }
    }

    /// The body for the next attempt, or `None` once the copy was abandoned. Any earlier
    /// attempt's body stops reading.
    pub fn replay(&self) -> Option<Replay> {
        let mut r = self.shared.lock().ok()?;
        if r.abandoned {
            return None;
        }
        r.generation = r.generation.wrapping_add(1);
        Some(Replay {
            shared: self.shared.clone(),
            generation: r.generation,
            cursor: 0,
        })
    }

    /// When the client last sent a frame of the body.
    pub fn last_read(&self) -> Option<Instant> {
        self.shared.lock().ok().and_then(|r| r.last_read)
    }

    /// Whether a retry could still send the whole body.
    pub fn replayable(&self) -> bool {
        self.shared.lock().is_ok_and(|r| !r.abandoned)
    }
}

impl Recording {
    fn keep(&mut self, frame: &Frame<Bytes>) {
        if self.abandoned {
            return;
        }
        let kept = if let Some(d) = frame.data_ref() {
            self.kept_bytes += d.len();
            if self.kept_bytes > self.limit {
                self.abandoned = true;
                self.kept = Vec::new();
                stats::inc(&self.stats.retry_or_shadow_abandoned);
                return;
            }
            Piece::Data(d.clone())
        } else if let Some(t) = frame.trailers_ref() {
            Piece::Trailers(t.clone())
        } else {
            return;
        };
        self.kept.push(kept);
    }
}

impl Replay {
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Ok(mut r) = self.shared.lock() else {
            return Poll::Ready(Some(Err("request body lost".into())));
        };
        if r.generation != self.generation {
            return Poll::Ready(Some(Err("request body taken by a retry".into())));
        }
        if let Some(k) = r.kept.get(self.cursor) {
            self.cursor += 1;
            return Poll::Ready(Some(Ok(match k {
                Piece::Data(d) => Frame::data(d.clone()),
                Piece::Trailers(t) => Frame::trailers(t.clone()),
            })));
        }
        if r.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut r.source).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                r.last_read = Some(Instant::now());
                r.keep(frame);
                self.cursor = r.kept.len();
                if r.source.is_end_stream() {
                    r.ended = true;
                }
            }
            Poll::Ready(None) => r.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    pub fn is_end_stream(&self) -> bool {
        self.shared
            .lock()
            .is_ok_and(|r| r.ended && self.cursor >= r.kept.len())
    }

    pub fn size_hint(&self) -> SizeHint {
        let Ok(r) = self.shared.lock() else {
            return SizeHint::default();
        };
        if self.cursor == 0 && r.kept.is_empty() {
            return r.source.size_hint();
        }
        let left: usize = r.kept[self.cursor.min(r.kept.len())..]
            .iter()
            .map(|k| match k {
                Piece::Data(d) => d.len(),
                Piece::Trailers(_) => 0,
            })
            .sum();
        if r.ended {
            SizeHint::with_exact(left as u64)
        } else {
            let source = r.source.size_hint();
            let mut h = SizeHint::new();
            if let Some(u) = source.upper() {
                h.set_upper(u + left as u64);
            }
            h.set_lower(source.lower() + left as u64);
            h
        }
    }
}
