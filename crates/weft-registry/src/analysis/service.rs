//! `service.PortNameAnalyzer`: Service ports whose protocol Istio cannot tell from the name or
//! `appProtocol` (IST0118), and ExternalName Services whose ports would be treated as opaque TCP
//! (IST0150).

use super::{Context, Findings};
use weft_api::Resource;
use weft_api::path::FieldPath;
use weft_api::types::kube::IntOrString;

/// Gateway controllers' own Services: named by the controller, not by users.
const MANAGED: [&str; 3] = [
    "istio.io-gateway-controller",
    "istio.io-mesh-controller",
    "istio.io-eastwest-controller",
];

pub fn port_names(ctx: &Context, out: &mut Findings) {
    for o in &ctx.objects {
        let Resource::Service(svc) = &o.resource else {
            continue;
        };
        let labels = &svc.metadata.labels;
        // Istio's control plane (`util.IsIstioControlPlane`) and gateway-managed Services.
        if labels.contains_key("istio")
            || labels.get("release").is_some_and(|r| r == "istio")
            || labels
                .get("gateway.istio.io/managed")
                .is_some_and(|m| MANAGED.contains(&m.as_str()))
        {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        let external_name = spec.type_.as_deref() == Some("ExternalName");
        for (i, p) in spec.ports.iter().enumerate() {
            let name = p.name.as_deref().unwrap_or("");
            let number = p.port.unwrap_or(0);
            let supported = protocol_known(
                number,
                name,
                p.protocol.as_deref(),
                p.app_protocol.as_deref(),
            );
            if supported && !(name == "tcp" && external_name) {
                continue;
            }
            let at = FieldPath::root().key("spec").key("ports").index(i);
            if external_name {
                out.add(o, &at, "IST0150", &[]);
            } else {
                let target = match &p.target_port {
                    Some(IntOrString::Int(n)) => n.to_string(),
                    Some(IntOrString::String(s)) => s.clone(),
                    None => "0".into(),
                };
                out.add(
                    o,
                    &at,
                    "IST0118",
                    &[name.to_string(), number.to_string(), target],
                );
            }
        }
    }
}

/// Whether istiod's `kube.ConvertProtocol` finds a protocol: UDP always; else `appProtocol`
/// (when set) or the name, up to its first `-`, is one Istio knows; or the port is one of the
/// well-known server-first ones it treats as TCP.
pub(crate) fn protocol_known(
    port: i64,
    name: &str,
    protocol: Option<&str>,
    app_protocol: Option<&str>,
) -> bool {
    if protocol == Some("UDP") {
        return true;
    }
    let named = app_protocol.unwrap_or(name);
    if app_protocol.is_some()
        && matches!(
            named,
            "kubernetes.io/h2c" | "kubernetes.io/ws" | "kubernetes.io/wss"
        )
    {
        return true;
    }
    if named
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("grpc-web"))
    {
        return true;
    }
    let prefix = named.split('-').next().unwrap_or("");
    let known = matches!(
        prefix.to_ascii_lowercase().as_str(),
        "tcp"
            | "udp"
            | "grpc"
            | "http"
            | "http_proxy"
            | "http2"
            | "https"
            | "tls"
            | "mongo"
            | "redis"
            | "mysql"
    );
    known || matches!(port, 25 | 53 | 3306 | 27017)
}
