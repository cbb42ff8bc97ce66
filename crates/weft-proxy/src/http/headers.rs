//! Header work Envoy does on every request and response: hop-by-hop removal, `x-request-id`,
//! `x-forwarded-for`/`-proto`, and the `server` header.

use super::{HttpConnectionManager, ServerHeader};
use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, SERVER, TE, TRANSFER_ENCODING, UPGRADE};
use std::net::{IpAddr, SocketAddr};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
static X_ENVOY_EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");

/// Envoy's `cleanInternalHeaders`: removed from external requests.
const EXTERNAL_CONTROL: &[&str] = &[
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Also removed from external requests at the edge (`use_remote_address`).
const EDGE_CONTROL: &[&str] = &[
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
];

/// Removes the connection-specific headers a proxy must not forward (RFC 9110 §7.6.1), and any
/// header the `Connection` header names. `te: trailers` survives: gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != TE {
            headers.remove(&name);
        }
    }
    headers.remove(CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(UPGRADE);
    let te_trailers = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(TE);
    }
}

/// Request headers the connection manager sets before routing, as Envoy's connection manager
/// sets them. Returns the trusted client address: the peer, or with `xff_num_trusted_hops` the
/// address that many hops back in `x-forwarded-for` (port 0, as Envoy reports it).
pub fn on_request(
    headers: &mut HeaderMap,
    hcm: &HttpConnectionManager,
    peer: SocketAddr,
    local_address: IpAddr,
    tls: bool,
    client_cert: Option<&HeaderValue>,
) -> SocketAddr {
    super::xfcc::on_request(headers, hcm.forward_client_cert, client_cert);
    let scheme = HeaderValue::from_static(if tls { "https" } else { "http" });
    // What a client says about being internal is never believed: Envoy strips the header from
    // every request and sets it only for addresses its `internal_address_config` names (none
    // by default since 1.40; that field is not supported).
    // Nor are a client's instructions to Envoy itself (retries, timeouts, stat names...): Envoy
    // drops them from every request it does not count as internal, which is every request here.
    // Most requests carry none, so look before removing each by name.
    if headers.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        headers.remove(&X_ENVOY_INTERNAL);
        for name in EXTERNAL_CONTROL {
            headers.remove(*name);
        }
        if hcm.use_remote_address {
            // At the edge, also what a client says about where it comes from in the mesh.
            for name in EDGE_CONTROL {
                headers.remove(*name);
            }
        }
    }
    if hcm.generate_request_id && !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), request_id());
    }
    let hops = hcm.xff_num_trusted_hops as usize;
    if hcm.use_remote_address {
        // The trusted client is read before this proxy appends its own peer.
        let trusted = hops
            .checked_sub(1)
            .and_then(|skip| address_from_xff(headers, skip));
        // A loopback peer is this machine: Envoy records the machine's own address.
        let hop = if peer.ip().is_loopback() {
            local_address
        } else {
            peer.ip()
        };
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.is_empty() => format!("{existing},{hop}"),
            _ => hop.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        // Only a trusted hop may say how the client reached it.
        if hops == 0 || !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), scheme);
        }
        let remote = trusted.unwrap_or(peer);
        // This proxy is the edge: the upstream learns the client's address.
        if let Ok(v) = HeaderValue::from_str(&remote.ip().to_string()) {
            headers.insert(X_ENVOY_EXTERNAL_ADDRESS.clone(), v);
        }
        remote
    } else {
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), scheme);
        }
        address_from_xff(headers, hops).unwrap_or(peer)
    }
}

/// The address `skip` entries from the right of `x-forwarded-for`, if it is an IP address.
fn address_from_xff(headers: &HeaderMap, skip: usize) -> Option<SocketAddr> {
    let all = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let entry = all.rsplit(',').nth(skip)?;
    let ip: IpAddr = entry.trim().parse().ok()?;
    Some(SocketAddr::new(ip, 0))
}

/// The `server` header of a response, by `server_header_transformation`.
pub fn on_response(headers: &mut HeaderMap, hcm: &HttpConnectionManager) {
    match hcm.server_header {
        ServerHeader::Overwrite => {
            headers.insert(SERVER, hcm.server_name.clone());
        }
        ServerHeader::AppendIfAbsent => {
            if !headers.contains_key(SERVER) {
                headers.insert(SERVER, hcm.server_name.clone());
            }
        }
        ServerHeader::PassThrough => {}
    }
}

/// A random (version 4) UUID, as Envoy generates for `x-request-id`.
pub fn request_id() -> HeaderValue {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut j = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = HEX[(b >> 4) as usize];
        out[j + 1] = HEX[(b & 0xf) as usize];
        j += 2;
    }
    // 36 ASCII hex digits and dashes are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(request_id(), request_id());
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["te", "x-kept"]);
    }
}
