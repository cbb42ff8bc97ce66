//! Loading objects from files, folders and streams, keeping where each came from.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use crate::de::{Context, UnknownField};
use crate::path::FieldPath;
use crate::resource::{Lookup, Resource, lookup, unknown_istio_kind};
use crate::yaml::{self, Node, Pos, Value};

/// Where an object was read: the file, the document within it (1-based) and the first line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: String,
    pub document: usize,
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// The object a problem belongs to. Ordered and compared as an identity: two objects with the
/// same group, kind, namespace and name are one object to the API server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The API group (empty for the core group); not shown, but Istio's Gateway and Gateway
    /// API's are different objects.
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "<unnamed>"
        } else {
            &self.name
        };
        write!(f, "{} {}/{}", self.kind, self.namespace, name)
    }
}

/// An error or warning about some input, located as precisely as it can be.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub severity: Severity,
    pub file: String,
    pub line: u32,
    pub document: usize,
    pub object: Option<ObjectRef>,
    pub path: Option<FieldPath>,
    pub message: String,
}

impl fmt::Display for Problem {
    /// `FILE:LINE: KIND NAMESPACE/NAME: field.path: reason`, warnings marked as such.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        } else {
            write!(f, "document {}: ", self.document)?;
        }
        if let Some(p) = self.path.as_ref().filter(|p| !p.is_root()) {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// One object read from the input.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub origin: Origin,
    pub resource: Resource,
    /// The object as written, for positions and for tools that must write it back unchanged.
    pub raw: Node,
    pub unknown_fields: Vec<UnknownField>,
}

impl Loaded {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            group: crate::resource::split_api_version(self.resource.api_version())
                .0
                .to_string(),
            kind: self.resource.kind().to_string(),
            namespace: self.resource.namespace().to_string(),
            name: self.resource.name().to_string(),
        }
    }

    /// A problem about this object at `path`, located at the path's line.
    pub fn problem(&self, severity: Severity, path: FieldPath, message: String) -> Problem {
        let pos = path.locate(&self.raw);
        Problem {
            severity,
            file: self.origin.file.clone(),
            line: if pos.line == 0 {
                self.origin.line
            } else {
                pos.line
            },
            document: self.origin.document,
            object: Some(self.object_ref()),
            path: Some(path),
            message,
        }
    }
}

/// Everything read from a set of inputs.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub objects: Vec<Loaded>,
    pub problems: Vec<Problem>,
    /// Objects of kinds Weft does not read, by `apiVersion` and kind.
    pub skipped: BTreeMap<(String, String), Vec<Origin>>,
    /// The skipped objects themselves, as [`Resource::Other`], for analyzers that read kinds
    /// Weft does not serve (webhook configurations, CRDs, WasmPlugins...).
    pub others: Vec<Loaded>,
    /// Documents that are not Kubernetes objects at all (no apiVersion and no kind: an OpenAPI
    /// file, a Prometheus config...), with what they are instead.
    pub not_objects: Vec<(Origin, String)>,
}

impl LoadResult {
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// Reads a file, or every `*.yaml`, `*.yml` and `*.json` file under a folder (sorted, so
    /// that output is stable), or standard input for `-`.
    pub fn load_path(&mut self, path: &Path) {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin()
                .take(yaml::MAX_INPUT_BYTES as u64 + 1)
                .read_to_string(&mut text)
            {
                Ok(_) => self.load_str("<stdin>", &text),
                Err(e) => self.file_problem("<stdin>", format!("cannot read: {e}")),
            }
            return;
        }
        let shown = path.display().to_string();
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => self.load_dir(path),
            Ok(m) if m.len() > yaml::MAX_INPUT_BYTES as u64 => self.file_problem(
                &shown,
                format!(
                    "file is {} bytes, more than the {} accepted",
                    m.len(),
                    yaml::MAX_INPUT_BYTES
                ),
            ),
            Ok(_) => match std::fs::read(path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => self.load_str(&shown, &text),
                    Err(e) => self.file_problem(&shown, format!("not UTF-8 text: {e}")),
                },
                Err(e) => self.file_problem(&shown, format!("cannot read: {e}")),
            },
            Err(e) => self.file_problem(&shown, format!("cannot read: {e}")),
        }
    }

    fn load_dir(&mut self, dir: &Path) {
        let mut entries: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(e) => {
                self.file_problem(
                    &dir.display().to_string(),
                    format!("cannot read folder: {e}"),
                );
                return;
            }
        };
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                self.load_dir(&p);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            {
                self.load_path(&p);
            }
        }
    }

    fn file_problem(&mut self, file: &str, message: String) {
        self.problems.push(Problem {
            severity: Severity::Error,
            file: file.to_string(),
            line: 0,
            document: 0,
            object: None,
            path: None,
            message,
        });
    }

    /// Reads a YAML or JSON stream; `file` is the name used in messages.
    pub fn load_str(&mut self, file: &str, text: &str) {
        let numbering = DocNumbering::new(text);
        let docs = match yaml::parse_stream(text) {
            Ok(d) => d,
            Err(e) => {
                self.problems.push(Problem {
                    severity: Severity::Error,
                    file: file.to_string(),
                    line: e.pos.line,
                    document: numbering.document_at(e.pos.line),
                    object: None,
                    path: None,
                    message: format!("invalid YAML: {}", e.message),
                });
                return;
            }
        };
        for doc in docs {
            let origin = Origin {
                file: file.to_string(),
                document: numbering.document_at(doc.pos.line),
                line: doc.pos.line,
            };
            self.load_object(doc, origin);
        }
    }

    fn load_object(&mut self, node: Node, origin: Origin) {
        let doc_problem = |message: String, pos: Pos| Problem {
            severity: Severity::Error,
            file: origin.file.clone(),
            line: if pos.line == 0 { origin.line } else { pos.line },
            document: origin.document,
            object: None,
            path: None,
            message,
        };
        if !matches!(node.value, Value::Map(_)) {
            let what = format!(
                "a {}, not a mapping with apiVersion and kind",
                node.type_name()
            );
            self.not_objects.push((origin, what));
            return;
        }
        let api_version = node.get("apiVersion").and_then(Node::as_str);
        let kind = node.get("kind").and_then(Node::as_str);
        let (api_version, kind) = match (api_version, kind) {
            (Some(a), Some(k)) => (a, k),
            (None, None) if node.get("apiVersion").is_none() && node.get("kind").is_none() => {
                self.not_objects
                    .push((origin, "a mapping without apiVersion and kind".to_string()));
                return;
            }
            _ => {
                let missing: Vec<&str> = [("apiVersion", api_version), ("kind", kind)]
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| *k)
                    .collect();
                self.problems.push(doc_problem(
                    format!("{} must be set to a string", missing.join(" and ")),
                    node.pos,
                ));
                return;
            }
        };
        if kind == "List" || kind.ends_with("List") && api_version == "v1" {
            self.load_list(node, &origin);
            return;
        }
        let (api_version, kind) = (api_version.to_string(), kind.to_string());
        let object = raw_object_ref(&node, &api_version, &kind);
        match lookup(&api_version, &kind) {
            Lookup::Known(_) if self.too_large(&node, &origin, &object) => {}
            Lookup::Known(info) => {
                let ctx = Context::default();
                match info.parse(&node, &ctx) {
                    Ok(resource) => self.objects.push(Loaded {
                        origin,
                        resource,
                        raw: node,
                        unknown_fields: ctx.into_unknown(),
                    }),
                    Err(e) => {
                        let path = e.path.clone().unwrap_or_default();
                        let pos = if e.pos.line == 0 {
                            path.locate(&node)
                        } else {
                            e.pos
                        };
                        self.problems.push(Problem {
                            severity: Severity::Error,
                            file: origin.file.clone(),
                            line: if pos.line == 0 { origin.line } else { pos.line },
                            document: origin.document,
                            object: Some(object),
                            path: Some(path),
                            message: e.message,
                        });
                    }
                }
            }
            Lookup::UnsupportedVersion(info) => {
                let line = FieldPath::root().key("apiVersion").locate(&node).line;
                let group = if info.group.is_empty() {
                    String::new()
                } else {
                    format!("{}/", info.group)
                };
                let served: Vec<String> = info
                    .versions
                    .iter()
                    .map(|v| format!("{group}{v}"))
                    .collect();
                self.problems.push(Problem {
                    severity: Severity::Error,
                    file: origin.file.clone(),
                    line,
                    document: origin.document,
                    object: Some(object),
                    path: Some(FieldPath::root().key("apiVersion")),
                    message: format!(
                        "{kind} is not served as {api_version}; use one of {}",
                        served.join(", ")
                    ),
                });
            }
            Lookup::Unknown => match unknown_istio_kind(&api_version, &kind) {
                Some(message) => self.problems.push(Problem {
                    severity: Severity::Error,
                    file: origin.file.clone(),
                    line: FieldPath::root().key("kind").locate(&node).line,
                    document: origin.document,
                    object: Some(object),
                    path: Some(FieldPath::root().key("kind")),
                    message,
                }),
                None => {
                    if let Ok(resource) = crate::resource::other(&node) {
                        self.others.push(Loaded {
                            origin: origin.clone(),
                            resource,
                            raw: node,
                            unknown_fields: Vec::new(),
                        });
                    }
                    self.skipped
                        .entry((api_version, kind))
                        .or_default()
                        .push(origin);
                }
            },
        }
    }

    /// Refuses an object larger than the Kubernetes API server stores, as it would.
    fn too_large(&mut self, node: &Node, origin: &Origin, object: &ObjectRef) -> bool {
        let size = json_size(&node.to_json());
        if size <= MAX_OBJECT_BYTES {
            return false;
        }
        self.problems.push(Problem {
            severity: Severity::Error,
            file: origin.file.clone(),
            line: origin.line,
            document: origin.document,
            object: Some(object.clone()),
            path: None,
            message: format!(
                "object is {size} bytes as JSON, more than the {MAX_OBJECT_BYTES} the Kubernetes API server stores (etcd's request size limit)"
            ),
        });
        true
    }

    /// Loads the items of a `kind: List`, moving them out of the list document.
    fn load_list(&mut self, node: Node, origin: &Origin) {
        let items_line = FieldPath::root().key("items").locate(&node).line;
        let Value::Map(entries) = node.value else {
            return;
        };
        let Some(items) = entries.into_iter().find(|e| e.key == "items") else {
            return;
        };
        match items.value.value {
            Value::Seq(items) => {
                for item in items {
                    let o = Origin {
                        line: item.pos.line,
                        ..origin.clone()
                    };
                    self.load_object(item, o);
                }
            }
            Value::Null => {}
            other => self.problems.push(Problem {
                severity: Severity::Error,
                file: origin.file.clone(),
                line: items_line,
                document: origin.document,
                object: None,
                path: Some(FieldPath::root().key("items")),
                message: format!("expected a list, found a {}", other.type_name()),
            }),
        }
    }
}

/// The largest object the Kubernetes API server accepts: etcd's default request limit
/// (`--max-request-bytes`, 1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// The length of `value` written as compact JSON, without keeping the text.
fn json_size(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Kind, namespace and name read from an object that may not have parsed.
fn raw_object_ref(node: &Node, api_version: &str, kind: &str) -> ObjectRef {
    let meta = node.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Node::as_str)
            .map(str::to_string)
    };
    ObjectRef {
        group: crate::resource::split_api_version(api_version)
            .0
            .to_string(),
        kind: kind.to_string(),
        namespace: field("namespace").unwrap_or_else(|| "default".to_string()),
        name: field("name").unwrap_or_default(),
    }
}

/// Maps a line to the number of the YAML document that contains it, counting `---` markers the
/// way a reader of the file would (empty documents included).
struct DocNumbering {
    markers: Vec<u32>,
    offset: usize,
}

impl DocNumbering {
    fn new(text: &str) -> Self {
        let mut markers = Vec::new();
        let mut first_content = None;
        for (i, line) in text.lines().enumerate() {
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let t = line.trim_end();
            if t == "---" || t.starts_with("--- ") || t.starts_with("---\t") {
                markers.push(n);
            } else if first_content.is_none()
                && !t.trim_start().is_empty()
                && !t.trim_start().starts_with('#')
                && !t.starts_with('%')
            {
                first_content = Some(n);
            }
        }
        let leading_marker = match (markers.first(), first_content) {
            (Some(m), Some(c)) => *m < c,
            (Some(_), None) => true,
            _ => false,
        };
        DocNumbering {
            markers,
            offset: usize::from(!leading_marker),
        }
    }

    fn document_at(&self, line: u32) -> usize {
        self.markers.iter().filter(|m| **m <= line).count() + self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_numbered_as_written() {
        let n = DocNumbering::new("# c\n---\na: 1\n---\n---\nb: 2\n");
        assert_eq!(n.document_at(3), 1);
        assert_eq!(n.document_at(6), 3);
        let n = DocNumbering::new("a: 1\n---\nb: 2\n");
        assert_eq!(n.document_at(1), 1);
        assert_eq!(n.document_at(3), 2);
    }

    #[test]
    fn list_items_and_skipped_kinds() {
        let mut r = LoadResult::default();
        r.load_str(
            "mem.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: a}\n- apiVersion: example.com/v1\n  kind: Widget\n",
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.objects.len(), 1);
        assert_eq!(r.objects[0].origin.line, 4);
        assert_eq!(r.skipped.len(), 1);
    }

    #[test]
    fn not_an_object() {
        let mut r = LoadResult::default();
        r.load_str("m.yaml", "- job_name: x\n---\nspec:\n  hosts: [a]\n");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.not_objects.len(), 2);
        assert!(r.not_objects[0].1.contains("a list"), "{:?}", r.not_objects);
        assert_eq!(r.not_objects[1].0.document, 2);
        let mut r = LoadResult::default();
        r.load_str("m.yaml", "kind: VirtualService\nspec:\n  hosts: [a]\n");
        assert_eq!(r.problems.len(), 1);
        assert!(
            r.problems[0].message.contains("apiVersion must be set"),
            "{}",
            r.problems[0]
        );
    }
}
