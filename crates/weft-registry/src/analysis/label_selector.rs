//! Kubernetes `LabelSelector`s as written (`matchLabels`, `matchExpressions`), matched against a
//! label set the way `metav1.LabelSelectorAsSelector(...).Matches` does, for the webhook
//! analyzers: no selector matches everything, as the webhook API defaults it, and one Kubernetes
//! refuses matches nothing.

use super::json::present;
use serde_json::Value;
use weft_api::types::common::Labels;

/// One requirement of a Kubernetes label selector; `matchLabels` entries are `In` with one
/// value.
struct Requirement<'a> {
    key: &'a str,
    operator: &'a str,
    values: Vec<&'a str>,
}

impl Requirement<'_> {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(self.key);
        let listed = value.is_some_and(|v| self.values.contains(&v.as_str()));
        match self.operator {
            "In" => listed,
            "NotIn" => !listed,
            "Exists" => value.is_some(),
            _ => value.is_none(),
        }
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters: a label name or value.
fn valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(*c, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain, as a label key's prefix must be.
fn valid_subdomain(s: &str) -> bool {
    let lower = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            b.first().is_some_and(lower)
                && b.last().is_some_and(lower)
                && b.iter().all(|c| lower(c) || *c == b'-')
        })
}

/// A label key: a name, optionally behind a DNS subdomain prefix and `/`.
fn valid_label_key(k: &str) -> bool {
    match k.split_once('/') {
        None => valid_label_name(k),
        Some((prefix, name)) => {
            !name.contains('/') && valid_subdomain(prefix) && valid_label_name(name)
        }
    }
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty() || valid_label_name(v)
}

/// Kubernetes' `LabelSelectorAsSelector`: the requirements, or `None` where Kubernetes refuses
/// the selector (bad key or value, unknown operator, values where none belong or none where
/// some must be).
fn requirements(selector: &Value) -> Option<Vec<Requirement<'_>>> {
    let mut out = Vec::new();
    if let Some(match_labels) = present(selector, "matchLabels") {
        for (key, value) in match_labels.as_object()? {
            let value = value.as_str()?;
            if !valid_label_key(key) || !valid_label_value(value) {
                return None;
            }
            out.push(Requirement {
                key: key.as_str(),
                operator: "In",
                values: vec![value],
            });
        }
    }
    if let Some(expressions) = present(selector, "matchExpressions") {
        for e in expressions.as_array()? {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let operator = e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let values: Vec<&str> = match present(e, "values") {
                None => Vec::new(),
                Some(v) => v
                    .as_array()?
                    .iter()
                    .map(Value::as_str)
                    .collect::<Option<_>>()?,
            };
            let values_fit = match operator {
                "In" | "NotIn" => !values.is_empty() && values.iter().all(|v| valid_label_value(v)),
                "Exists" | "DoesNotExist" => values.is_empty(),
                _ => false,
            };
            if !valid_label_key(key) || !values_fit {
                return None;
            }
            out.push(Requirement {
                key,
                operator,
                values,
            });
        }
    }
    Some(out)
}

/// A selector against a label set: absent (or null) matches everything, as the webhook API
/// defaults it; an empty one matches everything too; one Kubernetes refuses (including one not
/// of the shape it decodes: not an object, `values` not a list of strings) matches nothing.
pub(super) fn matches(selector: Option<&Value>, labels: &Labels) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return true;
    };
    selector.is_object()
        && requirements(selector).is_some_and(|reqs| reqs.iter().all(|r| r.matches(labels)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_follow_kubernetes() {
        let enabled = labels(&[("istio-injection", "enabled")]);
        let none = Labels::new();
        let by_label = json!({"matchLabels": {"istio-injection": "enabled"}});
        let not_disabled = json!({"matchExpressions": [
            {"key": "istio-injection", "operator": "NotIn", "values": ["disabled"]}
        ]});
        let no_rev = json!({"matchExpressions": [
            {"key": "istio.io/rev", "operator": "DoesNotExist"}
        ]});
        let refused = json!({"matchExpressions": [
            {"key": "istio-injection", "operator": "In", "values": []}
        ]});
        let selector_matches = matches;
        assert!(selector_matches(None, &none));
        assert!(selector_matches(Some(&json!({})), &none));
        assert!(selector_matches(Some(&by_label), &enabled));
        assert!(!selector_matches(Some(&by_label), &none));
        assert!(selector_matches(Some(&not_disabled), &none));
        assert!(selector_matches(Some(&no_rev), &enabled));
        assert!(!selector_matches(Some(&refused), &enabled));
    }

    #[test]
    fn webhook_selectors_match_as_kubernetes_does() {
        let labels: Labels = [("istio-injection".to_string(), "enabled".to_string())].into();
        let eq = json!({ "matchLabels": { "istio-injection": "enabled" } });
        let not_in = json!({ "matchExpressions": [
            { "key": "istio-injection", "operator": "NotIn", "values": ["disabled"] }
        ] });
        let bad = json!({ "matchExpressions": [{ "key": "a", "operator": "In" }] });
        let label_selector_matches = matches;
        assert!(label_selector_matches(None, &Labels::new()));
        assert!(label_selector_matches(Some(&json!({})), &Labels::new()));
        assert!(label_selector_matches(Some(&eq), &labels));
        assert!(!label_selector_matches(Some(&eq), &Labels::new()));
        assert!(label_selector_matches(Some(&not_in), &labels));
        assert!(!label_selector_matches(Some(&bad), &labels));
    }

    #[test]
    fn selectors_kubernetes_would_not_decode_match_nothing() {
        let none = Labels::new();
        for selector in [
            json!("app=x"),
            json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": "x"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x", 1]}]}),
        ] {
            assert!(!matches(Some(&selector), &none), "{selector}");
        }
    }
}
