//! From `envoy-types` protos to the proxy's runtime types. Fields are already known to be
//! supported (`supported::check`); what is left to reject here are values: a bad regex, a
//! missing cluster name, a listener without an address.

mod access_log;
mod cluster;
mod cors;
mod fault;
mod headers;
mod http_filters;
mod listener;
mod local_ratelimit;
mod rbac;
mod re2;
mod resilience;
mod retry;
mod route;
mod tls;
mod tracing;

pub use cluster::{cluster, ip_socket_address, load_assignment};
pub(crate) use headers::string_match as headers_string_match;
pub use listener::listener;
pub use rbac::engine as rbac_engine;
pub use rbac::metadata as rbac_metadata;
pub use route::route_configuration;
pub use tls::secret;

pub(crate) use cors::cors_policy;
pub(crate) use fault::fault_from_any;
pub(crate) use local_ratelimit::local_rate_limit_from_any;

use super::FieldError;
use crate::server::{Snapshot, StatsStore};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use re2::re2_limits;
use std::collections::HashMap;
use std::time::Duration;

pub(crate) type Result<T> = std::result::Result<T, FieldError>;

pub(crate) fn duration(d: Option<&PbDuration>) -> Option<Duration> {
    d.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

/// A duration that may be zero but not below.
pub(crate) fn not_negative(d: Option<&PbDuration>, field: String) -> Result<Option<Duration>> {
    match d {
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(FieldError::new(field, "must not be negative"))
        }
        _ => Ok(duration(d)),
    }
}

/// A duration that must be above zero when set.
pub(crate) fn positive(d: Option<&PbDuration>, field: String) -> Result<Option<Duration>> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) => {
            Err(FieldError::new(field, "must be greater than zero"))
        }
        Some(d) => Ok(duration(Some(d))),
    }
}

/// A duration that must be set, and above zero.
pub(crate) fn required_positive(d: Option<&PbDuration>, field: String) -> Result<Duration> {
    positive(d, field.clone())?.ok_or_else(|| FieldError::new(field, "is required"))
}

/// Envoy's wait for the first response of a subscription before it gives up warming.
pub(crate) const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// A config source's `initial_fetch_timeout`: 15 s when unset, no limit when 0.
pub(crate) fn initial_fetch_timeout(
    source: &envoy_types::pb::envoy::config::core::v3::ConfigSource,
) -> Option<Duration> {
    match duration(source.initial_fetch_timeout.as_ref()) {
        None => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    }
}

pub(crate) fn decode_any<M: prost::Message + Default>(any: &Any, path: &str) -> Result<M> {
    M::decode(any.value.as_slice())
        .map_err(|e| FieldError::new(path, format!("cannot decode {}: {e}", any.type_url)))
}

pub(crate) fn type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or(&any.type_url)
}

/// Regexes in Envoy config are RE2 and must match the whole input.
pub(crate) fn full_regex(re: &str, path: &str) -> Result<regex::Regex> {
    re2_limits(re, path)?;
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| FieldError::new(path, format!("invalid regex: {e}")))
}

pub(crate) fn regex(re: &str, path: &str) -> Result<regex::Regex> {
    re2_limits(re, path)?;
    regex::Regex::new(re).map_err(|e| FieldError::new(path, format!("invalid regex: {e}")))
}

/// The snapshot a static bootstrap describes.
/// Whether a config source is `ads`, the only one LDS, CDS, RDS and EDS take.
pub fn is_ads(source: &envoy_types::pb::envoy::config::core::v3::ConfigSource) -> bool {
    matches!(
        source.config_source_specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(_)
        )
    )
}

pub fn static_snapshot(
    bootstrap: &Bootstrap,
    store: &StatsStore,
) -> std::result::Result<Snapshot, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut snapshot = Snapshot::default();
    let Some(resources) = &bootstrap.static_resources else {
        return Ok(snapshot);
    };
    let mut seen = HashMap::new();
    for (i, c) in resources.clusters.iter().enumerate() {
        let path = format!("static_resources.clusters[{i}]");
        match cluster(c, &path) {
            Ok(config) => {
                if seen.insert(config.name.clone(), i).is_some() {
                    errors.push(FieldError::new(
                        format!("{path}.name"),
                        format!("duplicate cluster {}", config.name),
                    ));
                }
                snapshot
                    .clusters
                    .insert(config.name.clone(), crate::cluster::Cluster::new(config));
            }
            Err(e) => errors.push(e),
        }
    }
    let mut names = HashMap::new();
    for (i, l) in resources.listeners.iter().enumerate() {
        let path = format!("static_resources.listeners[{i}]");
        match listener(l, &path, store) {
            Ok(l) => {
                if names.insert(l.name.clone(), i).is_some() {
                    errors.push(FieldError::new(
                        format!("{path}.name"),
                        format!("duplicate listener {}", l.name),
                    ));
                }
                snapshot.listeners.push(std::sync::Arc::new(l));
            }
            Err(e) => errors.push(e),
        }
    }
    check_route_clusters(&snapshot, &mut errors);
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(errors)
    }
}

/// Envoy refuses a static route table that names a cluster it does not have, unless the table
/// says `validate_clusters: false`.
fn check_route_clusters(snapshot: &Snapshot, errors: &mut Vec<FieldError>) {
    for (l, listener) in snapshot.listeners.iter().enumerate() {
        for (c, chain) in listener.filter_chains.iter().enumerate() {
            let crate::listener::NetworkFilter::Http(hcm) = &chain.filter else {
                continue;
            };
            let crate::http::RouteSource::Static(route_config) = &hcm.route else {
                continue;
            };
            if !route_config.validate_clusters {
                continue;
            }
            for (v, r, name) in route_config.named_clusters() {
                if !snapshot.clusters.contains_key(name) {
                    errors.push(FieldError::new(
                        format!(
                            "static_resources.listeners[{l}].filter_chains[{c}].filters[0].typed_config.route_config.virtual_hosts[{v}].routes[{r}].route"
                        ),
                        format!("unknown cluster '{name}'"),
                    ));
                }
            }
        }
    }
}

/// A `google.protobuf.Value` as JSON.
pub(crate) fn struct_value_json(v: &envoy_types::pb::google::protobuf::Value) -> serde_json::Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), struct_value_json(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(struct_value_json).collect())
        }
    }
}
