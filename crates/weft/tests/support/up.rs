//! `weft up` as a script drives it: started on a folder with free ports, read through its
//! `--status-file`, its errors read from its stderr.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Up {
    pub child: Child,
    pub status_file: PathBuf,
    pub stderr_file: PathBuf,
    /// Gateway server port 80 listens here.
    pub gateway_port: u16,
    _files: tempfile::TempDir,
}

impl Up {
    /// Starts `weft up -f dir`, with real Envoy as every proxy when `envoy`, and waits for its
    /// status file.
    pub fn start(dir: &Path, envoy: bool) -> Up {
        Up::start_with(dir, envoy, &[])
    }

    /// `start` with more arguments for `weft up` (`--gateway-port 8000=PORT`...).
    pub fn start_with(dir: &Path, envoy: bool, args: &[String]) -> Up {
        let files = tempfile::tempdir().unwrap();
        let status_file = files.path().join("status.json");
        let stderr_file = files.path().join("stderr.log");
        let gateway_port = super::free_port();
        let mut cmd = command(dir, envoy);
        cmd.args([
            "--gateway-port",
            &format!("80={gateway_port}"),
            "--gateway-port",
            &format!("443={}", super::free_port()),
        ]);
        cmd.arg("--status-file").arg(&status_file);
        cmd.args(args);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap();
        let up = Up {
            child,
            status_file,
            stderr_file,
            gateway_port,
            _files: files,
        };
        up.wait_status("the status file", |_| true);
        up
    }

    pub fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.status_file).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The status file once `ready` holds for it; panics after 30 s, showing it and stderr.
    pub fn wait_status(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.status()
                && ready(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; status file: {:#?}\nstderr:\n{}",
                self.status(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The status of the proxy named `name` (`sidecar default/web-v1`), if it is listed.
    pub fn proxy(status: &Value, name: &str) -> Option<Value> {
        status["proxies"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    pub fn generation(&self) -> u64 {
        self.status()
            .and_then(|s| s["config"]["generation"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `weft up -f dir` on free ports, logging warnings and errors, with real Envoy as every proxy
/// when `envoy`.
pub fn command(dir: &Path, envoy: bool) -> Command {
    let mut cmd = Command::new(super::weft_binary());
    cmd.arg("up").arg("-f").arg(dir).args([
        "--xds-address",
        "127.0.0.1:0",
        "--monitoring-address",
        "127.0.0.1:0",
        "--port-base",
        "0",
        "-l",
        "warn",
    ]);
    if envoy {
        cmd.arg("--envoy").arg(super::envoy_binary());
    }
    cmd
}

/// Stops a `weft up` as Ctrl-C does, and kills it if it is still there after 5 s.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A Service, one workload answering on `echo`, and the ingress gateway routing every host to
/// it.
pub fn base_mesh(echo: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: web }}\n\
         spec:\n  ports: [ {{ port: 80, name: http }} ]\n  selector: {{ app: web }}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata: {{ name: web-v1, namespace: default }}\n\
         spec: {{ address: 127.0.0.1, ports: {{ http: {echo} }}, labels: {{ app: web, version: v1 }} }}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{ name: web-gateway }}\n\
         spec:\n  selector: {{ istio: ingressgateway }}\n  servers:\n  - port: {{ number: 80, name: http, protocol: HTTP }}\n    hosts: [ \"*\" ]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: web }}\n\
         spec:\n  hosts: [ \"*\" ]\n  gateways: [ web-gateway ]\n  http:\n  - route: [ {{ destination: {{ host: web }} }} ]\n"
    )
}

/// Whether process `pid` runs (a zombie does not count).
pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// `weft up` on a folder of `base_mesh` (its workload an echo upstream) and `files`, and the
/// gateway's port-80 address.
pub async fn mesh(envoy: bool, files: &[(&str, String)]) -> (tempfile::TempDir, Up, SocketAddr) {
    let echo = super::start_echo("web-v1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), base_mesh(echo.port())).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let up = tokio::task::block_in_place(|| Up::start(dir.path(), envoy));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    (dir, up, gateway)
}
