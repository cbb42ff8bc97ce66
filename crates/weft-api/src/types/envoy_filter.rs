//! networking.istio.io EnvoyFilter: parsed and carried so that it can be reported by name. Its
//! patches are raw Envoy config, kept as JSON.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{LabelSelector, PolicyTargetReference};

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyFilter {
    pub workload_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    pub priority: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplyTo {
    Invalid,
    Listener,
    FilterChain,
    NetworkFilter,
    HttpFilter,
    RouteConfiguration,
    VirtualHost,
    HttpRoute,
    Cluster,
    ExtensionConfig,
    Bootstrap,
    ListenerFilter,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyConfigObjectPatch {
    pub apply_to: Option<ApplyTo>,
    #[serde(rename = "match")]
    pub match_: Option<serde_json::Value>,
    pub patch: Option<serde_json::Value>,
}
