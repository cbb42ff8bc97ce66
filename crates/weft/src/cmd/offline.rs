//! `weft proxy-config TYPE -f DIR --workload NS/NAME`: what one workload's proxy would get from
//! a folder of Istio YAML, with no mesh running: the translation the control plane would push,
//! in Envoy's JSON, beside what it could not translate. The workload is a WorkloadEntry or Pod
//! of the folder, seen as Istio runs it (a sidecar under iptables capture, with the mesh CA); a
//! gateway is named by its labels (`--gateway istio=ingressgateway`).

use anyhow::Context as _;
use serde_json::Value;
use std::path::PathBuf;
use weft_api::Resource;
use weft_api::types::common::Labels;
use weft_xds::translate::{Inputs, Proxy, ProxyKind, generate};

/// Where the workload's labels and address are.
fn workload(resources: &[Resource], ns: &str, name: &str) -> Option<(String, Labels)> {
    resources.iter().find_map(|r| {
        if r.namespace() != ns || r.name() != name {
            return None;
        }
        match r {
            Resource::WorkloadEntry(o) => Some((
                o.spec.address.clone().unwrap_or_default(),
                o.spec.labels.clone(),
            )),
            Resource::Pod(p) => Some((
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default(),
                p.metadata.labels.clone(),
            )),
            _ => None,
        }
    })
}

/// The dump (`listeners`, `routes`, `clusters`, `endpoints`, `secrets`, `problems`) of the
/// workload `NS/NAME`, or of the gateway with `labels` (`k=v,...`).
pub fn dump(
    dir: PathBuf,
    mesh_file: Option<PathBuf>,
    workload_ref: Option<&str>,
    gateway: Option<&str>,
) -> anyhow::Result<Value> {
    let folder = weft_registry::source::Folder {
        dir: dir.clone(),
        mesh_file,
    };
    let config = folder.load();
    for e in &config.errors {
        eprintln!("{e}");
    }
    let mut inputs = Inputs::new(&config.resources, config.mesh.resolve());
    inputs.mesh_identity = true;
    let proxy = match (workload_ref, gateway) {
        (Some(w), None) => {
            let (ns, name) = w.split_once('/').context("--workload is NAMESPACE/NAME")?;
            let (ip, labels) = workload(&config.resources, ns, name).with_context(|| {
                format!("no WorkloadEntry or Pod {ns}/{name} in {}", dir.display())
            })?;
            let ip = if ip.is_empty() {
                "10.0.0.1".to_string()
            } else {
                ip
            };
            Proxy::sidecar(name, ns, &ip, labels)
        }
        (None, Some(selector)) => {
            let mut labels = Labels::new();
            for kv in selector.split(',') {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--gateway takes LABEL=VALUE[,...], not {kv:?}"))?;
                labels.insert(k.to_string(), v.to_string());
            }
            let mut p = Proxy::sidecar("istio-ingressgateway", "istio-system", "10.0.0.2", labels);
            p.kind = ProxyKind::Router;
            p.id =
                "router~10.0.0.2~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
                    .to_string();
            p
        }
        _ => anyhow::bail!("with -f, name one --workload NAMESPACE/NAME or one --gateway LABELS"),
    };
    let generated = generate(&inputs, &proxy);
    for p in &generated.problems {
        eprintln!("weft: {p}");
    }
    let mut out = super::monitor::dump(&generated.snapshot("offline"), &generated.problems);
    if let Some(o) = out.as_object_mut() {
        let secrets: serde_json::Map<String, Value> = generated
            .secrets
            .iter()
            .map(|(name, s)| {
                let bytes = prost::Message::encode_to_vec(s);
                let v = weft_proxy::config::to_json(
                    "envoy.extensions.transport_sockets.tls.v3.Secret",
                    &bytes,
                )
                .unwrap_or_else(|e| serde_json::json!({ "error": e }));
                (name.clone(), v)
            })
            .collect();
        o.insert("secrets".into(), Value::Object(secrets));
    }
    Ok(out)
}
