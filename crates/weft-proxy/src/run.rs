//! `weft proxy -c bootstrap.yaml`: load, check, bind, serve until told to stop.

use crate::config::{ConfigError, FieldError, bootstrap, convert};
use crate::listener::manager::ListenerManager;
use crate::server::{self, ServerState};
use crate::xds::AdsConfig;
use crate::xds::state::DynamicConfig;
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier as GrpcTarget;
use prost_reflect::SerializeOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The bootstrap; without one the proxy starts empty and takes everything from `xds`.
    pub config_path: Option<String>,
    pub concurrency: usize,
    /// `--drain-time-s`: how long connections of a removed listener may take to finish.
    pub drain_time: Duration,
    /// `--xds ADDR`: the ADS server, instead of (or in addition to) the bootstrap's.
    pub xds_address: Option<String>,
    /// `--xds-delta`: use delta xDS with `--xds`.
    pub xds_delta: bool,
    /// `--node-id`: replaces the bootstrap's `node.id`.
    pub node_id: Option<String>,
    /// The proxy's own agent: where its workload certificate comes from.
    pub agent: Option<crate::agent::AgentOptions>,
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
    Listen(String),
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

fn field_error(origin: &str, e: FieldError) -> ConfigError {
    ConfigError::Fields {
        origin: origin.to_string(),
        errors: vec![e],
    }
}

pub fn run(options: &Options) -> Result<(), RunError> {
    let origin = options
        .config_path
        .clone()
        .unwrap_or_else(|| "--xds".into());
    let mut loaded = match &options.config_path {
        Some(path) => bootstrap::load_file(path)?,
        None => bootstrap::parse(&origin, "{}")?,
    };
    if let Some(id) = &options.node_id {
        loaded
            .bootstrap
            .node
            .get_or_insert_with(Default::default)
            .id
            .clone_from(id);
    }
    let mut config_json = loaded
        .dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().use_proto_field_name(true),
        )
        .unwrap_or_default();
    if let (Some(id), Some(map)) = (&options.node_id, config_json.as_object_mut()) {
        let node = map.entry("node").or_insert_with(|| serde_json::json!({}));
        if let Some(node) = node.as_object_mut() {
            node.insert("id".into(), serde_json::Value::String(id.clone()));
        }
    }
    let admin = match loaded
        .bootstrap
        .admin
        .as_ref()
        .and_then(|a| a.address.as_ref())
    {
        Some(address) => Some(
            convert::ip_socket_address(Some(address), "admin.address")
                .map_err(|e| field_error(&origin, e))?,
        ),
        None => None,
    };
    let node = config_json
        .get("node")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let shared = ServerState::new(options.concurrency, node, admin, options.drain_time);
    let mut snapshot =
        convert::static_snapshot(&loaded.bootstrap, &shared.stats).map_err(|errors| {
            ConfigError::Fields {
                origin: origin.clone(),
                errors,
            }
        })?;
    snapshot.config_dump = config_json.clone();
    snapshot.last_updated = Some(SystemTime::now());
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("weft-control")
        .build()?;
    // Clusters are warmed (first DNS answer) before listeners open, as in Envoy; from then on
    // the cluster manager keeps every cluster of the current config resolved, checked and
    // watched.
    control.block_on(crate::cluster::manager::warm(snapshot.clusters.values()));
    {
        let _runtime = control.enter();
        crate::cluster::manager::spawn(shared.clone());
    }
    if let Some(agent) = &options.agent {
        control.spawn(crate::agent::run(agent.clone(), shared.secrets.clone()));
    }
    let ads = ads_config(&loaded.bootstrap, &snapshot, options, &origin)?;
    shared.snapshot.store(Arc::new(snapshot));

    let workers = server::start_workers(&shared)?;
    let manager = ListenerManager::new(workers.runtimes.clone(), shared.clone());
    let mut dynamic = DynamicConfig::new(shared.clone(), manager, config_json);
    dynamic.start().map_err(RunError::Listen)?;
    // Without a control plane the static config stays as it is; holding it until shutdown
    // keeps the listeners it manages open.
    let _static_config = match ads {
        Some(ads) => {
            tracing::info!(uri = %ads.uri, delta = ads.delta, "subscribing to the control plane");
            control.spawn(crate::xds::run(ads, dynamic, shared.clone()));
            None
        }
        None => {
            shared
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            Some(dynamic)
        }
    };
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
    for w in workers.threads {
        let _ = w.join();
    }
    control.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// Where the ADS server is: `--xds`, or the cluster that `dynamic_resources.ads_config` names.
fn ads_config(
    bootstrap: &Bootstrap,
    snapshot: &server::Snapshot,
    options: &Options,
    origin: &str,
) -> Result<Option<AdsConfig>, ConfigError> {
    let mut node = bootstrap.node.clone().unwrap_or_default();
    // Envoy names itself `envoy` here; the control plane sends istio-proxy's network filters
    // (TCP metadata exchange and stats) only to a proxy that has them.
    node.user_agent_name = "weft".into();
    node.user_agent_version_type = Some(
        envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").into(),
        ),
    );
    // `api_config_source` passes the field check for SDS only (see `supported`).
    if let Some(d) = &bootstrap.dynamic_resources {
        for (name, source) in [("lds_config", &d.lds_config), ("cds_config", &d.cds_config)] {
            if source
                .as_ref()
                .is_some_and(|s| !crate::config::convert::is_ads(s))
            {
                return Err(field_error(
                    origin,
                    FieldError::new(
                        format!("dynamic_resources.{name}"),
                        "must be {ads: {}}: the Weft proxy takes LDS and CDS over ADS",
                    ),
                ));
            }
        }
    }
    if let Some(address) = &options.xds_address {
        let uri = if address.contains("://") {
            address.clone()
        } else {
            format!("http://{address}")
        };
        return Ok(Some(AdsConfig {
            uri,
            delta: options.xds_delta,
            node,
        }));
    }
    let Some(ads) = bootstrap
        .dynamic_resources
        .as_ref()
        .and_then(|d| d.ads_config.as_ref())
    else {
        return Ok(None);
    };
    let path = "dynamic_resources.ads_config.grpc_services";
    let Some(GrpcTarget::EnvoyGrpc(target)) = ads
        .grpc_services
        .first()
        .and_then(|g| g.target_specifier.as_ref())
    else {
        return Err(field_error(
            origin,
            FieldError::new(path, "one grpc_services entry with envoy_grpc is required"),
        ));
    };
    let cpath = format!("{path}[0].envoy_grpc.cluster_name");
    let Some(cluster) = snapshot.clusters.get(&target.cluster_name) else {
        return Err(field_error(
            origin,
            FieldError::new(
                cpath,
                format!("unknown static cluster '{}'", target.cluster_name),
            ),
        ));
    };
    let Some(host) = cluster.hosts.load().choose().map(|h| h.address) else {
        return Err(field_error(
            origin,
            FieldError::new(
                cpath,
                format!("cluster '{}' has no endpoint", target.cluster_name),
            ),
        ));
    };
    Ok(Some(AdsConfig {
        uri: format!("http://{host}"),
        // DELTA_GRPC
        delta: ads.api_type == 3,
        node,
    }))
}
