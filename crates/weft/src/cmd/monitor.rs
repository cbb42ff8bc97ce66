//! The control plane's status port (istiod's 15014): `/debug/syncz` (where each proxy stands,
//! per resource type), `/debug/config_dump?proxyID=ID` (what translation made for it, with the
//! Istio objects each resource came from), `/debug/problems`, `/debug/logs?proxy=NAME` (what a
//! proxy `weft up` runs wrote), and `/ready`.

use super::control_plane::ConfigStatus;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use weft_xds::ads::Snapshot;
use weft_xds::control::ControlPlane;
use weft_xds::translate::ProxyKind;
use weft_xds::type_url;

pub struct Monitor {
    pub control: ControlPlane,
    pub status: Arc<Mutex<ConfigStatus>>,
    pub logs: Logs,
    /// The mesh CA, when it runs: its `citadel_server_*` counters.
    pub ca: Option<Arc<weft_ca::Ca>>,
    pub started: std::time::Instant,
    /// The folder's config as last loaded: the dashboard's objects.
    pub config: tokio::sync::watch::Receiver<Arc<weft_registry::source::Config>>,
    /// The proxies' Istio metrics, scraped for the dashboard's graph.
    pub graph: super::dashboard::Shared,
}

/// A proxy `weft up` runs: its node id, the file its stdout and stderr go to, and where its
/// Prometheus stats are.
#[derive(Debug, Clone)]
pub struct Known {
    pub node_id: String,
    pub log: std::path::PathBuf,
    pub stats: std::net::SocketAddr,
}

/// The proxies `weft up` runs, by name (`sidecar default/web-v1`); it keeps this current.
pub type Logs = Arc<Mutex<BTreeMap<String, Known>>>;

/// The one proxy `name` stands for: its name, node id, workload (`web-v1`), `NS/NAME`, or a part
/// of its node id that no other proxy's has. Else why not.
pub fn find_proxy(
    logs: &BTreeMap<String, Known>,
    name: &str,
) -> Result<(String, std::path::PathBuf), String> {
    if let Some(k) = logs.get(name) {
        return Ok((name.to_string(), k.log.clone()));
    }
    let workload = |label: &str| label.split_once(' ').map_or(label, |(_, w)| w).to_string();
    let exact: Vec<_> = logs
        .iter()
        .filter(|(label, k)| {
            let w = workload(label);
            k.node_id == name || w == name || w.rsplit_once('/').is_some_and(|(_, n)| n == name)
        })
        .collect();
    let found = if exact.is_empty() {
        logs.iter()
            .filter(|(_, k)| k.node_id.contains(name))
            .collect()
    } else {
        exact
    };
    match found.as_slice() {
        [(label, k)] => Ok(((*label).clone(), k.log.clone())),
        [] => Err(format!(
            "no proxy {name:?}; the mesh runs: {}",
            logs.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        many => Err(format!(
            "{name:?} names several proxies: {}",
            many.iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// xDS type URLs by the short names istioctl prints.
pub const TYPES: [(&str, &str); 4] = [
    ("CDS", type_url::CLUSTER),
    ("LDS", type_url::LISTENER),
    ("EDS", type_url::ENDPOINT),
    ("RDS", type_url::ROUTE),
];

impl Monitor {
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let me = Arc::new(self);
        let scraper = tokio::spawn(super::dashboard::scrape(me.logs.clone(), me.graph.clone()));
        let _stop_scraper = AbortOnDrop(scraper);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = &mut shutdown => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let me = me.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let me = me.clone();
                    async move { Ok::<_, std::convert::Infallible>(me.answer(&req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%7E", "~").replace("%7e", "~")))
            .collect();
        match req.uri().path() {
            "/ready" => reply(StatusCode::OK, json!("ready")),
            "/debug/syncz" => reply(StatusCode::OK, syncz(&self.control)),
            "/debug/problems" => reply(StatusCode::OK, self.problems()),
            "/debug/logs" => self.log(&query),
            "/dashboard" => {
                let mut resp = Response::new(Full::new(Bytes::from_static(
                    super::dashboard::PAGE.as_bytes(),
                )));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                resp
            }
            "/dashboard/data" => reply(StatusCode::OK, self.dashboard()),
            "/metrics" | "/stats/prometheus" => {
                let mut resp = Response::new(Full::new(Bytes::from(self.metrics())));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                resp
            }
            "/debug/config_dump" => match query.get("proxyID") {
                Some(id) => match self.control.proxies().get(id) {
                    Some(p) => reply(StatusCode::OK, dump(&p.snapshot, &p.problems)),
                    None => reply(
                        StatusCode::NOT_FOUND,
                        json!({"error": format!("no proxy {id} has connected")}),
                    ),
                },
                None => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "proxyID is required"}),
                ),
            },
            _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }

    /// The dashboard's data: the graph's edges, each proxy's sync state, and every object of
    /// the folder with its state and problems.
    fn dashboard(&self) -> Value {
        let edges = {
            let g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
            super::dashboard::edges(&g)
        };
        let config = self.config.borrow().clone();
        let of = |list: &[weft_api::load::Problem], o: &weft_api::load::ObjectRef| -> Vec<String> {
            list.iter()
                .filter(|p| p.object.as_ref() == Some(o))
                .map(ToString::to_string)
                .collect()
        };
        let mut objects = Vec::new();
        for (r, origin) in config.resources.iter().zip(config.origins.iter()) {
            let o = weft_api::load::ObjectRef {
                group: weft_api::resource::split_api_version(r.api_version())
                    .0
                    .to_string(),
                kind: r.kind().to_string(),
                namespace: r.namespace().to_string(),
                name: r.name().to_string(),
            };
            let errors = of(&config.errors, &o);
            let warnings = of(&config.warnings, &o);
            let state = if !errors.is_empty() {
                "kept last good"
            } else if !warnings.is_empty() {
                "warning"
            } else {
                "ok"
            };
            objects.push(json!({
                "object": o.to_string(),
                "file": std::path::Path::new(&origin.file).file_name().map_or_else(|| origin.file.clone(), |f| f.to_string_lossy().into_owned()),
                "path": absolute(&origin.file),
                "line": origin.line,
                "state": state,
                "problems": errors.into_iter().chain(warnings).collect::<Vec<_>>(),
            }));
        }
        // What was refused outright, with nothing serving for it.
        for p in &config.errors {
            let serving = p.object.as_ref().is_some_and(|o| {
                config.resources.iter().any(|r| {
                    r.kind() == o.kind && r.namespace() == o.namespace && r.name() == o.name
                })
            });
            if !serving {
                objects.push(json!({
                    "object": p.object.as_ref().map_or_else(|| "(file)".to_string(), ToString::to_string),
                    "file": std::path::Path::new(&p.file).file_name().map_or_else(|| p.file.clone(), |f| f.to_string_lossy().into_owned()),
                    "path": absolute(&p.file),
                    "line": p.line,
                    "state": "refused",
                    "problems": [p.to_string()],
                }));
            }
        }
        let proxies: Vec<Value> = syncz(&self.control)
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut p| {
                let verdicts: Vec<String> = p["types"]
                    .as_object()
                    .into_iter()
                    .flat_map(|t| t.values())
                    .filter_map(|t| t["status"].as_str().map(str::to_string))
                    .collect();
                let state = if verdicts.iter().any(|v| v == "NACKED") {
                    "NACKED"
                } else if verdicts.iter().any(|v| v == "STALE") {
                    "STALE"
                } else {
                    "SYNCED"
                };
                p["state"] = json!(state);
                p
            })
            .collect();
        json!({ "edges": edges, "proxies": proxies, "config": objects })
    }

    /// istiod's metrics (`pilot_*`, `citadel_server_*`) in Prometheus' text format.
    fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        self.control.server().metrics().render(&mut out);
        let connected = self.control.connections().len();
        // istiod labels connections by the proxy's Istio version; Weft's and Envoy's nodes do
        // not say theirs.
        let _ = writeln!(
            out,
            "# TYPE pilot_xds gauge\npilot_xds{{version=\"unknown\"}} {connected}"
        );
        let inputs = self.control.inputs();
        let _ = writeln!(
            out,
            "# TYPE pilot_services gauge\npilot_services {}",
            inputs.registry.services.len()
        );
        let _ = writeln!(
            out,
            "# TYPE pilot_virt_services gauge\npilot_virt_services {}",
            inputs.config.virtual_services.len()
        );
        // Distinct conflicting listeners over every proxy, as istiod's push counts them.
        let proxies = self.control.proxies();
        for metric in weft_xds::translate::CONFLICT_METRICS {
            let keys: std::collections::BTreeSet<&str> = proxies
                .values()
                .flat_map(|p| p.conflicts.iter())
                .filter(|(m, _)| *m == metric)
                .map(|(_, k)| k.as_str())
                .collect();
            let _ = writeln!(out, "# TYPE {metric} gauge\n{metric} {}", keys.len());
        }
        let _ = writeln!(
            out,
            "# TYPE istiod_uptime_seconds gauge\nistiod_uptime_seconds {}",
            self.started.elapsed().as_secs_f64()
        );
        let _ = writeln!(
            out,
            "# TYPE istio_build gauge\nistio_build{{component=\"pilot\",tag=\"weft-{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(ca) = &self.ca {
            if let Some(expiry) = ca.root_expiry() {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let _ = writeln!(
                    out,
                    "# TYPE citadel_server_root_cert_expiry_timestamp gauge\ncitadel_server_root_cert_expiry_timestamp {expiry}\n\
                     # TYPE citadel_server_root_cert_expiry_seconds gauge\ncitadel_server_root_cert_expiry_seconds {}",
                    expiry - now
                );
            }
            let r = ca.refusals();
            let get =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            for (name, value) in [
                ("citadel_server_csr_count", get(&r.csr)),
                ("citadel_server_success_cert_issuance_count", get(&r.issued)),
                (
                    "citadel_server_authentication_failure_count",
                    get(&r.authentication_failures),
                ),
                ("citadel_server_csr_parsing_err_count", get(&r.malformed)),
            ] {
                let _ = writeln!(out, "# TYPE {name} counter\n{name} {value}");
            }
        }
        out
    }

    /// `?proxy=NAME[&offset=N]`: what the proxy wrote from byte `offset` on, as text, with
    /// where the next read starts in `x-weft-log-offset`.
    fn log(&self, query: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
        let Some(name) = query.get("proxy") else {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "proxy is required"}),
            );
        };
        let name = name
            .replace("%2F", "/")
            .replace("%2f", "/")
            .replace("%20", " ");
        let found = {
            let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
            find_proxy(&logs, &name)
        };
        let (label, path) = match found {
            Ok(f) => f,
            Err(e) => return reply(StatusCode::NOT_FOUND, json!({ "error": e })),
        };
        let offset: u64 = query
            .get("offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let text = read_from(&path, offset).unwrap_or_default();
        let next = offset + text.len() as u64;
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert("x-weft-log-offset", http::HeaderValue::from(next));
        if let Ok(v) = http::HeaderValue::from_str(&label) {
            h.insert("x-weft-proxy", v);
        }
        resp
    }

    /// Everything the operator should know is wrong: the refused edit, each proxy's translation
    /// problems, refused nodes, and Gateways no connected gateway proxy serves.
    fn problems(&self) -> Value {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let proxies = self.control.proxies();
        let translation: BTreeMap<&String, &Vec<String>> = proxies
            .iter()
            .filter(|(_, p)| !p.problems.is_empty())
            .map(|(id, p)| (id, p.problems.as_ref()))
            .collect();
        let inputs = self.control.inputs();
        let unserved: Vec<String> = inputs
            .config
            .gateways
            .iter()
            .filter(|g| {
                !proxies.values().any(|p| {
                    p.proxy.kind == ProxyKind::Router
                        && !g.spec.selector.is_empty()
                        && weft_registry::selects(&g.spec.selector, &p.proxy.labels)
                })
            })
            .map(|g| {
                format!(
                    "{}: no gateway proxy matches selector {:?}",
                    g.label(),
                    g.spec.selector
                )
            })
            .collect();
        json!({
            "config_errors": status.errors,
            "config_warnings": status.warnings,
            "kept_last_good": status.kept,
            "registry": inputs.registry.problems,
            "translation": translation,
            "refused_proxies": self.control.refused(),
            "gateways_without_proxy": unserved,
        })
    }
}

/// Each connected proxy, and per type what was sent, what it accepted, and the verdict
/// istioctl shows: SYNCED, STALE (sent, not yet accepted), NACKED, NOT SENT.
pub fn syncz(control: &ControlPlane) -> Value {
    let proxies = control.proxies();
    let mut out = Vec::new();
    for c in control.connections() {
        let mut types = serde_json::Map::new();
        for (short, url) in TYPES {
            let s = c.types.get(url).cloned().unwrap_or_default();
            let current = proxies
                .get(&c.node)
                .and_then(|p| p.snapshot.resources(url))
                .map(|r| r.version.clone());
            let verdict = if s.sent.is_empty() {
                "NOT SENT"
            } else if s.nack.is_some() {
                "NACKED"
            } else if s.acked.is_some() && s.acked == current {
                "SYNCED"
            } else {
                "STALE"
            };
            types.insert(
                short.to_string(),
                json!({
                    "status": verdict,
                    "sent": s.sent,
                    "acked": s.acked,
                    "current": current,
                    "error": s.nack,
                }),
            );
        }
        let kind = proxies.get(&c.node).map(|p| match p.proxy.kind {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        });
        out.push(json!({
            "proxy": c.node,
            "kind": kind,
            "delta": c.delta,
            "types": types,
        }));
    }
    Value::Array(out)
}

/// A proxy's resources, as sent, in Envoy's JSON form.
pub fn dump(snapshot: &Snapshot, problems: &[String]) -> Value {
    let section = |url: &str| {
        let mut m = serde_json::Map::new();
        let type_name = url.rsplit('/').next().unwrap_or(url);
        for (name, any) in snapshot
            .resources(url)
            .map(|r| &r.items)
            .into_iter()
            .flatten()
        {
            let v = weft_proxy::config::to_json(type_name, &any.value)
                .unwrap_or_else(|e| json!({"error": e}));
            m.insert(name.clone(), v);
        }
        Value::Object(m)
    };
    json!({
        "listeners": section(type_url::LISTENER),
        "routes": section(type_url::ROUTE),
        "clusters": section(type_url::CLUSTER),
        "endpoints": section(type_url::ENDPOINT),
        "problems": problems,
    })
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The bytes of `path` from `offset` on (none when the file is shorter, as after a restart
/// that started it again).
fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    if f.metadata()?.len() < offset {
        return Ok(Vec::new());
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Aborts the task when dropped: the dashboard's scraper lives as long as the server.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A file's absolute path, for the dashboard's links (the folder may be given relative).
fn absolute(file: &str) -> String {
    std::path::absolute(file).map_or_else(|_| file.to_string(), |p| p.display().to_string())
}
