//! The proxy configured over ADS by Weft's own ADS server (weft-xds), next to real Envoy 1.40
//! fed by the same server: both protocols (state of the world and delta), listeners with RDS
//! routes, CDS clusters with EDS endpoints, updates, NACKs, reconnects and listener removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::xds::*;
use support::{Kind, Req, try_request};
use weft_xds::ads::Cache;
use weft_xds::type_url;

/// The scenario every proxy and protocol goes through: initial config with an EDS and a
/// STATIC cluster behind RDS routes; endpoints move; routes change; a listener is added.
async fn configure_and_update(api: &str) {
    let a1 = support::start_echo("a1").await;
    let a2 = support::start_echo("a2").await;
    let b = support::start_echo("b").await;
    let cache = Arc::new(Cache::default());
    let cp = ControlPlane::start(0, cache.clone()).await;
    let kinds = [(Kind::Envoy, "envoy"), (Kind::Weft, "weft")];
    let ports: BTreeMap<&str, (u16, u16)> = kinds
        .iter()
        .map(|(_, node)| (*node, (support::free_port(), support::free_port())))
        .collect();
    let config = |version: &str, node: &str, step: u8| {
        let (http, extra) = ports[node];
        let mut resources = vec![
            listener("http", http, "main"),
            eds_cluster("a"),
            static_cluster("b", b),
            endpoints("a", &[if step == 0 { a1 } else { a2 }]),
        ];
        let table: &[(&str, &str)] = if step < 2 {
            &[("/a", "a"), ("/b", "b")]
        } else {
            &[("/a", "b"), ("/b", "a")]
        };
        resources.push(routes("main", table, json!({})));
        if step >= 2 {
            resources.push(listener("extra", extra, "main"));
        }
        snapshot(version, resources)
    };
    for (_, node) in kinds {
        cache.set_node(node, config("1", node, 0));
    }
    let mut proxies = Vec::new();
    for (kind, node) in kinds {
        proxies.push((
            node,
            start_proxy(kind, api, node, cp.addr.port(), &[]).await,
        ));
    }
    for (node, _) in &proxies {
        let http = SocketAddr::from(([127, 0, 0, 1], ports[node].0));
        eventually(&format!("{node} {api}: first config"), || async move {
            serves(http, "/a", "a1").await?;
            serves(http, "/b", "b").await
        })
        .await;
        // Every type was acknowledged at the version sent.
        eventually(&format!("{node} {api}: ACKs"), || async {
            let status = cp.status(node).ok_or("not connected")?;
            for t in [
                type_url::CLUSTER,
                type_url::ENDPOINT,
                type_url::LISTENER,
                type_url::ROUTE,
            ] {
                let s = status.types.get(t).ok_or(format!("{t} not subscribed"))?;
                if s.acked.as_deref() != Some("1") || s.nack.is_some() {
                    return Err(format!("{t}: {s:?}"));
                }
            }
            Ok(())
        })
        .await;
    }
    // Endpoints move; then the routes swap and a second listener appears.
    for (step, version) in [(1, "2"), (2, "3")] {
        for (_, node) in kinds {
            cache.set_node(node, config(version, node, step));
        }
        for (node, _) in &proxies {
            let (http, extra) = ports[node];
            let http = SocketAddr::from(([127, 0, 0, 1], http));
            let extra = SocketAddr::from(([127, 0, 0, 1], extra));
            eventually(&format!("{node} {api}: version {version}"), || async move {
                if step == 1 {
                    serves(http, "/a", "a2").await?;
                    serves(http, "/b", "b").await
                } else {
                    serves(http, "/a", "b").await?;
                    serves(http, "/b", "a2").await?;
                    serves(extra, "/a", "b").await
                }
            })
            .await;
        }
    }
    // /config_dump shows the same dynamic resources in both proxies, at the same versions in
    // state of the world (delta versions hash each node's own resource, so only their presence
    // is compared).
    let version = |v: &Value| -> String {
        let v = v.as_str().unwrap();
        assert!(!v.is_empty());
        if api == "GRPC" {
            v.to_string()
        } else {
            "(hash)".into()
        }
    };
    let mut dumps = Vec::new();
    for (node, proxy) in &proxies {
        let dump: Value = serde_json::from_str(&proxy.admin("/config_dump").await).unwrap();
        let mut seen = Vec::new();
        for config in dump["configs"].as_array().unwrap() {
            for l in config["dynamic_listeners"].as_array().into_iter().flatten() {
                seen.push(format!(
                    "listener {} {}",
                    l["name"].as_str().unwrap(),
                    version(&l["active_state"]["version_info"])
                ));
            }
            for c in config["dynamic_active_clusters"]
                .as_array()
                .into_iter()
                .flatten()
            {
                seen.push(format!(
                    "cluster {} {}",
                    c["cluster"]["name"].as_str().unwrap(),
                    version(&c["version_info"])
                ));
            }
            for r in config["dynamic_route_configs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                seen.push(format!(
                    "route {}",
                    r["route_config"]["name"].as_str().unwrap()
                ));
            }
        }
        seen.sort();
        dumps.push((node, seen));
    }
    assert_eq!(dumps[0].1, dumps[1].1, "config dumps differ: {dumps:?}");
    let extra = if api == "GRPC" {
        "listener extra 3"
    } else {
        "listener extra (hash)"
    };
    assert!(dumps[1].1.contains(&extra.to_string()), "{dumps:?}");
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_the_world_configures_and_updates_like_envoy() {
    configure_and_update("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_configures_and_updates_like_envoy() {
    configure_and_update("DELTA_GRPC").await;
}

/// A config that both proxies refuse (a regex past RE2's repeat limit, which Rust's regex crate
/// would take) and one that only Weft
/// refuses (a field it does not implement) are NACKed with the reason, while the last good
/// config keeps serving; the next good config is ACKed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_updates_are_nacked_and_the_last_good_config_serves() {
    let a1 = support::start_echo("a1").await;
    let b = support::start_echo("b").await;
    let cache = Arc::new(Cache::default());
    let cp = ControlPlane::start(0, cache.clone()).await;
    let nodes = [
        (Kind::Envoy, "envoy", "GRPC", support::free_port()),
        (Kind::Weft, "weft", "GRPC", support::free_port()),
        (Kind::Weft, "weft-delta", "DELTA_GRPC", support::free_port()),
    ];
    let config = |version: &str, port: u16, route_extra: Value, cluster: Named| {
        snapshot(
            version,
            vec![
                listener("http", port, "main"),
                cluster,
                static_cluster("b", b),
                endpoints("a", &[a1]),
                routes("main", &[("/a", "a"), ("/b", "b")], route_extra),
            ],
        )
    };
    for (_, node, _, port) in nodes {
        cache.set_node(node, config("1", port, json!({}), eds_cluster("a")));
    }
    let mut proxies = Vec::new();
    for (kind, node, api, _) in nodes {
        proxies.push(start_proxy(kind, api, node, cp.addr.port(), &[]).await);
    }
    for (_, node, _, port) in nodes {
        eventually(node, || serves(local(port), "/a", "a1")).await;
    }

    // Version 2: a route whose regex RE2 does not compile (a count over 1000).
    let bad_regex = json!({"match": {"safe_regex": {"regex": "/a{2000}"}}});
    for (_, node, _, port) in nodes {
        cache.set_node(node, config("2", port, bad_regex.clone(), eds_cluster("a")));
    }
    for (_, node, _, port) in nodes {
        eventually(&format!("{node}: RDS NACK"), || async {
            nack(&cp, node, type_url::ROUTE)
                .map(|_| ())
                .ok_or("no NACK".to_string())
        })
        .await;
        serves(local(port), "/a", "a1").await.unwrap();
        serves(local(port), "/b", "b").await.unwrap();
    }
    for node in ["weft", "weft-delta"] {
        let message = nack(&cp, node, type_url::ROUTE).unwrap();
        assert!(
            message.starts_with(
                "RouteConfiguration main: virtual_hosts[0].routes[0].match.safe_regex.regex: invalid regex"
            ),
            "{message}"
        );
    }

    // Version 3: load balancer subsets on cluster a, which Envoy takes and Weft does not
    // implement.
    let with_subsets = any(
        "envoy.config.cluster.v3.Cluster",
        json!({"name": "a", "type": "EDS", "connect_timeout": "1s",
               "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
               "lb_subset_config": {"fallback_policy": "ANY_ENDPOINT"}}),
    );
    for (_, node, _, port) in nodes {
        cache.set_node(node, config("3", port, json!({}), with_subsets.clone()));
    }
    eventually("envoy accepts lb_subset_config", || async {
        acked(&cp, "envoy", type_url::CLUSTER, "3")
    })
    .await;
    for (_, node, _, port) in &nodes[1..] {
        eventually(&format!("{node}: CDS NACK"), || async {
            match nack(&cp, node, type_url::CLUSTER) {
                Some(m) if m == "Cluster a: lb_subset_config: not supported by the Weft proxy" => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        serves(local(*port), "/a", "a1").await.unwrap();
    }

    // Version 4: good again, everywhere.
    for (_, node, _, port) in nodes {
        cache.set_node(node, config("4", port, json!({}), eds_cluster("a")));
    }
    for (_, node, _, port) in nodes {
        // Delta sends routes again only if they changed since the last ACK (at 3).
        eventually(&format!("{node}: version 4 ACKed"), || async {
            acked(&cp, node, type_url::CLUSTER, "4")?;
            match nack(&cp, node, type_url::ROUTE) {
                None => Ok(()),
                Some(m) => Err(m),
            }
        })
        .await;
        serves(local(port), "/a", "a1").await.unwrap();
    }
    let stats = proxies[1].admin("/stats").await;
    for line in [
        "cluster_manager.cds.update_rejected: 1",
        "rds.update_rejected: 1",
        "control_plane.connected_state: 1",
    ] {
        assert!(
            stats.lines().any(|l| l == line),
            "{line} missing from\n{stats}"
        );
    }
    cp.stop().await;
}

/// The control plane goes away: the proxies keep serving what they have. It comes back on the
/// same address with a newer config: they reconnect and take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_ride_out_a_control_plane_restart() {
    let a1 = support::start_echo("a1").await;
    let b = support::start_echo("b").await;
    let cache = Arc::new(Cache::default());
    let cp = ControlPlane::start(0, cache.clone()).await;
    let xds_port = cp.addr.port();
    let nodes = [
        (Kind::Envoy, "envoy", "GRPC", support::free_port()),
        (Kind::Weft, "weft", "GRPC", support::free_port()),
        (Kind::Weft, "weft-delta", "DELTA_GRPC", support::free_port()),
    ];
    let config = |version: &str, port: u16, target: &str| {
        snapshot(
            version,
            vec![
                listener("http", port, "main"),
                eds_cluster("a"),
                static_cluster("b", b),
                endpoints("a", &[a1]),
                routes("main", &[("/", target)], json!({})),
            ],
        )
    };
    for (_, node, _, port) in nodes {
        cache.set_node(node, config("1", port, "a"));
    }
    let mut proxies = Vec::new();
    for (kind, node, api, _) in nodes {
        proxies.push(start_proxy(kind, api, node, xds_port, &[]).await);
    }
    for (_, node, _, port) in nodes {
        eventually(node, || serves(local(port), "/", "a1")).await;
    }
    cp.stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (_, node, _, port) in nodes {
        serves(local(port), "/", "a1")
            .await
            .unwrap_or_else(|e| panic!("{node} without its control plane: {e}"));
    }
    for proxy in &proxies[1..] {
        let stats = proxy.admin("/stats").await;
        assert!(
            stats
                .lines()
                .any(|l| l == "control_plane.connected_state: 0"),
            "{stats}"
        );
    }
    let cache = Arc::new(Cache::default());
    for (_, node, _, port) in nodes {
        cache.set_node(node, config("2", port, "b"));
    }
    let cp = ControlPlane::start(xds_port, cache).await;
    for (_, node, _, port) in nodes {
        eventually(&format!("{node} after the restart"), || async {
            serves(local(port), "/", "b").await?;
            acked(&cp, node, type_url::ROUTE, "2")
        })
        .await;
    }
    cp.stop().await;
}

/// A listener removed by LDS stops accepting at once; a request in flight on it finishes, and
/// its connection is closed rather than kept alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_stops_accepting_and_drains() {
    let a1 = support::start_echo("a1").await;
    let cache = Arc::new(Cache::default());
    let cp = ControlPlane::start(0, cache.clone()).await;
    let nodes = [
        (
            Kind::Envoy,
            "envoy",
            support::free_port(),
            support::free_port(),
        ),
        (
            Kind::Weft,
            "weft",
            support::free_port(),
            support::free_port(),
        ),
    ];
    let config = |version: &str, keep: u16, gone: Option<u16>| {
        let mut r = vec![
            listener("keep", keep, "main"),
            static_cluster("a", a1),
            routes("main", &[("/", "a")], json!({})),
        ];
        if let Some(gone) = gone {
            r.push(listener("gone", gone, "main"));
        }
        snapshot(version, r)
    };
    for (_, node, keep, gone) in nodes {
        cache.set_node(node, config("1", keep, Some(gone)));
    }
    let drain = ["--drain-time-s", "2", "--drain-strategy", "immediate"];
    let mut proxies = Vec::new();
    for (kind, node, _, _) in nodes {
        let args: &[&str] = if kind == Kind::Envoy {
            &drain
        } else {
            &drain[..2]
        };
        proxies.push(start_proxy(kind, "GRPC", node, cp.addr.port(), args).await);
    }
    let mut in_flight = Vec::new();
    for (_, node, _, gone) in nodes {
        eventually(node, || serves(local(gone), "/", "a1")).await;
        // A request that takes 1.5 s, sent on the listener about to go.
        in_flight.push(tokio::spawn(async move {
            try_request(local(gone), &Req::get("test.local", "/slow/1500")).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, node, keep, _) in nodes {
        cache.set_node(node, config("2", keep, None));
    }
    for (_, node, keep, gone) in nodes {
        eventually(&format!("{node}: listener removed"), || async move {
            match tokio::net::TcpStream::connect(local(gone)).await {
                Err(_) => Ok(()),
                Ok(_) => Err("still accepting".to_string()),
            }
        })
        .await;
        serves(local(keep), "/", "a1").await.unwrap();
    }
    for ((_, node, _, _), request) in nodes.iter().zip(in_flight) {
        let r = request
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{node}: {e}"));
        assert_eq!(r.status, 200, "{node}");
        assert_eq!(
            r.headers.get("connection").map(|v| v.to_str().unwrap()),
            Some("close"),
            "{node}"
        );
    }
    cp.stop().await;
}

/// `weft proxy --xds ADDR --node-id ID --xds-delta` needs no bootstrap at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_from_the_command_line_without_a_bootstrap() {
    let a1 = support::start_echo("a1").await;
    let cache = Arc::new(Cache::default());
    let cp = ControlPlane::start(0, cache.clone()).await;
    let port = support::free_port();
    cache.set_node(
        "cli",
        snapshot(
            "1",
            vec![
                listener("http", port, "main"),
                eds_cluster("a"),
                endpoints("a", &[a1]),
                routes("main", &[("/", "a")], json!({})),
            ],
        ),
    );
    let mut child = std::process::Command::new(support::weft_binary())
        .args([
            "proxy",
            "--concurrency",
            "1",
            "--node-id",
            "cli",
            "--xds-delta",
            "--xds",
        ])
        .arg(cp.addr.to_string())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("served from --xds", || serves(local(port), "/", "a1")).await;
    assert!(cp.status("cli").unwrap().delta);
    let _ = child.kill();
    let _ = child.wait();
    cp.stop().await;
}
