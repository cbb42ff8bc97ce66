//! Checks across objects, which validation of one object cannot make: the same object defined
//! twice, and references to hosts, subsets, gateways and delegates that do not exist. Each
//! problem is located at the field that makes the reference, with Istio's wording
//! (`istioctl analyze`'s IST0101, ReferencedResourceNotFound), so that `weft validate`,
//! `weft up` and `/debug/problems` say the same thing.

use crate::{Registry, host};
use std::collections::{BTreeMap, BTreeSet};
use weft_api::load::{Loaded, ObjectRef, Problem, Severity};
use weft_api::path::FieldPath;
use weft_api::types::virtual_service::{Destination, VirtualService};
use weft_api::{Resource, resource::IstioObject};

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

/// References in `objects` to what neither they nor `registry` define, as warnings: the object
/// still applies, as istiod applies it, and the requests that follow the reference fail. Each
/// ends with its `istioctl analyze` code, so that the analyzers' own IST0101 at the same field
/// is recognised as this one (see `source.rs`).
pub fn missing(objects: &[&Loaded], registry: &Registry, domain_suffix: &str) -> Vec<Problem> {
    let mut subsets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut gateways = BTreeSet::new();
    let mut virtual_services = BTreeSet::new();
    for obj in objects {
        let ns = obj.resource.namespace();
        match &obj.resource {
            Resource::DestinationRule(dr) => {
                let fqdn = host::fqdn(dr.spec.host.as_deref().unwrap_or(""), ns, domain_suffix);
                let names = dr.spec.subsets.iter().filter_map(|s| s.name.clone());
                subsets.entry(fqdn).or_default().extend(names);
            }
            Resource::Gateway(_) => {
                gateways.insert(format!("{ns}/{}", obj.resource.name()));
            }
            Resource::VirtualService(_) => {
                virtual_services.insert(format!("{ns}/{}", obj.resource.name()));
            }
            _ => {}
        }
    }
    let known = |fqdn: &str| {
        fqdn.contains('*')
            || registry
                .services
                .iter()
                .any(|s| host::matches(&s.hostname, fqdn))
    };
    let mut out = Vec::new();
    for obj in objects {
        let ns = obj.resource.namespace();
        let spec = FieldPath::root().key("spec");
        match &obj.resource {
            Resource::VirtualService(vs) => {
                let refs = Refs {
                    obj,
                    ns,
                    domain_suffix,
                    known: &known,
                    subsets: &subsets,
                };
                refs.virtual_service(vs, &spec, &gateways, &virtual_services, &mut out);
            }
            Resource::DestinationRule(dr) => {
                let h = dr.spec.host.as_deref().unwrap_or("");
                if !h.is_empty() && !known(&host::fqdn(h, ns, domain_suffix)) {
                    out.push(obj.problem(
                        Severity::Warning,
                        spec.key("host"),
                        format!("Referenced host not found: {h:?} [IST0101 Error]"),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

struct Refs<'a, F: Fn(&str) -> bool> {
    obj: &'a Loaded,
    ns: &'a str,
    domain_suffix: &'a str,
    known: &'a F,
    subsets: &'a BTreeMap<String, BTreeSet<String>>,
}

impl<F: Fn(&str) -> bool> Refs<'_, F> {
    fn virtual_service(
        &self,
        vs: &IstioObject<VirtualService>,
        spec: &FieldPath,
        gateways: &BTreeSet<String>,
        virtual_services: &BTreeSet<String>,
        out: &mut Vec<Problem>,
    ) {
        for (i, g) in vs.spec.gateways.iter().enumerate() {
            self.gateway(g, spec.key("gateways").index(i), gateways, out);
        }
        for (i, http) in vs.spec.http.iter().enumerate() {
            let at = spec.key("http").index(i);
            for (j, d) in http.route.iter().flatten().enumerate() {
                let p = at.key("route").index(j).key("destination");
                self.destination(d.destination.as_ref(), p, out);
            }
            self.destination(http.mirror.as_ref(), at.key("mirror"), out);
            for (j, m) in http.mirrors.iter().flatten().enumerate() {
                let p = at.key("mirrors").index(j).key("destination");
                self.destination(m.destination.as_ref(), p, out);
            }
            if let Some(d) = &http.delegate {
                let name = d.name.as_deref().unwrap_or("");
                let key = format!("{}/{name}", d.namespace.as_deref().unwrap_or(self.ns));
                if !name.is_empty() && !virtual_services.contains(&key) {
                    out.push(self.obj.problem(
                        Severity::Warning,
                        at.key("delegate").key("name"),
                        format!("Referenced VirtualService not found: {key:?} [IST0101 Error]"),
                    ));
                }
            }
            for (j, m) in http.matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().flatten().enumerate() {
                    let p = at.key("match").index(j).key("gateways").index(k);
                    self.gateway(g, p, gateways, out);
                }
            }
        }
        for (i, tcp) in vs.spec.tcp.iter().enumerate() {
            for (j, d) in tcp.route.iter().enumerate() {
                let p = spec.key("tcp").index(i).key("route").index(j);
                self.destination(d.destination.as_ref(), p.key("destination"), out);
            }
        }
        for (i, tls) in vs.spec.tls.iter().enumerate() {
            for (j, d) in tls.route.iter().enumerate() {
                let p = spec.key("tls").index(i).key("route").index(j);
                self.destination(d.destination.as_ref(), p.key("destination"), out);
            }
        }
    }

    fn gateway(
        &self,
        name: &str,
        at: FieldPath,
        gateways: &BTreeSet<String>,
        out: &mut Vec<Problem>,
    ) {
        if name == "mesh" || name.is_empty() {
            return;
        }
        let key = match name.split_once('/') {
            Some(_) => name.to_string(),
            None => format!("{}/{name}", self.ns),
        };
        if !gateways.contains(&key) {
            out.push(self.obj.problem(
                Severity::Warning,
                at,
                format!("Referenced gateway not found: {key:?} [IST0101 Error]"),
            ));
        }
    }

    fn destination(&self, d: Option<&Destination>, at: FieldPath, out: &mut Vec<Problem>) {
        let Some(h) = d.and_then(|d| d.host.as_deref()).filter(|h| !h.is_empty()) else {
            return;
        };
        let fqdn = host::fqdn(h, self.ns, self.domain_suffix);
        if !(self.known)(&fqdn) {
            out.push(self.obj.problem(
                Severity::Warning,
                at.key("host"),
                format!("Referenced host not found: {h:?} [IST0101 Error]"),
            ));
            return;
        }
        let Some(subset) = d
            .and_then(|d| d.subset.as_deref())
            .filter(|s| !s.is_empty())
        else {
            return;
        };
        let defined = self
            .subsets
            .iter()
            .any(|(dr_host, names)| host::matches(dr_host, &fqdn) && names.contains(subset));
        if !defined {
            out.push(self.obj.problem(
                Severity::Warning,
                at.key("subset"),
                format!("Referenced host+subset in destinationrule not found: \"{h}+{subset}\" [IST0101 Error]"),
            ));
        }
    }
}
