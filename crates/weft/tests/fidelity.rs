//! Traffic management as istiod translates it and Envoy carries it, through `weft up` with Weft
//! proxies and with Envoy: the circuit breakers istiod writes on every cluster (retries against
//! one failing instance of three all succeed), `:authority`/`Host` in header operations as host
//! rewrites, `withoutHeaders` (a request without the header matches; `regex: "*"` is a presence
//! match), header names Istio accepts (RFC 7230 tokens, pseudo-headers), redirects
//! (`derivePort`, the request's port kept as Envoy keeps it), `retryOn` conditions Envoy
//! accepts, and Istio's default retry policy, which retries no 503. Each expectation is istiod's output or Envoy's behaviour, read from their sources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::up::Up;
use support::{Req, Resp, try_request};

fn workload(name: &str, app: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata: {{ name: {name}, namespace: default }}\n\
         spec: {{ address: 127.0.0.1, ports: {{ http: {port} }}, labels: {{ app: {app} }} }}\n---\n"
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: {name} }}\n\
         spec:\n  ports: [ {{ port: 80, name: http }} ]\n  selector: {{ app: {name} }}\n---\n"
    )
}

fn virtual_service(name: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: {name} }}\n\
         spec:\n  hosts: [ {name}.example ]\n  gateways: [ web-gateway ]\n  http:\n{http}---\n"
    )
}

const TEAPOT: &str = "  - directResponse: { status: 418 }\n";

/// The folder: `web` (one echo), `flaky` (two slow echoes and one instance that always answers
/// 503), the gateway on ports 80 and 8000, and a VirtualService per behaviour.
fn folder(web: u16, good: [u16; 2], bad: u16) -> String {
    let mut out = service("web") + &service("flaky");
    out += &workload("web-v1", "web", web);
    out += &workload("flaky-a", "flaky", good[0]);
    out += &workload("flaky-b", "flaky", good[1]);
    out += &workload("flaky-down", "flaky", bad);
    out += concat!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: web-gateway }\n",
        "spec:\n  selector: { istio: ingressgateway }\n  servers:\n",
        "  - port: { number: 80, name: http, protocol: HTTP }\n    hosts: [ \"*\" ]\n",
        "  - port: { number: 8000, name: http-alt, protocol: HTTP }\n    hosts: [ \"*\" ]\n---\n",
    );
    out += &virtual_service(
        "retry",
        "  - route: [ { destination: { host: flaky } } ]\n    retries: { attempts: 3, retryOn: 5xx }\n",
    );
    out += &virtual_service(
        "no-retry-policy",
        "  - route: [ { destination: { host: flaky } } ]\n",
    );
    out += &virtual_service(
        "authority",
        "  - route: [ { destination: { host: web } } ]\n    headers: { request: { set: { \":authority\": rewritten.example, x-kept: kept } } }\n",
    );
    out += &virtual_service(
        "dest-authority",
        "  - route:\n    - destination: { host: web }\n      headers: { request: { add: { Host: dest.example } } }\n",
    );
    out += &virtual_service(
        "without",
        &format!(
            "  - match: [ {{ withoutHeaders: {{ x-skip: {{ exact: \"yes\" }} }} }} ]\n    route: [ {{ destination: {{ host: web }} }} ]\n{TEAPOT}"
        ),
    );
    out += &virtual_service(
        "absent",
        &format!(
            "  - match: [ {{ withoutHeaders: {{ x-debug: {{ regex: \"*\" }} }} }} ]\n    route: [ {{ destination: {{ host: web }} }} ]\n{TEAPOT}"
        ),
    );
    out += &virtual_service(
        "token",
        &format!(
            "  - match: [ {{ headers: {{ \"X.Custom~Header\": {{ exact: \"1\" }} }} }} ]\n    route: [ {{ destination: {{ host: web }} }} ]\n{TEAPOT}"
        ),
    );
    out += &virtual_service(
        "method",
        &format!(
            "  - match: [ {{ headers: {{ \":method\": {{ exact: POST }} }} }} ]\n    route: [ {{ destination: {{ host: web }} }} ]\n{TEAPOT}"
        ),
    );
    out += &virtual_service(
        "redirect",
        concat!(
            "  - match: [ { uri: { prefix: /old } } ]\n    redirect: { uri: /new }\n",
            "  - match: [ { uri: { prefix: /derive } } ]\n",
            "    redirect: { uri: /new, derivePort: FROM_REQUEST_PORT }\n",
            "  - match: [ { uri: { prefix: /moved } } ]\n",
            "    redirect: { uri: /new, port: 9090, redirectCode: 308 }\n",
        ),
    );
    out += &virtual_service(
        "unsent",
        "  - route: [ { destination: { host: web } } ]\n    retries: { attempts: 2, retryOn: \"reset-before-request,envoy-ratelimited\" }\n",
    );
    out
}

async fn get(addr: SocketAddr, req: Req) -> Resp {
    try_request(addr, &req).await.unwrap()
}

fn with(mut req: Req, name: &str, value: &str) -> Req {
    req.headers.push((name.to_string(), value.to_string()));
    req
}

fn upstream_host(r: &Resp) -> String {
    r.json()
        .map(|j| j["authority"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| format!("HTTP {}", r.status))
}

fn location(r: &Resp) -> String {
    r.headers
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| format!("no location (HTTP {})", r.status))
}

/// `n` requests, `concurrency` at a time: how many got each status.
async fn load(addr: SocketAddr, host: &str, n: usize, concurrency: usize) -> Vec<u16> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let s = match try_request(addr, &Req::get(&host, "/")).await {
                    Ok(r) => r.status,
                    Err(_) => 0,
                };
                statuses.push(s);
            }
            statuses
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    out
}

async fn admin_stats(admin: &str) -> String {
    let r = get(admin.parse().unwrap(), Req::get("admin", "/stats")).await;
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn fidelity(envoy: bool) {
    let web = support::start_echo("web-v1").await;
    let slow = Duration::from_millis(20);
    let good = [
        support::start_delayed_echo("flaky-a", slow).await,
        support::start_delayed_echo("flaky-b", slow).await,
    ];
    let bad = support::start_failing("flaky-down", 503).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        folder(web.port(), [good[0].port(), good[1].port()], bad.port()),
    )
    .unwrap();
    let alt_port = support::free_port();
    let up = tokio::task::block_in_place(|| {
        Up::start_with(
            dir.path(),
            envoy,
            &["--gateway-port".into(), format!("8000={alt_port}")],
        )
    });
    let name = "gateway istio=ingressgateway";
    let status = tokio::task::block_in_place(|| {
        up.wait_status("the gateway synced", |s| {
            Up::proxy(s, name).is_some_and(|p| p["sync"]["state"] == "SYNCED")
        })
    });
    let errors = &status["config"]["errors"];
    assert_eq!(
        errors,
        &Value::Array(vec![]),
        "the folder is valid to Istio"
    );
    let gateway = SocketAddr::from(([127, 0, 0, 1], up.gateway_port));
    let alt = SocketAddr::from(([127, 0, 0, 1], alt_port));
    let deadline = Instant::now() + Duration::from_secs(15);
    // SYNCED is the config's arrival; the listener may still be binding (Envoy warms it).
    while try_request(gateway, &Req::get("authority.example", "/"))
        .await
        .map_or(true, |r| r.status != 200)
    {
        assert!(Instant::now() < deadline, "the gateway never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wrong = std::cell::RefCell::new(Vec::new());
    let check = |what: &str, got: String, want: &str| {
        if got != want {
            wrong
                .borrow_mut()
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    };

    // Host rewrites: the route's `:authority`, a destination's `Host`; other headers still set.
    let r = get(gateway, Req::get("authority.example", "/")).await;
    check(
        "route :authority set",
        upstream_host(&r),
        "rewritten.example",
    );
    let kept = r.json().map(|j| j["headers"]["x-kept"].clone());
    check(
        "other headers set",
        format!("{kept:?}"),
        "Some(String(\"kept\"))",
    );
    let r = get(gateway, Req::get("dest-authority.example", "/")).await;
    check("destination Host add", upstream_host(&r), "dest.example");

    // withoutHeaders: matched unless the header has the value; `regex: "*"` unless present.
    for (header, want) in [(None, 200), (Some("yes"), 418), (Some("no"), 200)] {
        let mut req = Req::get("without.example", "/");
        if let Some(v) = header {
            req = with(req, "x-skip", v);
        }
        let got = get(gateway, req).await.status;
        check(
            &format!("withoutHeaders x-skip={header:?}"),
            got.to_string(),
            &want.to_string(),
        );
    }
    let got = get(gateway, Req::get("absent.example", "/")).await.status;
    check("withoutHeaders regex * absent", got.to_string(), "200");
    let got = get(
        gateway,
        with(Req::get("absent.example", "/"), "x-debug", "1"),
    )
    .await
    .status;
    check("withoutHeaders regex * present", got.to_string(), "418");

    // Header names Istio accepts.
    let got = get(
        gateway,
        with(Req::get("token.example", "/"), "x.custom~header", "1"),
    )
    .await
    .status;
    check("token header name", got.to_string(), "200");
    let mut post = Req::get("method.example", "/");
    post.method = "POST";
    check(
        "pseudo-header :method POST",
        get(gateway, post).await.status.to_string(),
        "200",
    );
    let got = get(gateway, Req::get("method.example", "/")).await.status;
    check("pseudo-header :method GET", got.to_string(), "418");

    // Redirects.
    let r = get(gateway, Req::get("redirect.example:80", "/old/x?q=1")).await;
    check("redirect status", r.status.to_string(), "301");
    check(
        "redirect keeps the request's port",
        location(&r),
        "http://redirect.example:80/new?q=1",
    );
    let r = get(gateway, Req::get("redirect.example", "/old")).await;
    check("redirect", location(&r), "http://redirect.example/new");
    let r = get(alt, Req::get("redirect.example", "/derive")).await;
    check(
        "derivePort FROM_REQUEST_PORT",
        location(&r),
        "http://redirect.example:8000/new",
    );
    let r = get(gateway, Req::get("redirect.example", "/derive")).await;
    check(
        "derivePort on port 80",
        location(&r),
        "http://redirect.example/new",
    );
    let r = get(gateway, Req::get("redirect.example:80", "/moved")).await;
    check(
        "port and code",
        format!("{} {}", r.status, location(&r)),
        "308 http://redirect.example:9090/new",
    );

    // retryOn conditions Envoy accepts are accepted, and the route serves.
    let got = get(gateway, Req::get("unsent.example", "/")).await.status;
    check("reset-before-request route", got.to_string(), "200");

    // One of three instances always fails; Istio users' retries make every request succeed
    // when the circuit breakers are istiod's.
    let statuses = load(gateway, "retry.example", 1000, 32).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    if ok < 999 {
        let mut counts = std::collections::BTreeMap::new();
        for s in &statuses {
            *counts.entry(*s).or_insert(0) += 1;
        }
        wrong
            .borrow_mut()
            .push(format!("retries: {ok} of 1000 succeeded: {counts:?}"));
    }
    // Istio's default retry policy retries no 503 (it did before EXCLUDE_UNSAFE_503_FROM_
    // DEFAULT_RETRY): the failing instance's answers come back. Least request (Istio's
    // default balancer) gives the fast failing instance a third of the requests or more;
    // retried, almost none would fail.
    let statuses = load(gateway, "no-retry-policy.example", 300, 4).await;
    let failed = statuses.iter().filter(|s| **s == 503).count();
    if !(60..=240).contains(&failed) {
        wrong.borrow_mut().push(format!(
            "default retries: {failed} of 300 got 503, want a third to two thirds"
        ));
    }
    let status = up.status().unwrap();
    let admin = Up::proxy(&status, name).unwrap()["admin"]
        .as_str()
        .unwrap()
        .to_string();
    let stats = admin_stats(&admin).await;
    let remaining = support::counter(
        &stats,
        "cluster.outbound|80||flaky.default.svc.cluster.local.circuit_breakers.default.remaining_retries",
    );
    check("remaining_retries", remaining.to_string(), "4294967295");
    let synced = Up::proxy(&status, name).unwrap()["sync"]["state"].clone();
    check("no NACK", synced.to_string(), "\"SYNCED\"");
    let wrong = wrong.into_inner();
    assert!(wrong.is_empty(), "envoy {envoy}:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_management_as_istiod_writes_it_with_weft_proxies() {
    fidelity(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_management_as_istiod_writes_it_with_envoy() {
    fidelity(true).await;
}
