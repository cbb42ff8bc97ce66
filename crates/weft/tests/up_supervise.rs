//! `weft up` as a service manager, driven as a script drives it (through `--status-file`), with
//! Weft proxies and with real Envoy: a bad object at start is refused alone, workloads start,
//! restart and stop with the folder, a proxy that exits is restarted with back-off, none
//! outlives a SIGKILLed `weft up`, and a NACK is an error naming the proxy, resource and reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::up::{Up, alive, mesh};
use support::{Req, try_request};

fn workload(name: &str, port: u16, version: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata: {{ name: {name}, namespace: default }}\n\
         spec: {{ address: 127.0.0.1, ports: {{ http: {port} }}, labels: {{ app: web, version: {version} }} }}\n"
    )
}

fn wait(up: &Up, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    tokio::task::block_in_place(|| up.wait_status(what, ready))
}

fn synced(status: &Value, name: &str) -> bool {
    Up::proxy(status, name).is_some_and(|p| p["sync"]["state"] == "SYNCED" && p["pid"].is_u64())
}

/// Polls the gateway until it answers 200 from the echo upstream.
async fn serves(gateway: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = match try_request(gateway, &Req::get("web.example", "/")).await {
            Ok(r) if r.status == 200 => r.json().map_or_else(String::new, |j| {
                j["upstream"].as_str().unwrap_or("").to_string()
            }),
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => e,
        };
        if got == "web-v1" || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pid(status: &Value, name: &str) -> u64 {
    Up::proxy(status, name)
        .and_then(|p| p["pid"].as_u64())
        .unwrap_or_else(|| panic!("{name} has no pid: {status:#}"))
}

/// Three bad objects among good ones at start: each refused with its file, line, object and
/// field; the rest of the mesh runs and serves.
async fn bad_objects_at_start(envoy: bool) {
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
               metadata: { name: broken }\n\
               spec:\n  hosts: [ broken.example ]\n  http:\n  - timeout: -1s\n    route: [ { destination: { host: web } } ]\n---\n\
               apiVersion: networking.istio.io/v1\nkind: VirtualServise\nmetadata: { name: typo }\nspec: {}\n---\n\
               apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: web }\n\
               spec:\n  hosts: [ \"*\" ]\n  gateways: [ web-gateway ]\n  http:\n  - route: [ { destination: { host: nowhere } } ]\n";
    let (dir, up, gateway) = mesh(envoy, &[("z-bad.yaml", bad.to_string())]).await;
    let status = wait(&up, "both proxies synced", |s| {
        synced(s, "sidecar default/web-v1") && synced(s, "gateway istio=ingressgateway")
    });
    let file = dir.path().join("z-bad.yaml").display().to_string();
    let errors: Vec<&str> = status["config"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected = [
        format!("{file}:7: VirtualService default/broken: spec.http[0].timeout: "),
        format!("{file}:11: VirtualServise default/typo: kind: "),
        format!("{file}:17: VirtualService default/web: metadata.name: duplicate: "),
    ];
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for (e, want) in errors.iter().zip(&expected) {
        assert!(e.starts_with(want.as_str()), "{e}\nwanted {want}");
    }
    assert!(
        errors[1].ends_with("did you mean VirtualService?"),
        "{}",
        errors[1]
    );
    // The first definition of `web` (base.yaml) serves, not the duplicate's `nowhere`.
    assert_eq!(serves(gateway).await, "web-v1", "envoy {envoy}");
    let err = up.stderr();
    for want in &expected {
        assert!(err.contains(want.as_str()), "stderr lacks {want}:\n{err}");
    }
    // A newcomer defining `web` again is refused even where its file sorts first: the
    // definition that serves stays.
    let before = up.generation();
    let early = dir.path().join("a-dup.yaml");
    std::fs::write(&early, bad.split("---\n").nth(2).unwrap()).unwrap();
    let status = wait(&up, "the edit", |s| {
        s["config"]["generation"].as_u64() > Some(before)
    });
    let newcomer = format!(
        "{}:3: VirtualService default/web: metadata.name: duplicate: ",
        early.display()
    );
    assert!(
        status["config"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with(&newcomer)),
        "{:#}",
        status["config"]
    );
    assert_eq!(serves(gateway).await, "web-v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_at_start_are_refused_alone_with_weft_proxies() {
    bad_objects_at_start(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_at_start_are_refused_alone_with_envoy() {
    bad_objects_at_start(true).await;
}

/// A workload added to the folder gets a sidecar, a changed one a new sidecar process, and a
/// removed one loses its sidecar.
async fn workloads_live(envoy: bool) {
    let (dir, up, _) = mesh(envoy, &[]).await;
    let name = "sidecar default/web-v2";
    let added = dir.path().join("v2.yaml");
    std::fs::write(&added, workload("web-v2", 18999, "v2")).unwrap();
    let status = wait(&up, "web-v2's sidecar", |s| synced(s, name));
    let first = pid(&status, name);
    let v2 = Up::proxy(&status, name).unwrap();
    assert_eq!(v2["kind"], "sidecar");
    assert_eq!(v2["namespace"], "default");
    assert_eq!(v2["workload"], "web-v2");
    assert_eq!(v2["inbound"][0]["address"], "127.0.0.1:18999", "{v2:#}");
    assert_eq!(v2["inbound"][0]["service"], "web.default.svc.cluster.local");
    assert!(v2["admin"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(v2["http_proxy"].as_str().unwrap().starts_with("127.0.0.1:"));

    std::fs::write(&added, workload("web-v2", 18999, "v2-canary")).unwrap();
    let status = wait(&up, "web-v2's sidecar restarted", |s| {
        synced(s, name) && pid(s, name) != first
    });
    let second = pid(&status, name);
    assert!(
        !alive(first),
        "the changed workload's old sidecar {first} still runs"
    );
    assert_eq!(
        Up::proxy(&status, name).unwrap()["admin"],
        v2["admin"],
        "a restarted sidecar keeps its ports"
    );

    std::fs::remove_file(&added).unwrap();
    wait(&up, "web-v2's sidecar gone", |s| {
        Up::proxy(s, name).is_none()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(second) {
        assert!(
            Instant::now() < deadline,
            "removed workload's sidecar {second} still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_start_restart_and_stop_live_with_weft_proxies() {
    workloads_live(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_start_restart_and_stop_live_with_envoy() {
    workloads_live(true).await;
}

/// A proxy killed from outside is reported and restarted; killed again at once, it waits
/// longer (back-off) before its next start.
async fn restarted(envoy: bool) {
    let (_dir, up, gateway) = mesh(envoy, &[]).await;
    let name = "gateway istio=ingressgateway";
    let status = wait(&up, "the gateway", |s| synced(s, name));
    let first = pid(&status, name);
    kill(first);
    let status = wait(&up, "the gateway restarted", |s| {
        synced(s, name) && pid(s, name) != first
    });
    let gw = Up::proxy(&status, name).unwrap();
    assert_eq!(gw["restarts"], 1, "{gw:#}");
    assert!(
        gw["last_exit"].as_str().unwrap().contains("SIGKILL"),
        "{gw:#}"
    );
    assert!(
        up.stderr()
            .contains("gateway istio=ingressgateway exited unexpectedly"),
        "{}",
        up.stderr()
    );
    assert_eq!(
        serves(gateway).await,
        "web-v1",
        "the restarted gateway serves"
    );
    // Killed again straight away: the second restart waits 2 s, twice the first.
    let second = pid(&status, name);
    let killed = Instant::now();
    kill(second);
    wait(&up, "the gateway restarted twice", |s| {
        Up::proxy(s, name).is_some_and(|p| p["restarts"] == 2 && p["pid"].is_u64())
    });
    assert!(
        killed.elapsed() >= Duration::from_millis(1900),
        "restarted after {:?}",
        killed.elapsed()
    );
}

fn kill(pid: u64) {
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exited_proxy_is_restarted_with_backoff_with_weft_proxies() {
    restarted(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exited_proxy_is_restarted_with_backoff_with_envoy() {
    restarted(true).await;
}

/// SIGKILL gives `weft up` no chance to stop anything: its proxies go anyway.
async fn sigkill(envoy: bool) {
    let (_dir, mut up, _) = mesh(envoy, &[]).await;
    let status = wait(&up, "both proxies", |s| {
        synced(s, "sidecar default/web-v1") && synced(s, "gateway istio=ingressgateway")
    });
    let pids = [
        pid(&status, "sidecar default/web-v1"),
        pid(&status, "gateway istio=ingressgateway"),
    ];
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "proxies {pids:?} outlived weft up (envoy {envoy})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_weft_proxy_outlives_a_sigkilled_weft_up() {
    sigkill(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_envoy_outlives_a_sigkilled_weft_up() {
    sigkill(true).await;
}

/// A Gateway whose certificate files are not on the gateway's machine: only the proxy can find
/// out, and its NACK is reported with the proxy, the resource and the reason.
async fn nack(envoy: bool) {
    let tls = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: secure }\n\
               spec:\n  selector: { istio: ingressgateway }\n  servers:\n  \
               - port: { number: 443, name: https, protocol: HTTPS }\n    hosts: [ \"*\" ]\n    \
               tls: { mode: SIMPLE, serverCertificate: /nonexistent/weft-cert.pem, privateKey: /nonexistent/weft-key.pem }\n";
    let (_dir, up, _) = mesh(envoy, &[("tls.yaml", tls.to_string())]).await;
    let name = "gateway istio=ingressgateway";
    // The sidecar, sent nothing it refuses, syncs as usual.
    let status = wait(&up, "the gateway's NACK, the sidecar synced", |s| {
        Up::proxy(s, name).is_some_and(|p| p["sync"]["state"] == "NACKED")
            && synced(s, "sidecar default/web-v1")
    });
    let gw = Up::proxy(&status, name).unwrap();
    let lds = gw["sync"]["types"]["LDS"]["error"].as_str().unwrap_or("");
    // Envoy names the key file, Weft the certificate: each the first file it could not read.
    assert!(lds.contains("/nonexistent/weft-"), "{gw:#}");
    let err = up.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("NACK: proxy router~127.0.0.1~istio-ingressgateway"))
        .unwrap_or_else(|| panic!("no NACK error in:\n{err}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("rejected Listener version"), "{line}");
    assert!(line.contains("/nonexistent/weft-"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_an_error_naming_proxy_resource_and_reason_with_weft_proxies() {
    nack(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_an_error_naming_proxy_resource_and_reason_with_envoy() {
    nack(true).await;
}
