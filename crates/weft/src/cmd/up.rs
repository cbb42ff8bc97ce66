//! `weft up -f DIR`: a mesh on this machine. The control plane runs in this process; each
//! workload (WorkloadEntry or Pod) gets a sidecar proxy and each distinct Gateway `selector` a
//! gateway proxy, as Istio's install provides istio-ingressgateway. Proxies are child
//! processes — `weft proxy`, or Envoy itself with `--envoy` — started from an ordinary Envoy
//! bootstrap that points them at the control plane.
//!
//! Without traffic capture, applications send through their sidecar as an HTTP proxy
//! (`HTTP_PROXY=http://127.0.0.1:PORT`, routed by Host), and reach each other directly.

use super::control_plane::{self, Running};
use anyhow::Context as _;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use weft_api::Resource;
use weft_api::types::common::Labels;

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
}

/// One proxy `weft up` runs.
#[derive(Debug, Clone)]
pub struct ProxyPlan {
    /// `sidecar default/web-v1`, `gateway istio=ingressgateway`.
    pub label: String,
    pub node_id: String,
    pub namespace: String,
    pub labels: Labels,
    pub admin: u16,
    /// Sidecars: the HTTP proxy port applications use.
    pub http_proxy: Option<u16>,
    /// Gateways: (Gateway server port, listening port).
    pub gateway_ports: Vec<(u16, u16)>,
}

pub struct Up {
    pub control: Running,
    pub proxies: Vec<ProxyPlan>,
    pub children: Vec<(String, Child)>,
    pub run_dir: PathBuf,
    pub keep_logs: bool,
}

impl Up {
    /// Stops every proxy and the control plane, and removes the run folder unless asked to
    /// keep it.
    pub fn stop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.control.stop();
        if !self.keep_logs
            && self.run_dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.run_dir)
        {
            eprintln!("weft up: cannot remove {}: {e}", self.run_dir.display());
        }
    }

    /// What runs where, for people.
    pub fn describe(&self, gateway_address: &str) -> String {
        let mut out = format!(
            "control plane  xDS {}  status http://{}/debug/syncz\n",
            self.control.xds, self.control.monitoring
        );
        for p in &self.proxies {
            let mut line = format!("{:<40} admin http://127.0.0.1:{}", p.label, p.admin);
            if let Some(port) = p.http_proxy {
                line.push_str(&format!("  HTTP_PROXY=http://127.0.0.1:{port}"));
            }
            for (server, listen) in &p.gateway_ports {
                line.push_str(&format!(
                    "  {gateway_address}:{listen} (Gateway port {server})"
                ));
            }
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&format!("logs           {}\n", self.run_dir.display()));
        out
    }
}

/// Ports handed out one after another from `base`, skipping those in use; any free port when
/// `base` is 0.
struct Ports {
    next: u16,
}

impl Ports {
    fn take(&mut self) -> anyhow::Result<u16> {
        if self.next == 0 {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            return Ok(l.local_addr()?.port());
        }
        while self.next < u16::MAX {
            let p = self.next;
            self.next += 1;
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                return Ok(p);
            }
        }
        anyhow::bail!("no free port left above the port base")
    }
}

fn parse_port_map(pairs: &[String]) -> anyhow::Result<BTreeMap<u16, u16>> {
    pairs
        .iter()
        .map(|p| {
            let (a, b) = p
                .split_once('=')
                .with_context(|| format!("--gateway-port {p}: expected PORT=PORT"))?;
            Ok((a.trim().parse()?, b.trim().parse()?))
        })
        .collect()
}

/// The proxies the folder calls for: a sidecar per WorkloadEntry and Pod, a gateway per
/// distinct Gateway selector.
fn plan(resources: &[Resource], args: &Args) -> anyhow::Result<Vec<ProxyPlan>> {
    let port_map = parse_port_map(&args.gateway_ports)?;
    let mut ports = Ports {
        next: args.port_base,
    };
    let mut out = Vec::new();
    let mut selectors: BTreeMap<Vec<(String, String)>, Vec<u16>> = BTreeMap::new();
    for r in resources {
        let (name, ns) = (r.name().to_string(), r.namespace().to_string());
        let workload = match r {
            Resource::WorkloadEntry(w) => Some((
                w.spec.address.clone().unwrap_or_else(|| "127.0.0.1".into()),
                w.spec.labels.clone(),
            )),
            Resource::Pod(p) => Some((
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_else(|| "127.0.0.1".into()),
                p.metadata.labels.clone(),
            )),
            Resource::Gateway(g) => {
                let key: Vec<(String, String)> = g.spec.selector.clone().into_iter().collect();
                let entry = selectors.entry(key).or_default();
                for s in &g.spec.servers {
                    if let Some(n) = s.port.as_ref().and_then(|p| p.number) {
                        entry.push(u16::try_from(n).unwrap_or(0));
                    }
                }
                None
            }
            _ => None,
        };
        if let Some((ip, labels)) = workload {
            out.push(ProxyPlan {
                label: format!("sidecar {ns}/{name}"),
                node_id: format!("sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local"),
                namespace: ns,
                labels,
                admin: ports.take()?,
                http_proxy: Some(ports.take()?),
                gateway_ports: Vec::new(),
            });
        }
    }
    for (i, (selector, mut server_ports)) in selectors.into_iter().enumerate() {
        if selector.is_empty() {
            continue;
        }
        server_ports.sort_unstable();
        server_ports.dedup();
        let name = selector
            .iter()
            .find(|(k, _)| k == "istio")
            .map_or_else(|| format!("gateway-{i}"), |(_, v)| format!("istio-{v}"));
        let shown: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(ProxyPlan {
            label: format!("gateway {}", shown.join(",")),
            node_id: format!("router~127.0.0.1~{name}.istio-system~istio-system.svc.cluster.local"),
            namespace: "istio-system".into(),
            labels: selector.into_iter().collect(),
            admin: ports.take()?,
            http_proxy: None,
            gateway_ports: server_ports
                .into_iter()
                .map(|p| (p, port_map.get(&p).copied().unwrap_or(p)))
                .collect(),
        });
    }
    Ok(out)
}

/// The bootstrap a proxy starts from: its identity, its admin port, and ADS at the control
/// plane. Envoy and `weft proxy` both take it.
fn bootstrap(p: &ProxyPlan, xds: SocketAddr, gateway_address: &str) -> serde_json::Value {
    let mut metadata = json!({
        "NAMESPACE": p.namespace,
        "LABELS": p.labels,
        "INTERCEPTION_MODE": "NONE",
    });
    if let Some(port) = p.http_proxy {
        metadata["HTTP_PROXY_PORT"] = json!(port.to_string());
    }
    if !p.gateway_ports.is_empty() {
        let map: Vec<String> = p
            .gateway_ports
            .iter()
            .map(|(a, b)| format!("{a}={b}"))
            .collect();
        metadata["WEFT_GATEWAY_PORTS"] = json!(map.join(","));
        metadata["WEFT_GATEWAY_ADDRESS"] = json!(gateway_address);
    }
    json!({
        "node": { "id": p.node_id, "cluster": p.label.replace(' ', "-"), "metadata": metadata },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": p.admin } } },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [ { "envoy_grpc": { "cluster_name": "xds-grpc" } } ]
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" }
        },
        "static_resources": { "clusters": [ {
            "name": "xds-grpc",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} }
                }
            },
            "load_assignment": { "cluster_name": "xds-grpc", "endpoints": [ { "lb_endpoints": [ {
                "endpoint": { "address": { "socket_address": {
                    "address": xds.ip().to_string(), "port_value": xds.port() } } }
            } ] } ] }
        } ] }
    })
}

fn spawn(
    p: &ProxyPlan,
    bootstrap_file: &Path,
    log: &Path,
    envoy: Option<&Path>,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    let mut cmd = match envoy {
        Some(envoy) => {
            let mut c = Command::new(envoy);
            c.args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "-l",
                "warning",
                "-c",
            ]);
            c
        }
        None => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["proxy", "--concurrency", "1", "-l", "warn", "-c"]);
            c
        }
    };
    cmd.arg(bootstrap_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd.spawn()
        .with_context(|| format!("cannot start the proxy for {}", p.label))
}

/// Starts the control plane and every proxy the folder calls for.
pub async fn start(args: &Args) -> anyhow::Result<Up> {
    let c = &args.control;
    let folder = c.folder();
    // The workloads are read once, at start; their config is watched by the control plane.
    let resources = match folder.load() {
        Ok(c) => c.resources,
        Err(errors) => anyhow::bail!("{}", errors.join("\n")),
    };
    let proxies = plan(&resources, args)?;
    let control = control_plane::start(folder, &c.xds_address, &c.monitoring_address).await?;
    let run_dir = std::env::temp_dir().join(format!("weft-up-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let mut children = Vec::new();
    for p in &proxies {
        let file_name = p.label.replace([' ', '/', ',', '='], "-");
        let file = run_dir.join(format!("{file_name}.yaml"));
        let text = serde_json::to_string_pretty(&bootstrap(p, control.xds, &args.gateway_address))?;
        std::fs::write(&file, text)?;
        let child = spawn(
            p,
            &file,
            &run_dir.join(format!("{file_name}.log")),
            args.envoy.as_deref(),
        )?;
        children.push((p.label.clone(), child));
    }
    Ok(Up {
        control,
        proxies,
        children,
        run_dir,
        keep_logs: args.keep_logs,
    })
}

/// Resolves with the name of the first of SIGINT, SIGTERM and SIGHUP to arrive: each stops the
/// mesh, as a service manager or a closed terminal expects.
pub(crate) async fn stopped() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    })
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    control_plane::init_logging(&args.control.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut up = start(args).await?;
        println!("weft up: a mesh from {}\n", args.control.dir.display());
        print!("{}", up.describe(&args.gateway_address));
        println!(
            "\nEdits to {} are validated and pushed live. Ctrl-C stops everything.",
            args.control.dir.display()
        );
        let signal = stopped().await?;
        tracing::info!(signal, "stopping the mesh");
        up.stop();
        Ok(ExitCode::SUCCESS)
    })
}
