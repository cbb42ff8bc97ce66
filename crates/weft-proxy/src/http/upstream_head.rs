//! How a request is addressed to its upstream: the HTTP version the cluster speaks, and the
//! target and `Host` that version carries. The router and the mirrors share it.

use crate::cluster::{Cluster, UpstreamProtocol};
use crate::upstream::Version;
use http::header::HOST;
use http::{HeaderValue, Uri};

/// The request target upstream: the path for HTTP/1.1 (the host goes in `Host`), the whole URI
/// for HTTP/2 (`:authority`).
pub(super) fn uri(
    version: Version,
    authority: &str,
    path_and_query: &str,
) -> Result<Uri, http::uri::InvalidUri> {
    match version {
        Version::Http1 => Uri::try_from(path_and_query),
        Version::Http2 => Uri::try_from(format!("http://{authority}{path_and_query}")),
    }
}

/// Sets the head's HTTP version and `Host` for the upstream. False when `authority` cannot be a
/// `Host` header (HTTP/1.1 only; the request then goes without one).
pub(super) fn address(
    version: Version,
    head_version: &mut http::Version,
    headers: &mut http::HeaderMap,
    authority: &str,
) -> bool {
    match version {
        Version::Http1 => {
            *head_version = http::Version::HTTP_11;
            match HeaderValue::from_str(authority) {
                Ok(v) => {
                    headers.insert(HOST, v);
                    true
                }
                Err(_) => false,
            }
        }
        Version::Http2 => {
            *head_version = http::Version::HTTP_2;
            headers.remove(HOST);
            true
        }
    }
}

/// The HTTP version a request goes upstream in: the cluster's, or the downstream's.
pub(super) fn version(cluster: &Cluster, downstream: http::Version) -> Version {
    match cluster.config.protocol {
        UpstreamProtocol::Http1 => Version::Http1,
        UpstreamProtocol::Http2 => Version::Http2,
        UpstreamProtocol::Downstream if downstream == http::Version::HTTP_2 => Version::Http2,
        UpstreamProtocol::Downstream => Version::Http1,
    }
}
