//! The proxies `weft up` runs, kept as the folder says: started when a workload or Gateway
//! selector appears, restarted when it changes, stopped when it goes, and restarted with
//! back-off when one exits on its own. Every proxy is started so that it dies with `weft up`,
//! even when `weft up` is killed with SIGKILL (see `exec_with_parent`).

use super::plan::{Fronts, Kind, Ports, ProxyPlan, ProxyPorts, bootstrap};
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long an exited proxy waits before its first restart; doubled per exit in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A proxy that ran this long before exiting starts its back-off again from the first step.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// What the fleet needs to start a proxy.
pub struct Options {
    pub run_dir: PathBuf,
    pub envoy: Option<PathBuf>,
    pub xds: SocketAddr,
    pub gateway_address: String,
    /// With the secure port: what Weft proxies need to get their workload certificates.
    pub identity: Option<Identities>,
    /// Where the control plane finds each proxy's output (`weft logs`).
    pub logs: crate::cmd::monitor::Logs,
    /// `--prometheus`: the file of scrape targets to keep current.
    pub prometheus_targets: Option<PathBuf>,
}

/// The mesh CA as proxies reach it, and the credentials `weft up` hands them.
pub struct Identities {
    pub ca_address: SocketAddr,
    /// The mesh roots, written in the run folder for proxies to trust the CA by.
    pub root_file: PathBuf,
    pub trust_domain: String,
    pub credentials: std::sync::Arc<weft_ca::service::Credentials>,
}

/// Where a proxy stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running,
    /// Exited on its own (or could not start); starts again at `at`.
    Restarting {
        at: Instant,
    },
}

/// One proxy and its process.
pub struct Managed {
    pub plan: ProxyPlan,
    pub ports: ProxyPorts,
    pub state: State,
    child: Option<Child>,
    started: Instant,
    /// Exits in a row without running `STABLE_AFTER` in between.
    exits_in_row: u32,
    /// Times it was started again after exiting on its own.
    pub restarts: u32,
    /// Why it last exited on its own.
    pub last_exit: Option<String>,
    /// The credential its current process proves its identity with.
    credential: Option<String>,
    /// Envoy's agent (`weft agent`), serving it its certificate over SDS.
    agent: Option<Child>,
}

impl Managed {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Fleet {
    pub proxies: BTreeMap<String, Managed>,
    /// Shared with the fronts (`Fronts`): no port is handed out twice.
    ports: std::sync::Arc<std::sync::Mutex<Ports>>,
    pub fronts: std::sync::Arc<Fronts>,
    opts: Options,
}

impl Fleet {
    pub fn new(
        opts: Options,
        ports: std::sync::Arc<std::sync::Mutex<Ports>>,
        fronts: std::sync::Arc<Fronts>,
    ) -> Fleet {
        Fleet {
            proxies: BTreeMap::new(),
            ports,
            fronts,
            opts,
        }
    }

    /// Where the proxies' bootstraps and logs are.
    pub fn run_dir(&self) -> &std::path::Path {
        &self.opts.run_dir
    }

    /// Makes the running proxies those of `plans`: new ones start, changed ones restart (keeping
    /// their ports), and those no longer called for stop. `quiet` for the first round, which the
    /// banner shows instead.
    pub fn reconcile(&mut self, plans: Vec<ProxyPlan>, quiet: bool) -> anyhow::Result<()> {
        let wanted: BTreeMap<String, ProxyPlan> =
            plans.into_iter().map(|p| (p.label.clone(), p)).collect();
        let gone: Vec<String> = self
            .proxies
            .keys()
            .filter(|l| !wanted.contains_key(*l))
            .cloned()
            .collect();
        for label in gone {
            if let Some(mut m) = self.proxies.remove(&label) {
                kill(&mut m);
                if let (Some(ids), Some(token)) = (&self.opts.identity, m.credential.take()) {
                    ids.credentials.revoke(&token);
                }
                tracing::info!("stopped {label}: it is no longer in the folder");
            }
        }
        for (label, plan) in wanted {
            match self.proxies.get_mut(&label) {
                Some(m) if m.plan == plan => {}
                Some(m) => {
                    kill(m);
                    m.plan = plan;
                    m.exits_in_row = 0;
                    start(m, &self.opts);
                    tracing::info!("restarted {label}: its workload changed");
                }
                None => {
                    let ports = self
                        .ports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .for_plan(&plan)?;
                    let mut m = Managed {
                        plan,
                        ports,
                        state: State::Running,
                        child: None,
                        started: Instant::now(),
                        exits_in_row: 0,
                        restarts: 0,
                        last_exit: None,
                        credential: None,
                        agent: None,
                    };
                    start(&mut m, &self.opts);
                    if !quiet {
                        tracing::info!(
                            "started {label}: {}",
                            describe(&m, &self.opts.gateway_address, &self.fronts)
                        );
                    }
                    self.proxies.insert(label, m);
                }
            }
        }
        *self.opts.logs.lock().unwrap_or_else(|p| p.into_inner()) = self
            .proxies
            .values()
            .map(|m| {
                (
                    m.plan.label.clone(),
                    crate::cmd::monitor::Known {
                        node_id: m.plan.node_id.clone(),
                        log: log_file(&self.opts.run_dir, &m.plan),
                        stats: std::net::SocketAddr::from(([127, 0, 0, 1], m.ports.stats)),
                    },
                )
            })
            .collect();
        if let Some(path) = &self.opts.prometheus_targets {
            let targets: Vec<serde_json::Value> = self
                .proxies
                .values()
                .map(|m| {
                    super::prometheus::target(
                        std::net::SocketAddr::from(([127, 0, 0, 1], m.ports.stats)),
                        &m.plan,
                    )
                })
                .collect();
            if let Err(e) = super::prometheus::write_targets(path, &targets) {
                tracing::error!("cannot write {}: {e}", path.display());
            }
        }
        Ok(())
    }

    /// Notices proxies that exited on their own, reports each, and starts those whose back-off
    /// has passed. Returns whether anything changed.
    pub fn check(&mut self) -> bool {
        let now = Instant::now();
        let mut changed = false;
        for (label, m) in &mut self.proxies {
            match m.state {
                State::Running => {
                    let exited = match m.child.as_mut().map(Child::try_wait) {
                        Some(Ok(Some(status))) => Some(status.to_string()),
                        Some(Ok(None)) => None,
                        Some(Err(e)) => Some(format!("cannot be waited for: {e}")),
                        None => Some("did not start".to_string()),
                    };
                    let Some(why) = exited else { continue };
                    m.child = None;
                    if now.duration_since(m.started) >= STABLE_AFTER {
                        m.exits_in_row = 0;
                    }
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << m.exits_in_row.min(5))
                        .min(MAX_BACKOFF);
                    m.exits_in_row += 1;
                    tracing::error!(
                        "{label} exited unexpectedly ({why}); restarting it in {}s (log: {})",
                        backoff.as_secs(),
                        log_file(&self.opts.run_dir, &m.plan).display()
                    );
                    m.last_exit = Some(why);
                    m.state = State::Restarting { at: now + backoff };
                    changed = true;
                }
                State::Restarting { at } if at <= now => {
                    start(m, &self.opts);
                    m.restarts += 1;
                    if m.child.is_some() {
                        tracing::info!("restarted {label} (restart {})", m.restarts);
                    }
                    changed = true;
                }
                State::Restarting { .. } => {}
            }
        }
        changed
    }

    /// Stops every proxy.
    pub fn stop_all(&mut self) {
        for m in self.proxies.values_mut() {
            kill(m);
        }
    }
}

fn kill(m: &mut Managed) {
    for mut child in [m.child.take(), m.agent.take()].into_iter().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn file_name(plan: &ProxyPlan) -> String {
    plan.label.replace([' ', '/', ',', '='], "-")
}

pub fn log_file(run_dir: &Path, plan: &ProxyPlan) -> PathBuf {
    run_dir.join(format!("{}.log", file_name(plan)))
}

/// Starts the proxy's process; a failure to start is an exit like any other (reported, and
/// tried again after the back-off).
fn start(m: &mut Managed, opts: &Options) {
    m.started = Instant::now();
    m.state = State::Running;
    // Each start gets a credential of its own; the one before proves nothing any more.
    if let Some(ids) = &opts.identity {
        if let Some(old) = m.credential.take() {
            ids.credentials.revoke(&old);
        }
        let identity = weft_ca::Identity::new(
            &ids.trust_domain,
            &m.plan.namespace,
            &m.plan.service_account,
        );
        match ids.credentials.issue(identity) {
            Ok(token) => m.credential = Some(token),
            Err(e) => tracing::error!("{}: no credential: {e}", m.plan.label),
        }
    }
    if opts.envoy.is_some() {
        match spawn_agent(m, opts) {
            Ok(agent) => m.agent = agent,
            Err(e) => tracing::error!("{}: no agent: {e:#}", m.plan.label),
        }
    }
    match spawn(m, opts) {
        Ok(child) => m.child = Some(child),
        Err(e) => {
            tracing::error!("{}: {e:#}", m.plan.label);
            m.child = None;
        }
    }
}

fn spawn(m: &Managed, opts: &Options) -> anyhow::Result<Child> {
    let p = &m.plan;
    let file = opts.run_dir.join(format!("{}.yaml", file_name(p)));
    let sds = (opts.envoy.is_some() && m.credential.is_some()).then(|| sds_socket(opts, p));
    let text = serde_json::to_string_pretty(&bootstrap(
        p,
        m.ports,
        opts.xds,
        &opts.gateway_address,
        sds.as_deref(),
    ))?;
    std::fs::write(&file, text)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(&opts.run_dir, p))?;
    let weft = std::env::current_exe()?;
    let mut cmd = Command::new(&weft);
    cmd.args(["exec-with-parent", &std::process::id().to_string(), "--"]);
    match &opts.envoy {
        Some(envoy) => {
            cmd.arg(envoy).args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "-l",
                "warning",
                "-c",
            ]);
        }
        None => {
            cmd.arg(&weft)
                .args(["proxy", "--concurrency", "1", "-l", "warn"]);
            ca_args(&mut cmd, m, opts)?;
            cmd.arg("-c");
        }
    }
    // Both streams to one file, as `kubectl logs` shows a container's: a proxy's access log
    // to /dev/stdout lands there too.
    cmd.arg(&file)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn()
        .with_context(|| format!("cannot start the proxy for {}", p.label))
}

/// `--ca-address`, `--ca-root` and `--credential-file` for a proxy with a credential (written
/// to a file of its own).
fn ca_args(cmd: &mut Command, m: &Managed, opts: &Options) -> anyhow::Result<bool> {
    let (Some(ids), Some(token)) = (&opts.identity, &m.credential) else {
        return Ok(false);
    };
    let file = opts
        .run_dir
        .join(format!("{}.credential", file_name(&m.plan)));
    write_private(&file, token)?;
    cmd.arg("--ca-address")
        .arg(ids.ca_address.to_string())
        .arg("--ca-root")
        .arg(&ids.root_file)
        .arg("--credential-file")
        .arg(&file);
    Ok(true)
}

/// Where an Envoy's agent serves its secrets.
fn sds_socket(opts: &Options, p: &ProxyPlan) -> PathBuf {
    opts.run_dir.join(format!("{}.sds.sock", file_name(p)))
}

/// `weft agent` for an Envoy with a credential, as pilot-agent runs beside Envoy in a pod;
/// its log goes to the proxy's.
fn spawn_agent(m: &Managed, opts: &Options) -> anyhow::Result<Option<Child>> {
    let weft = std::env::current_exe()?;
    let mut cmd = Command::new(&weft);
    cmd.args(["exec-with-parent", &std::process::id().to_string(), "--"])
        .arg(&weft)
        .args(["agent", "-l", "warn"]);
    if !ca_args(&mut cmd, m, opts)? {
        return Ok(None);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(&opts.run_dir, &m.plan))?;
    cmd.arg("--sds-socket")
        .arg(sds_socket(opts, &m.plan))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start the agent for {}", m.plan.label))?;
    Ok(Some(child))
}

/// A file only its owner reads: a credential is as good as the identity it proves.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// One line on where a proxy listens, for people.
pub fn describe(m: &Managed, gateway_address: &str, fronts: &Fronts) -> String {
    let mut line = format!(
        "admin http://127.0.0.1:{}  metrics http://127.0.0.1:{}/stats/prometheus",
        m.ports.admin, m.ports.stats
    );
    if let Some(port) = m.ports.http_proxy {
        line.push_str(&format!("  HTTP_PROXY=http://127.0.0.1:{port}"));
    }
    if m.plan.kind == Kind::Sidecar {
        for (address, app, sidecar) in fronts.of(&m.plan.namespace, &m.plan.workload) {
            let host = weft_xds::translate::fronting_host(&address);
            line.push_str(&format!("  inbound {host}:{sidecar} -> {address}:{app}"));
        }
    }
    if m.plan.kind == Kind::Gateway {
        for (server, listen) in &m.plan.gateway_ports {
            line.push_str(&format!(
                "  {gateway_address}:{listen} (Gateway port {server})"
            ));
        }
    }
    line
}

/// `weft exec-with-parent PID -- PROGRAM ARGS...`: becomes PROGRAM, set to be killed when the
/// thread of `PID` that started it exits. Linux keeps the parent-death signal across exec, so
/// the proxy itself (Envoy or `weft proxy`) carries it, with no process in between; and
/// nothing here needs `unsafe` (a `pre_exec` hook would). `weft up` starts its proxies from
/// threads that live as long as it does.
pub fn exec_with_parent(parent: u32, program: &[std::ffi::OsString]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("cannot set the parent-death signal")?;
    // The parent may have died before the signal was set: then nobody would send it.
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get().unsigned_abs());
    if ppid != parent {
        anyhow::bail!("the process that started this one ({parent}) is gone");
    }
    let Some((program, args)) = program.split_first() else {
        anyhow::bail!("exec-with-parent: no program given");
    };
    let e = Command::new(program).args(args).exec();
    Err(anyhow::Error::new(e).context(format!("cannot run {}", program.to_string_lossy())))
}
