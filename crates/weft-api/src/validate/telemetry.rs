//! Telemetry rules.

use super::{Findings, policy_target};
use crate::path::FieldPath;
use crate::types::telemetry::*;

/// Providers Istio's default mesh config defines. Others must come from the mesh config's
/// `extensionProviders`, which Weft does not read yet: they are reported as warnings.
const DEFAULT_PROVIDERS: &[&str] = &["prometheus", "stackdriver", "envoy"];

fn providers(f: &mut Findings, p: &FieldPath, list: &[ProviderRef]) {
    for (i, pr) in list.iter().enumerate() {
        let pp = p.key("providers").index(i).key("name");
        match pr.name.as_deref() {
            None | Some("") => f.err(&pp, "providers.name may not be empty"),
            Some(n) if !DEFAULT_PROVIDERS.contains(&n) => f.warn(
                &pp,
                format!("provider {n:?} is not one of the default mesh config's providers ({}); it must be defined in meshConfig.extensionProviders", DEFAULT_PROVIDERS.join(", ")),
            ),
            Some(_) => {}
        }
    }
}

pub(super) fn validate(f: &mut Findings, spec: &FieldPath, t: &Telemetry) {
    policy_target(
        f,
        spec,
        t.selector.as_ref(),
        t.target_ref.as_ref(),
        &t.target_refs,
    );
    for (i, m) in t.metrics.iter().enumerate() {
        let mp = spec.key("metrics").index(i);
        providers(f, &mp, &m.providers);
        for (j, o) in m.overrides.iter().enumerate() {
            let op = mp.key("overrides").index(j);
            for (name, to) in &o.tag_overrides {
                let tp = op.key("tagOverrides").key(name.clone());
                if name.is_empty() {
                    f.warn(&tp, "tagOverrides.name may not be empty");
                }
                let value = to.value.as_deref().unwrap_or("");
                match to.operation.unwrap_or(TagOperation::Upsert) {
                    TagOperation::Upsert if value.is_empty() => {
                        f.err(
                            &tp.key("value"),
                            "tagOverrides.value must be set when operation is UPSERT",
                        );
                    }
                    TagOperation::Remove if !value.is_empty() => {
                        f.err(
                            &tp.key("value"),
                            "tagOverrides.value may only be set when operation is UPSERT",
                        );
                    }
                    _ => {}
                }
            }
            if let Some(sel) = &o.match_ {
                if sel.custom_metric.as_deref() == Some("") {
                    f.err(
                        &op.key("match").key("customMetric"),
                        "customMetric may not be empty",
                    );
                }
                if sel.metric.is_some() && sel.custom_metric.is_some() {
                    f.err(
                        &op.key("match"),
                        "only one of metric or customMetric may be set",
                    );
                }
            }
        }
    }
    if t.tracing.len() > 1 {
        f.warn(
            &spec.key("tracing"),
            "multiple tracing is not currently supported",
        );
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        let tp = spec.key("tracing").index(i);
        if tr.providers.len() > 1 {
            f.warn(
                &tp.key("providers"),
                "multiple providers is not currently supported",
            );
        }
        providers(f, &tp, &tr.providers);
        if let Some(v) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&v)
        {
            f.err(
                &tp.key("randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            );
        }
        for (name, tag) in &tr.custom_tags {
            let cp = tp.key("customTags").key(name.clone());
            if name.is_empty() {
                f.err(&cp, "tag name may not be empty");
            }
            let set = usize::from(tag.literal.is_some())
                + usize::from(tag.header.is_some())
                + usize::from(tag.environment.is_some())
                + usize::from(tag.formatter.is_some());
            if set != 1 {
                f.err(
                    &cp,
                    "exactly one of literal, header, environment or formatter must be set",
                );
            }
            if tag
                .literal
                .as_ref()
                .is_some_and(|l| l.value.as_deref().unwrap_or("").is_empty())
            {
                f.err(
                    &cp.key("literal").key("value"),
                    "literal tag value may not be empty",
                );
            }
            if tag
                .header
                .as_ref()
                .is_some_and(|h| h.name.as_deref().unwrap_or("").is_empty())
            {
                f.err(
                    &cp.key("header").key("name"),
                    "header tag name may not be empty",
                );
            }
            if tag
                .environment
                .as_ref()
                .is_some_and(|e| e.name.as_deref().unwrap_or("").is_empty())
            {
                f.err(
                    &cp.key("environment").key("name"),
                    "environment tag name may not be empty",
                );
            }
        }
    }
    for (i, al) in t.access_logging.iter().enumerate() {
        let ap = spec.key("accessLogging").index(i);
        providers(f, &ap, &al.providers);
        if al
            .filter
            .as_ref()
            .is_some_and(|x| x.expression.as_deref().unwrap_or("").is_empty())
        {
            f.err(
                &ap.key("filter").key("expression"),
                "filter expression may not be empty",
            );
        }
    }
}
