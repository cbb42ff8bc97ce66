//! Istio's `MeshConfig`: the mesh-wide settings istiod reads from the `mesh` key of the `istio`
//! ConfigMap (or from `--meshConfig`). Every field Weft reads is typed here with Istio's default;
//! the rest is kept so that it can be reported instead of silently dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::Duration;
use super::sidecar::OutboundTrafficPolicyMode;

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    pub root_namespace: Option<String>,
    pub trust_domain: Option<String>,
    /// Other trust domains whose workloads count as this mesh's (AuthorizationPolicy
    /// principals of `cluster.local` or of one of these stand for every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domain_aliases: Vec<String>,
    pub outbound_traffic_policy: Option<MeshOutboundTrafficPolicy>,
    pub connect_timeout: Option<Duration>,
    /// How often DNS clusters resolve again (istiod's `dns_refresh_rate`, 60 s by default).
    pub dns_refresh_rate: Option<Duration>,
    pub access_log_file: Option<String>,
    pub access_log_format: Option<String>,
    pub access_log_encoding: Option<AccessLogEncoding>,
    pub enable_tracing: Option<bool>,
    pub enable_auto_mtls: Option<bool>,
    pub default_config: Option<ProxyConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_service_export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_virtual_service_export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_destination_rule_export_to: Vec<String>,
    /// The mesh-wide locality load balancing a DestinationRule without its own uses.
    pub locality_lb_setting: Option<super::destination_rule::LocalityLbSetting>,
    /// Services the mesh calls: external authorizers of CUSTOM AuthorizationPolicies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<ExtensionProvider>,
    /// Fields Weft does not read.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MeshOutboundTrafficPolicy {
    pub mode: Option<OutboundTrafficPolicyMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    Text,
    Json,
}

/// `defaultConfig`: the settings each proxy starts with.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    pub discovery_address: Option<String>,
    pub proxy_admin_port: Option<i64>,
    pub status_port: Option<i64>,
    pub concurrency: Option<i64>,
    pub drain_duration: Option<Duration>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// One of `extensionProviders`: its name, and the one kind of provider it is.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
    pub envoy_ext_authz_http: Option<ExtAuthzProvider>,
    pub envoy_ext_authz_grpc: Option<ExtAuthzProvider>,
    /// The other kinds (tracing, logging, metrics providers), kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `envoyExtAuthzHttp` and `envoyExtAuthzGrpc` (the HTTP-only fields unset for gRPC).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzProvider {
    #[serde(default)]
    pub service: String,
    pub port: Option<u32>,
    pub timeout: Option<Duration>,
    pub path_prefix: Option<String>,
    pub fail_open: Option<bool>,
    pub status_on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Fields Weft does not read (`includeRequestBodyInCheck`...).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A MeshConfig with Istio's defaults filled in, as translation reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    pub root_namespace: String,
    pub trust_domain: String,
    pub trust_domain_aliases: Vec<String>,
    pub outbound_traffic_policy: OutboundTrafficPolicyMode,
    pub connect_timeout: Duration,
    pub dns_refresh_rate: Duration,
    /// Empty: no access log (Istio's default).
    pub access_log_file: String,
    pub access_log_format: Option<String>,
    pub access_log_encoding: AccessLogEncoding,
    pub enable_tracing: bool,
    pub enable_auto_mtls: bool,
    pub default_service_export_to: Vec<String>,
    pub default_virtual_service_export_to: Vec<String>,
    pub default_destination_rule_export_to: Vec<String>,
    /// `localityLbSetting`: on (`enabled: true`) unless the mesh config says otherwise, as
    /// Istio's default mesh config has it.
    pub locality_lb_setting: super::destination_rule::LocalityLbSetting,
    pub extension_providers: Vec<ExtensionProvider>,
    /// `defaultProviders.metrics`; `[prometheus]` when unset, as Istio's install sets it.
    pub default_metrics_providers: Vec<String>,
    /// `defaultProviders.accessLogging` (none by default).
    pub default_access_log_providers: Vec<String>,
    /// `defaultProviders.tracing` (none by default).
    pub default_tracing_providers: Vec<String>,
    /// `defaultConfig.tracing.sampling`, a percentage.
    pub default_tracing_sampling: Option<f64>,
    /// `meshId`.
    pub mesh_id: Option<String>,
}

impl Default for Mesh {
    fn default() -> Self {
        MeshConfig::default().resolve()
    }
}

impl MeshConfig {
    /// The `mesh` text of an `istio` ConfigMap, or a file of the same YAML.
    pub fn from_yaml(text: &str) -> Result<MeshConfig, String> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// `defaultProviders.<kind>` (`metrics`, `tracing`, `accessLogging`), when it is set: the
    /// names of the providers, kept among the fields Weft does not type.
    fn default_providers(&self, kind: &str) -> Option<Vec<String>> {
        let list = self.other.get("defaultProviders")?.get(kind)?.as_array()?;
        Some(
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        )
    }

    /// Istio's defaults where a field is unset.
    pub fn resolve(&self) -> Mesh {
        let export = |v: &Vec<String>| {
            if v.is_empty() {
                vec!["*".to_string()]
            } else {
                v.clone()
            }
        };
        Mesh {
            root_namespace: self
                .root_namespace
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "istio-system".into()),
            trust_domain: self
                .trust_domain
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "cluster.local".into()),
            trust_domain_aliases: self.trust_domain_aliases.clone(),
            outbound_traffic_policy: self
                .outbound_traffic_policy
                .as_ref()
                .and_then(|p| p.mode)
                .unwrap_or(OutboundTrafficPolicyMode::AllowAny),
            connect_timeout: self.connect_timeout.unwrap_or(Duration::from_secs(10)),
            dns_refresh_rate: self.dns_refresh_rate.unwrap_or(Duration::from_secs(60)),
            access_log_file: self.access_log_file.clone().unwrap_or_default(),
            access_log_format: self.access_log_format.clone().filter(|s| !s.is_empty()),
            access_log_encoding: self.access_log_encoding.unwrap_or(AccessLogEncoding::Text),
            enable_tracing: self.enable_tracing.unwrap_or(true),
            enable_auto_mtls: self.enable_auto_mtls.unwrap_or(true),
            default_service_export_to: export(&self.default_service_export_to),
            default_virtual_service_export_to: export(&self.default_virtual_service_export_to),
            default_destination_rule_export_to: export(&self.default_destination_rule_export_to),
            locality_lb_setting: self.locality_lb_setting.clone().unwrap_or(
                super::destination_rule::LocalityLbSetting {
                    enabled: Some(true),
                    ..Default::default()
                },
            ),
            extension_providers: self.extension_providers.clone(),
            default_access_log_providers: self
                .default_providers("accessLogging")
                .unwrap_or_default(),
            default_tracing_providers: self.default_providers("tracing").unwrap_or_default(),
            default_tracing_sampling: self
                .default_config
                .as_ref()
                .and_then(|c| c.other.get("tracing"))
                .and_then(|t| t.get("sampling"))
                .and_then(serde_json::Value::as_f64),
            mesh_id: self
                .other
                .get("meshId")
                .and_then(|m| m.as_str())
                .map(str::to_string),
            default_metrics_providers: self
                .default_providers("metrics")
                .unwrap_or_else(|| vec!["prometheus".to_string()]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_take_istios_defaults() {
        let mesh = MeshConfig::from_yaml("").unwrap().resolve();
        assert_eq!(mesh.root_namespace, "istio-system");
        assert_eq!(mesh.trust_domain, "cluster.local");
        assert_eq!(
            mesh.outbound_traffic_policy,
            OutboundTrafficPolicyMode::AllowAny
        );
        assert_eq!(mesh.connect_timeout, Duration::from_secs(10));
        assert!(mesh.enable_tracing);
        assert_eq!(mesh.default_virtual_service_export_to, ["*"]);
    }

    #[test]
    fn set_fields_win_and_unknown_ones_are_kept() {
        let mesh = MeshConfig::from_yaml(
            "rootNamespace: mesh-root\noutboundTrafficPolicy: { mode: REGISTRY_ONLY }\n\
             accessLogFile: /dev/stdout\nconnectTimeout: 2s\ningressClass: istio\n",
        )
        .unwrap();
        assert_eq!(
            mesh.other.get("ingressClass"),
            Some(&serde_json::json!("istio"))
        );
        let mesh = mesh.resolve();
        assert_eq!(mesh.root_namespace, "mesh-root");
        assert_eq!(
            mesh.outbound_traffic_policy,
            OutboundTrafficPolicyMode::RegistryOnly
        );
        assert_eq!(mesh.access_log_file, "/dev/stdout");
        assert_eq!(mesh.connect_timeout, Duration::from_secs(2));
        assert!(MeshConfig::from_yaml("connectTimeout: ten").is_err());
    }
}
