//! `weft up -f DIR`: a mesh on this machine. The control plane runs in this process; each
//! workload (WorkloadEntry or Pod) gets a sidecar proxy and each distinct Gateway `selector` a
//! gateway proxy, as Istio's install provides istio-ingressgateway. Proxies are child
//! processes — `weft proxy`, or Envoy itself with `--envoy` — started from an ordinary Envoy
//! bootstrap that points them at the control plane.
//!
//! Without traffic capture, applications send through their sidecar as an HTTP proxy
//! (`HTTP_PROXY=http://127.0.0.1:PORT`, routed by Host), and the mesh reaches each workload
//! through its own sidecar, as in a pod: the mesh advertises a port of the sidecar's for every
//! port the workload's application listens on (`Inputs::front_workloads`), and the sidecar hands
//! the traffic to the application's port, the one its WorkloadEntry or Pod names.

pub mod fleet;
pub mod plan;
pub mod prometheus;
mod status_file;

use super::control_plane::{self, ConfigStatus, Running};
use fleet::Fleet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use weft_registry::source::Config;
use weft_xds::control::ControlPlane;

#[derive(clap::Args, Clone)]
pub struct Args {
    #[command(flatten)]
    pub control: control_plane::ControlPlaneArgs,
    /// The address gateways listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub gateway_address: String,
    /// Gateway server port → the port the gateway listens on, as the istio-ingressgateway
    /// Service maps them (so that port 80 needs no root). A port not listed listens as itself.
    #[arg(long = "gateway-port", value_name = "PORT=PORT", default_values_t = ["80=8080".to_string(), "443=8443".to_string()])]
    pub gateway_ports: Vec<String>,
    /// First port for the proxies' admin and HTTP proxy ports; 0 picks free ports.
    #[arg(long, default_value_t = 15100)]
    pub port_base: u16,
    /// Run real Envoy (this binary) as every proxy instead of `weft proxy`.
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// Keep the run folder (proxies' bootstraps and logs) when the mesh stops; it is removed
    /// otherwise.
    #[arg(long)]
    pub keep_logs: bool,
    /// Keep this JSON file current with what runs where and how each proxy stands (its
    /// schema is in the README); removed when the mesh stops.
    #[arg(long, value_name = "PATH")]
    pub status_file: Option<PathBuf>,
    /// Write a Prometheus configuration scraping the control plane and every proxy (Istio's
    /// `istiod` and `envoy-stats` jobs) and start Debian's `prometheus` on it, if installed.
    #[arg(long)]
    pub prometheus: bool,
    /// Where that Prometheus serves.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub prometheus_address: String,
}

pub struct Up {
    pub control: Running,
    pub fleet: Arc<Mutex<Fleet>>,
    pub run_dir: PathBuf,
    pub keep_logs: bool,
    status_file: Option<PathBuf>,
    stop: watch::Sender<bool>,
    pub prometheus: Option<prometheus::Prometheus>,
}

/// What the status file shows besides the fleet, cloned for the task that keeps it.
pub struct View {
    pub control: ControlPlane,
    pub status: Arc<Mutex<ConfigStatus>>,
    pub xds: SocketAddr,
    pub monitoring: SocketAddr,
    pub gateway_address: String,
    pub folder: PathBuf,
    /// `--prometheus`: its address (when started) and configuration.
    pub prometheus: Option<(Option<String>, PathBuf)>,
}

fn lock(fleet: &Mutex<Fleet>) -> std::sync::MutexGuard<'_, Fleet> {
    fleet.lock().unwrap_or_else(|p| p.into_inner())
}

impl Up {
    /// Stops every proxy and the control plane, and removes the run folder unless asked to
    /// keep it, and the status file.
    pub fn stop(&mut self) {
        self.stop.send_replace(true);
        self.prometheus = None;
        lock(&self.fleet).stop_all();
        self.control.stop();
        if !self.keep_logs
            && self.run_dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.run_dir)
        {
            eprintln!("weft up: cannot remove {}: {e}", self.run_dir.display());
        }
        if let Some(f) = &self.status_file {
            let _ = std::fs::remove_file(f);
        }
    }

    /// What runs where, for people.
    pub fn describe(&self, gateway_address: &str) -> String {
        let mut out = format!(
            "control plane  xDS {}  status http://{}/debug/syncz\n",
            self.control.xds, self.control.monitoring
        );
        let fleet = lock(&self.fleet);
        for m in fleet.proxies.values() {
            out.push_str(&format!(
                "{:<40} {}\n",
                m.plan.label,
                fleet::describe(m, gateway_address, &fleet.fronts)
            ));
        }
        out.push_str(&format!(
            "dashboard      http://{}/dashboard\n",
            self.control.monitoring
        ));
        if let Some(p) = &self.prometheus {
            match &p.url {
                Some(url) => out.push_str(&format!("prometheus     {url}\n")),
                None => out.push_str(&format!(
                    "prometheus     not installed (apt-get install prometheus); its configuration: prometheus --config.file={}\n",
                    p.config.display()
                )),
            }
        }
        out.push_str(&format!("logs           {}\n", self.run_dir.display()));
        out
    }
}

/// Starts the control plane and every proxy the folder calls for, then keeps the proxies as
/// the folder says until `stop`.
pub async fn start(args: &Args) -> anyhow::Result<Up> {
    let c = &args.control;
    let port_map = plan::parse_port_map(&args.gateway_ports)?;
    let ports = Arc::new(Mutex::new(plan::Ports::from_base(args.port_base)));
    let fronts = Arc::new(plan::Fronts::new(ports.clone()));
    let fronting: control_plane::Fronting = {
        let fronts = fronts.clone();
        Arc::new(move |e| fronts.port(e))
    };
    let control = control_plane::start(
        c.folder(),
        &c.xds_address,
        &c.monitoring_address,
        c.secure()?,
        Some(fronting),
    )
    .await?;
    // The first load: objects it refuses are reported by the control plane, and the rest of
    // the mesh starts.
    let mut config = control.config.clone();
    config.changed().await?;
    let first = config.borrow_and_update().clone();
    remove_stale_run_folders();
    let run_dir = std::env::temp_dir().join(format!("weft-up-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    if !args.keep_logs {
        std::fs::write(run_dir.join(RUNNING_MARK), "")?;
    }
    let prometheus = if args.prometheus {
        Some(prometheus::start(
            &run_dir,
            control.monitoring,
            &args.prometheus_address,
        )?)
    } else {
        None
    };
    let mut fleet = Fleet::new(
        fleet::Options {
            run_dir: run_dir.clone(),
            envoy: args.envoy.clone(),
            xds: control.xds,
            gateway_address: args.gateway_address.clone(),
            identity: identities(&control, &run_dir)?,
            logs: control.logs.clone(),
            prometheus_targets: prometheus.as_ref().map(|p| p.targets.clone()),
        },
        ports,
        fronts,
    );
    fleet.reconcile(plan::plan(&first.resources, &port_map), true)?;
    let fleet = Arc::new(Mutex::new(fleet));
    let (stop, stopped) = watch::channel(false);
    let view = View {
        control: control.control.clone(),
        status: control.status.clone(),
        xds: control.xds,
        monitoring: control.monitoring,
        gateway_address: args.gateway_address.clone(),
        folder: c.dir.clone(),
        prometheus: prometheus
            .as_ref()
            .map(|p| (p.url.clone(), p.config.clone())),
    };
    let writer = args.status_file.clone().map(status_file::Writer::new);
    tokio::spawn(supervise(
        fleet.clone(),
        config,
        port_map,
        view,
        writer,
        stopped,
    ));
    Ok(Up {
        control,
        fleet,
        run_dir,
        keep_logs: args.keep_logs,
        status_file: args.status_file.clone(),
        stop,
        prometheus,
    })
}

/// With the secure port, what Weft proxies need to get their workload certificates: the CA's
/// address, its roots in a file of the run folder, and the credentials to hand out.
fn identities(
    control: &control_plane::Running,
    run_dir: &std::path::Path,
) -> anyhow::Result<Option<fleet::Identities>> {
    let (Some(ca_address), Some((ca, credentials))) = (control.secure_xds, &control.ca) else {
        return Ok(None);
    };
    let root_file = run_dir.join("root-cert.pem");
    std::fs::write(&root_file, ca.roots_pem())?;
    Ok(Some(fleet::Identities {
        ca_address,
        root_file,
        trust_domain: ca.trust_domain().to_string(),
        credentials: credentials.clone(),
    }))
}

/// In a run folder that is to be removed when its `weft up` stops.
const RUNNING_MARK: &str = ".remove-when-stopped";

/// Removes the run folders of `weft up`s that are gone without removing theirs (killed with
/// SIGKILL, or a crash): their proxies died with them, so nothing reads them. Folders kept
/// with `--keep-logs` have no mark and stay.
fn remove_stale_run_folders() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("weft-up-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let dead = !std::path::Path::new("/proc").join(pid.to_string()).exists();
        if dead && e.path().join(RUNNING_MARK).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// How often exited proxies are looked for and the status file refreshed.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(200);

/// Follows the folder (workloads and Gateways appear, change and go) and the proxies (one that
/// exits is restarted), and keeps the status file current.
async fn supervise(
    fleet: Arc<Mutex<Fleet>>,
    mut config: watch::Receiver<Arc<Config>>,
    port_map: BTreeMap<u16, u16>,
    view: View,
    mut writer: Option<status_file::Writer>,
    mut stopped: watch::Receiver<bool>,
) {
    let fronts = lock(&fleet).fronts.clone();
    let mut inbound = status_file::inbound(&config.borrow().resources, &fronts);
    let mut tick = tokio::time::interval(SUPERVISE_INTERVAL);
    let mut write_failed = false;
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = config.borrow_and_update().clone();
                inbound = status_file::inbound(&now.resources, &fronts);
                if let Err(e) = lock(&fleet).reconcile(plan::plan(&now.resources, &port_map), false) {
                    tracing::error!("cannot follow the folder's workloads: {e:#}");
                }
            }
            _ = tick.tick() => {
                lock(&fleet).check();
            }
        }
        if let Some(w) = &mut writer {
            let value = status_file::render(&lock(&fleet), &view, &inbound);
            match w.write(&value) {
                Ok(()) => write_failed = false,
                Err(e) if !write_failed => {
                    tracing::error!("cannot write the status file {}: {e}", w.path.display());
                    write_failed = true;
                }
                Err(_) => {}
            }
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP: each stops the mesh, as a service manager or a closed terminal
/// expects. Listening starts before the banner that tells a script the mesh is up, so a signal
/// sent right after it is not taken by the default disposition (which would leave the run
/// folder behind).
pub(crate) struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The name of the first to arrive.
    pub(crate) async fn first(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    control_plane::init_logging(&args.control.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut up = start(args).await?;
        let mut signals = StopSignals::listen()?;
        println!("weft up: a mesh from {}\n", args.control.dir.display());
        print!("{}", up.describe(&args.gateway_address));
        let refused = up
            .control
            .status
            .lock()
            .map(|s| s.errors.len())
            .unwrap_or(0);
        if refused > 0 {
            println!(
                "\n{refused} problem(s) refused objects, files or the mesh config (see the errors above, or http://{}/debug/problems); the rest of the mesh runs.",
                up.control.monitoring
            );
        }
        println!(
            "\nEdits to {} are validated and pushed live; workloads added, changed or removed start, restart or stop their sidecars. Ctrl-C stops everything.",
            args.control.dir.display()
        );
        let signal = signals.first().await;
        tracing::info!(signal, "stopping the mesh");
        up.stop();
        Ok(ExitCode::SUCCESS)
    })
}
