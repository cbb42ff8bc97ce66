//! Envoy's metadata matcher (`envoy.type.matcher.v3.MetadataMatcher`) over a request's dynamic
//! metadata: what filters before RBAC wrote (a validated JWT's payload, from `jwt_authn`),
//! by filter name, each a JSON object as Envoy's `Struct`.

use crate::route::StringMatch;
use serde_json::Value;
use std::collections::BTreeMap;

/// Dynamic metadata of one request: namespace (a filter's name) → its struct.
pub type DynamicMetadata = BTreeMap<String, serde_json::Map<String, Value>>;

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Null,
    Double {
        range: Option<(f64, f64)>,
        exact: Option<f64>,
    },
    String(StringMatch),
    Bool(bool),
    Present(bool),
    /// `list_match.one_of`: a list with an element the matcher takes.
    OneOf(Box<ValueMatch>),
    Or(Vec<ValueMatch>),
}

#[derive(Debug, Clone)]
pub struct MetadataMatch {
    pub filter: String,
    pub path: Vec<String>,
    pub value: ValueMatch,
    pub invert: bool,
}

impl MetadataMatch {
    pub fn matches(&self, metadata: Option<&DynamicMetadata>) -> bool {
        let found = metadata.and_then(|m| m.get(&self.filter)).and_then(|s| {
            let (first, rest) = self.path.split_first()?;
            let mut v = s.get(first)?;
            for key in rest {
                v = v.as_object()?.get(key)?;
            }
            Some(v)
        });
        // No value matcher takes a missing value: not even `present_match: false`.
        found.is_some_and(|v| self.value.matches(v)) != self.invert
    }
}

impl ValueMatch {
    fn matches(&self, v: &Value) -> bool {
        match self {
            ValueMatch::Null => v.is_null(),
            ValueMatch::Double { range, exact } => v.as_f64().is_some_and(|n| {
                exact.is_some_and(|e| n == e)
                    || range.is_some_and(|(start, end)| start <= n && n < end)
            }),
            ValueMatch::String(m) => v.as_str().is_some_and(|s| m.matches(s)),
            ValueMatch::Bool(b) => v.as_bool() == Some(*b),
            // Envoy: a path to a list or struct is no value to be present.
            ValueMatch::Present(p) => *p && !v.is_array() && !v.is_object(),
            ValueMatch::OneOf(m) => v.as_array().is_some_and(|l| l.iter().any(|e| m.matches(e))),
            ValueMatch::Or(all) => all.iter().any(|m| m.matches(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> DynamicMetadata {
        let payload = serde_json::json!({
            "payload": { "iss": "https://issuer", "groups": ["a", "b"], "n": { "deep": true } }
        });
        let mut m = DynamicMetadata::new();
        m.insert(
            "envoy.filters.http.jwt_authn".into(),
            payload.as_object().cloned().unwrap_or_default(),
        );
        m
    }

    fn at(path: &[&str], value: ValueMatch, invert: bool) -> MetadataMatch {
        MetadataMatch {
            filter: "envoy.filters.http.jwt_authn".into(),
            path: path.iter().map(|s| (*s).to_string()).collect(),
            value,
            invert,
        }
    }

    #[test]
    fn paths_values_lists_and_absence() {
        let m = meta();
        let exact = |s: &str| {
            ValueMatch::String(StringMatch::Exact {
                value: s.into(),
                ignore_case: false,
            })
        };
        assert!(at(&["payload", "iss"], exact("https://issuer"), false).matches(Some(&m)));
        assert!(!at(&["payload", "iss"], exact("other"), false).matches(Some(&m)));
        let group = ValueMatch::OneOf(Box::new(exact("b")));
        assert!(at(&["payload", "groups"], group.clone(), false).matches(Some(&m)));
        assert!(!at(&["payload", "iss"], group, false).matches(Some(&m)));
        assert!(at(&["payload", "n", "deep"], ValueMatch::Bool(true), false).matches(Some(&m)));
        // Missing: no match, whatever the matcher; `invert` turns that.
        assert!(!at(&["payload", "sub"], ValueMatch::Present(false), false).matches(Some(&m)));
        assert!(at(&["payload", "sub"], ValueMatch::Present(true), true).matches(Some(&m)));
        assert!(!at(&["payload", "iss"], exact("https://issuer"), false).matches(None));
        assert!(!at(&["payload", "n"], ValueMatch::Present(true), false).matches(Some(&m)));
    }
}
