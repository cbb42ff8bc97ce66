//! The control plane's JWKS resolver, as istiod's (`pilot/pkg/model/jwks_resolver.go`): the
//! `jwksUri` of every RequestAuthentication is fetched here, and its keys go inline to the
//! proxies, which then never reach the issuer themselves. Every version of the config passes
//! through on its way to translation and waits for the fetches of URIs it names for the first
//! time (5 s each at most); known documents are fetched again every 20 minutes, or every
//! minute while failing, and a change is pushed. A URI that cannot be fetched leaves its
//! issuer's tokens refused (translation says so).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use weft_xds::translate::Inputs;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const REFRESH: Duration = Duration::from_secs(20 * 60);
const RETRY: Duration = Duration::from_secs(60);
/// A JWKS larger than this is not one.
const MAX_BODY: usize = 1 << 20;

/// The URIs `inputs` needs.
fn uris(inputs: &Inputs) -> BTreeSet<String> {
    inputs
        .config
        .request_authentications
        .iter()
        .flat_map(|ra| ra.spec.jwt_rules.iter())
        .filter(|r| r.jwks.is_none())
        .filter_map(|r| r.jwks_uri().map(str::to_string))
        .collect()
}

/// Passes each `Inputs` from `received` on to `send`, with the JWKS documents it names.
pub async fn resolve(
    mut received: mpsc::UnboundedReceiver<Inputs>,
    send: mpsc::UnboundedSender<Inputs>,
) {
    let mut cache: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    let mut last: Option<Inputs> = None;
    let mut ticker = tokio::time::interval(RETRY);
    ticker.tick().await;
    let mut since_refresh = Duration::ZERO;
    loop {
        let mut inputs = tokio::select! {
            got = received.recv() => match got {
                Some(i) => i,
                None => return,
            },
            _ = ticker.tick() => {
                since_refresh += RETRY;
                let Some(inputs) = last.clone() else { continue };
                let refresh_all = since_refresh >= REFRESH;
                if refresh_all {
                    since_refresh = Duration::ZERO;
                }
                let mut changed = false;
                for uri in uris(&inputs) {
                    let failing = cache.get(&uri).is_none_or(Result::is_err);
                    if !(refresh_all || failing) {
                        continue;
                    }
                    let got = fetch(&uri).await;
                    // A document that fails now keeps the keys it had.
                    if got.is_ok() || failing {
                        changed |= cache.get(&uri) != Some(&got);
                        cache.insert(uri, got);
                    }
                }
                if !changed {
                    continue;
                }
                inputs
            }
        };
        let wanted = uris(&inputs);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|u| !cache.contains_key(*u))
            .cloned()
            .collect();
        let fetched = futures::future::join_all(missing.iter().map(|u| fetch(u))).await;
        for (uri, got) in missing.into_iter().zip(fetched) {
            if let Err(e) = &got {
                tracing::warn!(uri, error = %e, "cannot fetch a JWKS: its issuer's tokens are refused until it can be");
            }
            cache.insert(uri, got);
        }
        cache.retain(|u, _| wanted.contains(u));
        inputs.jwks = cache.clone();
        last = Some(inputs.clone());
        if send.send(inputs).is_err() {
            return;
        }
    }
}

/// GET `uri` (http or https, the system's roots): the body of a 200.
async fn fetch(uri: &str) -> Result<String, String> {
    tokio::time::timeout(FETCH_TIMEOUT, get(uri))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())))
}

async fn get(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("not an http or https URI".into()),
    };
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = if https {
        let config = Arc::new(client_config()?);
        let name =
            rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(tls), request).await?
    } else {
        send(TokioIo::new(stream), request).await?
    };
    let status = response.status();
    if status != http::StatusCode::OK {
        return Err(format!("answered {status}"));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".into())
}

async fn send<I>(
    io: I,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// The system's trusted roots (Debian's bundle).
fn client_config() -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(bundle)
        .map_err(|e| format!("{bundle}: {e}"))?
        .flatten()
    {
        let _ = roots.add(cert);
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
