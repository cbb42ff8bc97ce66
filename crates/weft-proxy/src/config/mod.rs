//! Envoy v3 configuration in, Weft's own runtime types out.
//!
//! Config arrives as protobuf (xDS) or as the proto3 JSON/YAML form of a bootstrap. Both are turned
//! into a `prost_reflect::DynamicMessage`, checked against the list of fields the proxy implements
//! (`supported`), decoded into `envoy-types` structs and converted (`convert`) into the types the
//! data path reads. All of it happens off the hot path.

pub mod bootstrap;
pub mod convert;
pub mod supported;

use prost_reflect::DescriptorPool;
use std::fmt;
use std::sync::OnceLock;

/// The Envoy protos the proxy understands, compiled by `scripts/gen-envoy-descriptors.sh`.
static DESCRIPTORS: &[u8] = include_bytes!("../../descriptors/envoy.bin");

/// The descriptor pool, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes are a build artifact checked in with the source, not input; the
        // `descriptors_decode` test proves they decode.
        #[allow(clippy::expect_used)]
        let mut pool =
            DescriptorPool::decode(DESCRIPTORS).expect("embedded Envoy descriptors decode");
        // Istio's own extension messages, written in `weft-proto`: as fixed as the bytes above.
        #[allow(clippy::expect_used)]
        pool.add_file_descriptor_protos(weft_proto::descriptors())
            .expect("Istio extension descriptors fit Envoy's");
        pool
    })
}

/// One problem with one field of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Proto field path from the root of what was loaded, e.g.
    /// `static_resources.clusters[0].lb_subset_config`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Syntax { path: String, reason: String },
    #[error("{}", list(origin, errors))]
    Fields {
        origin: String,
        errors: Vec<FieldError>,
    },
}

fn list(origin: &str, errors: &[FieldError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if origin.is_empty() {
            out.push_str(&e.to_string());
        } else {
            out.push_str(&format!("{origin}: {e}"));
        }
    }
    out
}

/// Joins a parent path and a child segment the way Envoy prints field paths.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// An encoded Envoy message of type `type_name` (`envoy.config.listener.v3.Listener`) in
/// Envoy's JSON form, with proto field names as `/config_dump` prints them.
pub fn to_json(type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    use prost_reflect::{DynamicMessage, SerializeOptions};
    let descriptor = pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| format!("unknown message {type_name}"))?;
    let message = DynamicMessage::decode(descriptor, bytes).map_err(|e| e.to_string())?;
    message
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().use_proto_field_name(true),
        )
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn descriptors_decode() {
        assert!(
            super::pool()
                .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
                .is_some()
        );
    }
}
