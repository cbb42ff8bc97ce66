//! Checks across objects, which validation of one object cannot make: the same object defined
//! twice, and the references to delegates and `match.gateways` that no analyzer checks. Each
//! problem is located at the field that makes the reference, with Istio's wording
//! (`istioctl analyze`'s IST0101, ReferencedResourceNotFound), so that `weft validate`,
//! `weft up` and `/debug/problems` say the same thing.

use std::collections::{BTreeMap, BTreeSet};
use weft_api::Resource;
use weft_api::load::{Loaded, ObjectRef, Problem, Severity};
use weft_api::path::FieldPath;

/// The objects of `objects` whose identity an earlier one already has, with the error that
/// refuses each, naming where the first one is. Order decides: files in sorted order, objects
/// in file order, as `kubectl apply -f DIR` applies them (the later one would overwrite, which a
/// folder of config almost never means).
pub fn duplicates(objects: &[&Loaded]) -> Vec<(usize, Problem)> {
    let mut first: BTreeMap<ObjectRef, &Loaded> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        let id = obj.object_ref();
        let name = FieldPath::root().key("metadata").key("name");
        match first.get(&id) {
            Some(earlier) => {
                let there = earlier.problem(Severity::Error, name.clone(), String::new());
                out.push((
                    i,
                    obj.problem(
                        Severity::Error,
                        name,
                        format!(
                            "duplicate: {id} is already defined at {}:{}; this one is refused",
                            there.file, there.line
                        ),
                    ),
                ));
            }
            None => {
                first.insert(id, obj);
            }
        }
    }
    out
}

/// References in `objects` that no analyzer of `istioctl analyze` checks, as warnings with the
/// code it would give them (IST0101): delegate VirtualServices and `match.gateways`. Hosts,
/// subsets, `gateways` and DestinationRule hosts are the analyzers' (`analysis::live_problems`),
/// so that `weft up`, `weft validate` and `weft analyze` report them alike. The object still
/// applies, as istiod applies it, and the requests that follow the reference fail.
pub fn missing(objects: &[&Loaded]) -> Vec<Problem> {
    let mut gateways = BTreeSet::new();
    let mut virtual_services = BTreeSet::new();
    for obj in objects {
        let id = format!("{}/{}", obj.resource.namespace(), obj.resource.name());
        match &obj.resource {
            Resource::Gateway(_) => {
                gateways.insert(id);
            }
            Resource::VirtualService(_) => {
                virtual_services.insert(id);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for obj in objects {
        let Resource::VirtualService(vs) = &obj.resource else {
            continue;
        };
        let ns = obj.resource.namespace();
        for (i, http) in vs.spec.http.iter().enumerate() {
            let at = FieldPath::root().key("spec").key("http").index(i);
            if let Some(d) = &http.delegate {
                let name = d.name.as_deref().unwrap_or("");
                let key = format!("{}/{name}", d.namespace.as_deref().unwrap_or(ns));
                if !name.is_empty() && !virtual_services.contains(&key) {
                    out.push(obj.problem(
                        Severity::Warning,
                        at.key("delegate").key("name"),
                        format!("Referenced VirtualService not found: {key:?} [IST0101 Error]"),
                    ));
                }
            }
            for (j, m) in http.matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().flatten().enumerate() {
                    if g == "mesh" || g.is_empty() {
                        continue;
                    }
                    let key = match g.split_once('/') {
                        Some(_) => g.clone(),
                        None => format!("{ns}/{g}"),
                    };
                    if !gateways.contains(&key) {
                        let p = at.key("match").index(j).key("gateways").index(k);
                        out.push(obj.problem(
                            Severity::Warning,
                            p,
                            format!("Referenced gateway not found: {key:?} [IST0101 Error]"),
                        ));
                    }
                }
            }
        }
    }
    out
}
