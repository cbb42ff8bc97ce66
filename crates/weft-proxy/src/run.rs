//! `weft proxy -c bootstrap.yaml`: load, check, bind, serve until told to stop.

use crate::cluster::{Cluster, Discovery, DnsFamily};
use crate::config::{ConfigError, bootstrap, convert};
use crate::server::{self, Shared};
use prost_reflect::SerializeOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often STRICT_DNS and LOGICAL_DNS clusters resolve again (Envoy's default).
const DNS_REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: String,
    pub concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {what} to {address}: {source}")]
    Bind {
        what: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Loads and converts a bootstrap without serving it (`--mode validate`).
pub fn validate(path: &str) -> Result<(), ConfigError> {
    let loaded = bootstrap::load_file(path)?;
    let store = server::StatsStore::default();
    convert::static_snapshot(&loaded.bootstrap, &store)
        .map(|_| ())
        .map_err(|errors| ConfigError::Fields {
            origin: path.to_string(),
            errors,
        })
}

pub fn run(options: &Options) -> Result<(), RunError> {
    let loaded = bootstrap::load_file(&options.config_path)?;
    let config_json = loaded
        .dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().use_proto_field_name(true),
        )
        .unwrap_or_default();
    let admin = match loaded
        .bootstrap
        .admin
        .as_ref()
        .and_then(|a| a.address.as_ref())
    {
        Some(address) => Some(
            convert::ip_socket_address(Some(address), "admin.address").map_err(|e| {
                ConfigError::Fields {
                    origin: options.config_path.clone(),
                    errors: vec![e],
                }
            })?,
        ),
        None => None,
    };
    let node = config_json
        .get("node")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let shared = Shared::new(options.concurrency, node, admin);
    let mut snapshot =
        convert::static_snapshot(&loaded.bootstrap, &shared.stats).map_err(|errors| {
            ConfigError::Fields {
                origin: options.config_path.clone(),
                errors,
            }
        })?;
    snapshot.config_dump = config_json;
    snapshot.version = String::new();
    snapshot.last_updated = Some(SystemTime::now());

    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("weft-control")
        .build()?;
    // Clusters are warmed (first DNS answer) before listeners open, as in Envoy.
    let dns_clusters: Vec<Arc<Cluster>> = snapshot
        .clusters
        .values()
        .filter(|c| c.config.discovery != Discovery::Static)
        .cloned()
        .collect();
    control.block_on(async {
        for cluster in &dns_clusters {
            resolve(cluster).await;
        }
    });
    for cluster in dns_clusters {
        control.spawn(async move {
            loop {
                tokio::time::sleep(DNS_REFRESH).await;
                resolve(&cluster).await;
            }
        });
    }

    let mut sockets = Vec::new();
    for listener in &snapshot.listeners {
        let socket = server::bind(listener.address).map_err(|source| RunError::Bind {
            what: format!("listener {}", listener.name),
            address: listener.address,
            source,
        })?;
        tracing::info!(listener = %listener.name, address = %listener.address, "listening");
        sockets.push((listener.name.clone(), socket));
    }
    shared.snapshot.store(Arc::new(snapshot));
    if let Some(address) = admin {
        let socket = server::bind(address).map_err(|source| RunError::Bind {
            what: "admin".into(),
            address,
            source,
        })?;
        let shared = shared.clone();
        control.spawn(async move {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => crate::admin::serve(listener, shared).await,
                Err(e) => tracing::error!(error = %e, "cannot serve admin"),
            }
        });
        tracing::info!(%address, "admin listening");
    }
    let workers = server::start_workers(&shared, &sockets)?;
    let stop = shared.clone();
    control.spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.request_shutdown();
    });
    let mut shutdown = shared.shutdown.subscribe();
    control.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    });
    shared.request_shutdown();
    for w in workers {
        let _ = w.join();
    }
    control.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

async fn resolve(cluster: &Arc<Cluster>) {
    let mut resolved = Vec::new();
    for (host, port, endpoint, priority) in cluster.dns_endpoints() {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs
                    .filter(|a| match cluster.config.dns_family {
                        DnsFamily::V4Only => a.is_ipv4(),
                        _ => true,
                    })
                    .collect();
                if cluster.config.dns_family != DnsFamily::Auto {
                    addrs.sort_by_key(|a| !a.is_ipv4());
                }
                addrs.dedup();
                if cluster.config.discovery == Discovery::LogicalDns {
                    addrs.truncate(1);
                }
                for a in addrs {
                    resolved.push((a, endpoint.clone(), priority));
                }
            }
            Err(e) => {
                tracing::warn!(cluster = %cluster.config.name, %host, error = %e, "DNS resolution failed");
                // Keep the last good answer.
                return;
            }
        }
    }
    cluster.set_resolved(resolved);
}
