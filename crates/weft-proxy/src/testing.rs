//! The proxy in process, for tests and fuzz targets: a bootstrap's HTTP listeners served over
//! in-memory streams, with no listening socket and no worker threads. Upstream clusters connect
//! over real sockets, or to in-memory upstreams given with `connect_with`. Under tokio's paused
//! clock, retries, back-off, ejection times and stream timers run without sleeping.

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

    /// Every cluster connects through `connector` instead of the network.
    pub fn connect_with(&self, connector: Arc<dyn crate::upstream::Connector>) {
        for cluster in self.shared.snapshot.load().clusters.values() {
            let _ = cluster.connector.set(connector.clone());
        }
    }

    /// Every cluster resolves its names through `resolver` instead of the system.
    pub fn resolve_with(&self, resolver: Arc<dyn crate::cluster::dns::Resolver>) {
        for cluster in self.shared.snapshot.load().clusters.values() {
            let _ = cluster.resolver.set(resolver.clone());
        }
    }

    /// Starts the cluster manager (DNS, health checks, outlier detection's interval) on the
    /// current runtime, as `weft proxy` does on its control thread.
    pub fn start_cluster_manager(&self) {
        crate::cluster::manager::spawn(self.shared.clone());
    }

    /// The process state: the config snapshot and the stats.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.shared
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
            client_cert: None,
            sni: None,
            peer_identity: None,
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
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// In-memory upstreams: each address answers every request with its status and counts them;
    /// an address not listed refuses the connection.
    #[derive(Debug, Default)]
    struct Upstreams(HashMap<SocketAddr, (u16, Arc<AtomicU64>)>);

    impl crate::upstream::Connector for Upstreams {
        fn connect(
            &self,
            address: SocketAddr,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<tokio::io::DuplexStream>> + Send>,
        > {
            let found = self.0.get(&address).cloned();
            Box::pin(async move {
                let (status, count) = found
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
                let (client, server) = tokio::io::duplex(1 << 16);
                let service = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::Relaxed);
                    let mut resp =
                        ::http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    *resp.status_mut() = ::http::StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(server), service),
                );
                Ok(client)
            })
        }
    }

    const TWO_HOSTS: &str = r#"
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
                route: { cluster: two, retry_policy: { retry_on: 5xx, num_retries: 1 } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: two
    connect_timeout: 1s
    outlier_detection:
      consecutive_5xx: 2
      interval: 1s
      base_ejection_time: 30s
      max_ejection_percent: 100
    load_assignment:
      cluster_name: two
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } } }
        - endpoint: { address: { socket_address: { address: 10.0.0.2, port_value: 80 } } }
"#;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    /// What the proxy wrote back to `request` on the `http` listener.
    async fn answer(proxy: &InProcess, request: &[u8]) -> String {
        let out = proxy
            .exchange("http", request, Duration::from_millis(100))
            .await
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status(out: &str) -> u16 {
        out.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Answers every name with 10.0.0.2 and a 7 s TTL, counting the lookups.
    #[derive(Debug, Default)]
    struct CountingResolver(AtomicU64);

    impl crate::cluster::dns::Resolver for CountingResolver {
        fn resolve(&self, _host: &str, port: u16) -> std::io::Result<crate::cluster::dns::Answer> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(crate::cluster::dns::Answer {
                addresses: vec![SocketAddr::from(([10, 0, 0, 2], port))],
                ttl: Some(Duration::from_secs(7)),
            })
        }
    }

    /// A STRICT_DNS cluster resolves every `dns_refresh_rate`, and serves the answer.
    #[tokio::test(start_paused = true)]
    async fn dns_clusters_refresh_at_their_rate_on_the_paused_clock() {
        let yaml = TWO_HOSTS
            .replace("    connect_timeout: 1s\n", "    type: STRICT_DNS\n    dns_refresh_rate: 2s\n    connect_timeout: 1s\n")
            .replace("10.0.0.1", "one.example")
            .replace("        - endpoint: { address: { socket_address: { address: 10.0.0.2, port_value: 80 } } }\n", "");
        let proxy = InProcess::from_yaml(&yaml).unwrap();
        let resolver = Arc::new(CountingResolver::default());
        proxy.resolve_with(resolver.clone());
        let answered = Arc::new(AtomicU64::new(0));
        let mut upstreams = Upstreams::default();
        upstreams
            .0
            .insert("10.0.0.2:80".parse().unwrap(), (200, answered.clone()));
        proxy.connect_with(Arc::new(upstreams));
        proxy.start_cluster_manager();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(resolver.0.load(Ordering::Relaxed), 1, "resolved at once");
        assert_eq!(status(&answer(&proxy, GET).await), 200);
        assert_eq!(answered.load(Ordering::Relaxed), 1);
        // 10 s more: five more lookups, one every 2 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(resolver.0.load(Ordering::Relaxed), 6);

        // With respect_dns_ttl the answers' 7 s TTL sets the pace instead.
        let proxy = InProcess::from_yaml(&yaml.replace(
            "    dns_refresh_rate: 2s\n",
            "    dns_refresh_rate: 2s\n    respect_dns_ttl: true\n",
        ))
        .unwrap();
        let resolver = Arc::new(CountingResolver::default());
        proxy.resolve_with(resolver.clone());
        proxy.start_cluster_manager();
        tokio::time::sleep(Duration::from_millis(150)).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(resolver.0.load(Ordering::Relaxed), 3, "at 0, 7 and 14 s");
    }

    /// A host that answers 503 is retried around, ejected after two, and back 30 s later: with
    /// the clock paused, the half minute passes at once.
    #[tokio::test(start_paused = true)]
    async fn a_failing_host_is_ejected_and_returns_on_the_paused_clock() {
        let proxy = InProcess::from_yaml(TWO_HOSTS).unwrap();
        let bad = Arc::new(AtomicU64::new(0));
        let good = Arc::new(AtomicU64::new(0));
        let mut upstreams = Upstreams::default();
        upstreams
            .0
            .insert("10.0.0.1:80".parse().unwrap(), (503, bad.clone()));
        upstreams
            .0
            .insert("10.0.0.2:80".parse().unwrap(), (200, good.clone()));
        proxy.connect_with(Arc::new(upstreams));
        proxy.start_cluster_manager();
        let get = || async { status(&answer(&proxy, GET).await) };
        // Round robin takes the failing host every other request; the retry goes to the other.
        for _ in 0..6 {
            assert_eq!(get().await, 200);
        }
        let hits_before = bad.load(Ordering::Relaxed);
        assert_eq!(hits_before, 2, "ejected after its second 503");
        let snapshot = proxy.state().snapshot.load();
        let stats = &snapshot.clusters["two"].stats;
        assert_eq!(stats.upstream_rq_retry.load(Ordering::Relaxed), 2);
        for _ in 0..6 {
            assert_eq!(get().await, 200);
        }
        assert_eq!(
            bad.load(Ordering::Relaxed),
            hits_before,
            "not sent to while ejected"
        );
        tokio::time::sleep(Duration::from_secs(31)).await;
        for _ in 0..4 {
            get().await;
        }
        assert!(
            bad.load(Ordering::Relaxed) > hits_before,
            "back after the ejection time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_memory_gets_the_routes_answer() {
        let direct = TWO_HOSTS.replace(
            "route: { cluster: two, retry_policy: { retry_on: 5xx, num_retries: 1 } }",
            "direct_response: { status: 200, body: { inline_string: \"hello\" } }",
        );
        let proxy = InProcess::from_yaml(&direct).unwrap();
        let text = answer(
            &proxy,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
        // Two pipelined requests, two answers, and the connection kept open.
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert_eq!(text.matches("\r\n\r\nhello").count(), 2, "{text}");
        // A lowercase method is refused, and the connection closed.
        let text = answer(&proxy, b"get / HTTP/1.1\r\nHost: a\r\n\r\n").await;
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
