//! `weft proxy` as a user meets it: bad bootstraps are refused naming the field, good ones serve,
//! the admin endpoint answers in Envoy's formats, and access logs are written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use support::{Kind, Proxy, Req, request};

fn weft(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(support::weft_binary())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const UNSUPPORTED: &str = r#"
static_resources:
  clusters:
  - name: backend
    connect_timeout: 1s
    lb_subset_config: { fallback_policy: ANY_ENDPOINT }
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } }
"#;

#[test]
fn a_bootstrap_with_an_unimplemented_field_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "bad.yaml", UNSUPPORTED);
    for mode in ["serve", "validate"] {
        let (code, _, stderr) = weft(&["proxy", "--mode", mode, "-c", &path]);
        assert_eq!(code, 1, "{mode}: {stderr}");
        assert!(
            stderr.contains(&format!("{path}: static_resources.clusters[0].lb_subset_config: not supported by the Weft proxy")),
            "{mode}: {stderr}"
        );
    }
}

#[test]
fn bad_values_and_unknown_fields_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "static_resources:\n  clusters:\n  - name: a\n    conect_timeout: 1s\n",
            "static_resources.clusters[0].conect_timeout: unknown field",
        ),
        (
            "static_resources:\n  clusters:\n  - name: a\n    lb_policy: CLUSTER_PROVIDED\n",
            "static_resources.clusters[0].lb_policy: CLUSTER_PROVIDED is for ORIGINAL_DST clusters",
        ),
        (
            "static_resources:\n  clusters:\n  - name: a\n    lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 100 }\n",
            "static_resources.clusters[0].maglev_lb_config.table_size: must be a prime number",
        ),
        (
            "static_resources:\n  clusters:\n  - name: a\n    lb_policy: RING_HASH\n    ring_hash_lb_config: { hash_function: MURMUR_HASH_2 }\n",
            "static_resources.clusters[0].ring_hash_lb_config.hash_function: value MURMUR_HASH_2 is not supported",
        ),
        ("static_resources: [\n", "bad.yaml"),
        (
            "static_resources:\n  clusters:\n  - name: a\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: example.com, port_value: 80 } } }\n",
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: \"example.com\" is not an IP address",
        ),
    ];
    for (text, expected) in cases {
        let path = write(&dir, "bad.yaml", text);
        let (code, _, stderr) = weft(&["proxy", "--mode", "validate", "-c", &path]);
        assert_eq!(code, 1, "{text}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    }
}

const SERVE: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {ADMIN} } }
static_resources:
  listeners:
  - name: http
    address: { socket_address: { address: 127.0.0.1, port_value: {HTTP} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {LOGDIR}/text.log
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {LOGDIR}/json.log
              log_format:
                json_format:
                  status: "%RESPONSE_CODE%"
                  flags: "%RESPONSE_FLAGS%"
                  path: "%REQ(:PATH)%"
                  cluster: "%UPSTREAM_CLUSTER%"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/down" }
                route: { cluster: down }
              - match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {V1} } } }
  - name: down
    connect_timeout: 1s
    load_assignment:
      cluster_name: down
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {DEAD} } } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_admin_stats_and_access_logs() {
    let v1 = support::start_echo("v1").await;
    let logs = tempfile::tempdir().unwrap();
    let template = SERVE.replace("{LOGDIR}", &logs.path().to_string_lossy());
    let dead = support::free_port();
    let given = [("V1", v1.port()), ("DEAD", dead)];
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, &template, &given))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            request(proxy.addr("HTTP"), &Req::get("web", "/ok"))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        request(proxy.addr("HTTP"), &Req::get("web", "/down"))
            .await
            .status,
        503
    );

    let stats = proxy.admin("/stats").await;
    for line in [
        "cluster.backend.upstream_rq_2xx: 3",
        "cluster.backend.upstream_rq_total: 3",
        "cluster.down.upstream_cx_connect_fail: 1",
        "http.web.downstream_rq_2xx: 3",
        "http.web.downstream_rq_5xx: 1",
        "http.web.downstream_rq_total: 4",
        "cluster.backend.membership_healthy: 1",
    ] {
        assert!(
            stats.lines().any(|l| l == line),
            "missing {line:?} in\n{stats}"
        );
    }
    let prom = proxy.admin("/stats/prometheus").await;
    assert!(
        prom.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 3"),
        "{prom}"
    );
    assert!(
        prom.contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 3"),
        "{prom}"
    );
    let clusters = proxy.admin("/clusters").await;
    assert!(
        clusters.contains(&format!("backend::{v1}::rq_success::3")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("backend::{v1}::health_flags::healthy")),
        "{clusters}"
    );
    let dump: serde_json::Value = serde_json::from_str(&proxy.admin("/config_dump").await).unwrap();
    assert_eq!(
        dump["configs"][0]["@type"],
        "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
    );
    assert_eq!(
        dump["configs"][1]["static_clusters"][0]["cluster"]["name"],
        "backend"
    );
    assert_eq!(
        dump["configs"][2]["static_listeners"][0]["listener"]["filter_chains"][0]["filters"][0]["typed_config"]
            ["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    let info: serde_json::Value = serde_json::from_str(&proxy.admin("/server_info").await).unwrap();
    assert_eq!(info["state"], "LIVE");

    // Access logs are flushed by a writer thread: give it a moment.
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(logs.path().join("text.log")).unwrap_or_default();
        if text.lines().count() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains("\"GET /ok HTTP/1.1\" 200 - 0 "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with(&format!("\"web\" \"{v1}\"")),
        "{}",
        lines[0]
    );
    assert!(
        lines[3].contains("\"GET /down HTTP/1.1\" 503 UF "),
        "{}",
        lines[3]
    );
    let json = std::fs::read_to_string(logs.path().join("json.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    assert_eq!(
        last,
        serde_json::json!({"status": 503, "flags": "UF", "path": "/down", "cluster": "down"})
    );

    // /quitquitquit stops the proxy.
    let r = request(
        proxy.addr("ADMIN"),
        &Req {
            method: "POST",
            ..Req::get("admin", "/quitquitquit")
        },
    )
    .await;
    assert_eq!(r.status, 200);
}

/// `--concurrency 2`: each worker accepts on its own SO_REUSEPORT socket, so connections spread
/// over both, and `listener.<address>.worker_<N>.downstream_cx_total` shows it. With 40
/// connections the chance that the kernel's hash puts all on one worker is 2^-39.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_the_workers() {
    let v1 = support::start_echo("v1").await;
    let logs = tempfile::tempdir().unwrap();
    let template = SERVE.replace("{LOGDIR}", &logs.path().to_string_lossy());
    let given = [("V1", v1.port()), ("DEAD", support::free_port())];
    let proxy = tokio::task::spawn_blocking(move || {
        Proxy::start_with(Kind::Weft, &template, &given, &["--concurrency", "2"])
    })
    .await
    .unwrap();
    let addr = proxy.addr("HTTP");
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let stats = proxy.admin("/stats").await;
    let key = format!("listener.127.0.0.1_{}", addr.port());
    let per_worker: Vec<u64> = (0..2)
        .map(|w| {
            let name = format!("{key}.worker_{w}.downstream_cx_total: ");
            stats
                .lines()
                .find_map(|l| l.strip_prefix(&name)?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{stats}"))
        })
        .collect();
    assert_eq!(per_worker.iter().sum::<u64>(), 40, "{per_worker:?}");
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    assert!(
        stats.lines().any(|l| l == "server.concurrency: 2"),
        "{stats}"
    );
}
