//! The proxy in process, for tests and fuzz targets: a bootstrap's HTTP listeners served over
//! in-memory streams, with no listening socket and no worker threads. Upstream clusters still
//! connect over real sockets.

use crate::config::{ConfigError, bootstrap, convert};
use crate::http::{self, HttpConnectionManager};
use crate::listener::NetworkFilter;
use crate::server::ServerState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A bootstrap's HTTP connection managers, ready to serve in-memory connections.
pub struct InProcess {
    shared: Arc<ServerState>,
    /// (listener name, its first HTTP connection manager)
    managers: Vec<(String, Arc<HttpConnectionManager>)>,
}

impl InProcess {
    /// Loads a bootstrap (YAML or JSON) as `weft proxy -c` would, without binding anything.
    pub fn from_yaml(text: &str) -> Result<InProcess, ConfigError> {
        let loaded = bootstrap::parse("in-process bootstrap", text)?;
        let shared = ServerState::new(1, serde_json::Value::Null, None, Duration::from_secs(1));
        let snapshot =
            convert::static_snapshot(&loaded.bootstrap, &shared.stats).map_err(|errors| {
                ConfigError::Fields {
                    origin: "in-process bootstrap".into(),
                    errors,
                }
            })?;
        let managers = snapshot
            .listeners
            .iter()
            .filter_map(|l| {
                l.filter_chains.iter().find_map(|c| match &c.filter {
                    NetworkFilter::Http(hcm) => Some((l.name.clone(), hcm.clone())),
                    _ => None,
                })
            })
            .collect();
        shared.snapshot.store(Arc::new(snapshot));
        Ok(InProcess { shared, managers })
    }

    /// Sends `bytes` as one client connection to `listener`'s connection manager and returns
    /// everything the proxy wrote back until it closed the connection or was `quiet` that long.
    /// Under tokio's paused clock the quiet wait costs no real time. `None` when there is no
    /// such listener.
    pub async fn exchange(&self, listener: &str, bytes: &[u8], quiet: Duration) -> Option<Vec<u8>> {
        let hcm = self
            .managers
            .iter()
            .find(|(name, _)| name == listener)?
            .1
            .clone();
        let conn = http::Connection {
            hcm,
            shared: self.shared.clone(),
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
            local: SocketAddr::from(([127, 0, 0, 1], 10000)),
            restored: None,
            tls: false,
            idle: None,
        };
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (_drain, drain_rx) = tokio::sync::watch::channel(false);
        let served = tokio::spawn(http::serve(server, conn, drain_rx));
        // The proxy may answer (and close) before it has read everything.
        let _ = client.write_all(bytes).await;
        let mut out = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, client.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        served.abort();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTSTRAP: &str = r#"
static_resources:
  listeners:
  - name: http
    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in_process
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "hello" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#;

    #[tokio::test(start_paused = true)]
    async fn a_request_in_memory_gets_the_routes_answer() {
        let proxy = InProcess::from_yaml(BOOTSTRAP).unwrap();
        let out = proxy
            .exchange(
                "http",
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        // Two pipelined requests, two answers, and the connection kept open.
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert_eq!(text.matches("\r\n\r\nhello").count(), 2, "{text}");
        // A lowercase method is refused, and the connection closed.
        let out = proxy
            .exchange(
                "http",
                b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(
            proxy
                .exchange("nope", b"", Duration::from_secs(1))
                .await
                .is_none()
        );
    }
}
