//! Kubernetes Services. Endpoints come from the Service's EndpointSlices
//! (`kubernetes.io/service-name`), else from its Endpoints object, else — with no Kubernetes to
//! write either, as under `weft up` — from the Pods its selector picks.

use crate::{
    Endpoint, Index, Origin, Registry, Resolution, Service, ServicePort, endpoint, export_to,
    namespace, pod_ip, pod_origin, port_number, selects, with_pod,
};
use crate::{Options, Protocol, host};
use weft_api::types::common::Labels;
use weft_api::types::kube::{IntOrString, Pod, Service as KubeService, ServicePort as KubePort};

pub(crate) fn service(s: &KubeService, index: &Index<'_>, options: &Options, out: &mut Registry) {
    let Some(name) = s.metadata.name.clone() else {
        return;
    };
    let ns = namespace(&s.metadata);
    let origin = Origin {
        kind: "Service",
        namespace: ns.clone(),
        name: name.clone(),
    };
    let Some(spec) = &s.spec else {
        out.problems.push(format!("{origin}: no spec"));
        return;
    };
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let Some(number) = port_number(p.port) else {
            out.problems
                .push(format!("{origin}: spec.ports[{i}].port: not a port number"));
            continue;
        };
        let port_name = p.name.clone().unwrap_or_default();
        ports.push((
            ServicePort {
                protocol: Protocol::for_kube_port(
                    &port_name,
                    p.app_protocol.as_deref(),
                    p.protocol.as_deref(),
                ),
                name: port_name,
                number,
            },
            p,
        ));
    }
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let headless = cluster_ip.eq_ignore_ascii_case("none");
    let mut addresses: Vec<String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ if !cluster_ip.is_empty() => vec![cluster_ip.to_string()],
        _ => Vec::new(),
    };
    addresses.retain(|a| !a.eq_ignore_ascii_case("none"));
    let external_name = spec
        .external_name
        .clone()
        .filter(|_| spec.type_.as_deref() == Some("ExternalName"));
    let resolution = if external_name.is_some() {
        Resolution::DnsLb
    } else if headless {
        Resolution::Passthrough
    } else {
        Resolution::ClientSideLb
    };
    let mut endpoints = Vec::new();
    if let Some(target) = &external_name {
        // An ExternalName Service is a DNS alias: its one endpoint is the name it points at.
        for (p, _) in &ports {
            endpoints.push(endpoint(target.clone(), p.number, p.number, &origin));
        }
    } else if !from_slices(&name, &ns, &ports, index, &mut endpoints)
        && !from_endpoints(&name, &ns, &ports, index, &origin, &mut endpoints)
        && let Some(selector) = &spec.selector
    {
        from_pods(selector, &ns, &ports, index, &mut endpoints);
        from_workload_entries(selector, &ns, &ports, index, &mut endpoints);
    }
    let traffic_distribution = crate::traffic_distribution(
        spec.traffic_distribution.as_deref(),
        &s.metadata.annotations,
        &origin,
        &mut out.problems,
    );
    out.services.push(Service {
        hostname: host::kube_service(&name, &ns, &options.domain_suffix),
        namespace: ns,
        addresses,
        ports: ports.into_iter().map(|(p, _)| p).collect(),
        resolution,
        mesh_external: false,
        export_to: export_to(&s.metadata.annotations),
        endpoints,
        origin,
        traffic_distribution,
        service_accounts: Vec::new(),
    });
}

fn pod_named<'a>(index: &Index<'a>, ns: &str, name: Option<&str>) -> Option<&'a Pod> {
    let name = name?;
    index
        .pods
        .iter()
        .copied()
        .find(|p| p.metadata.name.as_deref() == Some(name) && namespace(&p.metadata) == ns)
}

/// The Service port an endpoint port serves: same name (both unnamed when the Service has one
/// port).
fn served<'a>(
    ports: &'a [(ServicePort, &KubePort)],
    name: Option<&str>,
) -> Option<&'a ServicePort> {
    let name = name.unwrap_or_default();
    ports.iter().map(|(p, _)| p).find(|p| p.name == name)
}

fn from_slices(
    service: &str,
    ns: &str,
    ports: &[(ServicePort, &KubePort)],
    index: &Index<'_>,
    out: &mut Vec<Endpoint>,
) -> bool {
    let mut found = false;
    for slice in index.slices.iter().filter(|s| {
        namespace(&s.metadata) == ns
            && s.metadata
                .labels
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                == Some(service)
    }) {
        found = true;
        let slice_origin = Origin {
            kind: "EndpointSlice",
            namespace: ns.to_string(),
            name: slice.metadata.name.clone().unwrap_or_default(),
        };
        for e in &slice.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let pod = e
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| pod_named(index, ns, t.name.as_deref()));
            for sp in &slice.ports {
                let (Some(service_port), Some(port)) =
                    (served(ports, sp.name.as_deref()), port_number(sp.port))
                else {
                    continue;
                };
                for address in &e.addresses {
                    let mut ep = with_pod(
                        endpoint(address.clone(), service_port.number, port, &slice_origin),
                        pod,
                    );
                    ep.ready = ready;
                    out.push(ep);
                }
            }
        }
    }
    found
}

fn from_endpoints(
    service: &str,
    ns: &str,
    ports: &[(ServicePort, &KubePort)],
    index: &Index<'_>,
    origin: &Origin,
    out: &mut Vec<Endpoint>,
) -> bool {
    let Some(object) = index
        .endpoints
        .iter()
        .find(|e| namespace(&e.metadata) == ns && e.metadata.name.as_deref() == Some(service))
    else {
        return false;
    };
    let origin = Origin {
        kind: "Endpoints",
        ..origin.clone()
    };
    for subset in &object.subsets {
        let addresses = subset
            .addresses
            .iter()
            .map(|a| (a, true))
            .chain(subset.not_ready_addresses.iter().map(|a| (a, false)));
        for (a, ready) in addresses {
            let Some(ip) = &a.ip else { continue };
            let pod = a
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| pod_named(index, ns, t.name.as_deref()));
            for p in &subset.ports {
                let (Some(service_port), Some(port)) =
                    (served(ports, p.name.as_deref()), port_number(p.port))
                else {
                    continue;
                };
                let mut ep = with_pod(
                    endpoint(ip.clone(), service_port.number, port, &origin),
                    pod,
                );
                ep.ready = ready;
                out.push(ep);
            }
        }
    }
    true
}

/// Without EndpointSlices or Endpoints: the selected Pods that have an IP, on each port's
/// `targetPort` (a number, or a container port's name).
fn from_pods(
    selector: &Labels,
    ns: &str,
    ports: &[(ServicePort, &KubePort)],
    index: &Index<'_>,
    out: &mut Vec<Endpoint>,
) {
    for pod in index
        .pods
        .iter()
        .filter(|p| namespace(&p.metadata) == ns && selects(selector, &p.metadata.labels))
    {
        let Some(ip) = pod_ip(pod) else {
            continue;
        };
        let origin = pod_origin(pod);
        for (p, kube_port) in ports {
            let target = match &kube_port.target_port {
                None => Some(p.number),
                Some(IntOrString::Int(n)) => port_number(Some(*n)),
                Some(IntOrString::String(name)) => named_container_port(pod, name),
            };
            if let Some(target) = target {
                out.push(with_pod(
                    endpoint(ip.clone(), p.number, target, &origin),
                    Some(pod),
                ));
            }
        }
    }
}

/// WorkloadEntries a Service's selector picks, as Istio adds them (VMs behind a Kubernetes
/// Service): each port on the entry's `ports` entry for the port name, else on `targetPort`.
fn from_workload_entries(
    selector: &Labels,
    ns: &str,
    ports: &[(ServicePort, &KubePort)],
    index: &Index<'_>,
    out: &mut Vec<Endpoint>,
) {
    for (meta, w) in &index.workload_entries {
        if namespace(meta) != ns || !selects(selector, &w.labels) {
            continue;
        }
        let Some(address) = w.address.clone().filter(|a| !a.is_empty()) else {
            continue;
        };
        let origin = Origin {
            kind: "WorkloadEntry",
            namespace: ns.to_string(),
            name: meta.name.clone().unwrap_or_default(),
        };
        for (p, kube_port) in ports {
            let target = match &kube_port.target_port {
                Some(IntOrString::Int(n)) => port_number(Some(*n)),
                _ => None,
            };
            out.push(crate::service_entry::workload_endpoint(
                w,
                address.clone(),
                p,
                target,
                &origin,
            ));
        }
    }
}

fn named_container_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| port_number(p.container_port))
}
