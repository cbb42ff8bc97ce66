//! `weft dashboard`: the page the control plane serves, rendered in headless Chromium
//! (Debian's package) while traffic with a share of 503s crosses the mesh. The rendered page
//! has the gateway → web-v1 edge with its rate, error rate and latencies (the same numbers as
//! its data), every proxy SYNCED, and every object with its file and state; a screenshot is
//! kept in `target/test-artifacts/dashboard.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::up::Up;
use support::xds::eventually;
use support::{Req, try_request};

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian's chromium (scripts/install-test-deps.sh installs it)")
}

/// The page as Chromium rendered it, after its scripts ran.
fn render(url: &str, screenshot: Option<&std::path::Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1200,1100",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `data-*` attributes of the first element of `class` whose attributes contain `with`.
fn element(
    dom: &str,
    class: &str,
    with: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    for chunk in dom.split('<').skip(1) {
        let tag = chunk.split('>').next()?;
        if !tag.contains(&format!("class=\"{class}")) || !tag.contains(with) {
            continue;
        }
        let mut attrs = std::collections::BTreeMap::new();
        for part in tag.split("\" ") {
            if let Some((k, v)) = part.trim().rsplit_once("=\"") {
                let k = k.rsplit(' ').next().unwrap_or(k);
                attrs.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
        }
        return Some(attrs);
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_graph_the_proxies_and_the_config() {
    let app = support::start_echo("web-v1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.yaml"),
        support::up::base_mesh(app.port()),
    )
    .unwrap();
    // An object with a problem, to be shown as such.
    std::fs::write(
        dir.path().join("dangling.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: nowhere }\nspec:\n  hosts: [ nowhere.example ]\n  http:\n  - route: [ { destination: { host: nowhere } } ]\n",
    )
    .unwrap();
    let up = tokio::task::block_in_place(|| Up::start(dir.path(), false));
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    let status = up.status().unwrap();
    let monitoring = status["control_plane"]["monitoring"]
        .as_str()
        .unwrap()
        .to_string();
    let addr: SocketAddr = monitoring.parse().unwrap();
    eventually("the route", || async {
        let r = try_request(gateway, &Req::get("web.example", "/ready")).await?;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{}", r.status))
    })
    .await;
    // `weft dashboard` says where the page is.
    let out = Command::new(support::weft_binary())
        .args(["dashboard", "--no-browser", "--control-plane"])
        .arg(format!("http://{monitoring}"))
        .output()
        .unwrap();
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(url, format!("http://{monitoring}/dashboard"));

    // Traffic for a while: 1 request in 4 fails.
    let key = format!("dash-{}", std::process::id());
    let until = Instant::now() + Duration::from_secs(6);
    let mut n = 0;
    while Instant::now() < until {
        let path = if n % 4 == 3 {
            format!("/flaky/{key}-{n}/1")
        } else {
            format!("/ok/{n}")
        };
        let _ = try_request(gateway, &Req::get("web.example", &path)).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let data = try_request(addr, &Req::get("cp", "/dashboard/data"))
        .await
        .unwrap();
    let data = data.json().unwrap();
    let edge = data["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == "istio-ingressgateway.istio-system" && e["to"] == "web-v1.default")
        .cloned()
        .unwrap_or_else(|| panic!("{data:#}"));
    assert!(edge["rps"].as_f64().unwrap() > 1.0, "{edge}");
    let err = edge["error_rate"].as_f64().unwrap();
    assert!((0.1..0.5).contains(&err), "{edge}");
    assert!(edge["p99_ms"].as_f64().unwrap() >= edge["p50_ms"].as_f64().unwrap());

    // The page shows the same graph.
    let page = format!("http://{monitoring}/dashboard");
    let dom = tokio::task::block_in_place(|| render(&page, None));
    let drawn = element(
        &dom,
        "edge",
        "data-from=\"istio-ingressgateway.istio-system\"",
    )
    .unwrap_or_else(|| panic!("no edge in\n{dom}"));
    assert_eq!(drawn["data-to"], "web-v1.default");
    assert!(
        drawn["data-requests"].parse::<f64>().unwrap() >= 1.0,
        "{drawn:?}"
    );
    assert!(
        drawn["data-errors"].parse::<f64>().unwrap() >= 1.0,
        "{drawn:?}"
    );
    assert!(drawn["data-rps"].parse::<f64>().is_ok(), "{drawn:?}");
    assert!(
        dom.contains(" rps · ") && dom.contains("% err"),
        "the edge is labelled"
    );
    assert!(
        dom.contains("p50 ") && dom.contains(" · p99 "),
        "with its latencies"
    );
    // Every proxy, synced.
    let rows = dom.matches("class=\"proxy-row\"").count();
    assert_eq!(rows, 2, "{dom}");
    assert_eq!(dom.matches("data-state=\"SYNCED\"").count(), 2);
    // Every object, with its file and state; the dangling one warned about.
    let dangling =
        element(&dom, "config-row", "data-state=\"warning\"").unwrap_or_else(|| panic!("{dom}"));
    assert_eq!(dangling["data-state"], "warning");
    assert!(dom.contains("VirtualService default/nowhere"));
    assert!(dom.contains("dangling.yaml:1"));
    assert!(dom.contains("base.yaml:"));

    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::block_in_place(|| render(&page, Some(&shot)));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 10_000, "{} bytes", png.len());
}
