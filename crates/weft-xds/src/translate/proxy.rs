//! Who is asking: a proxy as its xDS `Node` describes it, read the way istiod reads it. The id
//! is `TYPE~IP~NAME.NAMESPACE~DOMAIN` (`sidecar~10.1.0.7~web-v1.default~default.svc.cluster.local`)
//! and the metadata carries `LABELS`, `NAMESPACE`, `INTERCEPTION_MODE` and `HTTP_PROXY_PORT` under
//! Istio's keys; the gateway's listening address and port map, which Kubernetes would take from
//! the gateway's Service, come as `WEFT_GATEWAY_ADDRESS` and `WEFT_GATEWAY_PORTS`.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use std::collections::BTreeMap;
use weft_api::types::common::Labels;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// A workload's sidecar.
    Sidecar,
    /// A gateway (Istio's `router`).
    Router,
}

/// How traffic reaches a sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interception {
    /// iptables sends every connection to 15001 (outbound) or 15006 (inbound).
    Redirect,
    /// Nothing is captured: the application sends to the proxy itself (its HTTP proxy port), and
    /// inbound traffic reaches the application directly.
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub id: String,
    pub kind: ProxyKind,
    pub ip: String,
    /// The workload's (Pod's or WorkloadEntry's) name.
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub interception: Interception,
    /// The listener applications use as `HTTP_PROXY`, on 127.0.0.1.
    pub http_proxy_port: Option<u16>,
    /// Where a gateway listens (`0.0.0.0` unless told).
    pub gateway_address: String,
    /// Gateway server port → the port the gateway listens on (Istio's gateway Service
    /// `port` → `targetPort`); a port not listed listens on its own number.
    pub gateway_ports: BTreeMap<u16, u16>,
    /// `region/zone/subzone`: from the topology labels, else the node's `locality`.
    pub locality: Option<String>,
    /// The proxy runs istio-proxy's network filters (TCP metadata exchange and stats): a Weft
    /// proxy (`user_agent_name: weft`) or Istio's own (`ISTIO_VERSION` in its metadata).
    pub istio_extensions: bool,
}

impl Proxy {
    /// A sidecar in `namespace` with these labels, the rest defaulted.
    pub fn sidecar(name: &str, namespace: &str, ip: &str, labels: Labels) -> Proxy {
        Proxy {
            id: format!("sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local"),
            kind: ProxyKind::Sidecar,
            ip: ip.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            labels,
            interception: Interception::Redirect,
            http_proxy_port: None,
            gateway_address: "0.0.0.0".into(),
            gateway_ports: BTreeMap::new(),
            locality: None,
            istio_extensions: false,
        }
    }

    /// Reads a proxy from the node it sends on its first xDS request.
    pub fn from_node(node: &Node) -> Result<Proxy, String> {
        let parts: Vec<&str> = node.id.split('~').collect();
        let [kind, ip, name_ns, _domain] = parts[..] else {
            return Err(format!(
                "node id {:?} is not TYPE~IP~NAME.NAMESPACE~DOMAIN",
                node.id
            ));
        };
        let kind = match kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => {
                return Err(format!(
                    "node id {:?}: type {other:?} is neither sidecar nor router",
                    node.id
                ));
            }
        };
        let meta = node.metadata.as_ref();
        let (name, id_namespace) = name_ns.split_once('.').unwrap_or((name_ns, ""));
        let namespace = string(meta, "NAMESPACE")
            .or_else(|| (!id_namespace.is_empty()).then(|| id_namespace.to_string()))
            .unwrap_or_else(|| "default".into());
        let labels = meta
            .and_then(|m| m.fields.get("LABELS"))
            .and_then(|v| match &v.kind {
                Some(Kind::StructValue(s)) => Some(s),
                _ => None,
            })
            .map(|s| {
                s.fields
                    .iter()
                    .filter_map(|(k, v)| match &v.kind {
                        Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let interception = match string(meta, "INTERCEPTION_MODE").as_deref() {
            None | Some("REDIRECT") | Some("TPROXY") => Interception::Redirect,
            Some("NONE") => Interception::None,
            Some(other) => {
                return Err(format!(
                    "node {}: INTERCEPTION_MODE {other:?} is not REDIRECT, TPROXY or NONE",
                    node.id
                ));
            }
        };
        let http_proxy_port =
            match string(meta, "HTTP_PROXY_PORT") {
                None => None,
                Some(p) => Some(p.parse::<u16>().map_err(|_| {
                    format!("node {}: HTTP_PROXY_PORT {p:?} is not a port", node.id)
                })?),
            };
        let mut gateway_ports = BTreeMap::new();
        if let Some(map) = string(meta, "WEFT_GATEWAY_PORTS") {
            for pair in map.split(',').filter(|p| !p.trim().is_empty()) {
                let parsed = pair
                    .split_once('=')
                    .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
                let Some((from, to)) = parsed else {
                    return Err(format!(
                        "node {}: WEFT_GATEWAY_PORTS entry {pair:?} is not PORT=PORT",
                        node.id
                    ));
                };
                gateway_ports.insert(from, to);
            }
        }
        let locality = weft_registry::locality(&labels).or_else(|| {
            let l = node.locality.as_ref()?;
            let joined = format!("{}/{}/{}", l.region, l.zone, l.sub_zone);
            (joined != "//").then_some(joined)
        });
        Ok(Proxy {
            id: node.id.clone(),
            kind,
            ip: ip.to_string(),
            name: name.to_string(),
            namespace,
            labels,
            locality,
            interception,
            http_proxy_port,
            gateway_address: string(meta, "WEFT_GATEWAY_ADDRESS")
                .unwrap_or_else(|| "0.0.0.0".into()),
            gateway_ports,
            istio_extensions: node.user_agent_name == "weft"
                || string(meta, "ISTIO_VERSION").is_some(),
        })
    }

    /// Whether `e` is this proxy's own workload: the same WorkloadEntry or Pod, or its address.
    pub fn is_instance(&self, e: &weft_registry::Endpoint) -> bool {
        let same_workload = e.origin.name == self.name && e.origin.namespace == self.namespace;
        // A fronted endpoint's address is its sidecar's, which many workloads share on one
        // machine: only the workload it came from is it.
        same_workload || (e.application.is_none() && !self.ip.is_empty() && e.address == self.ip)
    }

    /// The port a gateway listens on for a Gateway server's port.
    pub fn gateway_port(&self, server_port: u16) -> u16 {
        self.gateway_ports
            .get(&server_port)
            .copied()
            .unwrap_or(server_port)
    }
}

fn string(meta: Option<&Struct>, key: &str) -> Option<String> {
    match &meta?.fields.get(key)?.kind {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Value;

    fn text(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    #[test]
    fn reads_istios_node_id_and_metadata() {
        let mut labels = Struct::default();
        labels.fields.insert("app".into(), text("website"));
        let mut meta = Struct::default();
        meta.fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        meta.fields.insert("INTERCEPTION_MODE".into(), text("NONE"));
        meta.fields.insert("HTTP_PROXY_PORT".into(), text("15080"));
        meta.fields
            .insert("WEFT_GATEWAY_PORTS".into(), text("80=8080, 443=8443"));
        let node = Node {
            id: "router~10.0.0.9~ingress.istio-system~istio-system.svc.cluster.local".into(),
            metadata: Some(meta),
            ..Default::default()
        };
        let p = Proxy::from_node(&node).unwrap();
        assert_eq!(p.kind, ProxyKind::Router);
        assert_eq!(p.ip, "10.0.0.9");
        assert_eq!(
            (p.name.as_str(), p.namespace.as_str()),
            ("ingress", "istio-system")
        );
        assert_eq!(p.labels.get("app").map(String::as_str), Some("website"));
        assert_eq!(p.interception, Interception::None);
        assert_eq!(p.http_proxy_port, Some(15080));
        assert_eq!(
            (
                p.gateway_port(80),
                p.gateway_port(443),
                p.gateway_port(9000)
            ),
            (8080, 8443, 9000)
        );
    }

    #[test]
    fn a_malformed_node_is_refused_saying_why() {
        let node = |id: &str| Node {
            id: id.into(),
            ..Default::default()
        };
        assert!(
            Proxy::from_node(&node("just-a-name"))
                .unwrap_err()
                .contains("TYPE~IP")
        );
        assert!(
            Proxy::from_node(&node("waypoint~1.1.1.1~a.b~x"))
                .unwrap_err()
                .contains("waypoint")
        );
    }
}
