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
        let clusters: Vec<&str> = clusters.into_iter().collect();
        let reasons: Vec<&str> = reasons.into_iter().collect();
        out.add(
            first_object,
            &FieldPath::root(),
            "IST0170",
            &[
                name.to_string(),
                namespace.to_string(),
                super::format::go_list(&clusters),
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

#[cfg(test)]
mod tests {
    use super::super::{Context, analyze, analyzer};
    use weft_api::load::LoadResult;
    use weft_api::types::mesh::MeshConfig;

    const WEST: &str = "apiVersion: v1\nkind: Service\nmetadata: { name: shop, namespace: web }\nspec:\n  ports: [ { name: http, port: 80, protocol: TCP } ]\n---\napiVersion: v1\nkind: Service\nmetadata: { name: same, namespace: web }\nspec:\n  ports: [ { name: http, port: 80, protocol: TCP } ]\n";
    const EAST: &str = "apiVersion: v1\nkind: Service\nmetadata: { name: shop, namespace: web }\nspec:\n  clusterIP: None\n  ports: [ { name: http, port: 80, protocol: TCP }, { name: grpc, port: 90, protocol: TCP } ]\n---\napiVersion: v1\nkind: Service\nmetadata: { name: same, namespace: web }\nspec:\n  ports: [ { name: http, port: 80, protocol: TCP } ]\n";

    #[test]
    fn a_service_defined_unlike_in_two_clusters_is_reported_once_with_every_difference() {
        let mut loaded = LoadResult::default();
        loaded.load_str("west.yaml", WEST);
        loaded.load_str("east.yaml", EAST);
        let mut ctx = Context::new(loaded.objects, "", MeshConfig::default());
        ctx.cluster_by_file = [("west.yaml", "west"), ("east.yaml", "east")]
            .into_iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect();
        let Some(a) = analyzer("services.MultiClusterServiceAnalyzer") else {
            panic!("the analyzer is registered");
        };
        let found: Vec<String> = analyze(&ctx, &[a])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "Warning [IST0170] (Service web/shop east.yaml:1) The service shop in namespace \"web\" is inconsistent across clusters [\"east\" \"west\"], which can lead to undefined behaviors. The inconsistent behaviors are: service has mixed mode like headless and clusterIP; service ports are inconsistent."
            ]
        );
        // Without cluster origins, nothing is multi-cluster.
        ctx.cluster_by_file.clear();
        assert!(analyze(&ctx, &[a]).is_empty());
    }
}
