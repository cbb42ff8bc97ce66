//! Warming over ADS, next to real Envoy 1.40 fed by the same server: a listener serves only
//! once its RDS route table has arrived and an EDS cluster only once its endpoints have; the
//! version they replace serves meanwhile; a route table that never comes stops holding its
//! listener back after `initial_fetch_timeout`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use support::xds::*;
use support::{Kind, Req, try_request};
use weft_xds::ads::Cache;

/// What `/config_dump` says of dynamic listeners and clusters: `listener NAME STATE [VERSION]`
/// per state, `cluster NAME active|warming VERSION`.
fn dump_states(dump: &Value) -> Vec<String> {
    let mut seen = Vec::new();
    for config in dump["configs"].as_array().unwrap() {
        for l in config["dynamic_listeners"].as_array().into_iter().flatten() {
            let name = l["name"].as_str().unwrap();
            if let Some(v) = l["active_state"]["version_info"].as_str() {
                seen.push(format!("listener {name} active_state {v}"));
            }
            // Not its version: Envoy 1.40 reports a listener whose update only changes filter
            // chains as warming at the version it replaces.
            if l["warming_state"].is_object() {
                seen.push(format!("listener {name} warming_state"));
            }
        }
        for (key, state) in [
            ("dynamic_active_clusters", "active"),
            ("dynamic_warming_clusters", "warming"),
        ] {
            for c in config[key].as_array().into_iter().flatten() {
                seen.push(format!(
                    "cluster {} {state} {}",
                    c["cluster"]["name"].as_str().unwrap(),
                    c["version_info"].as_str().unwrap_or("")
                ));
            }
        }
    }
    seen.sort();
    seen
}

/// One line of `/stats` (`name: value`), as a number.
fn stat(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(": ")?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_clusters_warm_before_they_serve() {
    let a1 = support::start_echo("a1").await;
    let c1 = support::start_echo("c1").await;
    let cache = Arc::new(Cache::default());
    let cp = ControlPlane::start(0, cache.clone()).await;
    let kinds = [(Kind::Envoy, "envoy"), (Kind::Weft, "weft")];
    // Per node: the main listener, one added later, and one whose routes never come.
    let ports: BTreeMap<&str, [u16; 3]> = kinds
        .iter()
        .map(|(_, node)| {
            (
                *node,
                [
                    support::free_port(),
                    support::free_port(),
                    support::free_port(),
                ],
            )
        })
        .collect();
    let config = |version: &str, node: &str, step: u8| {
        let [http, extra, late] = ports[node];
        let mut resources = vec![
            eds_cluster("a"),
            endpoints("a", &[a1]),
            routes("main", &[("/", "a")], json!({})),
        ];
        if step == 0 {
            resources.push(listener("http", http, "main"));
        } else {
            // The main listener now names a table that is not there yet, a new listener does
            // too, and a new EDS cluster has no endpoints yet.
            resources.push(listener("http", http, "main2"));
            resources.push(listener("extra", extra, "extra"));
            // Its RDS subscription gives up waiting after 1 s.
            resources.push(listener_with_source(
                "late",
                late,
                "never",
                json!({"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "1s"}),
            ));
            resources.push(eds_cluster("c"));
        }
        if step == 2 {
            resources.push(routes("main2", &[("/", "c")], json!({})));
            resources.push(routes("extra", &[("/", "a")], json!({})));
            resources.push(endpoints("c", &[c1]));
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
            start_proxy(kind, "GRPC", node, cp.addr.port(), &[]).await,
        ));
    }
    for (node, _) in &proxies {
        let http = local(ports[node][0]);
        eventually(&format!("{node}: first config"), || async move {
            serves(http, "/", "a1").await
        })
        .await;
    }

    // Version 2: what is new waits; the main listener's old version keeps serving.
    for (_, node) in kinds {
        cache.set_node(node, config("2", node, 1));
    }
    let mut warming = Vec::new();
    let cp_ref = &cp;
    for (node, proxy) in &proxies {
        let [http, extra, late] = ports[node].map(local);
        eventually(&format!("{node}: version 2 warming"), || async move {
            // (Envoy holds back its CDS ACK while a cluster warms, so only LDS is awaited.)
            acked(cp_ref, node, weft_xds::type_url::LISTENER, "2")?;
            // The route table that never comes: after its 1 s timeout, the listener serves
            // and finds no route.
            let r = try_request(late, &Req::get("x", "/")).await?;
            if r.status != 404 {
                return Err(format!("late listener answered {}", r.status));
            }
            Ok(())
        })
        .await;
        let still = upstream(http, "/").await;
        let refused = try_request(extra, &Req::get("x", "/")).await.is_err();
        let dump: Value = serde_json::from_str(&proxy.admin("/config_dump").await).unwrap();
        let stats = proxy.admin("/stats").await;
        warming.push((
            *node,
            still,
            refused,
            dump_states(&dump),
            stat(&stats, "listener_manager.total_listeners_warming"),
            stat(&stats, "cluster_manager.warming_clusters"),
        ));
    }
    let expected_states: Vec<String> = [
        "cluster a active 1",
        "cluster c warming 2",
        "listener extra warming_state",
        "listener http active_state 1",
        "listener http warming_state",
        "listener late active_state 2",
    ]
    .map(String::from)
    .to_vec();
    for w in &warming {
        assert_eq!(
            (&w.1, w.2, &w.3, w.4, w.5),
            (
                &Ok("a1".to_string()),
                true,
                &expected_states,
                Some(2),
                Some(1)
            ),
            "{}: (old listener serves, new one refuses connections, config_dump, \
             listeners warming, clusters warming)",
            w.0
        );
    }

    // Version 3: the route tables and endpoints arrive; everything serves the new config.
    for (_, node) in kinds {
        cache.set_node(node, config("3", node, 2));
    }
    for (node, proxy) in &proxies {
        let [http, extra, _] = ports[node].map(local);
        eventually(&format!("{node}: version 3"), || async move {
            serves(http, "/", "c1").await?;
            serves(extra, "/", "a1").await
        })
        .await;
        let dump: Value = serde_json::from_str(&proxy.admin("/config_dump").await).unwrap();
        let states = dump_states(&dump);
        assert!(
            states.iter().all(|s| !s.contains("warming")),
            "{node}: {states:?}"
        );
        let stats = proxy.admin("/stats").await;
        assert_eq!(
            (
                stat(&stats, "listener_manager.total_listeners_warming"),
                stat(&stats, "cluster_manager.warming_clusters"),
            ),
            (Some(0), Some(0)),
            "{node}"
        );
    }
    cp.stop().await;
}
