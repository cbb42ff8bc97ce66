//! Upgrades (websocket) across protocols, the way Envoy's codecs carry them: an HTTP/2 extended
//! CONNECT (RFC 8441) is routed as the HTTP/1.1 `GET` + `Upgrade` it stands for, and each side
//! of the proxy sees the upgrade in its own protocol.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Method, StatusCode};
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Rewrites an HTTP/2 extended CONNECT into the HTTP/1.1 upgrade request it stands for, so that
/// routes match on `GET` and the upgrade type as they do in Envoy.
pub(super) fn from_extended_connect(parts: &mut http::request::Parts) {
    if parts.version != http::Version::HTTP_2 || parts.method != Method::CONNECT {
        return;
    }
    let Some(protocol) = parts.extensions.get::<Protocol>() else {
        return;
    };
    let Ok(value) = HeaderValue::from_str(protocol.as_str()) else {
        return;
    };
    parts.extensions.remove::<Protocol>();
    parts.method = Method::GET;
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(UPGRADE, value);
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` + `Upgrade: X`). HTTP/2
/// requests carry these headers only after [`from_extended_connect`]: the HTTP/2 codec refuses
/// connection-specific headers from a client.
pub(super) fn requested(parts: &http::request::Parts) -> Option<String> {
    if parts.version != http::Version::HTTP_11 && parts.version != http::Version::HTTP_2 {
        return None;
    }
    let asks = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    parts
        .headers
        .get(UPGRADE)?
        .to_str()
        .ok()
        .map(str::to_string)
}

/// Writes the upgrade into a request bound for an upstream: `Connection`/`Upgrade` headers for
/// HTTP/1.1, an extended CONNECT with `:protocol` for HTTP/2.
pub(super) fn to_upstream(parts: &mut http::request::Parts, upgrade: &HeaderValue, http2: bool) {
    if http2 {
        if let Ok(protocol) = upgrade.to_str() {
            parts.method = Method::CONNECT;
            parts.extensions.insert(Protocol::from(protocol));
        }
    } else {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, upgrade.clone());
    }
}

/// Whether the upstream took the upgrade: 101 over HTTP/1.1, any 2xx to an HTTP/2 CONNECT.
pub(super) fn accepted(status: StatusCode, http2: bool) -> bool {
    if http2 {
        status.is_success()
    } else {
        status == StatusCode::SWITCHING_PROTOCOLS
    }
}

/// Gives an accepted upgrade's response the downstream's shape: 101 with `Connection`/`Upgrade`
/// for HTTP/1.1, 200 without them for HTTP/2.
pub(super) fn to_downstream(
    parts: &mut http::response::Parts,
    upgrade: &HeaderValue,
    downstream: http::Version,
) {
    parts.headers.remove(CONNECTION);
    parts.headers.remove(UPGRADE);
    if downstream == http::Version::HTTP_2 {
        parts.status = StatusCode::OK;
    } else {
        parts.status = StatusCode::SWITCHING_PROTOCOLS;
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, upgrade.clone());
    }
}

/// Joins the two ends once each side's upgrade completes; bytes then flow both ways until
/// either end closes.
pub(super) fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        if let (Ok(d), Ok(u)) = (downstream.await, upstream.await) {
            let mut d = TokioIo::new(d);
            let mut u = TokioIo::new(u);
            let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
        }
    });
}
