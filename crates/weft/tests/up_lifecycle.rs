//! `weft up` stops like a service: SIGINT, SIGTERM and SIGHUP each stop every proxy it started
//! (Weft's and real Envoy's), and the run folder goes with them unless `--keep-logs` is given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Service with one workload: one sidecar.
const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: { name: web }\n\
spec:\n  ports: [ { port: 80, name: http } ]\n  selector: { app: web }\n---\n\
apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
metadata: { name: web-v1, namespace: default }\n\
spec: { address: 127.0.0.1, ports: { http: 1 }, labels: { app: web } }\n";

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The parent's pid is the second field after the command name in parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// Starts `weft up`, sends `signal` once it is serving, and checks that it and its proxies are
/// gone and what became of the run folder.
fn stop_with(signal: &str, envoy: bool, keep_logs: bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let mut cmd = support::up::command(dir.path(), envoy);
    if keep_logs {
        cmd.arg("--keep-logs");
    }
    let mut up = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut run_dir = None;
    for line in BufReader::new(up.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("logs") {
            run_dir = Some(PathBuf::from(path.trim()));
        }
        if line.starts_with("Edits to") {
            break;
        }
    }
    let run_dir = run_dir.expect("the banner names the run folder");
    assert!(run_dir.is_dir(), "{}", run_dir.display());
    let proxies = children(up.id());
    assert_eq!(proxies.len(), 1, "one sidecar: {proxies:?}");
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &up.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "weft up still runs after {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exited.success(), "{signal}: {exited:?}");
    for p in proxies {
        assert!(
            !alive(p),
            "proxy {p} outlived weft up ({signal}, envoy {envoy})"
        );
    }
    assert_eq!(
        run_dir.exists(),
        keep_logs,
        "run folder {} after {signal}",
        run_dir.display()
    );
    if keep_logs {
        let logs = std::fs::read_dir(&run_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .count();
        assert_eq!(logs, 1, "the sidecar's log is kept");
        std::fs::remove_dir_all(&run_dir).unwrap();
    }
}

#[test]
fn sigterm_stops_weft_proxies_and_removes_the_run_folder() {
    stop_with("TERM", false, false);
}

#[test]
fn sigterm_stops_envoy_proxies() {
    stop_with("TERM", true, false);
}

#[test]
fn sighup_stops_the_mesh_and_keep_logs_keeps_the_run_folder() {
    stop_with("HUP", false, true);
    stop_with("HUP", true, true);
}

#[test]
fn sigint_stops_the_mesh() {
    stop_with("INT", true, false);
}
