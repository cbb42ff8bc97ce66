//! ServiceEntry, WorkloadEntry and WorkloadGroup rules.

use super::rules;
use super::{Findings, export_to, label_selector};
use crate::path::FieldPath;
use crate::types::service_entry::*;

pub(super) fn validate_service_entry(f: &mut Findings, spec: &FieldPath, se: &ServiceEntry) {
    if let Some(ws) = &se.workload_selector {
        if ws.labels.is_empty() {
            f.warn(&spec.key("workloadSelector"), "service entry: workload selector specified without labels, will be applied to all services in namespace");
        } else {
            label_selector(f, &spec.key("workloadSelector"), Some(ws));
        }
        if se.endpoints.is_some() {
            f.err(
                &spec.key("workloadSelector"),
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
            );
        }
    }
    if se.hosts.is_empty() {
        f.err(
            &spec.key("hosts"),
            "service entry must have at least one host",
        );
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let p = spec.key("hosts").index(i);
        if h == "*" {
            f.err(&p, format!("invalid host {h}"));
        } else {
            f.check(&p, rules::validate_wildcard_domain(h));
            if let Err(e) = rules::validate_partial_wildcard(h) {
                f.warn(&p, e);
            }
        }
    }
    let mut cidr = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        f.check(
            &spec.key("addresses").index(i),
            rules::validate_ip_subnet(a),
        );
    }
    let resolution = se.resolution();
    if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
        f.err(
            &spec.key("addresses"),
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
    let mut names: Vec<&str> = Vec::new();
    let mut numbers: Vec<i64> = Vec::new();
    for (i, port) in se.ports.iter().enumerate() {
        let pp = spec.key("ports").index(i);
        let name = port.name.as_deref().unwrap_or("");
        if names.contains(&name) {
            f.err(
                &pp.key("name"),
                format!("service entry port name {name:?} already defined"),
            );
        }
        names.push(name);
        let number = port.number.unwrap_or(0);
        if numbers.contains(&number) {
            f.err(
                &pp.key("number"),
                format!("service entry port {number} already defined"),
            );
        }
        numbers.push(number);
        if let Some(t) = port.target_port.filter(|t| *t != 0) {
            f.check(&pp.key("targetPort"), rules::validate_port(t));
            if resolution == Resolution::None {
                f.warn(
                    &pp.key("targetPort"),
                    "targetPort has no effect when resolution mode is NONE",
                );
            }
        }
        f.check(&pp.key("name"), rules::validate_port_name(name));
        f.check(
            &pp.key("protocol"),
            rules::validate_protocol(port.protocol.as_deref().unwrap_or("")),
        );
        f.check(&pp.key("number"), rules::validate_port(number));
    }
    let endpoints = se.endpoints.as_deref().unwrap_or(&[]);
    let ep_path = spec.key("endpoints");
    match resolution {
        Resolution::None => {
            if !endpoints.is_empty() {
                f.err(
                    &ep_path,
                    "no endpoints should be provided for resolution type none",
                );
            }
            if se.workload_selector.is_some() {
                f.warn(
                    &spec.key("workloadSelector"),
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static => {
            if endpoints.is_empty() && se.workload_selector.is_none() {
                f.err(
                    &ep_path,
                    "endpoints or workloadSelector must be provided for resolution type STATIC",
                );
            }
            for (i, ep) in endpoints.iter().enumerate() {
                validate_workload_entry(f, &ep_path.index(i), ep, Some(&names), false);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => {
            let mode = match resolution {
                Resolution::Dns => "DNS",
                Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
                _ => "DYNAMIC_DNS",
            };
            if endpoints.is_empty() {
                for (i, h) in se.hosts.iter().enumerate() {
                    if rules::validate_fqdn(h).is_err() {
                        f.err(&spec.key("hosts").index(i), format!("hosts must be FQDN if no endpoints are provided for resolution mode {mode}"));
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && endpoints.len() > 1 {
                f.err(
                    &ep_path,
                    format!("there must only be 0 or 1 endpoint for resolution mode {mode}"),
                );
            }
            for (i, ep) in endpoints.iter().enumerate() {
                let p = ep_path.index(i);
                let addr = ep.address.as_deref().unwrap_or("");
                if !rules::is_ip(addr) && rules::validate_fqdn(addr).is_err() {
                    f.err(
                        &p.key("address"),
                        format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                    );
                }
                f.labels(&p.key("labels"), &ep.labels);
                endpoint_ports(f, &p, ep, Some(&names));
            }
            if se.workload_selector.is_some() {
                f.warn(
                    &spec.key("workloadSelector"),
                    format!("workloadSelector should not be set when resolution mode is {mode}"),
                );
            }
        }
    }
    if resolution != Resolution::None && se.hosts.len() > 1 {
        let l4 = se.ports.iter().any(|p| {
            let proto = p.protocol.as_deref().unwrap_or("");
            !rules::protocol_is_http(proto) && !rules::protocol_is_tls(proto)
        });
        if l4 {
            f.err(
                &spec.key("hosts"),
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
    }
    export_to(f, &spec.key("exportTo"), &se.export_to, true);
}

fn endpoint_ports(
    f: &mut Findings,
    p: &FieldPath,
    we: &WorkloadEntry,
    service_ports: Option<&[&str]>,
) {
    for (name, port) in &we.ports {
        let pp = p.key("ports").key(name.clone());
        if let Some(sp) = service_ports
            && !sp.contains(&name.as_str())
        {
            f.err(
                &pp,
                format!("endpoint port {port} is not defined by the service entry"),
            );
        }
        f.check(&pp, rules::validate_port_name(name));
        f.check(&pp, rules::validate_port(*port));
    }
}

/// A WorkloadEntry, standalone or as a ServiceEntry endpoint (where the address must be an IP
/// or unix socket for STATIC resolution).
pub(super) fn validate_workload_entry(
    f: &mut Findings,
    p: &FieldPath,
    we: &WorkloadEntry,
    service_ports: Option<&[&str]>,
    allow_fqdn: bool,
) {
    let addr = we.address.as_deref().unwrap_or("");
    if addr.is_empty() {
        match &we.network {
            None => {
                f.err(&p.key("address"), "address is required");
                return;
            }
            Some(n) => f.warn(
                &p.key("address"),
                format!("address is unset with network {n:?}"),
            ),
        }
    }
    if let Some(unix) = addr.strip_prefix("unix://") {
        f.check(&p.key("address"), rules::validate_unix_address(unix));
        if !we.ports.is_empty() {
            f.err(
                &p.key("ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
    } else if !addr.is_empty() && !rules::is_ip(addr) {
        if !allow_fqdn {
            f.err(
                &p.key("address"),
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        } else if rules::validate_fqdn(addr).is_err() {
            f.err(
                &p.key("address"),
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    endpoint_ports(f, p, we, service_ports);
    f.labels(&p.key("labels"), &we.labels);
    if let Some(w) = we.weight
        && w < 0
    {
        f.err(&p.key("weight"), format!("weight {w} must not be negative"));
    }
}

pub(super) fn validate_workload_group(f: &mut Findings, spec: &FieldPath, wg: &WorkloadGroup) {
    if wg.template.is_none() {
        f.err(&spec.key("template"), "template is required");
    }
    if let Some(m) = &wg.metadata {
        f.labels(&spec.key("metadata").key("labels"), &m.labels);
    }
    let Some(probe) = &wg.probe else { return };
    let p = spec.key("probe");
    for (key, v) in [
        ("periodSeconds", probe.period_seconds),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if v.is_some_and(|v| v < 0) {
            f.err(&p.key(key), format!("{key} must be non-negative"));
        }
    }
    let methods = usize::from(probe.http_get.is_some())
        + usize::from(probe.tcp_socket.is_some())
        + usize::from(probe.exec.is_some())
        + usize::from(probe.grpc.is_some());
    if methods != 1 {
        f.err(
            &p,
            "exactly one of httpGet, tcpSocket, exec or grpc must be set",
        );
    }
    if let Some(h) = &probe.http_get {
        f.check(
            &p.key("httpGet").key("port"),
            rules::validate_port(h.port.unwrap_or(0)),
        );
        if let Some(s) = &h.scheme
            && s != "HTTP"
            && s != "HTTPS"
        {
            f.err(
                &p.key("httpGet").key("scheme"),
                "httpGet.scheme must be one of \"HTTPS\", \"HTTP\"",
            );
        }
        for (i, hd) in h.http_headers.iter().enumerate() {
            f.check(
                &p.key("httpGet").key("httpHeaders").index(i).key("name"),
                rules::validate_header_name(hd.name.as_deref().unwrap_or("")),
            );
        }
    }
    if let Some(t) = &probe.tcp_socket {
        f.check(
            &p.key("tcpSocket").key("port"),
            rules::validate_port(t.port.unwrap_or(0)),
        );
    }
    if let Some(e) = &probe.exec
        && e.command.is_empty()
    {
        f.err(&p.key("exec").key("command"), "exec.command is required");
    }
}
