//! Reading a bootstrap: the file `envoy -c` accepts (YAML or JSON, proto3 JSON mapping).

use super::{ConfigError, FieldError, pool, supported};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage};

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

/// A bootstrap as read: the typed form the proxy converts, and the reflective one `/config_dump`
/// prints.
#[derive(Debug, Clone)]
pub struct LoadedBootstrap {
    pub bootstrap: Bootstrap,
    pub dynamic: DynamicMessage,
}

/// Reads and checks a bootstrap file; errors name the file.
pub fn load_file(path: &str) -> Result<LoadedBootstrap, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_string(),
        source,
    })?;
    parse(path, &text)
}

/// Parses bootstrap text (YAML, of which JSON is a subset) and checks every field is implemented.
pub fn parse(origin: &str, text: &str) -> Result<LoadedBootstrap, ConfigError> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_string(),
            reason: e.to_string(),
        })?
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_string(),
            reason: e.to_string(),
        })?
    };
    let dynamic = from_json(BOOTSTRAP, value).map_err(|e| ConfigError::Fields {
        origin: origin.to_string(),
        errors: vec![e],
    })?;
    let errors = supported::check(&dynamic, "");
    if !errors.is_empty() {
        return Err(ConfigError::Fields {
            origin: origin.to_string(),
            errors,
        });
    }
    let bootstrap =
        Bootstrap::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| ConfigError::Fields {
            origin: origin.to_string(),
            errors: vec![FieldError::new("", e.to_string())],
        })?;
    Ok(LoadedBootstrap { bootstrap, dynamic })
}

/// Proto3 JSON mapping into a message of the descriptor pool, with the field path of any error.
pub fn from_json(message: &str, value: serde_json::Value) -> Result<DynamicMessage, FieldError> {
    let descriptor = pool()
        .get_message_by_name(message)
        .ok_or_else(|| FieldError::new("", format!("{message} is not a known message")))?;
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(value, &mut track);
    // Envoy rejects unknown fields in a bootstrap too.
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(descriptor, deserializer, &options).map_err(|e| {
        let path = track.path().to_string();
        let path = path.trim_start_matches('?');
        let reason = e.to_string();
        // Put the unknown field in the path, where a reader looks for it.
        match reason
            .strip_prefix("unrecognized field name '")
            .and_then(|r| r.strip_suffix('\''))
        {
            Some(field) => FieldError::new(super::join(path, field), "unknown field"),
            None => FieldError::new(path, reason),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse("b.yaml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn unknown_fields_name_their_path() {
        assert_eq!(
            errors("static_resources:\n  clusters:\n  - name: a\n    bogus: 1\n"),
            ["b.yaml: static_resources.clusters[0].bogus: unknown field"]
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(
            errors("static_resources:\n  clusters:\n  - name: a\n    connect_timeout: abc\n"),
            ["b.yaml: static_resources.clusters[0].connect_timeout: failed to parse duration"]
        );
    }

    #[test]
    fn unimplemented_fields_and_values_are_errors_not_ignored() {
        assert_eq!(
            errors(
                "static_resources:\n  clusters:\n  - name: a\n    lb_subset_config: {}\n    lb_policy: LOAD_BALANCING_POLICY_CONFIG\n"
            ),
            [
                "b.yaml: static_resources.clusters[0].lb_policy: value LOAD_BALANCING_POLICY_CONFIG is not supported by the Weft proxy (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV, CLUSTER_PROVIDED)",
                "b.yaml: static_resources.clusters[0].lb_subset_config: not supported by the Weft proxy",
            ]
        );
    }

    #[test]
    fn fields_inside_typed_config_are_checked_too() {
        let text = "static_resources:\n  listeners:\n  - name: a\n    filter_chains:\n    - filters:\n      - name: x\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          cluster: c\n          max_connect_attempts: 3\n";
        assert_eq!(
            errors(text),
            [
                "b.yaml: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.max_connect_attempts: not supported by the Weft proxy"
            ]
        );
    }

    #[test]
    fn unknown_extension_types_are_named() {
        let text = "static_resources:\n  listeners:\n  - name: a\n    filter_chains:\n    - filters:\n      - name: x\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy\n";
        let e = errors(text);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "b.yaml: static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
            ),
            "{e:?}"
        );
    }
}
