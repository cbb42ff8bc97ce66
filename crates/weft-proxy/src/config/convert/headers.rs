//! Header matchers, string matchers and header operations of route config, shared by routes,
//! virtual hosts, route tables and the filters that add headers.

use super::{Result, full_regex};
use crate::config::FieldError;
use crate::route::{AppendMode, HeaderAdd, HeaderCheck, HeaderMatch, HeaderOps, StringMatch};
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use http::{HeaderName, HeaderValue};

pub(super) fn header_matcher(h: &pb::HeaderMatcher, path: &str) -> Result<HeaderMatch> {
    use pb::header_matcher::HeaderMatchSpecifier as S;
    let s = |value: &str| StringMatch::Exact {
        value: value.to_string(),
        ignore_case: false,
    };
    #[allow(deprecated)]
    let check = match &h.header_match_specifier {
        Some(S::ExactMatch(v)) => HeaderCheck::Value(s(v)),
        Some(S::PrefixMatch(v)) => HeaderCheck::Value(StringMatch::Prefix {
            value: v.clone(),
            ignore_case: false,
        }),
        Some(S::SuffixMatch(v)) => HeaderCheck::Value(StringMatch::Suffix {
            value: v.clone(),
            ignore_case: false,
        }),
        Some(S::ContainsMatch(v)) => HeaderCheck::Value(StringMatch::Contains {
            value: v.clone(),
            ignore_case: false,
        }),
        Some(S::SafeRegexMatch(re)) => HeaderCheck::Value(StringMatch::Regex(full_regex(
            &re.regex,
            &format!("{path}.safe_regex_match.regex"),
        )?)),
        Some(S::PresentMatch(p)) => HeaderCheck::Present(*p),
        Some(S::StringMatch(sm)) => {
            HeaderCheck::Value(string_match(sm, &format!("{path}.string_match"))?)
        }
        Some(_) => {
            return Err(FieldError::new(
                path,
                "this header match is not supported by the Weft proxy",
            ));
        }
        // No specifier: the header must be present.
        None => HeaderCheck::Present(true),
    };
    if h.name.is_empty() {
        return Err(FieldError::new(format!("{path}.name"), "is required"));
    }
    Ok(HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        check,
        invert: h.invert_match,
        missing_as_empty: h.treat_missing_header_as_empty,
    })
}

pub(crate) fn string_match(sm: &StringMatcher, path: &str) -> Result<StringMatch> {
    let ignore_case = sm.ignore_case;
    Ok(match &sm.match_pattern {
        Some(string_matcher::MatchPattern::Exact(v)) => StringMatch::Exact {
            value: v.clone(),
            ignore_case,
        },
        Some(string_matcher::MatchPattern::Prefix(v)) => StringMatch::Prefix {
            value: v.clone(),
            ignore_case,
        },
        Some(string_matcher::MatchPattern::Suffix(v)) => StringMatch::Suffix {
            value: v.clone(),
            ignore_case,
        },
        Some(string_matcher::MatchPattern::Contains(v)) => StringMatch::Contains {
            value: v.clone(),
            ignore_case,
        },
        Some(string_matcher::MatchPattern::SafeRegex(re)) => {
            StringMatch::Regex(full_regex(&re.regex, &format!("{path}.safe_regex.regex"))?)
        }
        Some(_) => {
            return Err(FieldError::new(
                path,
                "this string match is not supported by the Weft proxy",
            ));
        }
        None => {
            return Err(FieldError::new(
                path,
                "one of exact, prefix, suffix, contains or safe_regex is required",
            ));
        }
    })
}

pub(super) fn header_value(v: &str, path: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(v).map_err(|_| FieldError::new(path, "not a valid header value"))
}

pub(super) fn header_name(n: &str, path: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(n.as_bytes())
        .map_err(|_| FieldError::new(path, format!("{n:?} is not a valid header name")))
}

pub(crate) fn header_ops(
    request_add: &[HeaderValueOption],
    request_remove: &[String],
    response_add: &[HeaderValueOption],
    response_remove: &[String],
    path: &str,
) -> Result<HeaderOps> {
    let adds = |list: &[HeaderValueOption], field: &str| -> Result<Vec<HeaderAdd>> {
        let mut out = Vec::new();
        for (i, o) in list.iter().enumerate() {
            let opath = format!("{path}.{field}[{i}]");
            let h = o
                .header
                .as_ref()
                .ok_or_else(|| FieldError::new(format!("{opath}.header"), "is required"))?;
            #[allow(deprecated)]
            let mode = match (&o.append, o.append_action) {
                (Some(a), _) if a.value => AppendMode::AppendIfExistsOrAdd,
                (Some(_), _) => AppendMode::OverwriteIfExistsOrAdd,
                (None, 1) => AppendMode::AddIfAbsent,
                (None, 2) => AppendMode::OverwriteIfExistsOrAdd,
                (None, _) => AppendMode::AppendIfExistsOrAdd,
            };
            let value = if h.value.is_empty() && !h.raw_value.is_empty() {
                HeaderValue::from_bytes(&h.raw_value).map_err(|_| {
                    FieldError::new(
                        format!("{opath}.header.raw_value"),
                        "not a valid header value",
                    )
                })?
            } else {
                header_value(&h.value, &format!("{opath}.header.value"))?
            };
            out.push(HeaderAdd {
                name: header_name(&h.key, &format!("{opath}.header.key"))?,
                value,
                mode,
                keep_empty: o.keep_empty_value,
            });
        }
        Ok(out)
    };
    let removes = |list: &[String], field: &str| -> Result<Vec<HeaderName>> {
        list.iter()
            .enumerate()
            .map(|(i, n)| header_name(n, &format!("{path}.{field}[{i}]")))
            .collect()
    };
    Ok(HeaderOps {
        request_add: adds(request_add, "request_headers_to_add")?,
        request_remove: removes(request_remove, "request_headers_to_remove")?,
        response_add: adds(response_add, "response_headers_to_add")?,
        response_remove: removes(response_remove, "response_headers_to_remove")?,
    })
}
