//! The seed tutorial end to end through `weft up`: the control plane translating a folder of
//! Istio YAML, and proxies taking it over ADS — real Envoy (`--envoy`) in one run, Weft's own
//! proxy in the other, the same checks for both. The ingress gateway and the sidecars are
//! whole processes; the website versions are echo servers that say who answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Req, request, try_request};

/// `weft up` as a child process; Ctrl-C (SIGINT) on drop, so that it stops its proxies.
struct Mesh {
    child: Child,
    gateway: SocketAddr,
    /// The seed's HTTPS gateway (`ext-host-gwy`), and a client that trusts its certificate.
    https_gateway: SocketAddr,
    https_client: rustls::ClientConfig,
    status: String,
    /// Sidecar label (`sidecar default/web-v1`) → its HTTP proxy address.
    http_proxies: BTreeMap<String, SocketAddr>,
    /// Proxy label → its admin address.
    admins: BTreeMap<String, SocketAddr>,
    /// The port web-v1's sidecar serves it on.
    inbound: u16,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        support::up::stop(&mut self.child);
    }
}

/// The Service and its three workloads. web-v1 is reached through its sidecar: the mesh sends to
/// `inbound` (the port its WorkloadEntry names), where a Sidecar `ingress` listener hands the
/// request to the application on `v1`.
fn workloads(ports: &[u16; 3], inbound: u16) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: { name: website }\n\
         spec:\n  ports: [ { port: 80, targetPort: 80, protocol: TCP, name: http } ]\n  selector: { app: website }\n",
    );
    for (i, p) in ports.iter().enumerate() {
        let v = i + 1;
        let p = if v == 1 { inbound } else { *p };
        out.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
             metadata: {{ name: web-v{v}, namespace: default }}\n\
             spec: {{ address: 127.0.0.1, ports: {{ http: {p} }}, labels: {{ app: website, version: website-version-{v} }} }}\n"
        ));
    }
    out.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n\
         metadata: {{ name: web-v1, namespace: default }}\n\
         spec:\n  workloadSelector: {{ labels: {{ version: website-version-1 }} }}\n  \
         ingress:\n  - port: {{ number: {inbound}, protocol: HTTP, name: http }}\n    \
         defaultEndpoint: 127.0.0.1:{}\n",
        ports[0]
    ));
    out
}

/// The seed's Gateway and DestinationRule, unchanged.
const GATEWAY_AND_RULE: &str = include_str!("../src/cmd/demo-gateway.yaml");

fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata:\n  name: website-virtual-service\n\
         spec:\n  hosts:\n  - \"*\"\n  gateways:\n  - website-gateway\n  http:\n{http}"
    )
}

const STEP1: &str = "  - route:\n    - destination: { host: website, subset: version-1 }\n";
const STEP2: &str = "  - route:\n    - destination: { host: website, subset: version-1 }\n      weight: 90\n    - destination: { host: website, subset: version-2 }\n      weight: 10\n";
const STEP3: &str = "  - match:\n    - headers:\n        x-website-version: { exact: \"3\" }\n    route:\n    - destination: { host: website, subset: version-3 }\n  - route:\n    - destination: { host: website, subset: version-1 }\n      weight: 90\n    - destination: { host: website, subset: version-2 }\n      weight: 10\n";
const FAULT: &str = "  - fault:\n      abort: { httpStatus: 418, percentage: { value: 30 } }\n    route:\n    - destination: { host: website, subset: version-1 }\n";
const MIRROR: &str = "  - route:\n    - destination: { host: website, subset: version-2 }\n    mirror: { host: website, subset: version-3 }\n";
const RETRIES: &str = "  - route:\n    - destination: { host: website, subset: version-3 }\n    retries: { attempts: 4, retryOn: 5xx }\n";

/// The seed's HTTPS Gateway (seeds/003), its certificate files moved to `cert_dir`, and a
/// VirtualService that routes its host to version-1.
fn https_gateway(cert_dir: &Path) -> String {
    let dir = cert_dir.display();
    format!(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: ext-host-gwy
spec:
  selector:
    app: istio-ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - ext-host.example.com
    tls:
      mode: SIMPLE
      serverCertificate: {dir}/tls.crt
      privateKey: {dir}/tls.key
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: virtual-svc
spec:
  hosts:
  - ext-host.example.com
  gateways:
    - ext-host-gwy
  http:
  - route:
    - destination: {{ host: website, subset: version-1 }}
"#
    )
}

/// A ServiceEntry resolved by DNS, as in the seeds' egress tutorial: its endpoint is a name the
/// proxies resolve themselves (`localhost`, where v2 answers).
fn dns_service_entry(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: {{ name: dns-echo, namespace: default }}\n\
         spec:\n  hosts: [dns-echo.example.com]\n  location: MESH_EXTERNAL\n  \
         ports: [ {{ number: 80, name: http, protocol: HTTP }} ]\n  resolution: DNS\n  \
         endpoints: [ {{ address: localhost, ports: {{ http: {port} }} }} ]\n"
    )
}

fn write_routing(dir: &Path, http: &str) {
    // Written whole, then renamed, so the watcher never reads half a file.
    let tmp = dir.join(".routing.tmp");
    std::fs::write(
        &tmp,
        format!("{GATEWAY_AND_RULE}---\n{}", virtual_service(http)),
    )
    .unwrap();
    std::fs::rename(&tmp, dir.join("routing.yaml")).unwrap();
}

async fn start(envoy: bool) -> Mesh {
    let v1 = support::start_echo("v1").await;
    let v2 = support::start_echo("v2").await;
    let v3 = support::start_echo("v3").await;
    let inbound = support::free_port();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mesh");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("website.yaml"),
        workloads(&[v1.port(), v2.port(), v3.port()], inbound),
    )
    .unwrap();
    write_routing(&dir, STEP1);
    let ca = support::certs::ca("weft e2e CA");
    let leaf = support::certs::leaf(&ca, &["ext-host.example.com"]);
    std::fs::write(tmp.path().join("tls.crt"), &leaf.pem).unwrap();
    std::fs::write(tmp.path().join("tls.key"), &leaf.key_pem).unwrap();
    std::fs::write(dir.join("https.yaml"), https_gateway(tmp.path())).unwrap();
    std::fs::write(dir.join("egress.yaml"), dns_service_entry(v2.port())).unwrap();
    let gateway_port = support::free_port();
    let https_port = support::free_port();
    let mut cmd = Command::new(support::weft_binary());
    cmd.arg("up")
        .arg("-f")
        .arg(&dir)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--monitoring-address",
            "127.0.0.1:0",
        ])
        .args([
            "--port-base",
            "0",
            "--gateway-port",
            &format!("80={gateway_port}"),
            "--gateway-port",
            &format!("443={https_port}"),
        ])
        .args(["-l", "warn"]);
    if envoy {
        cmd.arg("--envoy").arg(support::envoy_binary());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Edits to");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let status = lines
        .iter()
        .find_map(|l| l.split("status http://").nth(1))
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no status address in {lines:?}"))
        .to_string();
    let mut http_proxies = BTreeMap::new();
    for l in &lines {
        if let (true, Some(addr)) = (
            l.starts_with("sidecar"),
            l.split("HTTP_PROXY=http://").nth(1),
        ) {
            let label = l.split("  ").next().unwrap().trim().to_string();
            let addr = addr.split_whitespace().next().unwrap();
            http_proxies.insert(label, addr.parse().unwrap());
        }
    }
    assert_eq!(http_proxies.len(), 3, "{lines:?}");
    let admins: BTreeMap<String, SocketAddr> = lines
        .iter()
        .filter_map(|l| {
            let label = l.split("  ").next()?.trim().to_string();
            let addr = l.split("admin http://").nth(1)?.split_whitespace().next()?;
            Some((label, addr.parse().ok()?))
        })
        .collect();
    Mesh {
        child,
        gateway: SocketAddr::from(([127, 0, 0, 1], gateway_port)),
        https_gateway: SocketAddr::from(([127, 0, 0, 1], https_port)),
        https_client: support::certs::client_config(&ca, None),
        status,
        http_proxies,
        admins,
        inbound,
        _dir: tmp,
        dir,
    }
}

fn website(path: &str) -> Req {
    Req::get("website.example.com", path)
}

/// Who answered, or the status when nobody did.
async fn who(addr: SocketAddr, req: &Req) -> String {
    match try_request(addr, req).await {
        Ok(r) if r.status == 200 => r.json().map_or_else(
            || "not json".to_string(),
            |j| j["upstream"].as_str().unwrap_or("?").to_string(),
        ),
        Ok(r) => format!("HTTP {}", r.status),
        Err(e) => format!("error {e}"),
    }
}

async fn tally(addr: SocketAddr, req: &Req, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        *out.entry(who(addr, req).await).or_insert(0) += 1;
    }
    out
}

/// Polls until a request gets `expected`, up to 10 s: the time an edit takes to arrive.
async fn until(addr: SocketAddr, req: &Req, expected: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = who(addr, req).await;
        if got == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_json(mesh: &Mesh, path: &str) -> serde_json::Value {
    let r = request(mesh.status.parse().unwrap(), &Req::get("status", path)).await;
    serde_json::from_slice(&r.body).unwrap()
}

fn share(t: &BTreeMap<String, usize>, key: &str, n: usize) -> f64 {
    *t.get(key).unwrap_or(&0) as f64 * 100.0 / n as f64
}

/// The whole tutorial, then a fault, retries and a refused edit. Envoy and Weft proxies differ
/// only where the Weft proxy lacks a feature (the fault filter): there, the Weft proxy must
/// refuse the update, say so in proxy-status, and keep serving the last good config.
async fn tutorial(envoy: bool) {
    let mesh = start(envoy).await;
    let gw = mesh.gateway;
    // Step 1: everything to version-1.
    until(gw, &website("/"), "v1").await;
    let t = tally(gw, &website("/"), 50).await;
    assert_eq!(t, BTreeMap::from([("v1".to_string(), 50)]));
    // Those went through web-v1's sidecar: its Sidecar ingress listener counted them.
    let admin = mesh.admins["sidecar default/web-v1"];
    let stats = request(admin, &Req::get("admin", "/stats")).await;
    let name = format!(
        "http.inbound_0.0.0.0_{}.downstream_rq_total: ",
        mesh.inbound
    );
    let served: u64 = String::from_utf8_lossy(&stats.body)
        .lines()
        .find_map(|l| l.strip_prefix(name.as_str())?.trim().parse().ok())
        .unwrap_or(0);
    assert!(served >= 50, "{name}{served}");

    // The seed's HTTPS gateway terminates TLS for its host and routes it like the others; the
    // application hears the request came over https.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = support::try_request_tls(
            mesh.https_gateway,
            &Req::get("ext-host.example.com", "/"),
            &mesh.https_client,
            "ext-host.example.com",
        )
        .await;
        match r {
            Ok(r) if r.status == 200 => break r,
            other if std::time::Instant::now() > deadline => {
                panic!("the HTTPS gateway did not serve: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let j = r.json().unwrap();
    assert_eq!(
        (
            j["upstream"].as_str(),
            j["headers"]["x-forwarded-proto"].as_str()
        ),
        (Some("v1"), Some("https")),
        "{j}"
    );

    // Sidecars route by Host as HTTP proxies: the mesh has no VirtualService for them, so the
    // default route spreads over all three versions.
    let sidecar = mesh.http_proxies["sidecar default/web-v1"];
    // Each proxy starts on its own; this one may still be taking its first config.
    until(sidecar, &Req::get("website", "/"), "v1").await;
    let t = tally(sidecar, &Req::get("website", "/"), 30).await;
    assert_eq!(
        t.keys().cloned().collect::<Vec<_>>(),
        ["v1", "v2", "v3"],
        "{t:?}"
    );
    // The DNS ServiceEntry answers through the sidecar: the proxy resolved `localhost` to the
    // IPv4 address v2 listens on, as istiod's V4_ONLY lookup asks.
    until(sidecar, &Req::get("dns-echo.example.com", "/"), "v2").await;
    let t = tally(sidecar, &Req::get("dns-echo.example.com", "/"), 10).await;
    assert_eq!(t, BTreeMap::from([("v2".to_string(), 10)]));

    // Step 2: 90/10 within ±3 points, over 2000 requests (4.5 standard deviations; the issue's
    // 1000 would make a flake every few hundred runs). The edit is live: nothing restarts.
    write_routing(&mesh.dir, STEP2);
    until(gw, &website("/"), "v2").await;
    let t = tally(gw, &website("/"), 2000).await;
    assert_eq!(t.values().sum::<usize>(), 2000);
    assert!((share(&t, "v2", 2000) - 10.0).abs() <= 3.0, "{t:?}");
    assert_eq!(
        t.get("v1").copied().unwrap_or(0) + t.get("v2").copied().unwrap_or(0),
        2000,
        "{t:?}"
    );

    // Step 3: the header goes to version-3; without it, still 90/10.
    write_routing(&mesh.dir, STEP3);
    let mut tagged = website("/");
    tagged
        .headers
        .push(("x-website-version".into(), "3".into()));
    until(gw, &tagged, "v3").await;
    assert_eq!(
        tally(gw, &tagged, 50).await,
        BTreeMap::from([("v3".to_string(), 50)])
    );
    let t = tally(gw, &website("/"), 200).await;
    assert!(!t.contains_key("v3"), "{t:?}");

    // Retries: three 503s from version-3, then a 200, within attempts: 4 (Istio's default of
    // two retries would give up with the third 503).
    write_routing(&mesh.dir, RETRIES);
    until(gw, &website("/"), "v3").await;
    let r = request(gw, &website(&format!("/flaky/e2e-{envoy}/3"))).await;
    assert_eq!(r.status, 200, "retries must hide three 503s");
    assert_eq!(r.headers["x-upstream-attempt"], "4");

    // A refused edit (a negative timeout): named in /debug/problems, the last good config
    // (the retries route) keeps serving.
    std::fs::write(
        mesh.dir.join("broken.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: broken }\n\
         spec:\n  hosts: [ website ]\n  http:\n  - timeout: -1s\n    route: [ { destination: { host: website } } ]\n",
    )
    .unwrap();
    let start = Instant::now();
    loop {
        let p = status_json(&mesh, "/debug/problems").await;
        let errors = p["config_errors"].to_string();
        if errors.contains("broken.yaml") {
            assert!(
                errors.contains("VirtualService default/broken: spec.http[0].timeout"),
                "{errors}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the bad edit was not reported: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(who(gw, &website("/")).await, "v3");
    std::fs::remove_file(mesh.dir.join("broken.yaml")).unwrap();

    // Fault abort 30 %, within ±3 points over 4000 requests (4.1 standard deviations; the
    // 2000 of issue 4 would make it 2.9, a flake every few hundred runs).
    write_routing(&mesh.dir, FAULT);
    until(gw, &website("/"), "HTTP 418").await;
    let t = tally(gw, &website("/"), 4000).await;
    assert!((share(&t, "HTTP 418", 4000) - 30.0).abs() <= 3.0, "{t:?}");
    assert_eq!(
        t.get("v1").copied().unwrap_or(0) + t["HTTP 418"],
        4000,
        "{t:?}"
    );

    // Mirroring to version-3 while routing to version-2: each request is answered by v2 and a
    // copy goes to version-3, which the gateway counts on that cluster.
    write_routing(&mesh.dir, MIRROR);
    until(gw, &website("/"), "v2").await;
    let admin = mesh.admins["gateway istio=ingressgateway"];
    let v3 = "cluster.outbound|80|version-3|website.default.svc.cluster.local.upstream_rq_2xx";
    let mirrored = || async {
        let stats = request(admin, &Req::get("admin", "/stats")).await;
        support::counter(&String::from_utf8_lossy(&stats.body), v3)
    };
    let before = mirrored().await;
    let t = tally(gw, &website("/"), 50).await;
    assert_eq!(t, BTreeMap::from([("v2".to_string(), 50)]));
    let start = Instant::now();
    while mirrored().await < before + 50 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mirrored {} of 50",
            mirrored().await - before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    if !envoy {
        // Config the proxy cannot apply (a CA certificate file that is not there): it must
        // NACK, say so in proxy-status, and keep serving the last good config.
        std::fs::write(mesh.dir.join("extra.yaml"), UNSUPPORTED).unwrap();
        let start = Instant::now();
        let nacked = loop {
            let syncz = status_json(&mesh, "/debug/syncz").await;
            let gateway = syncz
                .as_array()
                .unwrap()
                .iter()
                .find(|p| {
                    p["kind"] == "router"
                        && p["proxy"]
                            .as_str()
                            .is_some_and(|i| i.contains("istio-ingressgateway"))
                })
                .cloned()
                .unwrap_or_else(|| panic!("no gateway in {syncz}"));
            if gateway["types"]["CDS"]["status"] == "NACKED" {
                break gateway;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no NACK: {syncz}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            nacked["types"]["CDS"]["error"]
                .as_str()
                .unwrap()
                .contains("/nonexistent/extra-ca.pem"),
            "{nacked}"
        );
        let t = tally(gw, &website("/"), 50).await;
        assert_eq!(
            t,
            BTreeMap::from([("v2".to_string(), 50)]),
            "the last good config keeps serving"
        );
    }
}

/// A service whose DestinationRule trusts a CA certificate file that does not exist.
const UNSUPPORTED: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
    metadata: { name: extra }\n\
    spec: { hosts: [ extra.example.com ], location: MESH_EXTERNAL, resolution: DNS, ports: [ { number: 80, name: http, protocol: HTTP } ] }\n\
    ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
    metadata: { name: extra }\n\
    spec: { host: extra.example.com, trafficPolicy: { tls: { mode: SIMPLE, caCertificates: /nonexistent/extra-ca.pem, subjectAltNames: [ extra.example.com ] } } }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_tutorial_with_envoy_proxies() {
    tutorial(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_tutorial_with_weft_proxies() {
    tutorial(false).await;
}

/// `weft demo`, as the README runs it, on free ports: the three steps, each checked by the
/// distribution it prints, and the STRICT mTLS step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_walks_the_canary_steps_then_strict_mtls_then_policy() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<String> = (0..4).map(|_| support::free_port().to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(support::weft_binary())
            .arg("demo")
            .arg("--exit")
            .arg("--dir")
            .arg(dir.path().join("demo"))
            .args([
                "--requests",
                "1000",
                "--gateway-port",
                &ports[0],
                "--port-base",
                "0",
            ])
            .args([
                "--xds-address",
                "127.0.0.1:0",
                "--monitoring-address",
                "127.0.0.1:0",
                "--secure-xds-address",
                "127.0.0.1:0",
            ])
            .arg("--ca-dir")
            .arg(dir.path().join("ca"))
            .args(["--website-ports", &ports[1], &ports[2], &ports[3]])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("1000 requests"))
        .collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines[0].ends_with("version-1: 1000 (100%)"), "{stdout}");
    // 90/10 over 1000: version-2 within 10 ± 4.5 points (4.7 standard deviations).
    for line in [lines[1], lines[2]] {
        let v2: f64 = line
            .split("version-2: ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!((v2 / 10.0 - 10.0).abs() <= 4.5, "{line}");
        assert!(!line.contains("version-3"), "{line}");
    }
    assert!(lines[3].ends_with("version-3: 1000 (100%)"), "{stdout}");
    // Step 4, STRICT mTLS: plaintext at version-1's sidecar answered before and is refused
    // after; the gateway still gets the 90/10 split; both ends of the hop show their identity.
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{stdout}"))
    };
    assert!(
        line("before, a plaintext client").ends_with("got: version-1"),
        "{stdout}"
    );
    assert!(
        line("now, a plaintext client").contains(": refused"),
        "{stdout}"
    );
    assert!(
        lines[4].contains("version-1: ") && lines[4].contains("version-2: "),
        "{stdout}"
    );
    assert!(
        line("the ingress gateway presented").ends_with(
            " spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
        ),
        "{stdout}"
    );
    assert!(
        line("the website's sidecar presented")
            .ends_with(" spiffe://cluster.local/ns/default/sa/website"),
        "{stdout}"
    );
    // Step 5, authorization: GET from the gateway only, and /admin with the demo's token.
    let answer = |start: &str| {
        line(start)
            .split(':')
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert!(
        answer("GET / through the gateway").starts_with("200 version-"),
        "{stdout}"
    );
    assert!(
        line("POST / through the gateway").ends_with("403 RBAC: access denied"),
        "{stdout}"
    );
    assert!(
        line("GET /admin without a token").ends_with("403 RBAC: access denied"),
        "{stdout}"
    );
    assert!(
        line("GET /admin with a bad token").ends_with("401 Jwt verification fails"),
        "{stdout}"
    );
    assert!(
        answer("GET /admin with the demo's token").starts_with("200 version-"),
        "{stdout}"
    );
    let token = stdout
        .lines()
        .skip_while(|l| !l.contains("the demo's token (user demo-user"))
        .nth(1)
        .unwrap_or_default()
        .trim();
    assert_eq!(token.split('.').count(), 3, "{stdout}");
}
