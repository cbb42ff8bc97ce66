//! Envoy's URI template path matcher (`envoy.path.match.uri_template.uri_template_matcher`), as
//! RBAC's `uri_template` permission uses it: `*` is one path segment (at least one character),
//! `**` any number of them (possibly none, and only as the last operator), anything else is
//! literal; the whole path, without its query and fragment, must match. Variables
//! (`{name=...}`) are refused: istiod writes only `*` and `**`.

use regex::Regex;

/// The characters a path segment may hold (RFC 3986 pchar, as Envoy lists them).
const SEGMENT: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]";

#[derive(Debug, Clone)]
pub struct UriTemplate(Regex);

impl UriTemplate {
    pub fn new(template: &str) -> Result<UriTemplate, String> {
        if template.is_empty() || template.len() > 256 {
            return Err("must be 1 to 256 characters".into());
        }
        let Some(rest) = template.strip_prefix('/') else {
            return Err("must start with `/`".into());
        };
        if template.contains(['{', '}']) {
            return Err("variables are not supported by the Weft proxy (`*` and `**` are)".into());
        }
        let literal = |c: char| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:@=".contains(c);
        let mut regex = String::from("^");
        let mut after_text_glob = false;
        for segment in rest.split('/') {
            regex.push('/');
            let (glob, suffix) = if let Some(s) = segment.strip_prefix("**") {
                (Some(format!("(?:{SEGMENT}|/)*")), s)
            } else if let Some(s) = segment.strip_prefix('*') {
                (Some(format!("{SEGMENT}+")), s)
            } else {
                (None, segment)
            };
            if glob.is_some() && after_text_glob {
                return Err("no operator may follow `**`".into());
            }
            if segment.starts_with("**") {
                after_text_glob = true;
            }
            if let Some(g) = glob {
                regex.push_str(&g);
            }
            if let Some(bad) = suffix.chars().find(|c| !literal(*c)) {
                return Err(format!("{bad:?} may not appear in a literal"));
            }
            regex.push_str(&regex::escape(suffix));
        }
        regex.push('$');
        Regex::new(&regex)
            .map(UriTemplate)
            .map_err(|e| e.to_string())
    }

    /// `path` is the request's path without query or fragment.
    pub fn matches(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> UriTemplate {
        UriTemplate::new(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn one_segment_and_the_rest() {
        let one = t("/path/template/*");
        assert!(one.matches("/path/template/a"));
        assert!(!one.matches("/path/template/"));
        assert!(!one.matches("/path/template/a/b"));
        let rest = t("/**/path/template");
        assert!(rest.matches("/a/b/path/template"));
        assert!(rest.matches("//path/template"));
        assert!(!rest.matches("/path/template"));
        assert!(t("/foo/**").matches("/foo/"));
        assert!(!t("/foo/**").matches("/foo"));
        assert!(t("/videos/**.mpd").matches("/videos/a/b.mpd"));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["", "x", "/a/**/*", "/{x}", "/a b", "/a?b"] {
            assert!(UriTemplate::new(bad).is_err(), "{bad}");
        }
    }
}
