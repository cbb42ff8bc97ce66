//! `weft control-plane`: watch a folder of Istio YAML, translate it for every proxy that
//! connects over ADS, push on every valid edit, and keep the last good config when an edit is
//! refused. The monitoring port answers `weft proxy-status` and `weft proxy-config`.

use super::monitor;
use anyhow::Context as _;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use weft_registry::source::{Config, Folder};
use weft_xds::control::ControlPlane;
use weft_xds::translate::Inputs;

/// What locates a control plane: its config folder and mesh config, its two addresses, and its
/// log level. `weft up` takes the same.
#[derive(clap::Args, Clone)]
pub struct ControlPlaneArgs {
    /// Folder of Istio and Kubernetes YAML (watched: every *.yaml, *.yml, *.json below it;
    /// edits are validated and pushed).
    #[arg(short = 'f', long = "filename")]
    pub dir: PathBuf,
    /// MeshConfig YAML (Istio's --meshConfig). Without it, the `mesh` key of an `istio`
    /// ConfigMap in the folder, else Istio's defaults.
    #[arg(long)]
    pub mesh_config: Option<PathBuf>,
    /// Where proxies reach the ADS server (Istio's 15010).
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub xds_address: String,
    /// Status and debug endpoints (Istio's 15014), read by proxy-status and proxy-config.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub monitoring_address: String,
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// ADS and Istio's certificate service over TLS (Istio's 15012), with a certificate of the
    /// mesh CA's for istiod's names; off unless given.
    #[arg(long)]
    pub secure_xds_address: Option<String>,
    /// Where the mesh CA keeps its self-signed root, made on first start and kept, so that
    /// identities stay valid across restarts [default: $XDG_STATE_HOME/weft/ca, else
    /// ~/.local/state/weft/ca].
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// An operator's own CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem), used instead of a root of Weft's.
    #[arg(long)]
    pub cacerts: Option<PathBuf>,
    /// Lifetime of a workload certificate whose CSR asks for none, in seconds (Istio's
    /// DEFAULT_WORKLOAD_CERT_TTL, 24 h); at most 90 days (MAX_WORKLOAD_CERT_TTL).
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    pub workload_cert_ttl_s: u64,
}

impl ControlPlaneArgs {
    /// The secure port's CA, when the secure port is asked for. The trust domain is the mesh
    /// config's (`--mesh-config`), `cluster.local` by default.
    pub fn secure(&self) -> anyhow::Result<Option<Secure>> {
        let Some(address) = &self.secure_xds_address else {
            return Ok(None);
        };
        let trust_domain = match &self.mesh_config {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?;
                weft_api::types::mesh::MeshConfig::from_yaml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                    .trust_domain
                    .unwrap_or_else(|| "cluster.local".to_string())
            }
            None => "cluster.local".to_string(),
        };
        let state = match &self.ca_dir {
            Some(d) => d.clone(),
            None => default_ca_dir()?,
        };
        let ttl = std::time::Duration::from_secs(self.workload_cert_ttl_s);
        anyhow::ensure!(
            !ttl.is_zero() && ttl <= weft_ca::MAX_WORKLOAD_TTL,
            "--workload-cert-ttl-s {}: must be between 1 and {} (90 days)",
            self.workload_cert_ttl_s,
            weft_ca::MAX_WORKLOAD_TTL.as_secs()
        );
        let ca = weft_ca::Ca::open(&state, self.cacerts.as_deref(), &trust_domain)?
            .with_default_ttl(ttl);
        Ok(Some(Secure {
            address: address.clone(),
            ca: Arc::new(ca),
            credentials: Arc::new(weft_ca::service::Credentials::default()),
        }))
    }
}

/// `$XDG_STATE_HOME/weft/ca`, else `~/.local/state/weft/ca`.
fn default_ca_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("weft/ca"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("no HOME to keep the CA in; give --ca-dir"))?;
    Ok(PathBuf::from(home).join(".local/state/weft/ca"))
}

/// Istio's 15012: where, and the CA it serves and signs its own certificate with.
pub struct Secure {
    pub address: String,
    pub ca: Arc<weft_ca::Ca>,
    /// The credentials workloads prove their identity with.
    pub credentials: Arc<weft_ca::service::Credentials>,
}

/// The names istiod's certificate carries, so that clients configured for Istio find them.
const ISTIOD_NAMES: [&str; 4] = [
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod",
    "localhost",
];

/// The control plane's certificate lifetime. It is not rotated yet: a year outlasts any local
/// run.
const ISTIOD_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

impl ControlPlaneArgs {
    pub fn folder(&self) -> Folder {
        Folder {
            dir: self.dir.clone(),
            mesh_file: self.mesh_config.clone(),
        }
    }
}

/// What the control plane reports besides per-proxy state: the folder's problems now, in the
/// words `weft validate` uses.
#[derive(Default)]
pub struct ConfigStatus {
    /// Each refused an object, a file or the mesh config.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Refused objects whose last good version keeps serving.
    pub kept: Vec<String>,
    pub generation: u64,
}

/// Problems already logged: each is logged when it appears, not again on every edit while it
/// stays.
#[derive(Default)]
struct Told {
    problems: BTreeSet<String>,
    registry: BTreeSet<String>,
}

impl Told {
    fn report(&mut self, config: &Config) {
        let mut now = BTreeSet::new();
        for p in &config.errors {
            let line = p.to_string();
            if !self.problems.contains(&line) {
                let refused = p.object.as_ref().map_or("the file is refused", |o| {
                    if config.kept.contains(o) {
                        "refused; its last good version keeps serving"
                    } else {
                        "refused"
                    }
                });
                tracing::error!("{line} ({refused})");
            }
            now.insert(line);
        }
        for p in &config.warnings {
            let line = p.to_string();
            if !self.problems.contains(&line) {
                tracing::warn!("{line}");
            }
            now.insert(line);
        }
        for gone in self.problems.difference(&now) {
            tracing::info!("resolved: {gone}");
        }
        self.problems = now;
    }

    fn registry(&mut self, problems: &[String]) {
        let now: BTreeSet<String> = problems.iter().cloned().collect();
        for p in now.difference(&self.registry) {
            tracing::warn!("{p}");
        }
        self.registry = now;
    }
}

/// A running control plane.
pub struct Running {
    pub xds: SocketAddr,
    /// ADS and the certificate service over TLS, when asked for.
    pub secure_xds: Option<SocketAddr>,
    /// The mesh CA and the credentials it honours, with the secure port.
    pub ca: Option<(Arc<weft_ca::Ca>, Arc<weft_ca::service::Credentials>)>,
    pub monitoring: SocketAddr,
    /// The folder's config as last loaded (empty until the first load).
    pub config: watch::Receiver<Arc<Config>>,
    /// The folder's problems now.
    pub status: Arc<Mutex<ConfigStatus>>,
    /// Where each connected proxy stands (`/debug/syncz` reads the same).
    pub control: ControlPlane,
    /// What each proxy `weft up` runs writes (`/debug/logs`, `weft logs`).
    pub logs: super::monitor::Logs,
    stop: watch::Sender<bool>,
}

impl Running {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// How often the folder is checked for edits: well inside the second an edit may take.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// For a mesh without capture: the port a workload's sidecar fronts an endpoint of it on (see
/// `Inputs::front_workloads`).
pub type Fronting = Arc<dyn Fn(&weft_registry::Endpoint) -> Option<u16> + Send + Sync>;

pub async fn start(
    folder: Folder,
    xds: &str,
    monitoring: &str,
    secure: Option<Secure>,
    fronting: Option<Fronting>,
) -> anyhow::Result<Running> {
    let control = ControlPlane::new();
    let (stop, stopped) = watch::channel(false);
    let xds_listener = tokio::net::TcpListener::bind(xds)
        .await
        .with_context(|| format!("cannot listen for xDS on {xds}"))?;
    let ca = secure
        .as_ref()
        .map(|s| (s.ca.clone(), s.credentials.clone()));
    let mesh_identity = ca.is_some();
    let secure_xds = match secure {
        Some(s) => Some(serve_secure(s, &control, stopped.clone()).await?),
        None => None,
    };
    let monitor_listener = tokio::net::TcpListener::bind(monitoring)
        .await
        .with_context(|| format!("cannot listen for monitoring on {monitoring}"))?;
    let status = Arc::new(Mutex::new(ConfigStatus::default()));
    let logs = super::monitor::Logs::default();
    let (config_tx, config) = watch::channel(Arc::new(Config::default()));
    let running = Running {
        xds: xds_listener.local_addr()?,
        secure_xds,
        ca,
        monitoring: monitor_listener.local_addr()?,
        config,
        status: status.clone(),
        control: control.clone(),
        logs: logs.clone(),
        stop,
    };

    let server = control.server();
    let mut until = stopped.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = until.wait_for(|s| *s).await;
        };
        if let Err(e) = weft_xds::ads::serve(server, xds_listener, shutdown).await {
            tracing::error!(error = %e, "xDS server stopped");
        }
    });

    // Each version of the config gets its JWKS documents on its way to translation.
    let (updates, to_resolve) = mpsc::unbounded_channel::<Inputs>();
    let (resolved, received) = mpsc::unbounded_channel::<Inputs>();
    tokio::spawn(super::jwks::resolve(to_resolve, resolved));
    tokio::spawn(control.clone().run(received));

    let watch_status = status.clone();
    let mut until = stopped.clone();
    tokio::spawn(async move {
        let mut told = Told::default();
        let watching = folder.watch(WATCH_INTERVAL, move |loaded| {
            let mut st = watch_status.lock().unwrap_or_else(|p| p.into_inner());
            told.report(&loaded);
            st.errors = loaded.errors.iter().map(ToString::to_string).collect();
            st.warnings = loaded.warnings.iter().map(ToString::to_string).collect();
            st.kept = loaded.kept.iter().map(ToString::to_string).collect();
            st.generation += 1;
            let mut inputs = Inputs::new(&loaded.resources, loaded.mesh.resolve());
            inputs.mesh_identity = mesh_identity;
            if let Some(front) = &fronting {
                inputs.front_workloads(&mut |e| front(e));
            }
            told.registry(&inputs.registry.problems);
            config_tx.send_replace(Arc::new(loaded));
            updates.send(inputs).is_ok()
        });
        tokio::select! {
            () = watching => {}
            _ = until.wait_for(|s| *s) => {}
        }
    });

    let monitor = monitor::Monitor {
        control,
        status,
        logs,
        ca: running.ca.as_ref().map(|(ca, _)| ca.clone()),
        started: std::time::Instant::now(),
        config: running.config.clone(),
        graph: Default::default(),
    };
    let mut until = stopped;
    tokio::spawn(async move {
        monitor
            .serve(monitor_listener, async move {
                let _ = until.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(running)
}

/// Binds the secure port and serves ADS and the certificate service on it, over TLS with a
/// certificate of the mesh CA's. Clients are not asked for certificates yet: ADS here is
/// server-authenticated, and the certificate service authenticates callers by credential.
async fn serve_secure(
    secure: Secure,
    control: &ControlPlane,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(&secure.address)
        .await
        .with_context(|| format!("cannot listen for secure xDS on {}", secure.address))?;
    let addr = listener.local_addr()?;
    let ip = addr.ip().to_string();
    let mut names: Vec<&str> = ISTIOD_NAMES.to_vec();
    names.push(&ip);
    let cert = secure.ca.issue_server(&names, ISTIOD_CERT_TTL)?;
    let tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(&cert.cert_chain, &cert.key),
    );
    let ca_service = weft_ca::service::CaService::new(secure.ca, secure.credentials);
    let router = tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(control.server().into_service())
        .add_service(ca_service);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(error = %e, "secure xDS server stopped");
        }
    });
    Ok(addr)
}

pub fn init_logging(level: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: `weft up 2> file` and service managers get text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "weft={level},weft_xds={level},weft_registry={level},weft_proxy={level}"
        )))
        .init();
}

pub fn run(args: &ControlPlaneArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let running = start(
            args.folder(),
            &args.xds_address,
            &args.monitoring_address,
            args.secure()?,
            None,
        )
        .await?;
        println!(
            "weft control-plane: xDS on {}, status on http://{}",
            running.xds, running.monitoring
        );
        if let Some(s) = running.secure_xds {
            println!("weft control-plane: xDS and CA over TLS on {s}");
        }
        tokio::signal::ctrl_c().await?;
        running.stop();
        Ok(ExitCode::SUCCESS)
    })
}
