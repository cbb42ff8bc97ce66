//! Admission webhook analyzers. `webhook.Analyzer`: Istio injector webhooks whose selectors
//! overlap, so that one pod would be injected twice, or that call a Service nobody defines
//! (IST0139). `externalcontrolplane.ExternalControlPlaneAnalyzer`: Istio's validating and
//! injecting webhooks that reach an external control plane by an unusable URL (IST0163) or by
//! an IP address (IST0164).

use super::json::present;
use super::label_selector;
use super::{Context, Findings};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use weft_api::Resource;
use weft_api::load::Loaded;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;

const REV_LABEL: &str = "istio.io/rev";

fn is_admission(o: &Loaded, kind: &str) -> bool {
    o.resource.kind() == kind
        && o.resource
            .api_version()
            .starts_with("admissionregistration.k8s.io/")
}

fn hook_name(hook: &Value) -> &str {
    hook.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// The revisions a webhook configuration serves: its own `istio.io/rev` label and every value
/// its webhooks' selectors give that label.
fn revisions_of(o: &Loaded, hooks: &[Value]) -> BTreeSet<String> {
    let mut revs: BTreeSet<String> = o
        .resource
        .metadata()
        .labels
        .get(REV_LABEL)
        .cloned()
        .into_iter()
        .collect();
    for hook in hooks {
        for field in ["namespaceSelector", "objectSelector"] {
            let Some(selector) = present(hook, field) else {
                continue;
            };
            if let Some(rev) = selector
                .pointer("/matchLabels")
                .and_then(|m| m.get(REV_LABEL))
                .and_then(Value::as_str)
            {
                revs.insert(rev.to_string());
            }
            let expressions = selector.get("matchExpressions").and_then(Value::as_array);
            for e in expressions.into_iter().flatten() {
                if e.get("key").and_then(Value::as_str) == Some(REV_LABEL) {
                    let values = e.get("values").and_then(Value::as_array);
                    revs.extend(
                        values
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_string),
                    );
                }
            }
        }
    }
    revs
}

/// The label sets Istio tries a selector on: none, `key=on`, `key=off`, then each of those
/// again with every revision's `istio.io/rev`.
fn label_sets(key: &str, on: &str, off: &str, revisions: &BTreeSet<String>) -> Vec<Labels> {
    let mut sets = Vec::new();
    for rev in std::iter::once(None).chain(revisions.iter().map(Some)) {
        for value in [None, Some(on), Some(off)] {
            let mut labels = Labels::new();
            if let Some(v) = value {
                labels.insert(key.to_string(), v.to_string());
            }
            if let Some(r) = rev {
                labels.insert(REV_LABEL.to_string(), r.clone());
            }
            sets.push(labels);
        }
    }
    sets
}

/// `webhook.Analyzer`: Istio's injector webhooks (those with a revision, or a webhook named
/// `...istio.io`) must each be the only one to match any namespace/pod label combination, and
/// must call Services that exist.
pub fn webhooks(ctx: &Context, out: &mut Findings) {
    // Configuration name -> its webhooks; `configuration/webhook` -> the object, as Istio
    // indexes them (a later object of the same name replaces an earlier one).
    let mut configs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut owners: BTreeMap<String, &Loaded> = BTreeMap::new();
    let mut revisions: BTreeSet<String> = BTreeSet::new();
    for o in &ctx.objects {
        if !is_admission(o, "MutatingWebhookConfiguration") {
            continue;
        }
        let hooks: Vec<Value> = Context::json(o)
            .get("webhooks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let revs = revisions_of(o, &hooks);
        if revs.is_empty() && !hooks.iter().any(|h| hook_name(h).ends_with("istio.io")) {
            continue;
        }
        let name = Context::full_name(o);
        for hook in &hooks {
            owners.insert(format!("{name}/{}", hook_name(hook)), o);
        }
        configs.insert(name, hooks);
        revisions.extend(revs);
    }

    // Istio drops repeats of a message (same object, same text) when it collects them.
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut report = |key: &str, text: String| {
        if let Some(o) = owners.get(key)
            && seen.insert((Context::full_name(o), text.clone()))
        {
            out.add(o, &FieldPath::root(), "IST0139", &[text]);
        }
    };

    let namespaces = label_sets("istio-injection", "enabled", "disabled", &revisions);
    let objects = label_sets("sidecar.istio.io/inject", "true", "false", &revisions);
    for ns_labels in &namespaces {
        for obj_labels in &objects {
            let matched: BTreeSet<String> = configs
                .iter()
                .flat_map(move |(name, hooks)| {
                    hooks
                        .iter()
                        .filter(move |h| {
                            label_selector::matches(h.get("namespaceSelector"), ns_labels)
                                && label_selector::matches(h.get("objectSelector"), obj_labels)
                        })
                        .map(move |h| format!("{name}/{}", hook_name(h)))
                })
                .collect();
            if matched.len() < 2 {
                continue;
            }
            for m in &matched {
                let others: Vec<&str> = matched
                    .iter()
                    .filter(|x| *x != m)
                    .map(String::as_str)
                    .collect();
                report(
                    m,
                    format!(
                        "Webhook overlaps with others: [{}]. This may cause injection to occur twice.",
                        others.join(" ")
                    ),
                );
            }
        }
    }

    let services: BTreeSet<(&str, &str)> = ctx
        .objects
        .iter()
        .filter(|o| matches!(o.resource, Resource::Service(_)))
        .map(|o| (Context::namespace(o), o.resource.name()))
        .collect();
    for (name, hooks) in &configs {
        for hook in hooks {
            // A webhook called by URL names no Service.
            let Some(service) = hook.get("clientConfig").and_then(|c| present(c, "service")) else {
                continue;
            };
            let ns = service
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let svc = service
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if services.contains(&(ns, svc)) {
                continue;
            }
            let full = if ns.is_empty() {
                svc.to_string()
            } else {
                format!("{ns}/{svc}")
            };
            report(
                &format!("{name}/{}", hook_name(hook)),
                format!("Injector refers to a control plane service that does not exist: {full}."),
            );
        }
    }
}

/// `%XX` escapes are complete and hexadecimal.
fn escapes_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| {
            b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        })
}

/// Go's host rules: escapes only for bytes past ASCII (or `%25`, an IPv6 zone's `%`), and only
/// the characters a host may carry.
fn host_ok(host: &str) -> bool {
    let b = host.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let (Some(&hi), Some(&lo)) = (b.get(i + 1), b.get(i + 2)) else {
                return false;
            };
            if !hi.is_ascii_hexdigit()
                || !lo.is_ascii_hexdigit()
                || (matches!(hi, b'0'..=b'7') && (hi, lo) != (b'2', b'5'))
            {
                return false;
            }
            i += 3;
        } else {
            if c < 0x80 && !c.is_ascii_alphanumeric() && !b"-_.~!$&'()*+,;=:[]<>\"".contains(&c) {
                return false;
            }
            i += 1;
        }
    }
    true
}

/// `:digits`, `:` or nothing.
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|c| c.is_ascii_digit()))
}

/// The host part of an authority (`user@host:port`), or `None` where Go's URL parser refuses
/// it.
fn parse_authority(authority: &str) -> Option<&str> {
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let port_ok = match host.strip_prefix('[') {
        Some(bracketed) => {
            let (_, after) = bracketed.rsplit_once(']')?;
            valid_optional_port(after)
        }
        None => host
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.bytes().all(|c| c.is_ascii_digit())),
    };
    if !port_ok || !host_ok(host) {
        return None;
    }
    let user_ok = userinfo.is_none_or(|u| {
        escapes_ok(u)
            && u.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&c))
    });
    user_ok.then_some(host)
}

/// Go's `url.Parse(raw).Hostname()`, or `None` where `url.Parse` fails.
fn url_hostname(raw: &str) -> Option<&str> {
    if raw.bytes().any(|c| c < 0x20 || c == 0x7f) {
        return None;
    }
    let (url, fragment) = raw.split_once('#').unwrap_or((raw, ""));
    if !escapes_ok(fragment) {
        return None;
    }
    if url == "*" {
        return Some("");
    }
    let mut scheme = "";
    let mut rest = url;
    for (i, c) in url.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            // "missing protocol scheme"
            b':' if i == 0 => return None,
            b':' => {
                (scheme, rest) = url.split_once(':')?;
                break;
            }
            _ => break,
        }
    }
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            // An opaque URL (`mailto:x`) has no host.
            return Some("");
        }
        if rest.split('/').next().is_some_and(|seg| seg.contains(':')) {
            return None;
        }
    }
    let mut host = "";
    let mut path = rest;
    if let Some(after) = rest.strip_prefix("//")
        && (!scheme.is_empty() || !after.starts_with('/'))
    {
        let (authority, p) = after.find('/').map_or((after, ""), |i| after.split_at(i));
        host = parse_authority(authority)?;
        path = p;
    }
    if !escapes_ok(path) {
        return None;
    }
    // Drop the port, then an IPv6 literal's brackets.
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    Some(
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host),
    )
}

/// Istio's `lintWebhookURL`: `Ok(true)` for an IP address, `Ok(false)` for a usable hostname,
/// or why the URL is unusable. Istio then resolves the hostname through DNS; Weft analyzes
/// offline and does not, so only an empty hostname (which can never resolve) fails that step.
fn lint_url(url: &str) -> Result<bool, &'static str> {
    let host = url_hostname(url).ok_or("was provided in an invalid format")?;
    if host.parse::<IpAddr>().is_ok() {
        return Ok(true);
    }
    if host.is_empty() {
        return Err("cannot be resolved via a DNS lookup");
    }
    Ok(false)
}

/// Istio's validating (`istiod-default-validator`, `istio-validator*`) and injecting
/// (`istio-sidecar-injector*`) webhook configurations, by kind and name.
fn istio_webhook_config(kind: &str, name: &str) -> bool {
    if kind == "ValidatingWebhookConfiguration" {
        name == "istiod-default-validator" || name.starts_with("istio-validator")
    } else {
        name.starts_with("istio-sidecar-injector")
    }
}

/// `externalcontrolplane.ExternalControlPlaneAnalyzer`: every webhook of Istio's own
/// configurations either names a Service or has a URL that parses to a hostname.
pub fn external_control_plane(ctx: &Context, out: &mut Findings) {
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        for o in &ctx.objects {
            if !is_admission(o, kind) || !istio_webhook_config(kind, o.resource.name()) {
                continue;
            }
            let json = Context::json(o);
            let hooks = json.get("webhooks").and_then(Value::as_array);
            for hook in hooks.into_iter().flatten() {
                let name = hook_name(hook).to_string();
                let client = hook.get("clientConfig");
                let at = FieldPath::root();
                match client.and_then(|c| c.get("url")).and_then(Value::as_str) {
                    Some(url) => match lint_url(url) {
                        Ok(true) => out.add(o, &at, "IST0164", &[url.to_string(), name]),
                        Ok(false) => {}
                        Err(why) => {
                            out.add(o, &at, "IST0163", &[url.to_string(), name, why.to_string()]);
                        }
                    },
                    None if client.and_then(|c| present(c, "service")).is_none() => {
                        out.add(o, &at, "IST0163", &[String::new(), name, "is blank".into()]);
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lint_as_go_parses_them() {
        assert_eq!(lint_url("https://test.com:15017/validate"), Ok(false));
        assert_eq!(lint_url("https://1.1.1.1:5100/inject"), Ok(true));
        assert_eq!(lint_url("https://[::1]:443/x"), Ok(true));
        assert!(lint_url("").is_err());
        assert!(lint_url("://x").is_err());
        assert!(lint_url("https://host:port/").is_err());
        assert!(lint_url("https://a b/").is_err());
    }
}
