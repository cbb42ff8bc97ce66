//! The matchers istiod's authz model writes (`pilot/pkg/security/authz/matcher`): Istio's
//! `*` wildcards (the whole value, a prefix or a suffix) as Envoy string, header, CIDR and
//! metadata matchers.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, OrMatcher, RegexMatcher, StringMatcher, ValueMatcher,
    list_matcher, metadata_matcher, string_matcher, value_matcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;

/// The filter whose dynamic metadata carries a validated JWT's payload (`payload_in_metadata`).
pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";

pub fn regex(r: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: r.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `v` as RE2 text matching itself, each `*` made `star` (a literal `*` when `star` is empty).
pub fn escape_with_wildcards(v: &str, star: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '*' if !star.is_empty() => out.push_str(star),
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn pattern(p: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..Default::default()
    }
}

pub fn exact(v: &str) -> StringMatcher {
    pattern(string_matcher::MatchPattern::Exact(v.into()))
}

/// Istio's `StringMatcherWithPrefix`: `*` is any non-empty value (the prefix ignored), `*x`
/// a suffix (a regex when there is a prefix to keep), `x*` a prefix, anything else exact.
pub fn string(v: &str, prefix: &str) -> StringMatcher {
    use string_matcher::MatchPattern as P;
    if v == "*" {
        return regex(".+");
    }
    if let Some(suffix) = v.strip_prefix('*') {
        return if prefix.is_empty() {
            pattern(P::Suffix(suffix.into()))
        } else {
            regex(&format!("{prefix}.*{suffix}"))
        };
    }
    if let Some(start) = v.strip_suffix('*') {
        return pattern(P::Prefix(format!("{prefix}{start}")));
    }
    pattern(P::Exact(format!("{prefix}{v}")))
}

/// A header matcher as istiod writes it for `request.headers[]` and methods (`*` is presence,
/// else exact, prefix or suffix), and for hosts (the same, case-insensitive).
pub fn header(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    let specifier = if v == "*" {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(wildcard(v)),
            ignore_case,
        })
    };
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

/// A value other than `*` with Istio's wildcard: `*x` a suffix, `x*` a prefix, else exact.
pub fn wildcard(v: &str) -> string_matcher::MatchPattern {
    use string_matcher::MatchPattern as P;
    if let Some(suffix) = v.strip_prefix('*') {
        P::Suffix(suffix.into())
    } else if let Some(start) = v.strip_suffix('*') {
        P::Prefix(start.into())
    } else {
        P::Exact(v.into())
    }
}

/// A bare address is a single host; a CIDR keeps its address as written (Envoy masks it).
pub fn cidr(v: &str) -> Option<CidrRange> {
    let (address, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
        None => (v, None),
    };
    let ip: std::net::IpAddr = address.parse().ok()?;
    let full = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(full);
    (len <= full).then(|| CidrRange {
        address_prefix: address.into(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

/// A value matcher of one string, or of any of several.
pub fn any_string(matchers: Vec<StringMatcher>) -> ValueMatcher {
    any_value(
        matchers
            .into_iter()
            .map(|m| ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
            })
            .collect(),
    )
}

/// One value matcher, or any of several.
pub fn any_value(mut matchers: Vec<ValueMatcher>) -> ValueMatcher {
    if matchers.len() == 1 {
        return matchers.remove(0);
    }
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: matchers,
        })),
    }
}

/// A claim that may be a string or a list of strings: either holds one of the values.
pub fn string_or_list(matchers: Vec<StringMatcher>) -> ValueMatcher {
    let v = any_string(matchers);
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: vec![list_one_of(v.clone()), v],
        })),
    }
}

pub fn list_one_of(v: ValueMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(v))),
            },
        ))),
    }
}

pub fn metadata(filter: &str, path: &[&str], value: ValueMatcher) -> MetadataMatcher {
    MetadataMatcher {
        filter: filter.into(),
        path: path
            .iter()
            .map(|k| metadata_matcher::PathSegment {
                segment: Some(metadata_matcher::path_segment::Segment::Key((*k).into())),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }
}

/// The JWT payload's string field `path` against one matcher.
pub fn jwt_claim(path: &[&str], m: StringMatcher) -> MetadataMatcher {
    let mut full = vec!["payload"];
    full.extend_from_slice(path);
    metadata(
        JWT_AUTHN,
        &full,
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use string_matcher::MatchPattern as P;

    fn p(m: StringMatcher) -> P {
        m.match_pattern.unwrap_or(P::Exact("<none>".into()))
    }

    #[test]
    fn istio_wildcards_with_and_without_a_prefix() {
        assert_eq!(
            p(string("*", "spiffe://")),
            P::SafeRegex(RegexMatcher {
                regex: ".+".into(),
                ..Default::default()
            })
        );
        assert_eq!(
            p(string("*-x", "spiffe://")),
            P::SafeRegex(RegexMatcher {
                regex: "spiffe://.*-x".into(),
                ..Default::default()
            })
        );
        assert_eq!(p(string("*-x", "")), P::Suffix("-x".into()));
        assert_eq!(p(string("a*", "spiffe://")), P::Prefix("spiffe://a".into()));
        assert_eq!(p(string("a", "spiffe://")), P::Exact("spiffe://a".into()));
    }

    #[test]
    fn cidrs_keep_the_address_as_written() {
        let c = cidr("5.6.7.8/16").unwrap_or_default();
        assert_eq!(c.address_prefix, "5.6.7.8");
        assert_eq!(c.prefix_len.map(|l| l.value), Some(16));
        assert_eq!(
            cidr("::1").and_then(|c| c.prefix_len).map(|l| l.value),
            Some(128)
        );
        assert_eq!(cidr("1.2.3.4/33"), None);
        assert_eq!(cidr("nope"), None);
    }
}
