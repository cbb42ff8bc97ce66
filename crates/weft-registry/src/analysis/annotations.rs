//! Istio annotation analyzers over Namespaces, Services, Pods and `apps/v1` Deployments (their
//! own metadata only, not a Deployment's pod template):
//! - `annotations.K8sAnalyzer`: Istio annotations Istio does not know (IST0108), deprecated ones
//!   (IST0135), ones on a kind they do not apply to (IST0107) and values the sidecar injector
//!   would refuse (IST0125).
//! - `annotations.AlphaAnalyzer` (Go's `maturity.AlphaAnalyzer`): annotations of alpha-phase
//!   features (IST0136).
//!
//! An annotation is Istio's when its prefix ends in `istio.io`, or it is
//! `kubernetes.io/ingress.class`, the one foreign annotation Istio documents.

use super::{Context, Findings};
use std::net::{Ipv4Addr, Ipv6Addr};
use weft_api::load::Loaded;
use weft_api::path::FieldPath;
use weft_api::yaml::{self, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Alpha,
    Beta,
    Stable,
}

use Status::{Alpha, Beta, Stable};

/// One entry of Istio's annotation catalog (istio/api `annotation/annotations.yaml`).
struct Def {
    name: &'static str,
    status: Status,
    deprecated: bool,
    /// Kinds it belongs on, in the catalog's order (the IST0107 text lists them so).
    resources: &'static [&'static str],
}

const fn def(
    name: &'static str,
    status: Status,
    deprecated: bool,
    resources: &'static [&'static str],
) -> Def {
    Def {
        name,
        status,
        deprecated,
        resources,
    }
}

const POD: &[&str] = &["Pod"];
const SERVICE: &[&str] = &["Service"];
const ANY: &[&str] = &["Any"];
const GATEWAY: &[&str] = &["Gateway"];
const WORKLOAD_ENTRY: &[&str] = &["WorkloadEntry"];
const WAYPOINT_BINDING: &[&str] = &["GatewayClass", "Gateway"];
const CANARY_WEIGHT: &[&str] = &["Service", "ServiceEntry", "Namespace"];
const TRAFFIC_DISTRIBUTION: &[&str] = &["Namespace", "Service", "ServiceEntry"];

/// Every annotation Istio knows. The catalog's generator makes an entry without a feature
/// status Alpha (`proxyMemoryLimit`, `userVolumeMount`, `includeInboundPorts`).
static CATALOG: &[Def] = &[
    def(
        "alpha.istio.io/canonical-serviceaccounts",
        Alpha,
        true,
        SERVICE,
    ),
    def(
        "alpha.istio.io/kubernetes-serviceaccounts",
        Alpha,
        true,
        SERVICE,
    ),
    def("ambient.istio.io/bypass-inbound-capture", Alpha, false, POD),
    def("ambient.istio.io/dns-capture", Alpha, false, POD),
    def("ambient.istio.io/redirection", Beta, false, POD),
    def(
        "ambient.istio.io/waypoint-inbound-binding",
        Alpha,
        false,
        WAYPOINT_BINDING,
    ),
    def("galley.istio.io/analyze-suppress", Alpha, false, ANY),
    def("gateway.istio.io/controller-version", Alpha, false, ANY),
    def("gateway.istio.io/name-override", Alpha, false, GATEWAY),
    def("gateway.istio.io/service-account", Alpha, false, GATEWAY),
    def("inject.istio.io/templates", Alpha, false, POD),
    def(
        "istio.io/autoRegistrationGroup",
        Alpha,
        false,
        WORKLOAD_ENTRY,
    ),
    def("istio.io/connectedAt", Alpha, false, WORKLOAD_ENTRY),
    def("istio.io/disconnectedAt", Alpha, false, WORKLOAD_ENTRY),
    def("istio.io/dry-run", Alpha, false, &["AuthorizationPolicy"]),
    def("istio.io/reroute-virtual-interfaces", Alpha, false, POD),
    def("istio.io/rev", Alpha, false, POD),
    def(
        "istio.io/use-waypoint-canary-weight",
        Alpha,
        false,
        CANARY_WEIGHT,
    ),
    def("istio.io/workloadController", Alpha, false, WORKLOAD_ENTRY),
    def("kubernetes.io/ingress.class", Stable, false, &["Ingress"]),
    def("networking.istio.io/exportTo", Alpha, false, SERVICE),
    def("networking.istio.io/service-type", Alpha, false, GATEWAY),
    def(
        "networking.istio.io/traffic-distribution",
        Alpha,
        false,
        TRAFFIC_DISTRIBUTION,
    ),
    def("prometheus.istio.io/merge-metrics", Alpha, false, POD),
    def("proxy.istio.io/config", Beta, false, POD),
    def("proxy.istio.io/overrides", Alpha, false, POD),
    def(
        "readiness.status.sidecar.istio.io/applicationPorts",
        Alpha,
        false,
        POD,
    ),
    def(
        "readiness.status.sidecar.istio.io/failureThreshold",
        Alpha,
        false,
        POD,
    ),
    def(
        "readiness.status.sidecar.istio.io/initialDelaySeconds",
        Alpha,
        false,
        POD,
    ),
    def(
        "readiness.status.sidecar.istio.io/periodSeconds",
        Alpha,
        false,
        POD,
    ),
    def("sidecar.istio.io/agentLogLevel", Alpha, false, POD),
    def("sidecar.istio.io/bootstrapOverride", Alpha, false, POD),
    def("sidecar.istio.io/componentLogLevel", Alpha, false, POD),
    def("sidecar.istio.io/discoveryAddress", Alpha, true, POD),
    def("sidecar.istio.io/extraStatTags", Alpha, true, POD),
    def("sidecar.istio.io/inject", Beta, true, POD),
    def("sidecar.istio.io/interceptionMode", Alpha, false, POD),
    def("sidecar.istio.io/logLevel", Alpha, false, POD),
    def("sidecar.istio.io/nativeSidecar", Alpha, false, POD),
    def("sidecar.istio.io/proxyCPU", Alpha, false, POD),
    def("sidecar.istio.io/proxyCPULimit", Alpha, false, POD),
    def("sidecar.istio.io/proxyImage", Alpha, false, POD),
    def("sidecar.istio.io/proxyImageType", Alpha, false, POD),
    def("sidecar.istio.io/proxyMemory", Alpha, false, POD),
    def("sidecar.istio.io/proxyMemoryLimit", Alpha, false, POD),
    def("sidecar.istio.io/rewriteAppHTTPProbers", Alpha, false, POD),
    def("sidecar.istio.io/statsCompression", Alpha, true, POD),
    def("sidecar.istio.io/statsEvictionInterval", Alpha, false, POD),
    def("sidecar.istio.io/statsFlushInterval", Alpha, false, POD),
    def("sidecar.istio.io/statsHistogramBins", Alpha, false, POD),
    def("sidecar.istio.io/statsHistogramBuckets", Alpha, false, POD),
    def("sidecar.istio.io/statsInclusionPrefixes", Alpha, true, POD),
    def("sidecar.istio.io/statsInclusionRegexps", Alpha, true, POD),
    def("sidecar.istio.io/statsInclusionSuffixes", Alpha, true, POD),
    def("sidecar.istio.io/status", Alpha, false, POD),
    def("sidecar.istio.io/userVolume", Alpha, false, POD),
    def("sidecar.istio.io/userVolumeMount", Alpha, false, POD),
    def("status.sidecar.istio.io/port", Alpha, false, POD),
    def(
        "topology.istio.io/controlPlaneClusters",
        Alpha,
        false,
        &["Namespace"],
    ),
    def("traffic.istio.io/nodeSelector", Stable, false, SERVICE),
    def(
        "traffic.sidecar.istio.io/excludeInboundPorts",
        Alpha,
        false,
        POD,
    ),
    def(
        "traffic.sidecar.istio.io/excludeInterfaces",
        Alpha,
        false,
        POD,
    ),
    def(
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        Alpha,
        false,
        POD,
    ),
    def(
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        Alpha,
        false,
        POD,
    ),
    def(
        "traffic.sidecar.istio.io/includeInboundPorts",
        Alpha,
        false,
        POD,
    ),
    def(
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        Alpha,
        false,
        POD,
    ),
    def(
        "traffic.sidecar.istio.io/includeOutboundPorts",
        Alpha,
        false,
        POD,
    ),
    def(
        "traffic.sidecar.istio.io/kubevirtInterfaces",
        Alpha,
        true,
        POD,
    ),
];

/// Written by Istio itself (injector, gateway controller), never by users: both analyzers pass
/// over them.
const ALWAYS_IGNORED: [&str; 3] = [
    "sidecar.istio.io/status",
    "gateway.istio.io/controller-version",
    "istio.io/rev",
];

/// Written by the injector on every pod when the CNI plugin does the traffic capture; alpha
/// noise there, so only reported on pods that carry the `istio-init` container.
const CNI_DEFAULTS: [&str; 4] = [
    "sidecar.istio.io/interceptionMode",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
];

const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";

fn lookup(name: &str) -> Option<&'static Def> {
    CATALOG.iter().find(|d| d.name == name)
}

fn is_istio_annotation(ann: &str) -> bool {
    ann == "kubernetes.io/ingress.class"
        || ann
            .split('/')
            .next()
            .is_some_and(|prefix| prefix.ends_with("istio.io"))
}

/// The kind name Istio checks placement against, for the four collections both analyzers read.
fn inspected_kind(o: &Loaded) -> Option<&'static str> {
    match (o.resource.kind(), o.resource.api_version()) {
        ("Namespace", "v1") => Some("Namespace"),
        ("Service", "v1") => Some("Service"),
        ("Pod", "v1") => Some("Pod"),
        ("Deployment", "apps/v1") => Some("Deployment"),
        _ => None,
    }
}

fn annotation_path(ann: &str) -> FieldPath {
    FieldPath::root()
        .key("metadata")
        .key("annotations")
        .key(ann)
}

/// `annotations.K8sAnalyzer`.
pub fn misplaced_and_invalid(ctx: &Context, out: &mut Findings) {
    for o in &ctx.objects {
        let Some(kind) = inspected_kind(o) else {
            continue;
        };
        let meta = o.resource.metadata();
        for (ann, value) in &meta.annotations {
            if !is_istio_annotation(ann) || ALWAYS_IGNORED.contains(&ann.as_str()) {
                continue;
            }
            let at = annotation_path(ann);
            let Some(d) = lookup(ann) else {
                out.add(o, &at, "IST0108", std::slice::from_ref(ann));
                continue;
            };
            // Someone who also set the replacement label knows; keeping both is deliberate.
            let has_replacement = ann == SIDECAR_INJECT && meta.labels.contains_key(SIDECAR_INJECT);
            if d.deprecated && !has_replacement {
                let extra = if ann == SIDECAR_INJECT {
                    " in favor of the \"sidecar.istio.io/inject\" label"
                } else {
                    ""
                };
                out.add(o, &at, "IST0135", &[ann.clone(), extra.to_string()]);
            }
            if d.resources.contains(&"Any") {
                continue;
            }
            if !d.resources.contains(&kind) {
                out.add(o, &at, "IST0107", &[ann.clone(), d.resources.join(", ")]);
                continue;
            }
            if let Err(e) = validate(ann, value) {
                out.add(o, &at, "IST0125", &[ann.clone(), e]);
            }
        }
    }
}

/// `annotations.AlphaAnalyzer`.
pub fn alpha_annotations(ctx: &Context, out: &mut Findings) {
    for o in &ctx.objects {
        let Some(kind) = inspected_kind(o) else {
            continue;
        };
        let annotations = &o.resource.metadata().annotations;
        if annotations.is_empty() {
            continue;
        }
        let cni = kind == "Pod" && !has_istio_init(o);
        for ann in annotations.keys() {
            if !is_istio_annotation(ann) {
                continue;
            }
            let Some(d) = lookup(ann) else {
                continue;
            };
            if d.status != Alpha
                || ALWAYS_IGNORED.contains(&d.name)
                || (cni && CNI_DEFAULTS.contains(&d.name))
            {
                continue;
            }
            out.add(
                o,
                &annotation_path(ann),
                "IST0136",
                std::slice::from_ref(ann),
            );
        }
    }
}

/// Whether the pod captures traffic with the `istio-init` container rather than the CNI plugin.
fn has_istio_init(o: &Loaded) -> bool {
    Context::json(o)
        .pointer("/spec/initContainers")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.get("name").and_then(serde_json::Value::as_str) == Some("istio-init"))
        })
}

/// The sidecar injector's check of the annotations it reads (`inject.AnnotationValidation`), with
/// its error texts.
fn validate(ann: &str, value: &str) -> Result<(), String> {
    match ann {
        "sidecar.istio.io/interceptionMode" => match value {
            "REDIRECT" | "TPROXY" | "NONE" => Ok(()),
            _ => Err(format!(
                "interceptionMode invalid, use REDIRECT,TPROXY,NONE: {value}"
            )),
        },
        // Istio's own message names the wrong annotation here; kept for identical output.
        "status.sidecar.istio.io/port" => parse_port(value)
            .map(|_| ())
            .map_err(|e| format!("excludeInboundPorts invalid: {e}")),
        "readiness.status.sidecar.istio.io/initialDelaySeconds"
        | "readiness.status.sidecar.istio.io/periodSeconds"
        | "readiness.status.sidecar.istio.io/failureThreshold" => parse_uint(value, 32).map(|_| ()),
        "traffic.sidecar.istio.io/includeOutboundIPRanges" if value == "*" => Ok(()),
        "traffic.sidecar.istio.io/includeOutboundIPRanges" => {
            cidr_list(value).map_err(|e| format!("includeIPRanges invalid: {e}"))
        }
        "traffic.sidecar.istio.io/excludeOutboundIPRanges" => {
            cidr_list(value).map_err(|e| format!("excludeIPRanges invalid: {e}"))
        }
        "traffic.sidecar.istio.io/includeInboundPorts" if value == "*" => Ok(()),
        "traffic.sidecar.istio.io/includeInboundPorts" => port_list("includeInboundPorts", value),
        "traffic.sidecar.istio.io/excludeInboundPorts" => port_list("excludeInboundPorts", value),
        "traffic.sidecar.istio.io/excludeOutboundPorts" => port_list("excludeOutboundPorts", value),
        "prometheus.istio.io/merge-metrics" => match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false"
            | "False" => Ok(()),
            _ => Err(format!(
                "strconv.ParseBool: parsing {value:?}: invalid syntax"
            )),
        },
        "proxy.istio.io/config" => proxy_config(value),
        _ => Ok(()),
    }
}

/// Go's `strconv.ParseUint(s, 10, bits)`: digits only, no sign, no spaces.
fn parse_uint(s: &str, bits: u32) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    match s.parse::<u64>() {
        Ok(n) if bits >= 64 || n >> bits == 0 => Ok(n),
        _ => Err(format!(
            "strconv.ParseUint: parsing {s:?}: value out of range"
        )),
    }
}

fn parse_port(s: &str) -> Result<u64, String> {
    parse_uint(s.trim(), 16).map_err(|e| format!("failed parsing port '{s}': {e}"))
}

/// A comma-separated port list; empty (after trimming) means none.
fn port_list(name: &str, ports: &str) -> Result<(), String> {
    let ports = ports.trim();
    if ports.is_empty() {
        return Ok(());
    }
    for p in ports.split(',') {
        if let Err(e) = parse_port(p) {
            return Err(format!("{name} invalid: failed parsing port '{p}': {e}"));
        }
    }
    Ok(())
}

/// A comma-separated CIDR list, each as strict as Go's `netip.ParsePrefix`; empty means none.
fn cidr_list(cidrs: &str) -> Result<(), String> {
    if cidrs.is_empty() {
        return Ok(());
    }
    for c in cidrs.split(',') {
        if let Err(e) = parse_prefix(c) {
            return Err(format!(
                "failed parsing cidr '{c}': netip.ParsePrefix({c:?}): {e}"
            ));
        }
    }
    Ok(())
}

fn parse_prefix(s: &str) -> Result<(), String> {
    let Some((addr, bits)) = s.rsplit_once('/') else {
        return Err("no '/'".to_string());
    };
    let max = if addr.parse::<Ipv4Addr>().is_ok() {
        32
    } else if addr.parse::<Ipv6Addr>().is_ok() {
        128
    } else {
        return Err(format!("ParseAddr({addr:?}): unable to parse IP"));
    };
    // Go refuses signs and leading zeros in the length.
    let canonical = !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits.len() == 1 || !bits.starts_with('0'));
    match bits.parse::<u32>() {
        Ok(n) if canonical && n <= max => Ok(()),
        _ => Err(format!("bad bits after slash: {bits:?}")),
    }
}

/// The mesh-wide proxy defaults with the annotation's YAML applied, validated as Istio validates
/// a ProxyConfig, for the fields whose override can break it.
fn proxy_config(value: &str) -> Result<(), String> {
    let docs = yaml::parse_stream(value).map_err(|e| apply_error(&e.message))?;
    let Some(doc) = docs.first() else {
        return Ok(());
    };
    let Value::Map(entries) = &doc.value else {
        return Err(apply_error("not an object"));
    };
    let mut errs = Vec::new();
    for e in entries {
        // protojson takes both the JSON and the proto field names.
        let field = e.key.replace('_', "").to_ascii_lowercase();
        let v = &e.value.value;
        if matches!(v, Value::Null) {
            continue;
        }
        match field.as_str() {
            "configpath" | "binarypath" | "servicecluster" | "discoveryaddress" => {
                let Value::Str(s) = v else {
                    return Err(apply_error(&format!("bad value for field {}", e.key)));
                };
                match (field.as_str(), s.as_str()) {
                    ("configpath", "") => errs.push("config path must be set".to_string()),
                    ("binarypath", "") => errs.push("binary path must be set".to_string()),
                    ("servicecluster", "") => {
                        errs.push("service cluster must be specified".to_string());
                    }
                    ("discoveryaddress", "") => errs.push(
                        "discovery address must be set to the proxy discovery service".to_string(),
                    ),
                    ("discoveryaddress", addr) => {
                        if let Err(m) = proxy_address(addr) {
                            errs.push(format!("invalid discovery address: {m}"));
                        }
                    }
                    _ => {}
                }
            }
            "proxyadminport" | "statusport" => {
                let n = match v {
                    Value::Int(i) => Some(*i),
                    Value::UInt(u) => i64::try_from(*u).ok(),
                    Value::Str(s) => s.parse::<i64>().ok(),
                    _ => None,
                };
                let Some(n) = n else {
                    return Err(apply_error(&format!("bad value for field {}", e.key)));
                };
                if !(1..=65535).contains(&n) {
                    let what = if field == "statusport" {
                        "status port"
                    } else {
                        "proxy admin port"
                    };
                    errs.push(format!(
                        "invalid {what}: port number {n} must be in the range 1..65535"
                    ));
                }
            }
            // INHERIT (2) parses but is refused; any other value is an error either way.
            "controlplaneauthpolicy" => match v {
                Value::Str(s) if s == "NONE" || s == "MUTUAL_TLS" => {}
                Value::Int(0 | 1) | Value::UInt(0 | 1) => {}
                _ => errs.push(
                    "invalid authentication policy: unrecognized control plane auth policy"
                        .to_string(),
                ),
            },
            _ => {}
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

fn apply_error(m: &str) -> String {
    format!("failed to convert to apply proxy config: {m}")
}

/// `host:port` with a port Envoy can use (Istio's `ValidateProxyAddress`, without its hostname
/// syntax check).
fn proxy_address(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("unable to split {addr:?}: missing port in address"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(n) = port.parse::<i64>() else {
        return Err(format!("port ({port}) is not a number"));
    };
    if !(1..=65535).contains(&n) {
        return Err(format!("port number {n} must be in the range 1..65535"));
    }
    if host.is_empty() {
        return Err(format!(
            "{host:?} is not a valid hostname or an IPv4 address"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_as_the_injector_checks_them() {
        let ok = |a: &str, v: &str| validate(a, v).is_ok();
        let delay = "readiness.status.sidecar.istio.io/initialDelaySeconds";
        assert!(!ok(delay, "bar"));
        assert!(!ok(delay, "+1"));
        assert!(!ok(delay, "4294967296"));
        assert!(ok(delay, "10"));
        assert!(ok("traffic.sidecar.istio.io/includeInboundPorts", "*"));
        assert!(ok(
            "traffic.sidecar.istio.io/excludeInboundPorts",
            " 15020, 80"
        ));
        assert!(!ok("traffic.sidecar.istio.io/excludeInboundPorts", "70000"));
        let ranges = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
        assert!(ok(ranges, "10.0.0.0/8,fd00::/8"));
        assert!(!ok(ranges, "10.0.0.0"));
        assert!(!ok(ranges, "10.0.0.0/08"));
        assert!(!ok(ranges, "10.0.0.0/33"));
        assert!(ok("proxy.istio.io/config", "{}"));
        assert!(!ok("proxy.istio.io/config", "statusPort: 0"));
        assert!(!ok("proxy.istio.io/config", "discoveryAddress: istiod"));
        assert!(ok("prometheus.istio.io/merge-metrics", "True"));
        assert!(!ok("prometheus.istio.io/merge-metrics", "yes"));
    }

    #[test]
    fn istio_annotations_are_told_by_prefix() {
        assert!(is_istio_annotation("networking.istio.io/exportThree"));
        assert!(is_istio_annotation("kubernetes.io/ingress.class"));
        assert!(!is_istio_annotation("kubernetes.io/psp"));
        assert!(!is_istio_annotation("helm.sh/hook"));
        assert!(lookup("networking.istio.io/exportThree").is_none());
    }
}
