//! Typed deserialization from a positioned [`Node`] tree.
//!
//! A serde `Deserializer` of our own, rather than deserializing straight from YAML text, gives
//! three things the user sees: every type error names the field path and line; fields a type does
//! not know are collected (a warning, or an error with `--strict`) instead of silently dropped;
//! and scalars are read the way Kubernetes reads YAML (an unquoted `1` is accepted where a string
//! is expected, `null` means "absent").

use std::cell::RefCell;
use std::fmt::{self, Display};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::path::FieldPath;
use crate::yaml::{Entry, Node, Pos, Value};

/// A value that could not be read into its type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DeError {
    pub path: Option<FieldPath>,
    pub pos: Pos,
    pub message: String,
}

impl DeError {
    fn at(mut self, path: &FieldPath, pos: Pos) -> Self {
        if self.path.is_none() {
            self.path = Some(path.clone());
            self.pos = pos;
        }
        self
    }

    fn new(path: &FieldPath, pos: Pos, message: impl Into<String>) -> Self {
        DeError {
            path: Some(path.clone()),
            pos,
            message: message.into(),
        }
    }
}

impl de::Error for DeError {
    fn custom<T: Display>(msg: T) -> Self {
        DeError {
            path: None,
            pos: Pos::default(),
            message: msg.to_string(),
        }
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        let found = match unexp {
            de::Unexpected::Map => "a mapping".to_string(),
            de::Unexpected::Seq => "a list".to_string(),
            de::Unexpected::Unit => "null".to_string(),
            other => other.to_string(),
        };
        Self::custom(format_args!(
            "expected {}, found {found}",
            plain_expected(&exp.to_string())
        ))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid value {}, expected {}",
            unexp,
            plain_expected(&exp.to_string())
        ))
    }
}

/// serde describes Rust types ("u32", "struct Foo"); users wrote YAML.
fn plain_expected(exp: &str) -> String {
    match exp {
        "i8" | "i16" | "i32" | "i64" | "i128" => "an integer".into(),
        "u8" | "u16" | "u32" | "u64" | "u128" => "a non-negative integer".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "a string" => exp.into(),
        "a sequence" => "a list".into(),
        _ if exp.starts_with("struct ") || exp.starts_with("a map") => "a mapping".into(),
        _ => exp.into(),
    }
}

/// A field that the target type does not have.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownField {
    pub path: FieldPath,
    pub pos: Pos,
}

/// What one deserialization run collected besides its result.
#[derive(Default, Debug)]
pub struct Context {
    unknown: RefCell<Vec<UnknownField>>,
}

impl Context {
    pub fn into_unknown(self) -> Vec<UnknownField> {
        self.unknown.into_inner()
    }
}

/// Deserializes `node` (found at `path` in its document) into `T`.
pub fn from_node<T: DeserializeOwned>(
    node: &Node,
    path: FieldPath,
    ctx: &Context,
) -> Result<T, DeError> {
    let pos = node.pos;
    T::deserialize(NodeDe {
        node,
        path: path.clone(),
        ctx,
    })
    .map_err(|e| e.at(&path, pos))
}

struct NodeDe<'a> {
    node: &'a Node,
    path: FieldPath,
    ctx: &'a Context,
}

impl<'a> NodeDe<'a> {
    fn unexpected(&self) -> de::Unexpected<'a> {
        match &self.node.value {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Int(i) => de::Unexpected::Signed(*i),
            Value::UInt(u) => de::Unexpected::Unsigned(*u),
            Value::Float(f) => de::Unexpected::Float(*f),
            Value::Str(s) => de::Unexpected::Str(s),
            Value::Seq(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        }
    }

    fn wrong_type<T>(&self, exp: &dyn de::Expected) -> Result<T, DeError> {
        Err(<DeError as de::Error>::invalid_type(self.unexpected(), exp)
            .at(&self.path, self.node.pos))
    }

    fn finish<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(&self.path, self.node.pos))
    }

    fn map_access(
        &self,
        entries: &'a [Entry],
        fields: Option<&'static [&'static str]>,
    ) -> MapDe<'a> {
        MapDe {
            entries,
            next: 0,
            fields,
            path: self.path.clone(),
            ctx: self.ctx,
            pending: None,
        }
    }
}

const EMPTY_ENTRIES: &[Entry] = &[];
const EMPTY_NODES: &[Node] = &[];

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::UInt(u) => v.visit_u64(*u),
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_str(s),
            Value::Seq(items) => v.visit_seq(SeqDe::new(items, &self)),
            Value::Map(entries) => v.visit_map(self.map_access(entries, None)),
        };
        self.finish(r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => v.visit_none(),
            _ => {
                let (path, pos) = (self.path.clone(), self.node.pos);
                v.visit_some(self).map_err(|e| e.at(&path, pos))
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Bool(b) => self.finish(v.visit_bool(b)),
            _ => self.wrong_type(&v),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // Kubernetes' YAML reader turns an unquoted scalar into a string where a string is
        // expected (`version: 1`, `sidecar.istio.io/inject: false`).
        let r = match &self.node.value {
            Value::Str(s) => v.visit_str(s),
            Value::Int(i) => v.visit_string(i.to_string()),
            Value::UInt(u) => v.visit_string(u.to_string()),
            Value::Float(f) => v.visit_string(f.to_string()),
            Value::Bool(b) => v.visit_string(b.to_string()),
            _ => return self.wrong_type(&v),
        };
        self.finish(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match self.node.value {
            Value::Int(i) => v.visit_i64(i),
            Value::UInt(u) => v.visit_u64(u),
            _ => return self.wrong_type(&v),
        };
        self.finish(r)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match self.node.value {
            Value::Int(i) => v.visit_f64(i as f64),
            Value::UInt(u) => v.visit_f64(u as f64),
            Value::Float(f) => v.visit_f64(f),
            _ => return self.wrong_type(&v),
        };
        self.finish(r)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => self.finish(v.visit_unit()),
            _ => self.wrong_type(&v),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        let (path, pos) = (self.path.clone(), self.node.pos);
        v.visit_newtype_struct(self).map_err(|e| e.at(&path, pos))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // JSON `null` for a list means an empty list in Kubernetes.
        let r = match &self.node.value {
            Value::Seq(items) => v.visit_seq(SeqDe::new(items, &self)),
            Value::Null => v.visit_seq(SeqDe::new(EMPTY_NODES, &self)),
            _ => return self.wrong_type(&v),
        };
        self.finish(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Map(entries) => v.visit_map(self.map_access(entries, None)),
            Value::Null => v.visit_map(self.map_access(EMPTY_ENTRIES, None)),
            _ => return self.wrong_type(&v),
        };
        self.finish(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Map(entries) => v.visit_map(self.map_access(entries, Some(fields))),
            Value::Null => v.visit_map(self.map_access(EMPTY_ENTRIES, Some(fields))),
            _ => return self.wrong_type(&v),
        };
        self.finish(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(s) => v.visit_enum(EnumDe {
                variant: s,
                value: None,
                parent: self.path.clone(),
                ctx: self.ctx,
            }),
            Value::Map(entries) if entries.len() == 1 => {
                let e = &entries[0];
                v.visit_enum(EnumDe {
                    variant: &e.key,
                    value: Some(e),
                    parent: self.path.clone(),
                    ctx: self.ctx,
                })
            }
            Value::Map(entries) => {
                let set: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                let msg = if set.is_empty() {
                    format!("one of {} must be set", variants.join(", "))
                } else {
                    format!(
                        "only one of {} may be set, found {}",
                        variants.join(", "),
                        set.join(", ")
                    )
                };
                return Err(DeError::new(&self.path, self.node.pos, msg));
            }
            _ => return self.wrong_type(&v),
        };
        self.finish(r)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
}

struct SeqDe<'a> {
    items: &'a [Node],
    next: usize,
    path: FieldPath,
    ctx: &'a Context,
}

impl<'a> SeqDe<'a> {
    fn new(items: &'a [Node], parent: &NodeDe<'a>) -> Self {
        SeqDe {
            items,
            next: 0,
            path: parent.path.clone(),
            ctx: parent.ctx,
        }
    }
}

impl<'de, 'a> SeqAccess<'de> for SeqDe<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.get(self.next) else {
            return Ok(None);
        };
        let path = self.path.index(self.next);
        self.next += 1;
        let pos = node.pos;
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
            ctx: self.ctx,
        })
        .map(Some)
        .map_err(|e| e.at(&path, pos))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

struct MapDe<'a> {
    entries: &'a [Entry],
    next: usize,
    fields: Option<&'static [&'static str]>,
    path: FieldPath,
    ctx: &'a Context,
    pending: Option<&'a Entry>,
}

impl<'de, 'a> MapAccess<'de> for MapDe<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        while let Some(e) = self.entries.get(self.next) {
            self.next += 1;
            if let Some(fields) = self.fields
                && !fields.contains(&e.key.as_str())
            {
                self.ctx.unknown.borrow_mut().push(UnknownField {
                    path: self.path.key(e.key.clone()),
                    pos: e.key_pos,
                });
                continue;
            }
            self.pending = Some(e);
            let path = self.path.key(e.key.clone());
            return seed
                .deserialize(KeyDe(&e.key))
                .map(Some)
                .map_err(|err| err.at(&path, e.key_pos));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(e) = self.pending.take() else {
            return Err(de::Error::custom("value requested before its key"));
        };
        let path = self.path.key(e.key.clone());
        seed.deserialize(NodeDe {
            node: &e.value,
            path: path.clone(),
            ctx: self.ctx,
        })
        .map_err(|mut err| {
            // A wrong value is reported on the line of its key, where the user looks for it.
            if err.path.as_ref() == Some(&path) {
                err.pos = e.key_pos;
            }
            err.at(&path, e.key_pos)
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.next)
    }
}

/// Mapping keys are strings in YAML/JSON; a map keyed by numbers (Istio's `portLevelMtls`)
/// parses them.
struct KeyDe<'a>(&'a str);

macro_rules! key_number {
    ($($method:ident => $visit:ident: $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match self.0.trim().parse::<$t>() {
                Ok(n) => v.$visit(n),
                Err(_) => Err(de::Error::custom(format!("key {:?} is not a number", self.0))),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_str(self.0)
    }

    key_number!(
        deserialize_u8 => visit_u64: u64, deserialize_u16 => visit_u64: u64,
        deserialize_u32 => visit_u64: u64, deserialize_u64 => visit_u64: u64,
        deserialize_i8 => visit_i64: i64, deserialize_i16 => visit_i64: i64,
        deserialize_i32 => visit_i64: i64, deserialize_i64 => visit_i64: i64
    );

    serde::forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct EnumDe<'a> {
    variant: &'a str,
    value: Option<&'a Entry>,
    parent: FieldPath,
    ctx: &'a Context,
}

impl<'de, 'a> EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = VariantDe<'a>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, VariantDe<'a>), DeError> {
        let key: de::value::StrDeserializer<'_, DeError> = self.variant.into_deserializer();
        let v = seed.deserialize(key)?;
        Ok((
            v,
            VariantDe {
                value: self.value,
                parent: self.parent,
                ctx: self.ctx,
            },
        ))
    }
}

struct VariantDe<'a> {
    value: Option<&'a Entry>,
    parent: FieldPath,
    ctx: &'a Context,
}

impl<'a> VariantDe<'a> {
    fn inner(&self) -> Result<NodeDe<'a>, DeError> {
        match self.value {
            Some(e) => Ok(NodeDe {
                node: &e.value,
                path: self.parent.key(e.key.clone()),
                ctx: self.ctx,
            }),
            None => Err(de::Error::custom(
                "expected a mapping with a single key, found a string",
            )),
        }
    }
}

impl<'de> VariantAccess<'de> for VariantDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            None => Ok(()),
            Some(e) if matches!(e.value.value, Value::Null) => Ok(()),
            Some(e) => Err(DeError::new(
                &self.parent.key(e.key.clone()),
                e.key_pos,
                format!("{} takes no value", e.key),
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self.inner()?)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self.inner()?, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self.inner()?, "", fields, v)
    }
}

impl fmt::Display for UnknownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown field {}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Port {
        number: Option<u32>,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Match {
        Exact(String),
        Prefix(String),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Top {
        #[serde(default)]
        ports: Vec<Port>,
        labels: Option<BTreeMap<String, String>>,
        uri: Option<Match>,
        levels: Option<BTreeMap<u32, String>>,
    }

    fn load(s: &str) -> (Result<Top, DeError>, Vec<UnknownField>) {
        let doc = &crate::yaml::parse_stream(s).unwrap()[0];
        let ctx = Context::default();
        let r = from_node::<Top>(doc, FieldPath::root(), &ctx);
        (r, ctx.into_unknown())
    }

    #[test]
    fn type_error_names_path_and_line() {
        let (r, _) = load("ports:\n- number: 80\n- number: eighty\n");
        let e = r.unwrap_err();
        assert_eq!(e.path.unwrap().to_string(), "ports[1].number");
        assert_eq!(e.pos.line, 3);
        assert!(
            e.message.contains("expected a non-negative integer"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_fields_are_collected_with_lines() {
        let (r, unknown) = load("ports:\n- number: 80\n  nmae: http\nextra: 1\n");
        assert!(r.is_ok());
        let paths: Vec<String> = unknown.iter().map(|u| u.path.to_string()).collect();
        assert_eq!(paths, ["ports[0].nmae", "extra"]);
        assert_eq!(unknown[0].pos.line, 3);
    }

    #[test]
    fn unquoted_scalars_read_as_strings_like_kubernetes() {
        let (r, _) = load("labels:\n  version: 1\n  canary: false\n");
        let labels = r.unwrap().labels.unwrap();
        assert_eq!(labels["version"], "1");
        assert_eq!(labels["canary"], "false");
    }

    #[test]
    fn oneof_enum_messages() {
        let (r, _) = load("uri:\n  exact: /a\n  prefix: /b\n");
        let e = r.unwrap_err();
        assert!(
            e.message.contains("only one of exact, prefix may be set"),
            "{}",
            e.message
        );
        assert_eq!(e.path.unwrap().to_string(), "uri");
        let (r, _) = load("uri:\n  regx: /a\n");
        let e = r.unwrap_err();
        assert!(
            e.message.contains("unknown variant `regx`"),
            "{}",
            e.message
        );
        let (r, _) = load("uri: {prefix: /p}\n");
        assert_eq!(r.unwrap().uri, Some(Match::Prefix("/p".into())));
    }

    #[test]
    fn numeric_map_keys() {
        let (r, _) = load("levels:\n  8080: a\n  \"9090\": b\n");
        let l = r.unwrap().levels.unwrap();
        assert_eq!(l[&8080], "a");
        assert_eq!(l[&9090], "b");
        let (r, _) = load("levels:\n  http: a\n");
        let e = r.unwrap_err();
        assert_eq!(e.path.unwrap().to_string(), "levels.http");
    }

    #[test]
    fn null_list_is_empty() {
        let (r, _) = load("ports:\n");
        assert!(r.unwrap().ports.is_empty());
    }
}
