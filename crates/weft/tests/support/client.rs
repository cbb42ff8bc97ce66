//! The tests' HTTP client: one request on a new connection (HTTP/1.1, h2c with prior
//! knowledge, over TLS), raw bytes, an HTTP/2 WebSocket and a gRPC stream.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Req {
    pub method: &'static str,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub h2: bool,
    pub body: Vec<u8>,
}

impl Req {
    pub fn get(authority: &str, path: &str) -> Req {
        Req {
            method: "GET",
            authority: authority.into(),
            path: path.into(),
            headers: Vec::new(),
            h2: false,
            body: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One request on a new connection (HTTP/1.1, or h2c with prior knowledge).
pub async fn request(addr: SocketAddr, req: &Req) -> Resp {
    try_request(addr, req)
        .await
        .unwrap_or_else(|e| panic!("request to {addr} failed: {e}"))
}

/// `request`, with a failure to connect or to get a response as an error.
/// Who answered a GET of `/` for `authority` at `addr`: the echo upstream's name, else
/// `HTTP <status>`, else the connection error.
pub async fn upstream_name(addr: SocketAddr, authority: &str) -> String {
    match try_request(addr, &Req::get(authority, "/")).await {
        Ok(r) if r.status == 200 => r
            .json()
            .and_then(|j| j["upstream"].as_str().map(str::to_string))
            .unwrap_or_default(),
        Ok(r) => format!("HTTP {}", r.status),
        Err(e) => e,
    }
}

pub async fn try_request(addr: SocketAddr, req: &Req) -> Result<Resp, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    send(stream, req, "http").await
}

/// `try_request` over TLS with `config` (ALPN `h2` when `req.h2`) and SNI `sni`; also the
/// handshake's failure is an error.
pub async fn try_request_tls(
    addr: SocketAddr,
    req: &Req,
    config: &rustls::ClientConfig,
    sni: &str,
) -> Result<Resp, String> {
    let alpn = if req.h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    try_request_tls_alpn(addr, req, config, sni, alpn).await
}

/// `try_request_tls` offering `alpn` (HTTP/2 only when `req.h2`, whatever was agreed).
pub async fn try_request_tls_alpn(
    addr: SocketAddr,
    req: &Req,
    config: &rustls::ClientConfig,
    sni: &str,
    alpn: Vec<Vec<u8>>,
) -> Result<Resp, String> {
    let mut config = config.clone();
    config.alpn_protocols = alpn;
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    send(tls, req, "https").await
}

pub async fn send<I>(stream: I, req: &Req, scheme: &str) -> Result<Resp, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let mut builder = http::Request::builder().method(req.method);
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = Full::new(Bytes::from(req.body.clone()));
    let resp = if req.h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let uri = format!("{scheme}://{}{}", req.authority, req.path);
        sender
            .send_request(builder.uri(uri).body(body).unwrap())
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let r = builder
            .uri(req.path.as_str())
            .header("host", req.authority.as_str())
            .body(body)
            .unwrap();
        sender.send_request(r).await.map_err(|e| e.to_string())?
    };
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// A websocket opened over h2c with an extended CONNECT (RFC 8441): `:method CONNECT`,
/// `:protocol websocket`. Returns the response status and headers, and the tunnel when the
/// server took it; an error when the stream or connection was refused.
pub async fn h2_websocket(
    addr: SocketAddr,
    authority: &str,
    path: &str,
) -> Result<
    (
        u16,
        http::HeaderMap,
        Option<TokioIo<hyper::upgrade::Upgraded>>,
    ),
    String,
> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::connect(format!("http://{authority}{path}"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .map_err(|_| "no response in 5s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let tunnel = if resp.status().is_success() {
        Some(TokioIo::new(
            hyper::upgrade::on(&mut resp)
                .await
                .map_err(|e| e.to_string())?,
        ))
    } else {
        None
    };
    Ok((status, resp.headers().clone(), tunnel))
}

/// Raw bytes in, the first response line out (for malformed requests).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A bidirectional gRPC-style stream over h2c: sends `messages` one at a time, each only after
/// the previous one came back, so the proxy must stream both ways. Returns the echoed messages
/// and the trailers.
pub async fn grpc_stream(
    addr: SocketAddr,
    path: &str,
    messages: &[&[u8]],
) -> (u16, Vec<Vec<u8>>, http::HeaderMap) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >(4);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let body = http_body_util::StreamBody::new(Box::pin(stream));
    let req = http::Request::post(format!("http://main{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let frame = |m: &[u8]| {
        let mut b = vec![0u8];
        b.extend_from_slice(&(m.len() as u32).to_be_bytes());
        b.extend_from_slice(m);
        Bytes::from(b)
    };
    tx.send(Ok(hyper::body::Frame::data(frame(messages[0]))))
        .await
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut echoed = Vec::new();
    let mut trailers = http::HeaderMap::new();
    let mut next = 1;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(f) = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
    {
        let f = f.unwrap();
        if let Some(d) = f.data_ref() {
            pending.extend_from_slice(d);
            while pending.len() >= 5 {
                let len =
                    u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
                if pending.len() < 5 + len {
                    break;
                }
                echoed.push(pending[5..5 + len].to_vec());
                pending.drain(..5 + len);
                if next < messages.len() {
                    tx.send(Ok(hyper::body::Frame::data(frame(messages[next]))))
                        .await
                        .unwrap();
                    next += 1;
                } else if next == messages.len() {
                    next += 1;
                    // End of the client stream: the upstream then sends its trailers.
                    let _ = tx
                        .send(Ok(hyper::body::Frame::trailers(http::HeaderMap::new())))
                        .await;
                }
            }
        } else if let Ok(t) = f.into_trailers() {
            trailers = t;
        }
    }
    drop(tx);
    (status, echoed, trailers)
}
