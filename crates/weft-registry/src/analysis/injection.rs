//! Sidecar injection analyzers.
//!
//! - `injection.Analyzer`: namespaces without any injection label (IST0102, or IST0148 when the
//!   injector enables namespaces by default), namespaces carrying more than one kind of
//!   injection label (IST0123), and pods of injected namespaces without a proxy (IST0103).
//! - `injection.ImageAnalyzer`: namespaces whose pods run a proxy image other than the one the
//!   injector of their revision would inject now (IST0158).
//! - `injection.ImageAutoAnalyzer`: `image: auto` proxies that no injection webhook will fill in
//!   (IST0146 for Deployments, IST0147 for Pods).

use super::json::is_kind;
use super::label_selector;
use super::{Context, Findings};
use crate::selects;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use weft_api::load::Loaded;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;

const INJECTION_LABEL: &str = "istio-injection";
const REVISION_LABEL: &str = "istio.io/rev";
const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
const PROXY_IMAGE_ANNOTATION: &str = "sidecar.istio.io/proxyImage";
const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";
const PROXY_CONTAINER: &str = "istio-proxy";
const INJECTOR_CONFIG_MAP: &str = "istio-sidecar-injector";
const ISTIO_SYSTEM: &str = "istio-system";

/// The injector ConfigMap a revision reads; the default revision has the bare name.
fn injector_config_map(revision: &str) -> String {
    if revision.is_empty() || revision == "default" {
        INJECTOR_CONFIG_MAP.to_string()
    } else {
        format!("{INJECTOR_CONFIG_MAP}-{revision}")
    }
}

/// A pod spec's containers, then its init containers (native sidecars run as init containers).
fn all_containers(spec: Option<&Value>) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .filter_map(move |k| spec.and_then(|s| s.get(k)).and_then(Value::as_array))
        .flatten()
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A JSON object of strings as labels; entries of other types are left out.
fn labels_of(v: Option<&Value>) -> Labels {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `sidecarInjectorWebhook.enableNamespacesByDefault` of an injector ConfigMap's values. Istio
/// panics where the key is missing or not a boolean; here that reads as off.
fn namespaces_enabled_by_default(cm: &Value) -> bool {
    cm.pointer("/data/values")
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| {
            v.get("sidecarInjectorWebhook")?
                .get("enableNamespacesByDefault")?
                .as_bool()
        })
        .unwrap_or(false)
}

/// `injection.Analyzer`.
pub fn namespaces_and_pods(ctx: &Context, out: &mut Findings) {
    let config_maps: Vec<(&str, Value)> = ctx
        .objects
        .iter()
        .filter(|o| is_kind(o, "", "ConfigMap"))
        .map(|o| (o.resource.name(), Context::json(o)))
        .collect();
    // Istio keeps this flag across namespaces: a namespace whose injector ConfigMap is missing
    // sees the value the previous lookup found.
    let mut enabled_by_default = false;
    let mut injected: BTreeSet<String> = BTreeSet::new();
    for o in ctx.objects.iter().filter(|o| is_kind(o, "", "Namespace")) {
        let ns = Context::full_name(o);
        if ns == ISTIO_SYSTEM {
            continue;
        }
        let labels = &o.resource.metadata().labels;
        let injection = labels.get(INJECTION_LABEL);
        let revision = labels.get(REVISION_LABEL);

        let mut found = Vec::new();
        if let Some(v) = injection {
            found.push(format!("{INJECTION_LABEL}={v}"));
        }
        // Beside a legacy label that turns injection off, the others are not a conflict.
        if injection.is_none_or(|v| v == "enabled") {
            for key in [REVISION_LABEL, DATAPLANE_MODE_LABEL] {
                if let Some(v) = labels.get(key) {
                    found.push(format!("{key}={v}"));
                }
            }
        }
        if found.len() > 1 {
            out.add(
                o,
                &FieldPath::root(),
                "IST0123",
                &[super::format::go_list(&found)],
            );
        }
        if labels
            .get(DATAPLANE_MODE_LABEL)
            .is_some_and(|m| m == "ambient")
        {
            continue;
        }

        let wanted = injector_config_map(revision.map_or("", String::as_str));
        if let Some((_, cm)) = config_maps.iter().find(|(name, _)| *name == wanted) {
            enabled_by_default = namespaces_enabled_by_default(cm);
        }

        let injection = injection.map_or("", String::as_str);
        if injection.is_empty() && revision.is_none() {
            if enabled_by_default {
                out.add(o, &FieldPath::root(), "IST0148", &[]);
            } else {
                let at = FieldPath::root().key("metadata").key("name");
                out.add(o, &at, "IST0102", &[ns.clone(), ns]);
            }
            continue;
        }
        if injection == "enabled" {
            injected.insert(ns);
        }
    }

    for o in ctx.objects.iter().filter(|o| is_kind(o, "", "Pod")) {
        if !injected.contains(Context::namespace(o)) {
            continue;
        }
        let meta = o.resource.metadata();
        // The label, when there is one, overrides the annotation.
        let inject = meta
            .labels
            .get(SIDECAR_INJECT)
            .or_else(|| meta.annotations.get(SIDECAR_INJECT));
        if inject.is_some_and(|v| v.eq_ignore_ascii_case("false")) {
            continue;
        }
        let json = Context::json(o);
        let spec = json.get("spec");
        if spec
            .and_then(|s| s.get("hostNetwork"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            continue;
        }
        let proxy_image = all_containers(spec)
            .find(|c| str_field(c, "name") == PROXY_CONTAINER)
            .map_or("", |c| str_field(c, "image"));
        if proxy_image.is_empty() {
            out.add(o, &FieldPath::root(), "IST0103", &[Context::full_name(o)]);
        }
    }
}

/// Go's `encoding/json` into a struct: exact key first, else one differing only in case.
fn go_field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A nested struct as Go decodes it: absent or null is empty, another type fails the decode.
fn go_object<'a>(
    v: Option<&'a Value>,
    empty: &'a Map<String, Value>,
) -> Option<&'a Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Some(empty),
        Some(Value::Object(m)) => Some(m),
        Some(_) => None,
    }
}

fn go_string(v: Option<&Value>) -> Option<&str> {
    match v {
        None | Some(Value::Null) => Some(""),
        Some(Value::String(s)) => Some(s),
        Some(_) => None,
    }
}

/// The proxy image an injector ConfigMap injects (`GetIstioProxyImage`): `global.proxy.image`
/// when it names a repository, else `hub/image:tag`; `""` when the values do not decode.
fn injector_proxy_image(cm: &Value) -> String {
    let text = cm
        .pointer("/data/values")
        .and_then(Value::as_str)
        .unwrap_or("");
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|values| decode_proxy_image(&values))
        .unwrap_or_default()
}

/// `None` where Go's decoder fails: a field of the wrong type.
fn decode_proxy_image(values: &Value) -> Option<String> {
    let empty = Map::new();
    let top = go_object(Some(values), &empty)?;
    let global = go_object(go_field(top, "global"), &empty)?;
    let hub = go_string(go_field(global, "hub"))?;
    let tag = go_string(go_field(global, "tag"))?;
    let proxy = go_object(go_field(global, "proxy"), &empty)?;
    let image = go_string(go_field(proxy, "image"))?;
    Some(if image.contains('/') {
        image.to_string()
    } else {
        format!("{hub}/{image}:{tag}")
    })
}

fn image_type(v: Option<&Value>) -> &str {
    v.and_then(|v| v.get("image"))
        .and_then(|i| i.get("imageType"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The proxy image variant (`distroless`...) each pod gets, from the mesh's default proxy
/// config, ProxyConfigs (root namespace, then the pod's namespace, then workload ones) and the
/// pod's `proxy.istio.io/config` annotation, later ones winning.
struct ImageTypes {
    mesh: String,
    root: String,
    namespaces: BTreeMap<String, String>,
    /// By `ns/name`: match labels and image type.
    workloads: BTreeMap<String, (Labels, String)>,
}

impl ImageTypes {
    fn new(ctx: &Context) -> ImageTypes {
        let mesh = ctx
            .mesh
            .default_config
            .as_ref()
            .and_then(|d| d.other.get("image"))
            .and_then(|i| i.get("imageType"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let root_ns = ctx
            .mesh
            .root_namespace
            .as_deref()
            .filter(|r| !r.is_empty())
            .unwrap_or(ISTIO_SYSTEM);
        let mut types = ImageTypes {
            mesh,
            root: String::new(),
            namespaces: BTreeMap::new(),
            workloads: BTreeMap::new(),
        };
        for o in ctx
            .objects
            .iter()
            .filter(|o| is_kind(o, "networking.istio.io", "ProxyConfig"))
        {
            let json = Context::json(o);
            let spec = json.get("spec");
            let kind = image_type(spec).to_string();
            let ns = Context::namespace(o);
            let selector = spec
                .and_then(|s| s.get("selector"))
                .filter(|s| !s.is_null());
            if ns == root_ns {
                types.root = kind;
            } else if let Some(sel) = selector {
                let labels = labels_of(sel.get("matchLabels"));
                types
                    .workloads
                    .insert(Context::full_name(o), (labels, kind));
            } else {
                types.namespaces.insert(ns.to_string(), kind);
            }
        }
        types
    }

    fn for_pod(&self, o: &Loaded) -> String {
        let ns = Context::namespace(o);
        let meta = o.resource.metadata();
        let mut variant = self.mesh.as_str();
        if !self.root.is_empty() {
            variant = self.root.as_str();
        }
        if let Some(t) = self.namespaces.get(ns).filter(|t| !t.is_empty()) {
            variant = t.as_str();
        }
        for (name, (match_labels, t)) in &self.workloads {
            // Istio asks whether the selector holds every pod label, not the converse.
            if name.starts_with(ns) && !t.is_empty() && selects(&meta.labels, match_labels) {
                variant = t.as_str();
            }
        }
        let annotated = meta
            .annotations
            .get(PROXY_CONFIG_ANNOTATION)
            .and_then(|text| weft_api::yaml::parse_stream(text).ok())
            .and_then(|docs| {
                docs.first()
                    .map(|d| image_type(Some(&d.to_json())).to_string())
            })
            .filter(|t| !t.is_empty());
        let variant = annotated.unwrap_or_else(|| variant.to_string());
        if variant == "default" {
            String::new()
        } else {
            variant
        }
    }
}

/// `injection.ImageAnalyzer`.
pub fn proxy_images(ctx: &Context, out: &mut Findings) {
    let injector_images: BTreeMap<&str, String> = ctx
        .objects
        .iter()
        .filter(|o| {
            is_kind(o, "", "ConfigMap") && o.resource.name().starts_with(INJECTOR_CONFIG_MAP)
        })
        .map(|o| (o.resource.name(), injector_proxy_image(&Context::json(o))))
        .collect();
    if injector_images.is_empty() {
        return;
    }

    let mut namespaces: BTreeMap<String, &Loaded> = BTreeMap::new();
    // Namespace -> the revision injecting it.
    let mut injected: BTreeMap<String, String> = BTreeMap::new();
    for o in ctx.objects.iter().filter(|o| is_kind(o, "", "Namespace")) {
        let ns = Context::full_name(o);
        let labels = &o.resource.metadata().labels;
        if let Some(rev) = labels.get(REVISION_LABEL) {
            injected.insert(ns.clone(), rev.clone());
        } else if labels.get(INJECTION_LABEL).is_some_and(|v| v == "enabled") {
            injected.insert(ns.clone(), "default".to_string());
        }
        namespaces.insert(ns, o);
    }

    let image_types = ImageTypes::new(ctx);
    let mut mismatched: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for o in ctx.objects.iter().filter(|o| is_kind(o, "", "Pod")) {
        let ns = Context::namespace(o);
        let Some(revision) = injected.get(ns) else {
            continue;
        };
        // A pod that names its own proxy image is not the injector's business.
        if o.resource
            .metadata()
            .annotations
            .get(PROXY_IMAGE_ANNOTATION)
            .is_some_and(|v| !v.is_empty())
        {
            continue;
        }
        let json = Context::json(o);
        let proxies: Vec<&str> = all_containers(json.get("spec"))
            .filter(|c| str_field(c, "name") == PROXY_CONTAINER)
            .map(|c| str_field(c, "image"))
            .collect();
        if proxies.is_empty() {
            continue;
        }
        let Some(expected) = injector_images.get(injector_config_map(revision).as_str()) else {
            continue;
        };
        let variant_image = format!("{expected}-{}", image_types.for_pod(o));
        for image in proxies {
            if image != expected && image != variant_image {
                mismatched
                    .entry(ns)
                    .or_default()
                    .push(o.resource.name().to_string());
            }
        }
    }
    for (ns, pods) in mismatched {
        if let Some(n) = namespaces.get(ns) {
            out.add(
                n,
                &FieldPath::root(),
                "IST0158",
                &[super::format::go_list(&pods)],
            );
        }
    }
}

fn has_auto_image(spec: Option<&Value>) -> bool {
    spec.and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| str_field(c, "name") == PROXY_CONTAINER && str_field(c, "image") == "auto")
}

/// `injection.ImageAutoAnalyzer`.
pub fn image_auto(ctx: &Context, out: &mut Findings) {
    let configs: Vec<Value> = ctx
        .objects
        .iter()
        .filter(|o| {
            is_kind(
                o,
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration",
            )
        })
        .map(Context::json)
        .collect();
    let webhooks: Vec<&Value> = configs
        .iter()
        .filter_map(|c| c.get("webhooks").and_then(Value::as_array))
        .flatten()
        .filter(|w| str_field(w, "name").ends_with("istio.io"))
        .collect();
    let no_labels = Labels::new();

    for o in ctx.objects.iter().filter(|o| is_kind(o, "", "Pod")) {
        // A pod is past injection already: `auto` left in it never runs.
        if has_auto_image(Context::json(o).get("spec")) {
            let args = ["Pod".to_string(), o.resource.name().to_string()];
            out.add(o, &FieldPath::root(), "IST0147", &args);
        }
    }

    for o in ctx
        .objects
        .iter()
        .filter(|o| is_kind(o, "apps", "Deployment"))
    {
        let json = Context::json(o);
        if !has_auto_image(json.pointer("/spec/template/spec")) {
            continue;
        }
        let ns = match Context::namespace(o) {
            "" => "default",
            ns => ns,
        };
        let ns_labels = ctx
            .objects
            .iter()
            .find(|n| {
                is_kind(n, "", "Namespace")
                    && Context::namespace(n).is_empty()
                    && n.resource.name() == ns
            })
            .map_or(&no_labels, |n| &n.resource.metadata().labels);
        let pod_labels = labels_of(json.pointer("/spec/template/metadata/labels"));
        let injected = webhooks.iter().any(|w| {
            label_selector::matches(w.get("namespaceSelector"), ns_labels)
                && label_selector::matches(w.get("objectSelector"), &pod_labels)
        });
        if !injected {
            let args = ["Deployment".to_string(), o.resource.name().to_string()];
            out.add(o, &FieldPath::root(), "IST0146", &args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(values: &str) -> Value {
        json!({ "data": { "values": values } })
    }

    #[test]
    fn injector_image_comes_from_hub_tag_or_a_full_reference() {
        let short = r#"{"global":{"hub":"h.io/r","tag":"1.2","proxy":{"image":"proxyv2"}}}"#;
        assert_eq!(injector_proxy_image(&cm(short)), "h.io/r/proxyv2:1.2");
        let full = r#"{"global":{"hub":"x","tag":"y","proxy":{"image":"a.io/p:3"}}}"#;
        assert_eq!(injector_proxy_image(&cm(full)), "a.io/p:3");
        assert_eq!(injector_proxy_image(&cm(r#"{"global":{"tag":1}}"#)), "");
        assert_eq!(injector_proxy_image(&cm("not json")), "");
    }
}
