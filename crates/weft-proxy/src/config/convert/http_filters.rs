//! `http_filters` → the connection manager's filter chain, and `typed_per_filter_config` → a
//! route's, virtual host's or route table's filter overrides, each by the factory registered for
//! its config type (`http::filter::FACTORIES`), as Envoy finds factories by type.

use super::{Result, decode_any, type_name};
use crate::config::FieldError;
use crate::http::filter::{
    BuildContext, FilterChain, FilterEntry, FilterOverride, FilterOverrides, factory_for,
};
use crate::server::StatsStore;
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

const FILTER_CONFIG: &str = "envoy.config.route.v3.FilterConfig";

/// The filters of a chain, the router excluded. An optional filter of a type the proxy does not
/// know is left out, and said once per process; a required one is refused, naming it.
pub(super) fn filter_chain(
    filters: &[HttpFilter],
    path: &str,
    stat_prefix: &str,
    store: &StatsStore,
    inbound: bool,
) -> Result<FilterChain> {
    let mut chain = FilterChain::default();
    for (i, f) in filters.iter().enumerate() {
        let fpath = format!("{path}[{i}]");
        let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            return Err(FieldError::new(
                format!("{fpath}.typed_config"),
                format!("HTTP filter {} needs a typed_config", f.name),
            ));
        };
        let inner = typed_struct_type(any);
        let type_of = inner.as_deref().unwrap_or(type_name(any));
        let Some(factory) = factory_for(type_of).filter(|fa| fa.type_name == type_of) else {
            if f.is_optional {
                skipped_once(&f.name, type_of);
                continue;
            }
            return Err(FieldError::new(
                fpath,
                format!(
                    "HTTP filter {} ({type_of}) is not supported by the Weft proxy",
                    f.name
                ),
            ));
        };
        let cx = BuildContext {
            path: &format!("{fpath}.typed_config"),
            stat_prefix,
            store,
            inbound,
        };
        let unwrapped = match &inner {
            Some(_) => typed_struct_message(any, cx.path)?,
            None => None,
        };
        chain.filters.push(FilterEntry {
            name: f.name.clone(),
            filter: (factory.build)(unwrapped.as_ref().unwrap_or(any), &cx)?,
            disabled: f.disabled,
        });
    }
    chain.completes = chain.filters.iter().any(|f| f.filter.completes());
    if chain.filters.len() > crate::http::filter::MAX_FILTERS {
        return Err(FieldError::new(
            path,
            format!(
                "more than {} HTTP filters are not supported by the Weft proxy",
                crate::http::filter::MAX_FILTERS
            ),
        ));
    }
    Ok(chain)
}

/// A `typed_per_filter_config` map: each entry is a filter's config, or a `FilterConfig` that
/// wraps one (or only says `disabled`), with Envoy's rules for each.
pub(super) fn filter_overrides(
    configs: &HashMap<String, Any>,
    path: &str,
    store: &StatsStore,
) -> Result<FilterOverrides> {
    let mut out = FilterOverrides::new();
    for (name, any) in configs {
        let kpath = format!("{path}[{name}]");
        let entry = if type_name(any) == FILTER_CONFIG {
            let fc: FilterConfig = decode_any(any, &kpath)?;
            if fc.disabled {
                FilterOverride {
                    disabled: true,
                    config: None,
                }
            } else {
                let Some(inner) = &fc.config else {
                    return Err(FieldError::new(
                        format!("{kpath}.config"),
                        format!("empty route/virtual host per filter configuration for {name}"),
                    ));
                };
                let config = if inner.type_url.is_empty() {
                    None
                } else {
                    route_config(
                        name,
                        inner,
                        fc.is_optional,
                        &format!("{kpath}.config"),
                        store,
                    )?
                };
                FilterOverride {
                    disabled: false,
                    config,
                }
            }
        } else {
            FilterOverride {
                disabled: false,
                config: route_config(name, any, false, &kpath, store)?,
            }
        };
        out.insert(name.clone(), entry);
    }
    Ok(out)
}

/// One per-route config, by its type's factory. `None` for an optional one the proxy does not
/// know.
fn route_config(
    name: &str,
    any: &Any,
    optional: bool,
    path: &str,
    store: &StatsStore,
) -> Result<Option<Arc<crate::http::filter::RouteConfig>>> {
    let Some(factory) = factory_for(type_name(any)) else {
        if optional {
            skipped_once(name, type_name(any));
            return Ok(None);
        }
        return Err(FieldError::new(
            path,
            format!(
                "per-filter config of type {} is not supported by the Weft proxy",
                type_name(any)
            ),
        ));
    };
    let cx = BuildContext {
        path,
        stat_prefix: "",
        store,
        inbound: false,
    };
    Ok(Some((factory.build_per_route)(any, &cx)?))
}

/// A `TypedStruct` as the message it stands for, when the proxy knows that message's schema
/// (`stats.PluginConfig`); `None` leaves it to the filter (the metadata exchange reads its
/// `Struct` itself).
fn typed_struct_message(any: &Any, path: &str) -> Result<Option<Any>> {
    use prost::Message;
    let ts = <weft_proto::TypedStruct as Message>::decode(any.value.as_slice())
        .map_err(|e| FieldError::new(path, format!("cannot decode TypedStruct: {e}")))?;
    let name = ts.type_url.rsplit('/').next().unwrap_or_default();
    let Some(descriptor) = crate::config::pool().get_message_by_name(name) else {
        return Ok(None);
    };
    let json = match ts.value {
        Some(v) => serde_json::Value::Object(
            v.fields
                .into_iter()
                .map(|(k, v)| (k, crate::config::convert::struct_value_json(&v)))
                .collect(),
        ),
        None => serde_json::json!({}),
    };
    let message = prost_reflect::DynamicMessage::deserialize(descriptor, json)
        .map_err(|e| FieldError::new(format!("{path}.value"), e.to_string()))?;
    Ok(Some(Any {
        type_url: ts.type_url.clone(),
        value: message.encode_to_vec(),
    }))
}

/// The type a `TypedStruct` config stands for (its `type_url`'s message name), as Envoy finds
/// the factory of a `TypedStruct` by it.
fn typed_struct_type(any: &Any) -> Option<String> {
    let name = type_name(any);
    if name != "udpa.type.v1.TypedStruct" && name != "xds.type.v3.TypedStruct" {
        return None;
    }
    let ts = <weft_proto::TypedStruct as prost::Message>::decode(any.value.as_slice()).ok()?;
    Some(
        ts.type_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Says once per process that an optional filter (or per-filter config) is left out.
fn skipped_once(name: &str, type_name: &str) {
    static SAID: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let key = format!("{name} ({type_name})");
    let first = SAID
        .get_or_init(Default::default)
        .lock()
        .map(|mut said| said.insert(key.clone()))
        .unwrap_or(true);
    if first {
        tracing::warn!(
            filter = %key,
            "optional HTTP filter is not supported by the Weft proxy; it is skipped"
        );
    }
}
