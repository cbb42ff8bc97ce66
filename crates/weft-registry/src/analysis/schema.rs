//! `schema.ValidationAnalyzer.VirtualService`: the warnings of Istio's VirtualService validation
//! that `istioctl analyze` gives codes of their own. A rule no request can reach (IST0130): a
//! second rule without matches, a rule after a catch-all, or one whose every match an earlier
//! rule already has; and a match that can never win (IST0131): the same match as an earlier one,
//! or a URI prefix match that an earlier prefix match covers.
//!
//! It also passes on the object's other validation errors and warnings (IST0106, IST0133), as
//! every kind's schema analyzer does (`schema_kinds.rs`).

use super::{Context, Findings, go_format};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use weft_api::path::FieldPath;

/// A message to emit: code, template arguments, and the rule or match it is about.
type Found = (&'static str, Vec<String>, FieldPath);

pub fn virtual_services(ctx: &Context, out: &mut Findings) {
    super::schema_kinds::virtual_service(ctx, out);
    for o in &ctx.objects {
        if o.resource.kind() != "VirtualService"
            || !o.resource.api_version().starts_with("networking.istio.io/")
        {
            continue;
        }
        let json = Context::json(o);
        let mut found: Vec<Found> = Vec::new();
        // Istio checks http, then tcp, then tls; each list on its own.
        for (key, http) in [("http", true), ("tcp", false), ("tls", false)] {
            if let Some(routes) = json
                .get("spec")
                .and_then(|s| s.get(key))
                .and_then(Value::as_array)
            {
                let base = FieldPath::root().key("spec").key(key);
                check_rules(routes, http, &base, &mut found);
            }
        }
        // istioctl places these on the object; Weft on the rule or match, so that `weft up`
        // and `weft validate` point where the other problems of a field point.
        for (code, args, at) in found {
            out.add(o, &at, code, &args);
        }
    }
}

/// Istio's `analyzeUnreachable{HTTP,TCP,TLS}Rules`.
fn check_rules(routes: &[Value], http: bool, base: &FieldPath, found: &mut Vec<Found>) {
    fn unreachable(found: &mut Vec<Found>, rule: String, why: &str, at: FieldPath) {
        found.push(("IST0130", vec![rule, why.to_string()], at));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut catch_all = false;
    let mut prefixed: Vec<PrefixMatch> = Vec::new();
    for (rn, route) in routes.iter().enumerate() {
        if route.is_null() {
            continue;
        }
        let rule = route_name(route, rn, http);
        let matches = route
            .get("match")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        if matches.is_empty() {
            if catch_all {
                let at = base.index(rn);
                unreachable(found, rule, "only the last rule can have no matches", at);
            }
            catch_all = true;
            continue;
        }
        let mut duplicates = 0;
        for (mn, m) in matches.iter().enumerate() {
            // Istio reports this once per match, not once per rule.
            if catch_all {
                let at = base.index(rn).key("match").index(mn);
                unreachable(
                    found,
                    rule.clone(),
                    "route without matches defined before",
                    at,
                );
                continue;
            }
            let key = canonical(m, http);
            if let Some(&first) = seen.get(&key) {
                let earlier = routes
                    .get(first)
                    .map_or_else(|| format!("#{first}"), |r| route_name(r, first, http));
                found.push((
                    "IST0131",
                    vec![rule.clone(), request_name(m, mn, http), earlier],
                    base.index(rn).key("match").index(mn),
                ));
                duplicates += 1;
                continue;
            }
            seen.insert(key, rn);
            if http
                && let Some(p) =
                    PrefixMatch::new(m, &rule, mn, base.index(rn).key("match").index(mn))
            {
                prefixed.push(p);
            }
        }
        if duplicates == matches.len() {
            unreachable(
                found,
                rule,
                "all matches used by prior rules",
                base.index(rn),
            );
        }
    }
    // A later prefix match that an earlier one covers never wins; equal prefixes were either
    // reported above as duplicates or differ elsewhere, and Istio skips them.
    for (i, a) in prefixed.iter().enumerate() {
        for b in prefixed.iter().skip(i + 1) {
            if a.prefix != b.prefix && a.covers(b) {
                let args = vec![
                    b.rule.clone(),
                    format!("{} of prefix {}", b.request, b.prefix),
                    format!("{} of prefix {} on {}", a.request, a.prefix, a.rule),
                ];
                found.push(("IST0131", args, b.at.clone()));
            }
        }
    }
}

/// HTTP rules go by their quoted name when they have one; TCP and TLS rules have none.
fn route_name(route: &Value, n: usize, http: bool) -> String {
    named(route, http).unwrap_or_else(|| format!("#{n}"))
}

fn request_name(m: &Value, n: usize, http: bool) -> String {
    named(m, http).unwrap_or_else(|| format!("#{n}"))
}

fn named(v: &Value, http: bool) -> Option<String> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())?;
    http.then(|| go_format("%q", &[name.to_string()]))
}

/// The match as Istio compares it: the Go JSON encoding of the typed match (its name left out
/// for HTTP), in which unset and zero-valued fields vanish, map keys are sorted, but a string
/// match that is present stays even when empty. Two matches are duplicates when these are equal.
fn canonical(m: &Value, http: bool) -> String {
    let Value::Object(fields) = m else {
        return m.to_string();
    };
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in fields {
        let k = camel_case(k);
        let value = match k.as_str() {
            "name" if http => continue,
            "uri" | "scheme" | "method" | "authority" if http => {
                if v.is_null() {
                    continue;
                }
                string_match(v)
            }
            "headers" | "queryParams" | "withoutHeaders" if http => match v.as_object() {
                Some(map) if !map.is_empty() => sorted(
                    map.iter()
                        .map(|(name, sm)| (name.clone(), string_match(sm)))
                        .collect(),
                ),
                _ => continue,
            },
            "port" => match port(v) {
                0 => continue,
                p => Value::from(p),
            },
            _ if is_zero(v) => continue,
            _ => sort_keys(v),
        };
        out.insert(k, value);
    }
    sorted(out).to_string()
}

/// A `StringMatch`: its one set field, kept even when `""` (that is still a set oneof).
fn string_match(v: &Value) -> Value {
    match v.as_object() {
        Some(map) => sorted(
            map.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), x.clone()))
                .collect(),
        ),
        None => v.clone(),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f.abs() <= 0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// A port as the typed match holds it (`uint32`); protobuf JSON also takes it quoted.
fn port(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn sorted(map: BTreeMap<String, Value>) -> Value {
    Value::Object(map.into_iter().collect())
}

fn sort_keys(v: &Value) -> Value {
    match v {
        Value::Object(map) => sorted(map.iter().map(|(k, x)| (k.clone(), sort_keys(x))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// Protobuf JSON takes a field by its proto name as well (`ignore_uri_case`).
fn camel_case(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut upper = false;
    for c in k.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// What Istio keeps of an HTTP match with a URI prefix to find matches an earlier one covers.
/// String matches become `exact:v` or `prefix:v`, or `""` for a regex or nothing.
struct PrefixMatch {
    at: FieldPath,
    rule: String,
    request: String,
    prefix: String,
    port: u64,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

impl PrefixMatch {
    fn new(m: &Value, rule: &str, mn: usize, at: FieldPath) -> Option<PrefixMatch> {
        let prefix = field(m, "uri", "uri")?
            .get("prefix")?
            .as_str()
            .filter(|p| !p.is_empty())?;
        // Istio takes a match without a method for a GET.
        let method = match exact_or_prefix(field(m, "method", "method")) {
            s if s.is_empty() => "exact:GET".to_string(),
            s => s,
        };
        Some(PrefixMatch {
            at,
            rule: rule.to_string(),
            request: request_name(m, mn, true),
            prefix: prefix.to_string(),
            port: field(m, "port", "port").map_or(0, port),
            method,
            authority: exact_or_prefix(field(m, "authority", "authority")),
            headers: string_matches(field(m, "headers", "headers")),
            query_params: string_matches(field(m, "queryParams", "query_params")),
            without_headers: string_matches(field(m, "withoutHeaders", "without_headers")),
        })
    }

    /// Istio's `coveredValidation`: `later`'s prefix extends this one's, the ports are equal,
    /// and each other condition of this match starts with `later`'s (which equal ones do).
    fn covers(&self, later: &PrefixMatch) -> bool {
        let maps = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| v.starts_with(w.as_str())))
        };
        later.prefix.starts_with(&self.prefix)
            && later.port == self.port
            && self.method.starts_with(&later.method)
            && self.authority.starts_with(&later.authority)
            && maps(&self.headers, &later.headers)
            && maps(&self.query_params, &later.query_params)
            && maps(&self.without_headers, &later.without_headers)
    }
}

fn field<'a>(m: &'a Value, camel: &str, proto: &str) -> Option<&'a Value> {
    m.get(camel)
        .or_else(|| m.get(proto))
        .filter(|v| !v.is_null())
}

fn exact_or_prefix(sm: Option<&Value>) -> String {
    let get = |k: &str| {
        sm.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (get("exact"), get("prefix")) {
        (Some(e), _) => format!("exact:{e}"),
        (None, Some(p)) => format!("prefix:{p}"),
        (None, None) => String::new(),
    }
}

fn string_matches(map: Option<&Value>) -> BTreeMap<String, String> {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), exact_or_prefix(Some(v))))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_compare_without_names_zero_values_or_key_order() {
        let a = json!({"name": "x", "uri": {"prefix": "/a"}, "port": 0, "headers": {}});
        let b = json!({"uri": {"prefix": "/a"}, "ignoreUriCase": false});
        assert_eq!(canonical(&a, true), canonical(&b, true));
        let c = json!({"uri": {"prefix": "/a"}, "method": {"exact": "GET"}});
        assert_ne!(canonical(&b, true), canonical(&c, true));
        // An empty string match is still a match on something.
        assert_ne!(
            canonical(&json!({"uri": {}}), true),
            canonical(&json!({}), true)
        );
    }

    #[test]
    fn rules_after_a_duplicate_or_catch_all_are_reported() {
        let routes = json!([
            {"match": [{"uri": {"prefix": "/api/v1/product"}}]},
            {"name": "two", "match": [
                {"uri": {"prefix": "/api/v1/product"}},
                {"uri": {"prefix": "/api/v1/products"}, "method": {"exact": "GET"}}
            ]},
            {},
            {}
        ]);
        let mut found = Vec::new();
        check_rules(
            routes.as_array().map_or(&[][..], Vec::as_slice),
            true,
            &FieldPath::root().key("spec").key("http"),
            &mut found,
        );
        let codes: Vec<&str> = found.iter().map(|(c, _, _)| *c).collect();
        assert_eq!(codes, ["IST0131", "IST0130", "IST0131"]);
        let at: Vec<String> = found.iter().map(|(_, _, p)| p.to_string()).collect();
        assert_eq!(
            at,
            [
                "spec.http[1].match[0]",
                "spec.http[3]",
                "spec.http[1].match[1]"
            ]
        );
        assert_eq!(
            found.get(2).map(|(_, a, _)| a.clone()),
            Some(vec![
                "\"two\"".to_string(),
                "#1 of prefix /api/v1/products".to_string(),
                "#0 of prefix /api/v1/product on #0".to_string(),
            ])
        );
    }
}
