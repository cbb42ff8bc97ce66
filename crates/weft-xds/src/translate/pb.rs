//! Small constructors for the Envoy messages every part of translation writes, so that the
//! translation reads as what it decides rather than as protobuf plumbing.

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Metadata, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::google::protobuf::{Any, ListValue, Struct, Value, value::Kind};
use std::collections::HashMap;

/// A message packed as its type URL and bytes.
pub fn any<M: prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

pub fn duration(
    d: weft_api::types::common::Duration,
) -> envoy_types::pb::google::protobuf::Duration {
    let n = d.as_nanos();
    envoy_types::pb::google::protobuf::Duration {
        seconds: n.div_euclid(1_000_000_000),
        nanos: i32::try_from(n.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

pub fn millis(ms: i64) -> envoy_types::pb::google::protobuf::Duration {
    duration(weft_api::types::common::Duration::from_millis(ms))
}

/// Over the proxy's ADS stream, as Istio's resources always are.
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

pub fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

pub fn boolean(b: bool) -> Value {
    Value {
        kind: Some(Kind::BoolValue(b)),
    }
}

pub fn list(items: Vec<Value>) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue { values: items })),
    }
}

pub fn object(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value {
        kind: Some(Kind::StructValue(struct_of(fields))),
    }
}

pub fn struct_of(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Struct {
    Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

/// `filter_metadata.istio`: where a resource came from, as istiod records it.
pub fn istio_metadata(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Metadata {
    let mut filter_metadata = HashMap::new();
    if let Some(Kind::StructValue(s)) = object(fields).kind {
        filter_metadata.insert("istio".to_string(), s);
    }
    Metadata {
        filter_metadata,
        ..Default::default()
    }
}

/// Provenance of a resource made from one Istio object.
pub fn provenance(config_path: &str) -> Metadata {
    istio_metadata([("config", string(config_path))])
}

/// An Istio enum value as written in YAML (`ISTIO_MUTUAL`), for messages.
pub fn istio_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from("?"),
    }
}
