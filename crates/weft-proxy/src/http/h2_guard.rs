//! Envoy's HTTP/2 flood protections on a downstream connection, enforced by reading the frame
//! headers as the bytes pass to the HTTP/2 codec (hyper's h2 keeps no count of these):
//!
//! - a burst of more than `max_outbound_control_frames` (1000) frames that each demand an answer
//!   (PING, SETTINGS) closes the connection, as Envoy closes it when the answers queue up. Envoy
//!   reads a burst whole before it writes; here a burst is what arrives with no pause in the
//!   socket's readiness, the same thing seen from the reading side;
//! - more than `max_consecutive_inbound_frames_with_empty_payload` (1) HEADERS, CONTINUATION or
//!   DATA frames in a row with no payload and no END_STREAM close it.
//!
//! Connections that do not start with the HTTP/2 preface pass through untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The limits, from `http2_protocol_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimits {
    pub max_outbound_control_frames: u32,
    pub max_consecutive_inbound_frames_with_empty_payload: u32,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            max_outbound_control_frames: 1000,
            max_consecutive_inbound_frames_with_empty_payload: 1,
        }
    }
}

#[derive(Debug)]
enum State {
    /// How much of the preface has been seen.
    Preface(usize),
    /// Reading frames: the header bytes gathered so far, then the payload bytes still to skip.
    Frames {
        header: [u8; 9],
        have: usize,
        skip: usize,
    },
    /// Not HTTP/2, or given up on: pass everything through.
    Off,
}

pub struct H2Guard<I> {
    inner: I,
    state: State,
    limits: FloodLimits,
    /// Frames demanding an answer in the current burst.
    control_burst: u32,
    /// Empty frames in a row.
    empty_run: u32,
    shared: Arc<crate::server::ServerState>,
}

impl<I> H2Guard<I> {
    pub fn new(inner: I, limits: FloodLimits, shared: Arc<crate::server::ServerState>) -> Self {
        H2Guard {
            inner,
            state: State::Preface(0),
            limits,
            control_burst: 0,
            empty_run: 0,
            shared,
        }
    }

    /// Reads the frame headers in `bytes`; `Err` when a limit is passed.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), &'static str> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return Ok(()),
                State::Preface(seen) => {
                    let n = (PREFACE.len() - *seen).min(bytes.len());
                    if bytes[..n] != PREFACE[*seen..*seen + n] {
                        self.state = State::Off;
                        return Ok(());
                    }
                    *seen += n;
                    bytes = &bytes[n..];
                    if *seen == PREFACE.len() {
                        self.state = State::Frames {
                            header: [0; 9],
                            have: 0,
                            skip: 0,
                        };
                    }
                }
                State::Frames { header, have, skip } => {
                    if *skip > 0 {
                        let n = (*skip).min(bytes.len());
                        *skip -= n;
                        bytes = &bytes[n..];
                        continue;
                    }
                    let n = (9 - *have).min(bytes.len());
                    header[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have < 9 {
                        continue;
                    }
                    let length = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    let (kind, flags) = (header[3], header[4]);
                    *have = 0;
                    *skip = length;
                    self.frame(kind, flags, length)?;
                }
            }
        }
        Ok(())
    }

    fn frame(&mut self, kind: u8, flags: u8, length: usize) -> Result<(), &'static str> {
        const DATA: u8 = 0;
        const HEADERS: u8 = 1;
        const SETTINGS: u8 = 4;
        const PING: u8 = 6;
        const CONTINUATION: u8 = 9;
        const END_STREAM: u8 = 0x1;
        const ACK: u8 = 0x1;
        let codec = &self.shared.codec;
        match kind {
            DATA | HEADERS | CONTINUATION => {
                let ends = kind != CONTINUATION && flags & END_STREAM != 0;
                if length == 0 && !ends {
                    self.empty_run += 1;
                    if self.empty_run
                        > self
                            .limits
                            .max_consecutive_inbound_frames_with_empty_payload
                    {
                        crate::stats::inc(&codec.http2_inbound_empty_frames_flood);
                        return Err("too many consecutive frames with an empty payload");
                    }
                } else {
                    self.empty_run = 0;
                }
            }
            PING | SETTINGS if flags & ACK == 0 => {
                self.control_burst += 1;
                if self.control_burst > self.limits.max_outbound_control_frames {
                    crate::stats::inc(&codec.http2_outbound_control_flood);
                    return Err("too many frames to answer");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for H2Guard<I> {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let State::Off = this.state {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                match this.scan(fresh) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(why) => {
                        tracing::debug!(why, "HTTP/2 flood: closing the connection");
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)))
                    }
                }
            }
            Poll::Pending => {
                // Nothing more has arrived: the burst is over.
                this.control_burst = 0;
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for H2Guard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn guard() -> H2Guard<tokio::io::Empty> {
        let shared = crate::server::ServerState::new(
            1,
            serde_json::Value::Null,
            None,
            std::time::Duration::from_secs(1),
        );
        H2Guard::new(tokio::io::empty(), FloodLimits::default(), shared)
    }

    #[test]
    fn frames_split_anywhere_are_read_the_same() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(4, 0, &[0; 6]));
        for _ in 0..999 {
            bytes.extend(frame(6, 0, &[0; 8]));
        }
        let mut g = guard();
        for piece in bytes.chunks(7) {
            assert!(g.scan(piece).is_ok());
        }
        // The SETTINGS and 999 PINGs make 1000 frames to answer; one more is a flood.
        assert!(g.scan(&frame(6, 0, &[0; 8])).is_err());
        assert_eq!(
            g.shared
                .codec
                .http2_outbound_control_flood
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn one_empty_frame_is_allowed_two_are_not() {
        let mut g = guard();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(1, 0x4, &[0x82]));
        bytes.extend(frame(0, 0, &[]));
        bytes.extend(frame(0, 0, b"x"));
        bytes.extend(frame(0, 0, &[]));
        assert!(g.scan(&bytes).is_ok());
        assert!(g.scan(&frame(0, 0, &[])).is_err());
        // An empty frame that ends the stream is not a flood.
        let mut g = guard();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0, 0, &[]));
        bytes.extend(frame(0, 0x1, &[]));
        assert!(g.scan(&bytes).is_ok());
    }

    #[test]
    fn http1_passes_through() {
        let mut g = guard();
        assert!(g.scan(b"GET / HTTP/1.1\r\n").is_ok());
        assert!(matches!(g.state, State::Off));
    }
}
