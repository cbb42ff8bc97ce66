//! Delegate VirtualServices: an `http` entry of a root VirtualService that names a delegate
//! (a VirtualService without hosts) becomes the delegate's routes, each under the root entry's
//! match, as istiod merges them: the delegate's match narrows the root's (its URI must lie
//! within the root's), conditions of both apply, and a contradiction drops the pair.

use super::config::Obj;
use super::http_route::{self, Context};
use envoy_types::pb::envoy::config::route::v3::Route;
use std::collections::BTreeMap;
use weft_api::types::common::StringMatch;
use weft_api::types::virtual_service::{HttpMatchRequest, HttpRoute, VirtualService};

pub fn routes(
    ctx: &Context<'_, '_>,
    root: &Obj<VirtualService>,
    index: usize,
    http: &HttpRoute,
) -> Vec<Route> {
    let field = format!("{}: http[{index}].delegate", root.label());
    let Some(d) = &http.delegate else {
        return Vec::new();
    };
    let name = d.name.as_deref().unwrap_or_default();
    let namespace = d.namespace.as_deref().unwrap_or(&root.namespace);
    let Some(delegate) = ctx
        .scope
        .all_virtual_services()
        .iter()
        .find(|v| v.name == name && v.namespace == namespace)
    else {
        ctx.scope.problem(format!(
            "{field}: VirtualService {namespace}/{name} does not exist; the entry routes nothing"
        ));
        return Vec::new();
    };
    if !delegate.spec.hosts.is_empty() {
        ctx.scope.problem(format!(
            "{field}: {} has hosts, so it is not a delegate; the entry routes nothing",
            delegate.label()
        ));
        return Vec::new();
    }
    // The delegate serves where its root does.
    let bound = Obj {
        kind: delegate.kind,
        name: delegate.name.clone(),
        namespace: delegate.namespace.clone(),
        spec: VirtualService {
            gateways: root.spec.gateways.clone(),
            ..delegate.spec.clone()
        },
    };
    let roots: Vec<Option<&HttpMatchRequest>> = if http.matches.is_empty() {
        vec![None]
    } else {
        http.matches.iter().map(Some).collect()
    };
    let mut out = Vec::new();
    for (j, entry) in delegate.spec.http.iter().enumerate() {
        if entry.delegate.is_some() {
            ctx.scope.problem(format!(
                "{}: http[{j}].delegate: a delegate cannot delegate again; the entry is left out",
                delegate.label()
            ));
            continue;
        }
        let inner: Vec<Option<&HttpMatchRequest>> = if entry.matches.is_empty() {
            vec![None]
        } else {
            entry.matches.iter().map(Some).collect()
        };
        let mut matches = Vec::new();
        for r in &roots {
            for i in &inner {
                if let Some(m) = merge(*r, *i) {
                    matches.push(m);
                }
            }
        }
        if matches.is_empty() {
            continue;
        }
        let merged = HttpRoute {
            matches,
            ..entry.clone()
        };
        out.extend(http_route::routes(ctx, &bound, j, &merged));
    }
    out
}

/// The delegate's match under the root's, or `None` when they cannot both hold.
fn merge(
    root: Option<&HttpMatchRequest>,
    inner: Option<&HttpMatchRequest>,
) -> Option<HttpMatchRequest> {
    let mut m = inner.cloned().unwrap_or_default();
    let Some(r) = root else { return Some(m) };
    m.uri = match (&r.uri, &m.uri) {
        (None, u) => u.clone(),
        (u, None) => u.clone(),
        (
            Some(StringMatch::Prefix(p)),
            Some(inner @ (StringMatch::Prefix(q) | StringMatch::Exact(q))),
        ) if q.starts_with(p.as_str()) => Some(inner.clone()),
        (Some(a), Some(b)) if a == b => Some(a.clone()),
        _ => return None,
    };
    fn same<T: PartialEq + Clone>(a: &Option<T>, b: &mut Option<T>) -> bool {
        match (a, b.as_ref()) {
            (Some(x), None) => {
                *b = Some(x.clone());
                true
            }
            (Some(x), Some(y)) => x == y,
            (None, _) => true,
        }
    }
    if !(same(&r.scheme, &mut m.scheme)
        && same(&r.method, &mut m.method)
        && same(&r.authority, &mut m.authority)
        && same(&r.port, &mut m.port)
        && same(&r.source_namespace, &mut m.source_namespace)
        && same(&r.gateways, &mut m.gateways)
        && same(&r.ignore_uri_case, &mut m.ignore_uri_case))
    {
        return None;
    }
    fn union<V: PartialEq + Clone>(
        a: &Option<BTreeMap<String, V>>,
        b: &mut Option<BTreeMap<String, V>>,
    ) -> bool {
        let Some(a) = a else { return true };
        let target = b.get_or_insert_with(BTreeMap::new);
        for (k, v) in a {
            match target.get(k) {
                Some(existing) if existing != v => return false,
                Some(_) => {}
                None => {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        true
    }
    if !(union(&r.headers, &mut m.headers)
        && union(&r.without_headers, &mut m.without_headers)
        && union(&r.query_params, &mut m.query_params)
        && union(&r.source_labels, &mut m.source_labels))
    {
        return None;
    }
    Some(m)
}
