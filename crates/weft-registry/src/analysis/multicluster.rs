//! `services.MultiClusterServiceAnalyzer`: one Service (namespace and name) defined unlike in two
//! clusters (IST0170). Istio merges a Service's endpoints across clusters, so a Service that is
//! headless in one and not in another, of another type, or with other ports behaves differently
//! depending on which cluster answers.

use super::{Context, Findings};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use weft_api::load::Loaded;
use weft_api::path::FieldPath;

pub fn inconsistent_services(ctx: &Context, out: &mut Findings) {
    // (namespace, name) → cluster → the Service there.
    let mut services: BTreeMap<(&str, &str), BTreeMap<&str, &Loaded>> = BTreeMap::new();
    for o in &ctx.objects {
        if o.resource.kind() != "Service" || o.resource.api_version() != "v1" {
            continue;
        }
        let Some(cluster) = ctx.cluster_by_file.get(&o.origin.file) else {
            continue;
        };
        services
            .entry((Context::namespace(o), o.resource.name()))
            .or_default()
            .insert(cluster, o);
    }
    for ((namespace, name), by_cluster) in services {
        if by_cluster.len() < 2 {
            continue;
        }
        let specs: Vec<(&str, Value, &Loaded)> = by_cluster
            .iter()
            .map(|(c, o)| {
                let spec = Context::json(o).get("spec").cloned().unwrap_or(Value::Null);
                (*c, spec, *o)
            })
            .collect();
        let Some((first_cluster, first, first_object)) = specs.first() else {
            continue;
        };
        let mut clusters = BTreeSet::new();
        let mut reasons = BTreeSet::new();
        let headless = |s: &Value| s.get("clusterIP").and_then(Value::as_str) == Some("None");
        for (cluster, spec, _) in &specs {
            if headless(first) != headless(spec) {
                clusters.extend(specs.iter().map(|(c, _, _)| *c));
                reasons.insert("service has mixed mode like headless and clusterIP");
            }
            if first.get("type") != spec.get("type") {
                clusters.insert(*cluster);
                reasons.insert("service type is inconsistent");
            }
            if !same_ports(first.get("ports"), spec.get("ports")) {
                clusters.insert(*cluster);
                reasons.insert("service ports are inconsistent");
            }
        }
        if clusters.is_empty() {
            continue;
        }
        clusters.insert(first_cluster);
        let quoted: Vec<String> = clusters.iter().map(|c| format!("{c:?}")).collect();
        let reasons: Vec<&str> = reasons.into_iter().collect();
        out.add(
            first_object,
            &FieldPath::root(),
            "IST0170",
            &[
                name.to_string(),
                format!("{namespace:?}"),
                format!("[{}]", quoted.join(" ")),
                reasons.join("; "),
            ],
        );
    }
}

/// The same ports, in any order by name, each equal field for field.
fn same_ports(a: Option<&Value>, b: Option<&Value>) -> bool {
    let sorted = |v: Option<&Value>| {
        let mut ports: Vec<Value> = v.and_then(Value::as_array).cloned().unwrap_or_default();
        ports.sort_by_key(|p| {
            p.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        ports
    };
    sorted(a) == sorted(b)
}
