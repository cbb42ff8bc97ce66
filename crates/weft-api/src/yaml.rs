//! A YAML/JSON document as a tree of positioned nodes.
//!
//! serde-saphyr does the YAML work (anchors, merge keys, alias-bomb budgets, duplicate keys); we
//! keep its result as an untyped tree where every node remembers its line. Typed resources are
//! then deserialized from that tree by [`crate::de`], which is what lets every later message name
//! the exact line and field path of a value.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

/// Deepest nesting accepted in one document (serde-saphyr's default budget). Kubernetes objects
/// stay far below it; the bound keeps recursive code away from stack exhaustion.
pub const MAX_DEPTH: usize = 64;

const PARSE_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Largest input accepted in one file or stream.
pub const MAX_INPUT_BYTES: usize = 32 * 1024 * 1024;

/// A position in a source file, 1-based. Line 0 means "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// One node of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A mapping entry; the key keeps its own position so that messages about a field point at the
/// line where the field is written, not where its (possibly multi-line) value starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    pub fn new(value: Value, pos: Pos) -> Self {
        Node { value, pos }
    }

    /// The entry for `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name for the node's type, as used in messages.
    pub fn type_name(&self) -> &'static str {
        self.value.type_name()
    }

    /// Converts to JSON, the form used for output and comparisons.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a node tree without positions from JSON (used for values produced in code).
    pub fn from_json(v: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        let value = match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            J::String(s) => Value::Str(s.clone()),
            J::Array(a) => Value::Seq(a.iter().map(Node::from_json).collect()),
            J::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| Entry {
                        key: k.clone(),
                        key_pos: Pos::default(),
                        value: Node::from_json(v),
                    })
                    .collect(),
            ),
        };
        Node::new(value, Pos::default())
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }
}

/// Why a stream could not be read as YAML.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses a stream of YAML documents (JSON is YAML) into positioned trees. Empty documents are
/// dropped, as kubectl drops them.
pub fn parse_stream(input: &str) -> Result<Vec<Node>, SyntaxError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(SyntaxError {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "input is {} bytes, more than the {} bytes accepted",
                input.len(),
                MAX_INPUT_BYTES
            ),
        });
    }
    // The YAML reader recurses per nesting level with large frames; a dedicated thread with a
    // generous stack (reserved, not committed) keeps the depth budget, not the caller's stack
    // size, the limit.
    let parsed = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("yaml-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(s, || {
                // Kubernetes reads YAML through a YAML 1.1 library: 0644 is octal there too.
                let options = serde_saphyr::options! {
                    duplicate_keys: DuplicateKeyPolicy::Error,
                    legacy_octal_numbers: true,
                    with_snippet: false,
                };
                serde_saphyr::from_str_multiple_with_options::<Node, Vec<Node>>(input, options)
                    .map_err(|e| (e.location(), e.to_string()))
            })
            .map(|h| h.join())
    });
    let parsed = match parsed {
        Ok(Ok(r)) => r,
        _ => {
            return Err(SyntaxError {
                pos: Pos { line: 1, col: 1 },
                message: "the YAML reader could not run".to_string(),
            });
        }
    };
    let docs: Vec<Node> = parsed.map_err(|(location, message)| {
        let pos = location
            .map(|l| Pos {
                line: saturate(l.line()),
                col: saturate(l.column()),
            })
            .unwrap_or_default();
        SyntaxError {
            pos,
            message: clean_message(&message),
        }
    })?;
    Ok(docs
        .into_iter()
        .filter(|d| !matches!(d.value, Value::Null))
        .collect())
}

fn saturate(v: impl TryInto<u32>) -> u32 {
    v.try_into().unwrap_or(u32::MAX)
}

/// serde-saphyr's messages may carry a snippet; keep the first line, and say what a breached
/// safety budget means for the user.
fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    if first.contains("budget breached: Depth") {
        return format!("document is nested more than {MAX_DEPTH} levels deep");
    }
    if let Some(rest) = first.strip_prefix("budget breached: ") {
        return format!("input exceeds a safety limit of the YAML reader ({rest})");
    }
    first.to_string()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned: Spanned<Value> = Spanned::deserialize(d)?;
        let loc = spanned.referenced;
        Ok(Node {
            value: spanned.value,
            pos: Pos {
                line: saturate(loc.line()),
                col: saturate(loc.column()),
            },
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        })
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} is out of range")))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(|u| self.visit_u64::<E>(u).unwrap_or(Value::UInt(u)))
            .map_err(|_| E::custom(format!("integer {v} is out of range")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        String::from_utf8(v.to_vec())
            .map(Value::Str)
            .map_err(|_| E::custom("binary values are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let name = match key.value {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                Value::UInt(u) => u.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Null => "null".to_string(),
                Value::Seq(_) | Value::Map(_) => {
                    return Err(de::Error::custom(format!(
                        "line {}: a mapping key must be a scalar, not a {}",
                        key.pos.line,
                        key.value.type_name()
                    )));
                }
            };
            let value = map.next_value::<Node>()?;
            entries.push(Entry {
                key: name,
                key_pos: key.pos,
                value,
            });
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let docs = parse_stream("a: 1\nb:\n  c: [x, y]\n---\n---\nd: \"80\"\n").unwrap();
        assert_eq!(docs.len(), 2, "the empty middle document is dropped");
        let b = docs[0].entry("b").unwrap();
        assert_eq!(b.key_pos.line, 2);
        assert_eq!(b.value.get("c").unwrap().pos.line, 3);
        assert_eq!(docs[1].get("d").unwrap().value, Value::Str("80".into()));
        assert_eq!(docs[1].entry("d").unwrap().key_pos.line, 6);
        assert_eq!(docs[0].get("a").unwrap().value, Value::Int(1));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse_stream("metadata:\nname: x\n  labels:\n    a: b\n").unwrap_err();
        assert_eq!(err.pos.line, 3, "{err:?}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = parse_stream("a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{err:?}");
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_stream(&deep).is_err());
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 5),
            "]".repeat(MAX_DEPTH + 5)
        );
        let err = parse_stream(&deep).unwrap_err();
        assert!(err.message.contains("nested"), "{err:?}");
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse_stream(&s).is_err());
    }

    #[test]
    fn json_is_accepted() {
        let docs =
            parse_stream(r#"{"kind": "Service", "spec": {"ports": [{"port": 80}]}}"#).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].get("kind").unwrap().as_str(), Some("Service"));
    }
}
