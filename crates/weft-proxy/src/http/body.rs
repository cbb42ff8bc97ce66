//! The one body type the proxy passes around, so no request needs a boxed body: a client's or
//! an upstream's streaming body, a fixed local reply, or nothing. A `Guard` rides along with a
//! streamed response and does the end-of-request work (access log, counters, returning the
//! upstream connection to its pool) when the last byte is sent or the stream is dropped.

use crate::http::stream_timer::{Activity, Expired, ResponseTimer};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Called once when a proxied stream ends: `complete` is true when the body reached its end.
pub trait Finish: Send {
    fn finish(&mut self, complete: bool, bytes: u64);

    /// The stream's trailers, as they pass.
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}
}

pub struct Guard {
    finish: Option<Box<dyn Finish>>,
    bytes: u64,
}

impl Guard {
    pub fn new(finish: Box<dyn Finish>) -> Self {
        Guard {
            finish: Some(finish),
            bytes: 0,
        }
    }

    fn done(&mut self, complete: bool) {
        if let Some(mut f) = self.finish.take() {
            f.finish(complete, self.bytes);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.done(false);
    }
}

pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    Stream {
        inner: Incoming,
        guard: Option<Guard>,
        /// The stream's activity record: a request body marks it on every frame and at its end.
        activity: Option<Arc<Activity>>,
        /// A response body's `stream_idle_timeout`.
        idle: Option<ResponseTimer>,
        /// A request body's copies for its mirrors.
        tee: Option<crate::http::mirror::Tee>,
        /// A gRPC stream's messages, counted as they pass (the `grpc_stats` filter).
        frames: Option<Box<crate::http::grpc::FrameCounter>>,
    },
    /// A mirrored request's body: the copies of the original's frames.
    Mirrored(crate::http::mirror::Copies),
    /// A request body under a retry policy: what was kept of it, then the rest as it arrives.
    Replay(crate::http::replay::Replay),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        if b.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::Full(Some(b))
        }
    }

    pub fn stream(inner: Incoming) -> Self {
        ProxyBody::Stream {
            inner,
            guard: None,
            activity: None,
            idle: None,
            tee: None,
            frames: None,
        }
    }

    /// A request body on its way upstream, recording its progress in `activity` and copied to
    /// the request's mirrors by `tee`.
    pub fn request(
        inner: Incoming,
        activity: Option<Arc<Activity>>,
        tee: Option<crate::http::mirror::Tee>,
    ) -> Self {
        ProxyBody::Stream {
            inner,
            guard: None,
            activity,
            idle: None,
            tee,
            frames: None,
        }
    }

    pub fn with_guard(inner: Incoming, guard: Guard) -> Self {
        Self::response(inner, guard, None)
    }

    /// A response body on its way downstream; with `idle`, the stream ends with an error once
    /// no bytes moved either way for the timer's duration.
    pub fn response(inner: Incoming, guard: Guard, idle: Option<ResponseTimer>) -> Self {
        ProxyBody::Stream {
            inner,
            guard: Some(guard),
            activity: None,
            idle,
            tee: None,
            frames: None,
        }
    }
}

impl ProxyBody {
    /// Counts the gRPC messages of this body (a streamed one; others carry none to count).
    pub fn count_grpc(&mut self, counter: crate::http::grpc::FrameCounter) {
        if let ProxyBody::Stream { frames, .. } = self {
            *frames = Some(Box::new(counter));
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // An upstream body hyper knows is over (empty, or all of Content-Length read) may never
        // be polled to its end: it still counts as complete, so its connection is reused.
        if let ProxyBody::Stream {
            inner,
            guard: Some(g),
            ..
        } = self
        {
            g.done(inner.is_end_stream());
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Mirrored(copies) => copies.poll_frame(cx),
            ProxyBody::Replay(r) => r.poll_frame(cx),
            ProxyBody::Stream {
                inner,
                guard,
                activity,
                idle,
                tee,
                frames,
            } => match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Pending => {
                    if let Some(expired) = idle.as_mut().and_then(|t| t.poll_expired(cx)) {
                        *idle = None;
                        if let Some(mut g) = guard.take() {
                            g.done(false);
                        }
                        let why = match expired {
                            Expired::MaxDuration => "stream max duration reached",
                            _ => "stream idle timeout",
                        };
                        return Poll::Ready(Some(Err(why.into())));
                    }
                    Poll::Pending
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(f), Some(d)) = (frames.as_mut(), frame.data_ref()) {
                        f.inspect(d);
                    }
                    if let Some(g) = guard.as_mut() {
                        if let Some(d) = frame.data_ref() {
                            g.bytes += d.len() as u64;
                        } else if let (Some(t), Some(f)) = (frame.trailers_ref(), g.finish.as_mut())
                        {
                            f.trailers(t);
                        }
                    }
                    if let Some(t) = idle {
                        t.activity().touch();
                    }
                    if let Some(a) = activity {
                        if inner.is_end_stream() {
                            a.complete_request();
                        } else {
                            a.touch();
                        }
                    }
                    if let Some(t) = tee {
                        t.copy(&frame);
                        if inner.is_end_stream() {
                            t.end();
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    // Mirrors of a broken request are reset with it.
                    *tee = None;
                    if let Some(mut g) = guard.take() {
                        g.done(false);
                    }
                    Poll::Ready(Some(Err(Box::new(e))))
                }
                Poll::Ready(None) => {
                    if let Some(a) = activity {
                        a.complete_request();
                    }
                    if let Some(t) = tee {
                        t.end();
                    }
                    if let Some(mut g) = guard.take() {
                        g.done(true);
                    }
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(d) => d.is_none(),
            ProxyBody::Mirrored(c) => c.is_end_stream(),
            ProxyBody::Replay(r) => r.is_end_stream(),
            ProxyBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            ProxyBody::Mirrored(c) => c.size_hint(),
            ProxyBody::Replay(r) => r.size_hint(),
            ProxyBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}
