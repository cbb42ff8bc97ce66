//! `meshnetworks.MeshNetworksAnalyzer`: a network endpoint of the mesh networks whose
//! `fromRegistry` names no service registry istiod knows (IST0126).
//!
//! Known registries are istiod's own providers (`Mock`, `Kubernetes`, `External`, compared with
//! case) and the cluster names remote-cluster secrets (`istio/multiCluster: "true"`) carry as
//! keys of their `data`. Keys under `stringData` do not count: Istio reads the Secret as written,
//! and only the API server would fold `stringData` into `data`.
//!
//! The mesh networks are no object of the input: the messages are about Istio's pseudo-resource
//! `MeshNetworks istio-system/meshnetworks`.

use super::{Context, Findings};
use serde_json::Value;

/// istiod's service registries (`provider.Mock`, `provider.Kubernetes`, `provider.External`).
const BUILTIN_REGISTRIES: [&str; 3] = ["Mock", "Kubernetes", "External"];

const MULTICLUSTER_SECRET_LABEL: &str = "istio/multiCluster";

pub fn mesh_networks(ctx: &Context, out: &mut Findings) {
    let Some(networks) = ctx
        .mesh_networks
        .as_ref()
        .and_then(|m| m.get("networks"))
        .and_then(Value::as_object)
    else {
        return;
    };
    let mut known: Vec<String> = BUILTIN_REGISTRIES.iter().map(ToString::to_string).collect();
    for o in &ctx.objects {
        let remote_secret = o.resource.kind() == "Secret"
            && o.resource.api_version() == "v1"
            && o.resource
                .metadata()
                .labels
                .get(MULTICLUSTER_SECRET_LABEL)
                .is_some_and(|v| v == "true");
        if !remote_secret {
            continue;
        }
        if let Some(data) = Context::json(o).get("data").and_then(Value::as_object) {
            known.extend(data.keys().cloned());
        }
    }
    for (network, spec) in networks {
        let endpoints = spec
            .get("endpoints")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for endpoint in endpoints {
            // An endpoint given by CIDR names no registry.
            let Some(registry) = endpoint.get("fromRegistry").and_then(Value::as_str) else {
                continue;
            };
            if !known.iter().any(|k| k == registry) {
                out.add_pseudo(
                    "MeshNetworks",
                    "istio-system",
                    "meshnetworks",
                    "IST0126",
                    &[registry.to_string(), network.clone()],
                );
            }
        }
    }
}
