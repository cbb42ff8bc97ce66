//! Access logs through `weft up`, with Weft proxies and with Envoy: the mesh's
//! `accessLogFile: /dev/stdout` in Istio's text format, read back with `weft logs` (what each
//! proxy writes is kept, as `kubectl logs -c istio-proxy` shows it) and parsed field by field;
//! then, live, a Telemetry that logs only `response.code >= 400`, in the JSON encoding; and
//! `weft logs -f` following a proxy as it writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::up::Up;
use support::xds::{eventually, eventually_within};
use support::{Req, try_request};

const MESH: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: istio, namespace: istio-system }\n\
data:\n  mesh: |\n    accessLogFile: /dev/stdout\n    accessLogEncoding: TEXT\n";

/// `weft logs ARGS` against the mesh's control plane: what it printed, or its error.
fn weft_logs(up: &Up, args: &[&str]) -> Result<String, String> {
    let status = up.status().unwrap();
    let monitoring = status["control_plane"]["monitoring"].as_str().unwrap();
    let out = Command::new(support::weft_binary())
        .arg("logs")
        .args(args)
        .args(["--control-plane", &format!("http://{monitoring}")])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One line of Istio's text format, split into its fields.
#[derive(Debug)]
struct Line {
    method: String,
    path: String,
    protocol: String,
    code: u16,
    flags: String,
    details: String,
    authority: String,
    upstream_host: String,
    upstream_cluster: String,
    upstream_local: String,
    downstream_local: String,
    downstream_remote: String,
    route: String,
}

/// `[time] "METHOD PATH PROTO" CODE FLAGS DETAILS TERM "FAIL" RX TX DUR UST "XFF" "UA" "ID"
/// "AUTHORITY" "UPSTREAM" CLUSTER UP_LOCAL DOWN_LOCAL DOWN_REMOTE SNI ROUTE`.
fn parse(line: &str) -> Option<Line> {
    let rest = line.strip_prefix('[')?;
    let (_, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut req = request.split(' ');
    let (method, path, protocol) = (req.next()?, req.next()?, req.next()?);
    // Quoted fields hold no spaces in these requests but may be "-".
    let fields: Vec<&str> = rest.split(' ').collect();
    let unquote = |s: &str| s.trim_matches('"').to_string();
    if fields.len() < 20 {
        return None;
    }
    Some(Line {
        method: method.into(),
        path: path.into(),
        protocol: protocol.into(),
        code: fields[0].parse().ok()?,
        flags: fields[1].into(),
        details: fields[2].into(),
        authority: unquote(fields[12]),
        upstream_host: unquote(fields[13]),
        upstream_cluster: fields[14].into(),
        upstream_local: fields[15].into(),
        downstream_local: fields[16].into(),
        downstream_remote: fields[17].into(),
        route: fields[19].into(),
    })
}

async fn run(envoy: bool) {
    let app = support::start_echo("web-v1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.yaml"),
        support::up::base_mesh(app.port()),
    )
    .unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let up = tokio::task::block_in_place(|| Up::start(dir.path(), envoy));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    eventually("the route", || async {
        let r = try_request(gateway, &Req::get("web.example", "/ready")).await?;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{}", r.status))
    })
    .await;
    let key = format!("log-{}-{envoy}", std::process::id());
    let r = try_request(
        gateway,
        &Req::get("web.example", &format!("/flaky/{key}/1")),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503);
    let r = try_request(gateway, &Req::get("web.example", "/logged?x=1"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // The sidecar's lines, by workload name; the gateway's, by a part of its node id.
    let wanted = |text: &str, path: &str| text.lines().filter_map(parse).find(|l| l.path == path);
    // A proxy's log once it holds the line for `path`: Envoy writes its file out every 10 s
    // (`--file-flush-interval-msec`).
    let logged = |proxy: &str, path: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = weft_logs(&up, &[proxy]).unwrap();
            if wanted(&text, path).is_some() {
                return text;
            }
            assert!(Instant::now() < deadline, "no line for {path} in\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let sidecar = logged("web-v1", "/logged?x=1");
    let line = wanted(&sidecar, "/logged?x=1").unwrap();
    assert_eq!(
        (line.method.as_str(), line.protocol.as_str(), line.code),
        ("GET", "HTTP/1.1", 200)
    );
    assert_eq!(line.flags, "-");
    assert_eq!(line.details, "via_upstream");
    // istiod's inbound route is named `default`.
    assert_eq!(line.route, "default");
    assert_eq!(line.authority, "web.example");
    assert_eq!(line.upstream_host, format!("127.0.0.1:{}", app.port()));
    assert_eq!(line.upstream_cluster, format!("inbound|{}||", app.port()));
    assert!(line.upstream_local.starts_with("127.0.0.1:"), "{line:?}");
    assert!(line.downstream_local.starts_with("127.0.0.1:"), "{line:?}");
    // The client address the sidecar trusts (from the gateway's x-forwarded-for), as Envoy has it.
    assert!(
        line.downstream_remote.parse::<SocketAddr>().is_ok(),
        "{line:?}"
    );
    let failed = wanted(&sidecar, &format!("/flaky/{key}/1")).unwrap();
    assert_eq!(failed.code, 503);
    let gateway_log = logged("istio-ingressgateway", "/logged?x=1");
    let at_gateway = wanted(&gateway_log, "/logged?x=1").unwrap_or_else(|| panic!("{gateway_log}"));
    assert_eq!(
        at_gateway.upstream_cluster,
        "outbound|80||web.default.svc.cluster.local"
    );
    // A name that is nobody's says who there is.
    let err = weft_logs(&up, &["nobody"]).unwrap_err();
    assert!(err.contains("sidecar default/web-v1"), "{err}");

    // Live: JSON, and only what failed.
    let before = up.generation();
    std::fs::write(dir.path().join("mesh.yaml"), MESH.replace("TEXT", "JSON")).unwrap();
    std::fs::write(
        dir.path().join("telemetry.yaml"),
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: { name: errors-only, namespace: istio-system }\n\
         spec:\n  accessLogging:\n  - providers: [ { name: envoy } ]\n    filter: { expression: \"response.code >= 400\" }\n",
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        up.wait_status("the Telemetry", |s| {
            s["config"]["generation"].as_u64() > Some(before)
        })
    });
    let json_lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.is_object())
            .collect()
    };
    // Straight to the sidecar, each request on a connection of its own: Envoy keeps a
    // connection on the listener config it was accepted under (the gateway's pooled ones
    // would log as before until they drain).
    let inbound = up.wait_status("the sidecar's inbound", |s| {
        Up::proxy(s, "sidecar default/web-v1")
            .is_some_and(|p| p["inbound"][0]["sidecar"].is_string())
    });
    let sidecar_addr: SocketAddr =
        Up::proxy(&inbound, "sidecar default/web-v1").unwrap()["inbound"][0]["sidecar"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    // Each round sends a 200 and a 503 of its own, then looks through every round so far for
    // one whose 503 was logged in JSON and whose 200 was not: Envoy writes its log file out
    // every few seconds, so a round's lines may show up rounds later.
    let mut n = 0;
    let up_ref = &up;
    let base_key = key.clone();
    eventually_within(
        "JSON lines for errors only",
        Duration::from_secs(45),
        || {
            n += 1;
            let rounds = n;
            let base_key = base_key.clone();
            async move {
                let key = format!("{base_key}-json-{rounds}");
                let ok = try_request(
                    sidecar_addr,
                    &Req::get("web.example", &format!("/ok-{key}")),
                )
                .await?;
                let bad = try_request(
                    sidecar_addr,
                    &Req::get("web.example", &format!("/flaky/{key}/1")),
                )
                .await?;
                if (ok.status, bad.status) != (200, 503) {
                    return Err(format!("{} {}", ok.status, bad.status));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let text = tokio::task::block_in_place(|| weft_logs(up_ref, &["web-v1"]))?;
                let lines = json_lines(&text);
                let logged = |path: &str| lines.iter().find(|v| v["path"] == path);
                let failed = (1..=rounds)
                    .map(|r| format!("{base_key}-json-{r}"))
                    .find_map(|k| {
                        let failed = logged(&format!("/flaky/{k}/1"))?;
                        logged(&format!("/ok-{k}")).is_none().then_some(failed)
                    })
                    .ok_or_else(|| {
                        let tail: Vec<&str> = text.lines().rev().take(4).collect();
                        format!("no round with only its 503 in JSON; last lines: {tail:#?}")
                    })?;
                // Istio's JSON keys, with numbers as numbers.
                for k in [
                    "start_time",
                    "method",
                    "authority",
                    "upstream_cluster",
                    "response_flags",
                    "requested_server_name",
                ] {
                    if failed.get(k).is_none() {
                        return Err(format!("no {k} in {failed}"));
                    }
                }
                (failed["response_code"] == 503 && failed["method"] == "GET")
                    .then_some(())
                    .ok_or(format!("{failed}"))
            }
        },
    )
    .await;

    // `-f` prints what comes after it started.
    let status = up.status().unwrap();
    let monitoring = status["control_plane"]["monitoring"]
        .as_str()
        .unwrap()
        .to_string();
    let mut follow = Command::new(support::weft_binary())
        .args(["logs", "-f", "sidecar default/web-v1", "--control-plane"])
        .arg(format!("http://{monitoring}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let followed = format!("/flaky/{key}-follow/1");
    let r = try_request(sidecar_addr, &Req::get("web.example", &followed))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    // Envoy flushes its log file every 10 s (`--file-flush-interval-msec`).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = line.contains(&followed);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "weft logs -f never showed {followed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_proxies_log_in_istios_formats() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_logs_the_same_config() {
    run(true).await;
}
