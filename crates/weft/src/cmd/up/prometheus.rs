//! `weft up --prometheus`: a Prometheus configuration in the run folder that scrapes the
//! control plane (job `istiod`, `/metrics`) and every proxy (job `envoy-stats`,
//! `/stats/prometheus` on its Istio 15090 port), as Istio's documented scrape jobs do; and
//! Debian's `prometheus`, started on it when it is installed. Proxies come and go with the
//! folder: they are a file Prometheus re-reads (`file_sd_configs`).

use anyhow::Context as _;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// How often Prometheus scrapes: short, for a mesh on one machine.
const SCRAPE_INTERVAL: &str = "2s";

pub struct Prometheus {
    /// The scrape configuration, for a Prometheus run by hand.
    pub config: PathBuf,
    /// The proxies Prometheus scrapes, rewritten as they change.
    pub targets: PathBuf,
    /// Where the started Prometheus serves (None when it is not installed).
    pub url: Option<String>,
    child: Option<Child>,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes the configuration, and starts `prometheus` on `address` if it is on the PATH.
pub fn start(run_dir: &Path, monitoring: SocketAddr, address: &str) -> anyhow::Result<Prometheus> {
    let config = run_dir.join("prometheus.yml");
    let targets = run_dir.join("prometheus-proxies.json");
    std::fs::write(&targets, "[]")?;
    let yaml = format!(
        "# Written by weft up: Istio's scrape jobs for this mesh.\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         scrape_configs:\n\
         - job_name: istiod\n  metrics_path: /metrics\n  static_configs:\n  - targets: ['{monitoring}']\n    labels: {{ app: istiod, namespace: istio-system }}\n\
         - job_name: envoy-stats\n  metrics_path: /stats/prometheus\n  file_sd_configs:\n  - files: ['{}']\n    refresh_interval: {SCRAPE_INTERVAL}\n",
        targets.display()
    );
    std::fs::write(&config, yaml)?;
    let Some(binary) = which("prometheus") else {
        return Ok(Prometheus {
            config,
            targets,
            url: None,
            child: None,
        });
    };
    let log = std::fs::File::create(run_dir.join("prometheus.log"))?;
    let weft = std::env::current_exe()?;
    let child = Command::new(weft)
        .args(["exec-with-parent", &std::process::id().to_string(), "--"])
        .arg(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            run_dir.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address={address}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(Prometheus {
        config,
        targets,
        url: Some(format!("http://{address}")),
        child: Some(child),
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// One scrape target of `envoy-stats`: a proxy's stats address, labelled as Istio's pod jobs
/// label them.
pub fn target(stats: SocketAddr, plan: &super::plan::ProxyPlan) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    labels.insert("namespace".into(), json!(plan.namespace));
    labels.insert("pod".into(), json!(plan.workload));
    labels.insert("proxy".into(), json!(plan.label));
    for key in ["app", "version"] {
        if let Some(v) = plan.labels.get(key) {
            labels.insert(key.into(), json!(v));
        }
    }
    json!({ "targets": [stats.to_string()], "labels": labels })
}

/// Rewrites the proxies' file by rename, so Prometheus never reads half of it.
pub fn write_targets(path: &Path, targets: &[serde_json::Value]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(targets)?)?;
    std::fs::rename(tmp, path)
}
