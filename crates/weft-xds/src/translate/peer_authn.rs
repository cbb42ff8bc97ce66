//! PeerAuthentication: the mTLS mode of each port a workload serves, composed as istiod does
//! (`ComposePeerAuthentication`), and the inbound filter chains that mode calls for
//! (`getFilterChainMatchOptions`, `BuildInboundTLS`).
//!
//! Composition: PERMISSIVE to start with; then the mesh-wide policy (root namespace, no
//! selector), the namespace's (no selector) and the workload's (a selector that picks it), each
//! overriding what came before unless its mode is UNSET. Within a level the oldest wins; without
//! creation times, the first by name. `portLevelMtls` is read from the workload's policy only,
//! keyed by the workload's own (target) port; an UNSET port takes the workload's mode.

use super::config::{Inputs, Obj};
use super::pb;
use super::upstream_tls::{mesh_common, mesh_tls_versions, tls_socket};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use weft_api::types::common::Labels;
use weft_api::types::security::{MtlsMode, PeerAuthentication};
use weft_registry::selects;

/// A port's effective mode: never UNSET once composed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Permissive,
    Strict,
}

impl Mode {
    fn from(m: Option<MtlsMode>) -> Option<Mode> {
        match m? {
            MtlsMode::Unset => None,
            MtlsMode::Disable => Some(Mode::Disable),
            MtlsMode::Permissive => Some(Mode::Permissive),
            MtlsMode::Strict => Some(Mode::Strict),
        }
    }
}

/// The composed policy of one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    ports: Vec<(u16, Mode)>,
}

impl Policy {
    pub fn for_port(&self, port: u16) -> Mode {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(self.mode, |(_, m)| *m)
    }
}

fn mode_of(pa: &Obj<PeerAuthentication>) -> Option<Mode> {
    Mode::from(pa.spec.mtls.as_ref().and_then(|m| m.mode))
}

fn has_selector(pa: &Obj<PeerAuthentication>) -> bool {
    pa.spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// The namespace-wide policy of `namespace` (its first by name without selector).
fn namespace_wide<'a>(inputs: &'a Inputs, namespace: &str) -> Option<&'a Obj<PeerAuthentication>> {
    inputs
        .config
        .peer_authentications
        .iter()
        .find(|pa| pa.namespace == namespace && !has_selector(pa))
}

/// The mode of the mesh and the namespace alone: what a client infers of a service's servers
/// (`BestEffortInferServiceMTLSMode`), workload policies aside.
pub fn namespace_mode(inputs: &Inputs, namespace: &str) -> Mode {
    let mut mode = Mode::Permissive;
    let root = inputs.mesh.root_namespace.as_str();
    if let Some(m) = namespace_wide(inputs, root).and_then(mode_of) {
        mode = m;
    }
    if namespace != root
        && let Some(m) = namespace_wide(inputs, namespace).and_then(mode_of)
    {
        mode = m;
    }
    mode
}

/// The composed policy of a workload of `namespace` with `labels`.
pub fn policy(inputs: &Inputs, namespace: &str, labels: &Labels) -> Policy {
    let mut mode = namespace_mode(inputs, namespace);
    let workload = (namespace != inputs.mesh.root_namespace)
        .then(|| {
            inputs.config.peer_authentications.iter().find(|pa| {
                pa.namespace == namespace
                    && pa.spec.selector.as_ref().is_some_and(|s| {
                        !s.match_labels.is_empty() && selects(&s.match_labels, labels)
                    })
            })
        })
        .flatten();
    let mut ports = Vec::new();
    if let Some(pa) = workload {
        if let Some(m) = mode_of(pa) {
            mode = m;
        }
        for (port, mtls) in pa.spec.port_level_mtls.iter().flatten() {
            if let Ok(port) = u16::try_from(*port) {
                ports.push((port, Mode::from(mtls.mode).unwrap_or(mode)));
            }
        }
    }
    Policy { mode, ports }
}

/// Whether an endpoint takes the mesh's mTLS when a client's auto mTLS offers it (istiod's
/// `checkMtlsEnabled`): it has a sidecar (`weft up` fronts it, or it carries Istio's
/// `security.istio.io/tlsMode: istio` label) and its own policy does not disable mTLS on the
/// port its application listens on.
pub fn mtls_ready(inputs: &Inputs, e: &weft_registry::Endpoint) -> bool {
    let sidecar = e.application.is_some()
        || e.labels
            .get("security.istio.io/tlsMode")
            .map(String::as_str)
            == Some("istio");
    let port = e.application.as_ref().map_or(e.port, |(_, p)| *p);
    sidecar && policy(inputs, &e.origin.namespace, &e.labels).for_port(port) != Mode::Disable
}

/// Istio's ALPN values for the mesh's mTLS (`allIstioMtlsALPNs`): what a client sidecar offers.
pub(super) const ISTIO_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// The filter chains of one inbound port under `mode`, each running `filters`; `None` when the
/// port must refuse everything (STRICT without the mesh's certificates). `port_match` is the
/// destination port chains match on under capture (none for a listener of the port's own).
pub fn inbound_chains(
    inputs: &Inputs,
    mode: Mode,
    http: bool,
    name: &str,
    port_match: Option<u16>,
    filters: Vec<Filter>,
) -> Option<Vec<FilterChain>> {
    let chain = |transport: Option<&str>, alpns: &[&str], tls: bool| {
        let mut m = FilterChainMatch {
            destination_port: port_match.map(|p| UInt32Value {
                value: u32::from(p),
            }),
            transport_protocol: transport.unwrap_or_default().to_string(),
            application_protocols: alpns.iter().map(|a| (*a).to_string()).collect(),
            ..Default::default()
        };
        if transport.is_none() {
            m.transport_protocol.clear();
        }
        FilterChain {
            name: name.to_string(),
            filter_chain_match: (m != FilterChainMatch::default()).then_some(m),
            filters: filters.clone(),
            transport_socket: tls.then(|| tls_socket(pb::any(&downstream_tls(inputs, http)))),
            ..Default::default()
        }
    };
    // Without the mesh CA there are no workload certificates: nothing can speak mTLS, so a
    // PERMISSIVE port is plaintext only and a STRICT one takes nothing.
    if !inputs.mesh_identity {
        return match mode {
            Mode::Strict => None,
            Mode::Permissive | Mode::Disable => Some(vec![chain(None, &[], false)]),
        };
    }
    Some(match (mode, http) {
        (Mode::Disable, _) => vec![chain(None, &[], false)],
        (Mode::Strict, _) => vec![chain(Some("tls"), &[], true)],
        (Mode::Permissive, true) => vec![
            chain(Some("tls"), &ISTIO_ALPNS, true),
            chain(Some("raw_buffer"), &[], false),
        ],
        // TLS that is not the mesh's is the application's own, passed through.
        (Mode::Permissive, false) => vec![
            chain(Some("tls"), &ISTIO_ALPNS, true),
            chain(Some("tls"), &[], false),
            chain(Some("raw_buffer"), &[], false),
        ],
    })
}

/// Whether chains tell TLS from plaintext, and so need the TLS inspector.
pub fn inspects_tls(chains: &[FilterChain]) -> bool {
    chains.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| m.transport_protocol == "tls")
    })
}

/// The server side of the mesh's mTLS (`BuildInboundTLS`): the workload certificate and the
/// mesh roots over SDS, a client certificate required, any identity of the trust domain
/// accepted (which identities may do what is AuthorizationPolicy's business).
fn downstream_tls(inputs: &Inputs, http: bool) -> DownstreamTlsContext {
    let alpn: &[&str] = if http {
        &["h2", "http/1.1"]
    } else {
        &["istio-peer-exchange", "h2", "http/1.1"]
    };
    let trust_domain = StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Prefix(format!(
            "spiffe://{}/",
            inputs.mesh.trust_domain
        ))),
        ..Default::default()
    };
    DownstreamTlsContext {
        common_tls_context: Some(mesh_common(
            vec![trust_domain],
            alpn,
            Some(mesh_tls_versions()),
        )),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::load::LoadResult;

    fn inputs(yaml: &str) -> Inputs {
        let mut loaded = LoadResult::default();
        loaded.load_str("t.yaml", yaml);
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        let resources: Vec<_> = loaded.objects.into_iter().map(|o| o.resource).collect();
        Inputs::new(&resources, Default::default())
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const LEVELS: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: legacy }
spec: { mtls: { mode: PERMISSIVE } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: unset, namespace: legacy }
spec:
  selector: { matchLabels: { app: inherits } }
  mtls: { mode: UNSET }
  portLevelMtls:
    8080: { mode: DISABLE }
    9090: { mode: UNSET }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: off, namespace: legacy }
spec:
  selector: { matchLabels: { app: plain } }
  mtls: { mode: DISABLE }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: ignored, namespace: istio-system }
spec:
  selector: { matchLabels: { app: plain } }
  mtls: { mode: DISABLE }
"#;

    #[test]
    fn mesh_then_namespace_then_workload_with_unset_inheriting() {
        let i = inputs(LEVELS);
        let none = labels(&[]);
        assert_eq!(policy(&i, "default", &none).mode, Mode::Strict, "mesh-wide");
        assert_eq!(
            policy(&i, "legacy", &none).mode,
            Mode::Permissive,
            "namespace"
        );
        let off = policy(&i, "legacy", &labels(&[("app", "plain")]));
        assert_eq!(off.mode, Mode::Disable, "workload");
        // A selector in the root namespace is no mesh-wide policy, and picks nothing elsewhere.
        assert_eq!(
            policy(&i, "default", &labels(&[("app", "plain")])).mode,
            Mode::Strict
        );
        let inherits = policy(&i, "legacy", &labels(&[("app", "inherits")]));
        assert_eq!(
            inherits.mode,
            Mode::Permissive,
            "UNSET takes the namespace's"
        );
        assert_eq!(inherits.for_port(8080), Mode::Disable, "port level");
        assert_eq!(inherits.for_port(9090), Mode::Permissive, "UNSET port");
        assert_eq!(inherits.for_port(80), Mode::Permissive);
        assert_eq!(namespace_mode(&i, "legacy"), Mode::Permissive);
        assert_eq!(namespace_mode(&i, "default"), Mode::Strict);
    }

    #[test]
    fn nothing_set_is_permissive() {
        let i = inputs("");
        assert_eq!(policy(&i, "default", &labels(&[])).mode, Mode::Permissive);
    }
}
