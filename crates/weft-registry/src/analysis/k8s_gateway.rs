//! Kubernetes Gateway API analyzers: policies that select a Gateway-managed pod by labels, which
//! such gateways ignore (`k8sgateway.SelectorAnalyzer`, IST0166), and Gateway API CRDs older than
//! the bundle version Istio needs, whose resources istiod would never watch
//! (`k8sgateway.CRDVersionAnalyzer`, IST0176).

use super::json::{is_kind, selector_labels};
use super::{Context, Findings};
use crate::selects;
use std::collections::BTreeMap;
use weft_api::Resource;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;

/// The label Kubernetes Gateway deployments put on their pods, naming the Gateway.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The policy kinds whose `selector` a Kubernetes Gateway does not honour.
const POLICY_KINDS: [(&str, &str); 4] = [
    ("security.istio.io", "AuthorizationPolicy"),
    ("security.istio.io", "RequestAuthentication"),
    ("telemetry.istio.io", "Telemetry"),
    ("extensions.istio.io", "WasmPlugin"),
];

/// `k8sgateway.SelectorAnalyzer`: a policy without `targetRef` whose selector matches a pod of a
/// Kubernetes Gateway in its namespace, once per such pod.
pub fn selectors(ctx: &Context, out: &mut Findings) {
    let mut gateway_pods: BTreeMap<&str, Vec<&Labels>> = BTreeMap::new();
    for o in &ctx.objects {
        let labels = &o.resource.metadata().labels;
        if matches!(o.resource, Resource::Pod(_)) && labels.contains_key(GATEWAY_NAME_LABEL) {
            gateway_pods
                .entry(Context::namespace(o))
                .or_default()
                .push(labels);
        }
    }
    for (group, kind) in POLICY_KINDS {
        for o in ctx.objects.iter().filter(|o| is_kind(o, group, kind)) {
            let obj = Context::json(o);
            let targeted = obj.pointer("/spec/targetRef").is_some_and(|t| !t.is_null());
            if targeted {
                continue;
            }
            let Some(selector) = selector_labels(&obj) else {
                continue;
            };
            let pods = gateway_pods.get(Context::namespace(o));
            for labels in pods.into_iter().flatten() {
                if selects(&selector, labels) {
                    let gateway = labels.get(GATEWAY_NAME_LABEL).cloned().unwrap_or_default();
                    out.add(o, &FieldPath::root(), "IST0166", &[gateway]);
                }
            }
        }
    }
}

/// The oldest Gateway API bundle version each CRD must carry for istiod to watch it.
const MINIMUM_CRD_VERSIONS: [(&str, (u64, u64, u64)); 3] = [
    ("grpcroutes.gateway.networking.k8s.io", (1, 1, 0)),
    ("backendtlspolicies.gateway.networking.k8s.io", (1, 4, 0)),
    ("tlsroutes.gateway.networking.k8s.io", (1, 5, 0)),
];

const BUNDLE_VERSION_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";

/// A version as the Masterminds semver library reads it loosely: an optional `v`, one to three
/// numbers (missing ones are 0), then optional `-prerelease` and `+metadata`.
struct Version {
    core: (u64, u64, u64),
    pre: String,
    meta: String,
}

impl Version {
    fn parse(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let (rest, meta) = match s.split_once('+') {
            Some((r, m)) => (r, Some(m)),
            None => (s, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let mut numbers = Vec::new();
        for part in core.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            numbers.push(part.parse::<u64>().ok()?);
        }
        if numbers.len() > 3 {
            return None;
        }
        let identifiers_ok = |x: Option<&str>| {
            x.is_none_or(|x| {
                x.split('.').all(|id| {
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            })
        };
        if !identifiers_ok(pre) || !identifiers_ok(meta) {
            return None;
        }
        let n = |i: usize| numbers.get(i).copied().unwrap_or(0);
        Some(Version {
            core: (n(0), n(1), n(2)),
            pre: pre.unwrap_or("").to_string(),
            meta: meta.unwrap_or("").to_string(),
        })
    }
}

/// The library's `String()`: the three numbers, then any prerelease and metadata.
impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor, patch) = self.core;
        write!(f, "{major}.{minor}.{patch}")?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.meta.is_empty() {
            write!(f, "+{}", self.meta)?;
        }
        Ok(())
    }
}

/// `k8sgateway.CRDVersionAnalyzer`: a Gateway API CRD whose bundle-version annotation, with any
/// prerelease ignored, is below what Istio requires. CRDs without the annotation or with one
/// that does not parse are left alone, as Istio leaves them.
pub fn crd_versions(ctx: &Context, out: &mut Findings) {
    for o in ctx
        .objects
        .iter()
        .filter(|o| is_kind(o, "apiextensions.k8s.io", "CustomResourceDefinition"))
    {
        let name = o.resource.name();
        let Some((_, minimum)) = MINIMUM_CRD_VERSIONS.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        let Some(installed) = o
            .resource
            .metadata()
            .annotations
            .get(BUNDLE_VERSION_ANNOTATION)
            .and_then(|v| Version::parse(v))
        else {
            continue;
        };
        if installed.core < *minimum {
            let (major, minor, patch) = *minimum;
            let args = [
                name.to_string(),
                installed.to_string(),
                format!("{major}.{minor}.{patch}"),
            ];
            out.add(o, &FieldPath::root(), "IST0176", &args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn versions_read_as_the_semver_library_reads_them() {
        let v = Version::parse("v1.4.1").map(|v| (v.core, v.to_string()));
        assert_eq!(v, Some(((1, 4, 1), "1.4.1".to_string())));
        let v = Version::parse("1.5.0-rc.1+build").map(|v| (v.core, v.to_string()));
        assert_eq!(v, Some(((1, 5, 0), "1.5.0-rc.1+build".to_string())));
        let v = Version::parse("v1.2").map(|v| v.core);
        assert_eq!(v, Some((1, 2, 0)));
        assert!(Version::parse("one").is_none());
        assert!(Version::parse("1.2.3.4").is_none());
    }
}
