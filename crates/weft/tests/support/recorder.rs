//! An upstream that remembers what reached it: for traffic whose answers nobody sees, such as
//! mirrored requests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The Host header (HTTP/1.1) or :authority (h2).
    pub authority: String,
    pub path: String,
    pub body_len: usize,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    pub fn taken(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Waits until `n` requests were recorded (or 10 s), then takes them.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.seen.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.taken()
    }
}

/// Records each request once its body is in, then answers 200; a path starting with
/// `/slow-answer` is answered a second later.
pub async fn start_recorder() -> (SocketAddr, Recorder) {
    let recorder = Recorder::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = recorder.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let r = r.clone();
                    async move {
                        let authority = req
                            .uri()
                            .authority()
                            .map(|a| a.to_string())
                            .or_else(|| {
                                req.headers()
                                    .get("host")
                                    .and_then(|h| h.to_str().ok())
                                    .map(str::to_string)
                            })
                            .unwrap_or_default();
                        let method = req.method().to_string();
                        let version = format!("{:?}", req.version());
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await?.to_bytes();
                        let slow = path.starts_with("/slow-answer");
                        r.seen.lock().unwrap().push(Recorded {
                            method,
                            authority,
                            path,
                            body_len: body.len(),
                            version,
                        });
                        if slow {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from_static(
                            b"recorded",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, recorder)
}
