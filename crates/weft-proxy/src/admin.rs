//! The admin endpoint (bootstrap `admin.address`, 15000 in Istio): readiness, config dump,
//! clusters and stats in Envoy's formats, and `/quitquitquit`.

use crate::server::DumpEntry;
use crate::server::{ServerState, lock};
use crate::stats::ClusterStats;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, shared: Arc<ServerState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&req, &shared)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: u16, content_type: &'static str, body: String) -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

pub fn handle(req: &http::Request<Incoming>, shared: &ServerState) -> http::Response<Full<Bytes>> {
    let text = "text/plain; charset=UTF-8";
    let json = "application/json";
    match req.uri().path() {
        "/ready" if shared.ready.load(std::sync::atomic::Ordering::Relaxed) => {
            reply(200, text, "LIVE\n".into())
        }
        "/ready" => reply(503, text, "PRE_INITIALIZING\n".into()),
        "/healthz" | "/healthz/ready" => reply(200, text, "OK\n".into()),
        "/server_info" => reply(200, json, server_info(shared).to_string()),
        "/config_dump" => {
            let include_eds = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|p| p == "include_eds" || p.starts_with("include_eds="))
            });
            reply(200, json, pretty(&config_dump(shared, include_eds)))
        }
        "/clusters" => reply(200, text, clusters(shared)),
        "/certs" => reply(
            200,
            json,
            pretty(&crate::agent::certs_json(&shared.secrets)),
        ),
        "/stats" => reply(200, text, stats_text(shared)),
        "/stats/prometheus" => reply(200, "text/plain; version=0.0.4", prometheus(shared)),
        "/quitquitquit" if req.method() == http::Method::POST => {
            shared.request_shutdown();
            reply(200, text, "OK\n".into())
        }
        "/quitquitquit" => reply(405, text, "use POST\n".into()),
        _ => reply(404, text, "unknown admin path\n".into()),
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn server_info(shared: &ServerState) -> serde_json::Value {
    serde_json::json!({
        "version": concat!("weft/", env!("CARGO_PKG_VERSION")),
        "state": "LIVE",
        "uptime_current_epoch": format!("{}s", shared.started.elapsed().as_secs()),
        "uptime_all_epochs": format!("{}s", shared.started.elapsed().as_secs()),
        "command_line_options": { "concurrency": shared.concurrency },
        "node": shared.node,
    })
}

/// Envoy's `/config_dump` shape: bootstrap, then clusters, listeners and routes, each split into
/// static (from the bootstrap) and dynamic (from the control plane, with versions). Endpoints
/// only with `?include_eds`, as in Envoy.
fn config_dump(shared: &ServerState, include_eds: bool) -> serde_json::Value {
    use serde_json::json;
    let snapshot = shared.snapshot.load();
    let bootstrap = &snapshot.config_dump;
    let last_updated = snapshot.last_updated.map(crate::access_log::format_time);
    let statics = |key: &str, item: &str| -> Vec<serde_json::Value> {
        bootstrap
            .pointer(&format!("/static_resources/{key}"))
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .map(|i| json!({ item: i, "last_updated": last_updated }))
                    .collect()
            })
            .unwrap_or_default()
    };
    let dynamic = |entries: &[DumpEntry], item: &str| -> Vec<serde_json::Value> {
        entries
            .iter()
            .map(|e| {
                json!({
                    "version_info": e.version,
                    item: e.json,
                    "last_updated": crate::access_log::format_time(e.last_updated),
                })
            })
            .collect()
    };
    let d = &snapshot.dynamic;
    // A listener is listed once, with the version serving and the one warming to replace it.
    let mut by_name: std::collections::BTreeMap<&str, serde_json::Map<String, serde_json::Value>> =
        std::collections::BTreeMap::new();
    for (state, entries) in [
        ("active_state", &d.listeners),
        ("warming_state", &d.warming_listeners),
    ] {
        for e in entries {
            let listener = by_name.entry(&e.name).or_default();
            listener.insert("name".into(), json!(e.name));
            listener.insert(
                state.into(),
                json!({
                    "version_info": e.version,
                    "listener": e.json,
                    "last_updated": crate::access_log::format_time(e.last_updated),
                }),
            );
        }
    }
    let listeners: Vec<serde_json::Value> = by_name
        .into_values()
        .map(serde_json::Value::Object)
        .collect();
    let mut configs = vec![
        json!({
            "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "bootstrap": bootstrap,
            "last_updated": last_updated,
        }),
        json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "version_info": snapshot.version,
            "static_clusters": statics("clusters", "cluster"),
            "dynamic_active_clusters": dynamic(&d.clusters, "cluster"),
            "dynamic_warming_clusters": dynamic(&d.warming_clusters, "cluster"),
        }),
        json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "version_info": snapshot.version,
            "static_listeners": statics("listeners", "listener"),
            "dynamic_listeners": listeners,
        }),
        json!({
            "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "dynamic_route_configs": dynamic(&d.routes, "route_config"),
        }),
    ];
    if include_eds {
        configs.push(json!({
            "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs": dynamic(&d.endpoints, "endpoint_config"),
        }));
    }
    json!({ "configs": configs })
}

/// Envoy's text `/clusters`: `cluster::host::stat::value` lines.
fn clusters(shared: &ServerState) -> String {
    let snapshot = shared.snapshot.load();
    let mut names: Vec<&String> = snapshot.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let Some(cluster) = snapshot.clusters.get(name) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{name}::observability_name::{}",
            cluster.config.stat_name
        );
        let cb = &cluster.config.circuit_breakers;
        for (level, t) in [("default", &cb.default), ("high", &cb.high)] {
            let _ = writeln!(
                out,
                "{name}::{level}_priority::max_connections::{}",
                t.max_connections
            );
            let _ = writeln!(
                out,
                "{name}::{level}_priority::max_pending_requests::{}",
                t.max_pending_requests
            );
            let _ = writeln!(
                out,
                "{name}::{level}_priority::max_requests::{}",
                t.max_requests
            );
            let _ = writeln!(
                out,
                "{name}::{level}_priority::max_retries::{}",
                t.max_retries
            );
        }
        let _ = writeln!(out, "{name}::added_via_api::false");
        for host in cluster.hosts.load().all() {
            let a = host.address;
            let s = &host.stats;
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}::{a}::cx_active::0");
            let _ = writeln!(
                out,
                "{name}::{a}::cx_connect_fail::{}",
                get(&s.cx_connect_fail)
            );
            let _ = writeln!(out, "{name}::{a}::cx_total::{}", get(&s.cx_total));
            let _ = writeln!(
                out,
                "{name}::{a}::rq_active::{}",
                get(&host.active_requests)
            );
            let _ = writeln!(out, "{name}::{a}::rq_error::{}", get(&s.rq_error));
            let _ = writeln!(out, "{name}::{a}::rq_success::{}", get(&s.rq_success));
            let _ = writeln!(out, "{name}::{a}::rq_timeout::0");
            let _ = writeln!(out, "{name}::{a}::rq_total::{}", get(&s.rq_total));
            let _ = writeln!(out, "{name}::{a}::hostname::{}", host.hostname);
            let mut health = match host.health {
                crate::cluster::Health::Healthy => "",
                crate::cluster::Health::Unhealthy => "/eds_health_status/unhealthy",
                crate::cluster::Health::Degraded => "/eds_health_status/degraded",
            }
            .to_string();
            if cluster.health_check.is_some() && host.health_check_failed() {
                health.push_str("/failed_active_hc");
            }
            if host.outlier.is_ejected() {
                health.push_str("/failed_outlier_check");
            }
            if health.is_empty() {
                health.push_str("healthy");
            }
            let _ = writeln!(out, "{name}::{a}::health_flags::{health}");
            let _ = writeln!(out, "{name}::{a}::weight::{}", host.weight);
            let _ = writeln!(out, "{name}::{a}::region::");
            let _ = writeln!(out, "{name}::{a}::zone::");
            let _ = writeln!(out, "{name}::{a}::sub_zone::");
            let _ = writeln!(out, "{name}::{a}::canary::false");
            let _ = writeln!(out, "{name}::{a}::priority::{}", host.priority);
            let (rate, local_rate) = host.outlier.success_rates();
            let _ = writeln!(out, "{name}::{a}::success_rate::{}", rate.unwrap_or(-1.0));
            let _ = writeln!(
                out,
                "{name}::{a}::local_origin_success_rate::{}",
                local_rate.unwrap_or(-1.0)
            );
        }
    }
    out
}

/// (stat name, value, counter?) for every stat, Envoy's dotted names.
/// (dotted name, value, counter?, Prometheus labels, Prometheus family)
type StatLine = (String, u64, bool, Vec<(&'static str, String)>, String);

fn all_stats(shared: &ServerState) -> Vec<StatLine> {
    let mut out = Vec::new();
    let mut breaker_lines: Vec<StatLine> = Vec::new();
    let snapshot = shared.snapshot.load();
    let mut push =
        |scope: &str, label: &'static str, key: &str, entries: Vec<(&'static str, u64, bool)>| {
            for (stat, value, counter) in entries {
                out.push((
                    format!("{scope}.{key}.{stat}"),
                    value,
                    counter,
                    vec![(label, key.to_string())],
                    format!("envoy_{scope}_{stat}"),
                ));
            }
        };
    let mut clusters: Vec<_> = snapshot.clusters.values().collect();
    clusters.sort_by(|a, b| a.config.stat_name.cmp(&b.config.stat_name));
    for c in clusters {
        push(
            "cluster",
            "envoy_cluster_name",
            &c.config.stat_name,
            ClusterStats::entries(&c.stats),
        );
        if let Some((_, hc)) = &c.health_check {
            for (stat, value, counter) in hc.entries() {
                breaker_lines.push((
                    format!("cluster.{}.health_check.{stat}", c.config.stat_name),
                    value,
                    counter,
                    vec![("envoy_cluster_name", c.config.stat_name.clone())],
                    format!("envoy_cluster_health_check_{stat}"),
                ));
            }
        }
        if let Some(d) = &c.outlier {
            for (stat, value, counter) in d.stats.entries() {
                breaker_lines.push((
                    format!("cluster.{}.outlier_detection.{stat}", c.config.stat_name),
                    value,
                    counter,
                    vec![("envoy_cluster_name", c.config.stat_name.clone())],
                    format!("envoy_cluster_outlier_detection_{stat}"),
                ));
            }
        }
        for (code, value) in c.stats.codes.seen() {
            breaker_lines.push((
                format!("cluster.{}.upstream_rq_{code}", c.config.stat_name),
                value,
                true,
                vec![
                    ("envoy_cluster_name", c.config.stat_name.clone()),
                    ("envoy_response_code", code.to_string()),
                ],
                "envoy_cluster_upstream_rq".to_string(),
            ));
        }
        for (stat, value) in c.stats.grpc.seen() {
            breaker_lines.push((
                format!("cluster.{}.grpc.{stat}", c.config.stat_name),
                value,
                true,
                vec![("envoy_cluster_name", c.config.stat_name.clone())],
                format!("envoy_cluster_grpc_{stat}"),
            ));
        }
        for (stat, value) in c.breakers.open_gauges(&c.config.circuit_breakers) {
            breaker_lines.push((
                format!("cluster.{}.{stat}", c.config.stat_name),
                value,
                false,
                vec![("envoy_cluster_name", c.config.stat_name.clone())],
                format!("envoy_cluster_{}", stat.replace('.', "_")),
            ));
        }
    }
    for (prefix, s) in lock(&shared.stats.http).iter() {
        push(
            "http",
            "envoy_http_conn_manager_prefix",
            prefix,
            s.entries(),
        );
    }
    for (key, s) in lock(&shared.stats.listeners).iter() {
        push("listener", "envoy_listener_address", key, s.entries());
    }
    for (prefix, s) in lock(&shared.stats.tcp).iter() {
        push("tcp", "envoy_tcp_prefix", prefix, s.entries());
    }
    out.append(&mut breaker_lines);
    for (key, w) in lock(&shared.stats.listener_workers).iter() {
        let workers = shared.concurrency.clamp(1, crate::stats::MAX_WORKERS);
        for (i, total) in w.downstream_cx_total.iter().take(workers).enumerate() {
            out.push((
                format!("listener.{key}.worker_{i}.downstream_cx_total"),
                total.load(std::sync::atomic::Ordering::Relaxed),
                true,
                vec![
                    ("envoy_listener_address", key.clone()),
                    ("envoy_worker_id", i.to_string()),
                ],
                "envoy_listener_worker_downstream_cx_total".to_string(),
            ));
        }
    }
    for (key, s) in lock(&shared.stats.ssl).iter() {
        for (stat, value, counter) in s.entries() {
            out.push((
                format!("listener.{key}.ssl.{stat}"),
                value,
                counter,
                vec![("envoy_listener_address", key.clone())],
                format!("envoy_listener_ssl_{stat}"),
            ));
        }
    }
    for (prefix, s) in lock(&shared.stats.fault).iter() {
        for (stat, value, counter) in s.entries() {
            out.push((
                format!("http.{prefix}.fault.{stat}"),
                value,
                counter,
                vec![("envoy_http_conn_manager_prefix", prefix.clone())],
                format!("envoy_http_fault_{stat}"),
            ));
        }
    }
    for (prefix, s) in lock(&shared.stats.local_rate_limit).iter() {
        for (stat, value) in s.entries() {
            out.push((
                format!("{prefix}.http_local_rate_limit.{stat}"),
                value,
                true,
                vec![("envoy_local_http_ratelimit_prefix", prefix.clone())],
                format!("envoy_http_local_rate_limit_{stat}"),
            ));
        }
    }
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    for (counters, names) in [
        (&shared.stats.rbac, ["allowed", "denied"]),
        (
            &shared.stats.rbac_shadow,
            ["shadow_allowed", "shadow_denied"],
        ),
    ] {
        for (prefix, c) in lock(counters).iter() {
            for (stat, value) in names.into_iter().zip([get(&c.allowed), get(&c.denied)]) {
                let name = crate::rbac::join(prefix, stat);
                let prometheus = format!("envoy_{}", name.replace('.', "_"));
                out.push((name, value, true, Vec::new(), prometheus));
            }
        }
    }
    for (prefix, n) in lock(&shared.stats.connection_rate_limit).iter() {
        out.push((
            format!("local_rate_limit.{prefix}.rate_limited"),
            n.load(std::sync::atomic::Ordering::Relaxed),
            true,
            vec![("envoy_local_rate_limit_prefix", prefix.clone())],
            "envoy_local_rate_limit_rate_limited".to_string(),
        ));
    }
    let codec = shared
        .codec
        .entries()
        .map(|(name, value)| (name, value, true));
    for (name, value, counter) in shared.xds.entries().into_iter().chain(codec) {
        out.push((
            name.to_string(),
            value,
            counter,
            Vec::new(),
            format!("envoy_{}", name.replace('.', "_")),
        ));
    }
    let uptime = shared.started.elapsed().as_secs();
    for (stat, value) in [
        ("live", 1),
        ("uptime", uptime),
        ("concurrency", shared.concurrency as u64),
    ] {
        out.push((
            format!("server.{stat}"),
            value,
            false,
            Vec::new(),
            format!("envoy_server_{stat}"),
        ));
    }
    out
}

fn stats_text(shared: &ServerState) -> String {
    let mut stats = all_stats(shared);
    stats.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (name, value, _, _, _) in stats {
        let _ = writeln!(out, "{name}: {value}");
    }
    let snapshot = shared.snapshot.load();
    let mut names: Vec<_> = snapshot.clusters.values().collect();
    names.sort_by(|a, b| a.config.stat_name.cmp(&b.config.stat_name));
    for c in names {
        let h = &c.rq_time;
        let _ = writeln!(
            out,
            "cluster.{}.upstream_rq_time: count={}",
            c.config.stat_name,
            h.count()
        );
    }
    out
}

fn prometheus(shared: &ServerState) -> String {
    let mut stats = all_stats(shared);
    stats.sort_by(|a, b| a.4.cmp(&b.4).then(a.0.cmp(&b.0)));
    let mut out = String::new();
    let mut last_family = String::new();
    for (_, value, counter, labels, family) in stats {
        if family != last_family {
            let _ = writeln!(
                out,
                "# TYPE {family} {}",
                if counter { "counter" } else { "gauge" }
            );
            last_family.clone_from(&family);
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        if labels.is_empty() {
            let _ = writeln!(out, "{family} {value}");
        } else {
            let _ = writeln!(out, "{family}{{{}}} {value}", labels.join(","));
        }
    }
    let snapshot = shared.snapshot.load();
    let mut clusters: Vec<_> = snapshot.clusters.values().collect();
    clusters.sort_by(|a, b| a.config.stat_name.cmp(&b.config.stat_name));
    let _ = writeln!(out, "# TYPE envoy_cluster_upstream_rq_time histogram");
    for c in clusters {
        let labels = format!("envoy_cluster_name=\"{}\"", c.config.stat_name);
        c.rq_time
            .prometheus("envoy_cluster_upstream_rq_time", &labels, &mut out);
    }
    shared.stats.istio.prometheus(&mut out);
    out
}
