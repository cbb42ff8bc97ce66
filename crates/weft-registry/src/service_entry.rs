//! ServiceEntries: one service per host. Endpoints are the entry's inline `endpoints`, else the
//! WorkloadEntries and Pods of its namespace that its `workloadSelector` picks, else — with DNS
//! resolution — the host itself.

use crate::Protocol;
use crate::{
    Endpoint, Index, Origin, Registry, Resolution, Service, ServicePort, endpoint, namespace,
    pod_ip, pod_origin, port_number, selects, with_pod,
};
use weft_api::resource::IstioObject;
use weft_api::types::service_entry::{
    Location, Resolution as SeResolution, ServiceEntry, WorkloadEntry,
};

pub(crate) fn services(se: &IstioObject<ServiceEntry>, index: &Index<'_>, out: &mut Registry) {
    let ns = namespace(&se.metadata);
    let origin = Origin {
        kind: "ServiceEntry",
        namespace: ns.clone(),
        name: se.metadata.name.clone().unwrap_or_default(),
    };
    let spec = &se.spec;
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let Some(number) = port_number(p.number) else {
            out.problems.push(format!(
                "{origin}: spec.ports[{i}].number: not a port number"
            ));
            continue;
        };
        let name = p.name.clone().unwrap_or_default();
        let target = port_number(p.target_port);
        ports.push((
            ServicePort {
                protocol: Protocol::for_istio_port(p.protocol.as_deref(), &name),
                name,
                number,
            },
            target,
        ));
    }
    let traffic_distribution =
        crate::traffic_distribution(None, &se.metadata.annotations, &origin, &mut out.problems);
    let resolution = match spec.resolution() {
        SeResolution::None => Resolution::Passthrough,
        SeResolution::Static => Resolution::ClientSideLb,
        SeResolution::Dns | SeResolution::DynamicDns => Resolution::DnsLb,
        SeResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
    };
    // Workloads, with the object each came from.
    let mut workloads: Vec<(&WorkloadEntry, Origin)> = Vec::new();
    let mut pods = Vec::new();
    if let Some(inline) = &spec.endpoints {
        workloads.extend(inline.iter().map(|w| (w, origin.clone())));
    } else if let Some(selector) = &spec.workload_selector {
        for (meta, w) in &index.workload_entries {
            if namespace(meta) == ns && selects(&selector.labels, &w.labels) {
                let o = Origin {
                    kind: "WorkloadEntry",
                    namespace: ns.clone(),
                    name: meta.name.clone().unwrap_or_default(),
                };
                workloads.push((w, o));
            }
        }
        pods.extend(index.pods.iter().copied().filter(|p| {
            namespace(&p.metadata) == ns && selects(&selector.labels, &p.metadata.labels)
        }));
    }
    for host in &spec.hosts {
        let mut endpoints = Vec::new();
        for (w, o) in &workloads {
            let Some(address) = w.address.clone().filter(|a| !a.is_empty()) else {
                // No address: the host itself under DNS resolution, else nothing to reach.
                if resolution == Resolution::DnsLb || resolution == Resolution::DnsRoundRobin {
                    for (p, target) in &ports {
                        endpoints.push(workload_endpoint(w, host.clone(), p, *target, o));
                    }
                }
                continue;
            };
            for (p, target) in &ports {
                endpoints.push(workload_endpoint(w, address.clone(), p, *target, o));
            }
        }
        for pod in &pods {
            let Some(ip) = pod_ip(pod) else {
                continue;
            };
            let o = pod_origin(pod);
            for (p, target) in &ports {
                let port = target.unwrap_or(p.number);
                endpoints.push(with_pod(
                    endpoint(ip.clone(), p.number, port, &o),
                    Some(pod),
                ));
            }
        }
        if workloads.is_empty()
            && pods.is_empty()
            && matches!(resolution, Resolution::DnsLb | Resolution::DnsRoundRobin)
        {
            for (p, target) in &ports {
                let port = target.unwrap_or(p.number);
                endpoints.push(endpoint(host.clone(), p.number, port, &origin));
            }
        }
        out.services.push(Service {
            hostname: host.clone(),
            namespace: ns.clone(),
            addresses: spec.addresses.clone(),
            ports: ports.iter().map(|(p, _)| p.clone()).collect(),
            resolution,
            mesh_external: spec.location.unwrap_or(Location::MeshExternal)
                == Location::MeshExternal,
            export_to: if spec.export_to.is_empty() {
                vec!["*".into()]
            } else {
                spec.export_to.clone()
            },
            endpoints,
            origin: origin.clone(),
            traffic_distribution,
            service_accounts: spec.subject_alt_names.clone(),
        });
    }
}

/// A WorkloadEntry serving one ServiceEntry port: on the port its `ports` map gives for the
/// port's name, else the port's `targetPort`, else the port's number.
pub(crate) fn workload_endpoint(
    w: &WorkloadEntry,
    address: String,
    p: &ServicePort,
    target: Option<u16>,
    origin: &Origin,
) -> Endpoint {
    let port = w
        .ports
        .get(&p.name)
        .and_then(|n| port_number(Some(*n)))
        .or(target)
        .unwrap_or(p.number);
    let mut locality = w.locality.clone().filter(|l| !l.is_empty());
    if locality.is_none() {
        locality = crate::locality(&w.labels);
    }
    Endpoint {
        address,
        service_port: p.number,
        port,
        labels: w.labels.clone(),
        locality,
        weight: w
            .weight
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(1),
        service_account: w.service_account.clone(),
        network: w.network.clone(),
        ready: true,
        origin: origin.clone(),
        application: None,
    }
}
