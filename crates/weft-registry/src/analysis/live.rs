//! The Pods of a mesh that `weft up` runs. Istio's analyzers read Pods, which a cluster has and
//! a folder of config does not: `weft up` runs one sidecar per workload object and one gateway
//! per Gateway selector, so each stands here as a Pod with the labels it serves with and its
//! proxy, and each gateway (in istio-system, where `weft up` runs it) with a Service on every
//! port its Gateways name, as `weft up` listens on each of them. They come from no file, so findings about them are not shown; findings about the
//! objects that select them are.

use super::Context;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use weft_api::load::{LoadResult, Loaded};

pub(super) fn pods(objects: &[Loaded]) -> Vec<Loaded> {
    let mut pods = Vec::new();
    // By selector: `weft up` runs one gateway per distinct selector, in istio-system whatever
    // the namespace of the Gateways that select it (as istio-ingressgateway runs there).
    let mut gateways: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for o in objects {
        let ns = Context::namespace(o);
        let name = o.resource.name();
        let doc = Context::json(o);
        let labels = match o.resource.kind() {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                doc.pointer("/spec/template/metadata/labels").cloned()
            }
            "CronJob" => doc
                .pointer("/spec/jobTemplate/spec/template/metadata/labels")
                .cloned(),
            "WorkloadEntry" => doc.pointer("/spec/labels").cloned(),
            "Gateway" if o.resource.api_version().starts_with("networking.istio.io/") => {
                if let Some(selector) = doc.pointer("/spec/selector") {
                    let ports = doc
                        .pointer("/spec/servers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.pointer("/port/number").and_then(Value::as_i64));
                    gateways
                        .entry(selector.to_string())
                        .or_default()
                        .extend(ports);
                }
                continue;
            }
            _ => continue,
        };
        pods.push(pod(
            ns,
            &format!("{name}-weft"),
            labels.unwrap_or(json!({})),
        ));
    }
    let ns = "istio-system";
    for (i, (selector, ports)) in gateways.into_iter().enumerate() {
        let labels: Value = serde_json::from_str(&selector).unwrap_or(json!({}));
        let name = format!("weft-gateway-{i}");
        let ports: Vec<Value> = ports
            .into_iter()
            .map(|p| json!({"name": format!("port-{p}"), "port": p, "targetPort": p, "protocol": "TCP"}))
            .collect();
        pods.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": labels, "ports": ports},
        }));
        pods.push(pod(ns, &name, labels));
    }
    let mut loaded = LoadResult::default();
    for p in pods {
        loaded.load_str("", &p.to_string());
    }
    for o in &mut loaded.objects {
        o.origin.file.clear();
    }
    loaded.objects
}

fn pod(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"sidecar.istio.io/status": "{}"},
        },
        "spec": {"containers": [{"name": "istio-proxy", "image": "weft"}]},
    })
}
