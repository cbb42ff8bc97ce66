//! `--status-file PATH`: what `weft up` runs, where, and how each proxy stands, as JSON kept
//! current for scripts (the schema is in the README). Written to a temporary file and renamed,
//! so that a reader never sees half of it.

use super::fleet::{Fleet, State};
use super::plan::Kind;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weft_api::Resource;
use weft_registry::{Options, Registry};

/// The inbound addresses of every workload, by (namespace, name): for each service port that
/// selects it, where its application listens and where its sidecar takes the mesh's traffic
/// for it.
pub fn inbound(
    resources: &[Resource],
    fronts: &super::plan::Fronts,
) -> BTreeMap<(String, String), Vec<Value>> {
    let registry = Registry::build(resources, &Options::default());
    let mut out: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for s in &registry.services {
        for e in &s.endpoints {
            if !matches!(e.origin.kind, "WorkloadEntry" | "Pod") {
                continue;
            }
            let port_name = s
                .ports
                .iter()
                .find(|p| p.number == e.service_port)
                .map(|p| p.name.clone());
            out.entry((e.origin.namespace.clone(), e.origin.name.clone()))
                .or_default()
                .push(json!({
                    "service": s.hostname,
                    "service_port": e.service_port,
                    "port_name": port_name,
                    "address": join(&e.address, e.port),
                    "sidecar": fronts.given(e).map(|port| join(weft_xds::translate::fronting_host(&e.address), port)),
                }));
        }
    }
    out
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The whole file: the control plane, the folder's problems, and every proxy.
pub fn render(
    fleet: &Fleet,
    up: &super::View,
    inbound: &BTreeMap<(String, String), Vec<Value>>,
) -> Value {
    let syncz = super::super::monitor::syncz(&up.control);
    let sync: BTreeMap<&str, &Value> = syncz
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("proxy")?.as_str()?, c)))
        .collect();
    let status = up.status.lock().unwrap_or_else(|p| p.into_inner());
    let proxies: Vec<Value> = fleet
        .proxies
        .values()
        .map(|m| {
            let p = &m.plan;
            let sync_state = match sync.get(p.node_id.as_str()) {
                None => json!({ "state": "NOT CONNECTED", "types": {} }),
                Some(c) => {
                    let types = c.get("types").cloned().unwrap_or_default();
                    let verdicts: Vec<&str> = types
                        .as_object()
                        .into_iter()
                        .flat_map(|t| t.values())
                        .filter_map(|t| t.get("status")?.as_str())
                        .collect();
                    let state = if verdicts.contains(&"NACKED") {
                        "NACKED"
                    } else if verdicts.contains(&"STALE") {
                        "STALE"
                    } else {
                        "SYNCED"
                    };
                    json!({ "state": state, "types": types })
                }
            };
            let gateway_listeners: Vec<Value> = p
                .gateway_ports
                .iter()
                .map(|(server, listen)| {
                    json!({ "port": server, "address": join(&up.gateway_address, *listen) })
                })
                .collect();
            json!({
                "name": p.label,
                "kind": p.kind.as_str(),
                "namespace": p.namespace,
                "workload": p.workload,
                "node_id": p.node_id,
                "locality": p.locality,
                "pid": m.pid(),
                "state": match m.state {
                    State::Running if m.pid().is_some() => "running",
                    State::Running | State::Restarting { .. } => "restarting",
                },
                "restarts": m.restarts,
                "last_exit": m.last_exit,
                "admin": join("127.0.0.1", m.ports.admin),
                "stats": join("127.0.0.1", m.ports.stats),
                "log": super::fleet::log_file(fleet.run_dir(), p).display().to_string(),
                "http_proxy": m.ports.http_proxy.map(|port| join("127.0.0.1", port)),
                "inbound": match p.kind {
                    Kind::Sidecar => inbound
                        .get(&(p.namespace.clone(), p.workload.clone()))
                        .cloned()
                        .unwrap_or_default(),
                    Kind::Gateway => Vec::new(),
                },
                "gateway_listeners": gateway_listeners,
                "sync": sync_state,
            })
        })
        .collect();
    json!({
        "pid": std::process::id(),
        "control_plane": {
            "xds": up.xds.to_string(),
            "monitoring": up.monitoring.to_string(),
        },
        "config": {
            "folder": up.folder.display().to_string(),
            "generation": status.generation,
            "errors": status.errors,
            "warnings": status.warnings,
            "kept_last_good": status.kept,
        },
        "proxies": proxies,
        "prometheus": up.prometheus.as_ref().map(|(url, config)| json!({
            "url": url,
            "config": config.display().to_string(),
        })),
    })
}

/// Writes `value` to `path` if it differs from what was written last.
pub struct Writer {
    pub path: PathBuf,
    last: String,
}

impl Writer {
    pub fn new(path: PathBuf) -> Writer {
        Writer {
            path,
            last: String::new(),
        }
    }

    pub fn write(&mut self, value: &Value) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        if text == self.last {
            return Ok(());
        }
        let tmp = temporary(&self.path);
        std::fs::write(&tmp, format!("{text}\n"))?;
        std::fs::rename(&tmp, &self.path)?;
        self.last = text;
        Ok(())
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
