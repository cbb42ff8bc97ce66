//! Envoy's matchers: path specifiers, string matchers, header and query parameter matchers.

use regex::Regex;

/// What a route match can look at: the request head, pseudo-headers included (Istio matches on
/// `:authority` and `:method`).
pub struct RequestView<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `:path` as received, query included.
    pub path_and_query: &'a str,
    pub headers: &'a http::HeaderMap,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix {
        prefix: String,
        case_sensitive: bool,
    },
    Exact {
        path: String,
        case_sensitive: bool,
    },
    /// Compiled anchored at both ends: Envoy's RE2 full match.
    Regex(Regex),
    SeparatedPrefix {
        prefix: String,
        case_sensitive: bool,
    },
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix {
                prefix,
                case_sensitive,
            } => starts_with(path, prefix, *case_sensitive),
            PathMatch::Exact {
                path: p,
                case_sensitive,
            } => {
                if *case_sensitive {
                    path == p
                } else {
                    path.eq_ignore_ascii_case(p)
                }
            }
            PathMatch::Regex(re) => re.is_match(path),
            PathMatch::SeparatedPrefix {
                prefix,
                case_sensitive,
            } => {
                starts_with(path, prefix, *case_sensitive)
                    && (path.len() == prefix.len()
                        || path.as_bytes().get(prefix.len()) == Some(&b'/'))
            }
        }
    }
}

fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        s.starts_with(prefix)
    } else {
        s.len() >= prefix.len()
            && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    }
}

/// `envoy.type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact { value: String, ignore_case: bool },
    Prefix { value: String, ignore_case: bool },
    Suffix { value: String, ignore_case: bool },
    Contains { value: String, ignore_case: bool },
    Regex(Regex),
}

impl StringMatch {
    pub fn matches(&self, s: &str) -> bool {
        match self {
            StringMatch::Exact { value, ignore_case } => {
                if *ignore_case {
                    s.eq_ignore_ascii_case(value)
                } else {
                    s == value
                }
            }
            StringMatch::Prefix { value, ignore_case } => starts_with(s, value, !ignore_case),
            StringMatch::Suffix { value, ignore_case } => {
                s.len() >= value.len() && {
                    let tail = &s.as_bytes()[s.len() - value.len()..];
                    if *ignore_case {
                        tail.eq_ignore_ascii_case(value.as_bytes())
                    } else {
                        tail == value.as_bytes()
                    }
                }
            }
            StringMatch::Contains { value, ignore_case } => {
                if *ignore_case {
                    s.to_ascii_lowercase().contains(&value.to_ascii_lowercase())
                } else {
                    s.contains(value.as_str())
                }
            }
            StringMatch::Regex(re) => re.is_match(s),
        }
    }
}

#[derive(Debug, Clone)]
pub enum HeaderCheck {
    Present(bool),
    Value(StringMatch),
}

/// `envoy.config.route.v3.HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: String,
    pub check: HeaderCheck,
    pub invert: bool,
    pub missing_as_empty: bool,
}

impl HeaderMatch {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let joined;
        let value: Option<&str> = match self.name.as_str() {
            ":authority" | "host" => Some(req.authority),
            ":method" => Some(req.method),
            ":path" => Some(req.path_and_query),
            ":scheme" => Some(req.scheme),
            name => {
                let mut values = req
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok());
                match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(one), None) => Some(one),
                    // Envoy matches a repeated header against its values joined by commas.
                    (Some(first), Some(second)) => {
                        let mut all = format!("{first},{second}");
                        for v in values {
                            all.push(',');
                            all.push_str(v);
                        }
                        joined = all;
                        Some(joined.as_str())
                    }
                }
            }
        };
        let result = match (&self.check, value) {
            (HeaderCheck::Present(want), v) => v.is_some() == *want,
            (HeaderCheck::Value(m), Some(v)) => m.matches(v),
            (HeaderCheck::Value(m), None) if self.missing_as_empty => m.matches(""),
            // A missing header never matches, not even inverted.
            (HeaderCheck::Value(_), None) => return false,
        };
        result != self.invert
    }
}

/// `envoy.config.route.v3.QueryParameterMatcher`.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    /// `None`: the parameter must be present.
    pub value: Option<StringMatch>,
}

impl QueryMatch {
    pub fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == self.name {
                return match &self.value {
                    None => true,
                    // Envoy compares the raw (still percent-encoded) value.
                    Some(m) => m.matches(v),
                };
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_prefix_needs_a_slash_or_the_end() {
        let m = PathMatch::SeparatedPrefix {
            prefix: "/api".into(),
            case_sensitive: true,
        };
        assert!(m.matches("/api"));
        assert!(m.matches("/api/x"));
        assert!(!m.matches("/apix"));
    }
}
