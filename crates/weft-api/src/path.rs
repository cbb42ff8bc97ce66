//! Field paths such as `spec.http[0].route[1].weight`, and finding a path's line in a document.

use std::fmt;

use crate::yaml::{Node, Pos, Value};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from a document's root to one of its values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.into()));
        FieldPath(v)
    }

    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        FieldPath(v)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the display form back (`a.b[0]["x.y"]`); used by tests and fixtures.
    pub fn parse(s: &str) -> Option<FieldPath> {
        let mut segs = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'.' => i += 1,
                b'[' => {
                    let rest = &s[i + 1..];
                    if let Some(stripped) = rest.strip_prefix('"') {
                        let end = stripped.find("\"]")?;
                        segs.push(Seg::Key(stripped[..end].to_string()));
                        i += 1 + 1 + end + 2;
                    } else {
                        let end = rest.find(']')?;
                        segs.push(Seg::Index(rest[..end].parse().ok()?));
                        i += 1 + end + 1;
                    }
                }
                _ => {
                    let rest = &s[i..];
                    let end = rest.find(['.', '[']).unwrap_or(rest.len());
                    segs.push(Seg::Key(rest[..end].to_string()));
                    i += end;
                }
            }
        }
        Some(FieldPath(segs))
    }

    /// The line of the value at this path in `root`: the key's line for a mapping entry, or the
    /// line of the deepest ancestor that exists when the path names a field that is absent.
    pub fn locate(&self, root: &Node) -> Pos {
        let mut node = root;
        let mut pos = root.pos;
        for seg in &self.0 {
            match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => match entries.iter().find(|e| &e.key == k) {
                    Some(e) => {
                        pos = e.key_pos;
                        node = &e.value;
                    }
                    None => break,
                },
                (Seg::Index(i), Value::Seq(items)) => match items.get(*i) {
                    Some(n) => {
                        pos = n.pos;
                        node = n;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        pos
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'$')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    if n > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let p = FieldPath::root()
            .key("spec")
            .key("http")
            .index(0)
            .key("headers")
            .key("app.kubernetes.io/name");
        let s = p.to_string();
        assert_eq!(s, r#"spec.http[0].headers["app.kubernetes.io/name"]"#);
        assert_eq!(FieldPath::parse(&s), Some(p));
    }

    #[test]
    fn locate_points_at_the_key_line() {
        let doc =
            &crate::yaml::parse_stream("spec:\n  http:\n  - route:\n    - weight: 5\n").unwrap()[0];
        let p = FieldPath::parse("spec.http[0].route[0].weight").unwrap();
        assert_eq!(p.locate(doc).line, 4);
        let missing = FieldPath::parse("spec.http[0].timeout").unwrap();
        assert_eq!(
            missing.locate(doc).line,
            3,
            "falls back to the nearest ancestor"
        );
    }
}
