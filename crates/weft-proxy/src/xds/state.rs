//! What the proxy accepted from the control plane, and how an update becomes a new snapshot.
//!
//! An update is all or nothing: every resource in it is checked against the supported fields,
//! converted, and (for listeners) bound before anything is published. If one fails, the update
//! is refused with a message naming the resource and the field, and the last good config keeps
//! serving. A listener or EDS cluster that still waits for what it names is warming
//! (`warming`): the version it replaces serves until it is ready.

use super::{type_url, warming};
use crate::agent::ads::AdsSecret;
use crate::cluster::{Cluster, Discovery, LocalityConfig};
use crate::config::{FieldError, convert, supported};
use crate::http::RouteSource;
use crate::listener::manager::ListenerManager;
use crate::listener::{Listener, NetworkFilter};
use crate::route::RouteConfig;
use crate::server::{DumpEntry, DynamicDump, ServerState, Snapshot};
use envoy_types::pb::envoy::config::cluster::v3::Cluster as PbCluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener as PbListener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret as PbSecret;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage, SerializeOptions};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

/// One accepted resource.
#[derive(Debug, Clone)]
pub struct Accepted<T> {
    pub version: String,
    pub bytes: Vec<u8>,
    pub json: serde_json::Value,
    pub last_updated: SystemTime,
    /// When it was accepted: the start of its warming.
    pub since: Instant,
    pub built: T,
}

/// An update for one type, as either protocol delivers it.
#[derive(Debug)]
pub struct Update<'a> {
    pub type_url: &'a str,
    /// The version reported for the type (state of the world) or the system version (delta).
    pub version: &'a str,
    /// (name if the protocol says it, per-resource version, resource)
    pub resources: Vec<(Option<&'a str>, &'a str, &'a Any)>,
    pub removed: Vec<&'a str>,
    /// State of the world for listeners and clusters: what is not listed is gone.
    pub complete: bool,
}

#[derive(Debug)]
pub struct DynamicConfig {
    shared: Arc<ServerState>,
    manager: ListenerManager,
    static_listeners: Vec<Arc<Listener>>,
    static_clusters: HashMap<String, Arc<Cluster>>,
    held: AcceptedResources,
    /// The last accepted version of each type, for state-of-the-world NACKs.
    pub versions: HashMap<String, String>,
    bootstrap_dump: serde_json::Value,
    /// When the next warming resource's fetch timeout runs out.
    deadline: Option<Instant>,
}

/// One resource of an update, converted to what the data path reads, not yet committed.
enum Resource {
    Listener(Arc<Listener>),
    Cluster(Arc<Cluster>),
    Route(Arc<RouteConfig>),
    Endpoints(Arc<Vec<LocalityConfig>>),
    Secret(Arc<AdsSecret>),
}

fn kind(type_url: &str) -> &'static str {
    match type_url {
        type_url::LISTENER => "Listener",
        type_url::CLUSTER => "Cluster",
        type_url::ROUTE => "RouteConfiguration",
        type_url::ENDPOINT => "ClusterLoadAssignment",
        type_url::SECRET => "Secret",
        _ => "resource",
    }
}

impl DynamicConfig {
    /// Starts from the static part of the bootstrap, which is serving already.
    pub fn new(
        shared: Arc<ServerState>,
        manager: ListenerManager,
        bootstrap_dump: serde_json::Value,
    ) -> Self {
        let snapshot = shared.snapshot.load_full();
        DynamicConfig {
            static_listeners: snapshot.listeners.clone(),
            static_clusters: snapshot.clusters.clone(),
            shared,
            manager,
            held: AcceptedResources::default(),
            versions: HashMap::new(),
            bootstrap_dump,
            deadline: None,
        }
    }

    /// Publishes the static bootstrap alone (no control plane yet, or none at all).
    pub fn start(&mut self) -> Result<(), String> {
        self.publish(None)
    }

    /// The route tables the listeners ask RDS for.
    pub fn route_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let all = self
            .static_listeners
            .iter()
            .chain(self.held.listeners.values().map(|a| &a.built))
            .chain(self.held.active_listeners.values().map(|a| &a.built));
        for l in all {
            for chain in &l.filter_chains {
                if let NetworkFilter::Http(hcm) = &chain.filter
                    && let RouteSource::Rds { name, .. } = &hcm.route
                {
                    names.insert(name.clone());
                }
            }
        }
        names
    }

    /// The SDS secrets the listeners' and clusters' TLS contexts name on the ADS stream.
    pub fn secret_names(&self) -> BTreeSet<String> {
        let all = self
            .static_listeners
            .iter()
            .chain(self.held.listeners.values().map(|a| &a.built))
            .chain(self.held.active_listeners.values().map(|a| &a.built));
        let listeners = all
            .flat_map(|l| l.filter_chains.iter())
            .filter_map(|c| c.tls.as_ref())
            .flat_map(|t| t.ads_secrets.iter().cloned());
        let clusters = self
            .static_clusters
            .values()
            .chain(self.held.clusters.values().map(|a| &a.built))
            .chain(self.held.active_clusters.values().map(|a| &a.built))
            .flat_map(|c| {
                c.config
                    .tls
                    .iter()
                    .chain(c.config.tls_matches.iter().filter_map(|m| m.tls.as_ref()))
                    .flat_map(|t| t.ads_secrets.iter().cloned())
                    .collect::<Vec<_>>()
            });
        listeners.chain(clusters).collect()
    }

    /// The load assignments the EDS clusters ask for.
    pub fn endpoint_names(&self) -> BTreeSet<String> {
        self.static_clusters
            .values()
            .chain(self.held.clusters.values().map(|a| &a.built))
            .chain(self.held.active_clusters.values().map(|a| &a.built))
            .filter(|c| c.config.discovery == Discovery::Eds)
            .map(|c| c.config.eds_service_name.clone())
            .collect()
    }

    /// Versions of what is held of one type, for a delta stream's `initial_resource_versions`.
    pub fn resource_versions(&self, type_url: &str) -> HashMap<String, String> {
        self.held.versions(type_url)
    }

    /// Applies an update, or refuses it whole with the reason.
    pub async fn apply(&mut self, update: &Update<'_>) -> Result<(), String> {
        let now = SystemTime::now();
        let mut errors = Vec::new();
        let mut built: Vec<(String, Accepted<Resource>)> = Vec::new();
        let mut listed = BTreeSet::new();
        for (name, version, any) in &update.resources {
            match self.build(update.type_url, *name, version, any, now) {
                Ok((name, accepted)) => {
                    if !listed.insert(name.clone()) {
                        errors.push(format!("{} {name}: listed twice", kind(update.type_url)));
                    }
                    built.push((name, accepted));
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        // New DNS clusters are warmed (their first answer) before they serve, as Envoy warms
        // them; clusters kept from before are already resolved and are not due.
        crate::cluster::manager::warm(built.iter().filter_map(|(_, a)| match &a.built {
            Resource::Cluster(c) => Some(c),
            _ => None,
        }))
        .await;
        let mut removed: Vec<String> = update.removed.iter().map(|s| s.to_string()).collect();
        if update.complete {
            let held = self.resource_versions(update.type_url);
            removed.extend(held.into_keys().filter(|n| !listed.contains(n)));
        }
        let mut next = self.held.clone();
        // Load assignments that changed or went away: only their clusters get new hosts.
        let mut moved_endpoints: BTreeSet<String> = BTreeSet::new();
        if update.type_url == type_url::ENDPOINT {
            moved_endpoints.extend(removed.iter().cloned());
            moved_endpoints.extend(built.iter().filter_map(|(name, a)| {
                let same = self
                    .held
                    .endpoints
                    .get(name)
                    .is_some_and(|h| h.bytes == a.bytes);
                (!same).then(|| name.clone())
            }));
        }
        for name in &removed {
            next.remove(update.type_url, name);
        }
        for (name, accepted) in built {
            next.insert(name, accepted);
        }
        if update.type_url == type_url::ROUTE {
            next.check_routes(&self.static_clusters)?;
        }
        let deadline = next.settle(Instant::now());
        let saved = std::mem::replace(&mut self.held, next);
        if let Err(e) = self.publish(Some(update.type_url)) {
            self.held = saved;
            return Err(e);
        }
        self.deadline = deadline;
        self.versions
            .insert(update.type_url.to_string(), update.version.to_string());
        if !moved_endpoints.is_empty() {
            self.assign_endpoints(&moved_endpoints);
        }
        self.mark_initialized();
        Ok(())
    }

    /// When the next warming resource stops waiting, if any does.
    pub fn warming_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Lets the resources whose fetch timeout ran out serve without what they wait for.
    pub fn warming_expired(&mut self) {
        let mut next = self.held.clone();
        let deadline = next.settle(Instant::now());
        let saved = std::mem::replace(&mut self.held, next);
        match self.publish(None) {
            Ok(()) => self.deadline = deadline,
            Err(e) => {
                // A listener that cannot be bound stays warming; the next update retries it.
                tracing::warn!(error = %e, "a listener done warming cannot start");
                self.held = saved;
                self.deadline = None;
            }
        }
        self.mark_initialized();
    }

    /// Envoy is initialized (`/ready` says LIVE) once it has its first clusters and listeners
    /// and none of them is warming any more.
    fn mark_initialized(&self) {
        if self.versions.contains_key(type_url::CLUSTER)
            && self.versions.contains_key(type_url::LISTENER)
            && self.held.warming_listeners().next().is_none()
            && self.held.warming_clusters().next().is_none()
        {
            self.shared.ready.store(true, Ordering::Relaxed);
        }
    }

    /// Gives the EDS clusters of the named load assignments their new hosts (none if the
    /// assignment was removed). The clusters are those of the published snapshot, so this
    /// reaches the data path at once.
    fn assign_endpoints(&self, names: &BTreeSet<String>) {
        let clusters = self
            .static_clusters
            .values()
            .chain(self.held.clusters.values().map(|a| &a.built))
            // The version still serving while its successor warms (the same one otherwise).
            .chain(warming(&self.held.active_clusters, &self.held.clusters).map(|(_, a)| &a.built));
        for c in clusters {
            if c.config.discovery == Discovery::Eds && names.contains(&c.config.eds_service_name) {
                match self.held.endpoints.get(&c.config.eds_service_name) {
                    Some(e) => c.set_endpoints(&e.built),
                    None => c.set_endpoints(&[]),
                }
            }
        }
    }

    /// Checks, decodes and converts one resource. A resource byte for byte like the one held
    /// keeps its built form (and so its connections, pools and counters).
    fn build(
        &self,
        type_url: &str,
        name: Option<&str>,
        version: &str,
        any: &Any,
        now: SystemTime,
    ) -> Result<(String, Accepted<Resource>), String> {
        let kind = kind(type_url);
        let label = name.unwrap_or("(unnamed)");
        if any.type_url != type_url {
            return Err(format!(
                "{kind} {label}: resource of type {} in a {type_url} response",
                any.type_url
            ));
        }
        let message = supported::decode_any(&any.type_url, &any.value)
            .map_err(|e| format!("{kind} {label}: {e}"))?;
        let errors = supported::check(&message, "");
        let name = match name {
            Some(n) => n.to_string(),
            None => resource_name(&message),
        };
        let fail = |errors: Vec<FieldError>| -> String {
            let list: Vec<String> = errors
                .iter()
                .map(|e| {
                    // Paths are built from the resource's root, so they start with a dot.
                    let field = e.field.trim_start_matches('.');
                    format!(
                        "{kind} {name}: {}",
                        FieldError::new(field, e.reason.clone())
                    )
                })
                .collect();
            list.join("; ")
        };
        if !errors.is_empty() {
            return Err(fail(errors));
        }
        // Unchanged: it keeps the version it came with, as Envoy reports it.
        if let Some(held) = self.held.same(type_url, &name, &any.value) {
            return Ok((name, held));
        }
        let decode_error = |e: prost::DecodeError| format!("{kind} {name}: {e}");
        let built = match type_url {
            type_url::LISTENER => {
                let pb = PbListener::decode(any.value.as_slice()).map_err(decode_error)?;
                let l =
                    convert::listener(&pb, "", &self.shared.stats).map_err(|e| fail(vec![e]))?;
                if self.static_listeners.iter().any(|s| s.name == l.name) {
                    return Err(format!("{kind} {name}: a static listener has this name"));
                }
                if l.name != name {
                    return Err(format!(
                        "{kind} {name}: name does not match the resource name"
                    ));
                }
                Resource::Listener(Arc::new(l))
            }
            type_url::CLUSTER => {
                let pb = PbCluster::decode(any.value.as_slice()).map_err(decode_error)?;
                let config = convert::cluster(&pb, "").map_err(|e| fail(vec![e]))?;
                if self.static_clusters.contains_key(&config.name) {
                    return Err(format!("{kind} {name}: a static cluster has this name"));
                }
                let previous = self.held.clusters.get(&config.name).map(|a| &*a.built);
                let cluster = Cluster::succeeding(config, previous);
                if cluster.config.discovery == Discovery::Eds
                    && let Some(e) = self.held.endpoints.get(&cluster.config.eds_service_name)
                {
                    cluster.set_endpoints(&e.built);
                }
                Resource::Cluster(cluster)
            }
            type_url::ROUTE => {
                let pb = RouteConfiguration::decode(any.value.as_slice()).map_err(decode_error)?;
                let rc = convert::route_configuration(&pb, "", false, &self.shared.stats)
                    .map_err(|e| fail(vec![e]))?;
                Resource::Route(Arc::new(rc))
            }
            type_url::ENDPOINT => {
                let pb =
                    ClusterLoadAssignment::decode(any.value.as_slice()).map_err(decode_error)?;
                let localities =
                    convert::load_assignment(&pb, "", Discovery::Eds).map_err(|e| fail(vec![e]))?;
                Resource::Endpoints(Arc::new(localities))
            }
            type_url::SECRET => {
                let pb = PbSecret::decode(any.value.as_slice()).map_err(decode_error)?;
                Resource::Secret(Arc::new(convert::secret(&pb).map_err(|e| fail(vec![e]))?))
            }
            other => return Err(format!("type {other} is not supported by the Weft proxy")),
        };
        let json = message
            .serialize_with_options(
                serde_json::value::Serializer,
                &SerializeOptions::new().use_proto_field_name(true),
            )
            .unwrap_or_default();
        Ok((
            name,
            Accepted {
                version: version.to_string(),
                bytes: any.value.clone(),
                json,
                last_updated: now,
                since: Instant::now(),
                built,
            },
        ))
    }

    /// Builds the snapshot from the static and accepted resources and makes it current. An
    /// update of `changed` type that adds a listener whose port cannot be bound is refused here.
    fn publish(&mut self, changed: Option<&str>) -> Result<(), String> {
        let mut listeners = self.static_listeners.clone();
        listeners.extend(self.held.active_listeners.values().map(|a| a.built.clone()));
        let prepared = self
            .manager
            .prepare(&listeners)
            .map_err(|e| format!("{} {e}", kind(changed.unwrap_or(type_url::LISTENER))))?;
        let mut clusters = self.static_clusters.clone();
        for (name, a) in &self.held.active_clusters {
            clusters.insert(name.clone(), a.built.clone());
        }
        let routes = self
            .held
            .routes
            .iter()
            .map(|(name, a)| (name.clone(), a.built.clone()))
            .collect();
        crate::agent::ads::ads_secrets().set(
            self.held
                .secrets
                .iter()
                .map(|(name, a)| (name.clone(), a.built.clone()))
                .collect(),
        );
        let previous = self.shared.snapshot.load();
        let version = changed
            .map(|t| self.versions.get(t).cloned().unwrap_or_default())
            .unwrap_or_default();
        let snapshot = Snapshot {
            listeners: listeners.clone(),
            clusters,
            routes,
            config_dump: self.bootstrap_dump.clone(),
            dynamic: Arc::new(self.held.dump()),
            version: if version.is_empty() {
                previous.version.clone()
            } else {
                version
            },
            last_updated: Some(SystemTime::now()),
        };
        self.shared.snapshot.store(Arc::new(snapshot));
        self.manager.commit(prepared, &listeners);
        let s = &self.shared.xds;
        s.listeners_active
            .store(listeners.len() as u64, Ordering::Relaxed);
        s.listeners_warming.store(
            self.held.warming_listeners().count() as u64,
            Ordering::Relaxed,
        );
        s.clusters_active.store(
            (self.static_clusters.len() + self.held.active_clusters.len()) as u64,
            Ordering::Relaxed,
        );
        s.clusters_warming.store(
            self.held.warming_clusters().count() as u64,
            Ordering::Relaxed,
        );
        Ok(())
    }
}

/// The accepted resources, by type and name, and which listeners and clusters serve.
#[derive(Debug, Clone, Default)]
struct AcceptedResources {
    listeners: BTreeMap<String, Accepted<Arc<Listener>>>,
    clusters: BTreeMap<String, Accepted<Arc<Cluster>>>,
    routes: BTreeMap<String, Accepted<Arc<RouteConfig>>>,
    endpoints: BTreeMap<String, Accepted<Arc<Vec<LocalityConfig>>>>,
    secrets: BTreeMap<String, Accepted<Arc<AdsSecret>>>,
    /// The listeners serving: the accepted version once it is warm, the one it replaces until
    /// then.
    active_listeners: BTreeMap<String, Accepted<Arc<Listener>>>,
    active_clusters: BTreeMap<String, Accepted<Arc<Cluster>>>,
}

fn with<T, U>(a: Accepted<U>, built: T) -> Accepted<T> {
    Accepted {
        version: a.version,
        bytes: a.bytes,
        json: a.json,
        last_updated: a.last_updated,
        since: a.since,
        built,
    }
}

impl AcceptedResources {
    /// Promotes what is warm (or done waiting) to active, drops what was removed, and returns
    /// when the next warming resource's timeout runs out.
    fn settle(&mut self, now: Instant) -> Option<Instant> {
        let routes = &self.routes;
        let listeners = promote(&self.listeners, &mut self.active_listeners, |a| {
            warming::listener(&a.built, routes, a.since, now)
        });
        let endpoints = &self.endpoints;
        let clusters = promote(&self.clusters, &mut self.active_clusters, |a| {
            warming::cluster(&a.built, endpoints, a.since, now)
        });
        match (listeners, clusters) {
            (Some(l), Some(c)) => Some(l.min(c)),
            (l, c) => l.or(c),
        }
    }

    /// Accepted listeners not serving yet.
    fn warming_listeners(&self) -> impl Iterator<Item = (&String, &Accepted<Arc<Listener>>)> {
        warming(&self.listeners, &self.active_listeners)
    }

    /// Accepted clusters not serving yet.
    fn warming_clusters(&self) -> impl Iterator<Item = (&String, &Accepted<Arc<Cluster>>)> {
        warming(&self.clusters, &self.active_clusters)
    }

    fn versions(&self, type_url: &str) -> HashMap<String, String> {
        fn versions<T>(m: &BTreeMap<String, Accepted<T>>) -> HashMap<String, String> {
            m.iter()
                .map(|(k, a)| (k.clone(), a.version.clone()))
                .collect()
        }
        match type_url {
            type_url::LISTENER => versions(&self.listeners),
            type_url::CLUSTER => versions(&self.clusters),
            type_url::ROUTE => versions(&self.routes),
            type_url::ENDPOINT => versions(&self.endpoints),
            type_url::SECRET => versions(&self.secrets),
            _ => HashMap::new(),
        }
    }

    /// The held resource of that name, if its bytes are `bytes`.
    fn same(&self, type_url: &str, name: &str, bytes: &[u8]) -> Option<Accepted<Resource>> {
        fn same<T: Clone>(
            m: &BTreeMap<String, Accepted<T>>,
            name: &str,
            bytes: &[u8],
            wrap: fn(T) -> Resource,
        ) -> Option<Accepted<Resource>> {
            let a = m.get(name).filter(|a| a.bytes == bytes)?;
            Some(with(a.clone(), wrap(a.built.clone())))
        }
        match type_url {
            type_url::LISTENER => same(&self.listeners, name, bytes, Resource::Listener),
            type_url::CLUSTER => same(&self.clusters, name, bytes, Resource::Cluster),
            type_url::ROUTE => same(&self.routes, name, bytes, Resource::Route),
            type_url::ENDPOINT => same(&self.endpoints, name, bytes, Resource::Endpoints),
            type_url::SECRET => same(&self.secrets, name, bytes, Resource::Secret),
            _ => None,
        }
    }

    fn dump(&self) -> DynamicDump {
        fn entry<T>(name: &str, a: &Accepted<T>) -> DumpEntry {
            DumpEntry {
                name: name.to_string(),
                version: a.version.clone(),
                last_updated: a.last_updated,
                json: a.json.clone(),
            }
        }
        fn entries<T>(m: &BTreeMap<String, Accepted<T>>) -> Vec<DumpEntry> {
            m.iter().map(|(name, a)| entry(name, a)).collect()
        }
        DynamicDump {
            listeners: entries(&self.active_listeners),
            warming_listeners: self
                .warming_listeners()
                .map(|(name, a)| entry(name, a))
                .collect(),
            clusters: entries(&self.active_clusters),
            warming_clusters: self
                .warming_clusters()
                .map(|(name, a)| entry(name, a))
                .collect(),
            routes: entries(&self.routes),
            endpoints: entries(&self.endpoints),
        }
    }

    fn remove(&mut self, type_url: &str, name: &str) {
        match type_url {
            type_url::LISTENER => drop(self.listeners.remove(name)),
            type_url::CLUSTER => drop(self.clusters.remove(name)),
            type_url::ROUTE => drop(self.routes.remove(name)),
            type_url::ENDPOINT => drop(self.endpoints.remove(name)),
            type_url::SECRET => drop(self.secrets.remove(name)),
            _ => {}
        }
    }

    fn insert(&mut self, name: String, a: Accepted<Resource>) {
        match &a.built {
            Resource::Listener(l) => {
                let l = l.clone();
                self.listeners.insert(name, with(a, l));
            }
            Resource::Cluster(c) => {
                let c = c.clone();
                self.clusters.insert(name, with(a, c));
            }
            Resource::Route(r) => {
                let r = r.clone();
                self.routes.insert(name, with(a, r));
            }
            Resource::Endpoints(e) => {
                let e = e.clone();
                self.endpoints.insert(name, with(a, e));
            }
            Resource::Secret(s) => {
                let s = s.clone();
                self.secrets.insert(name, with(a, s));
            }
        }
    }

    /// A route table that asks for cluster validation must name only known clusters.
    fn check_routes(&self, static_clusters: &HashMap<String, Arc<Cluster>>) -> Result<(), String> {
        for (name, a) in &self.routes {
            if !a.built.validate_clusters {
                continue;
            }
            for (_, _, cluster) in a.built.named_clusters() {
                if !self.clusters.contains_key(cluster) && !static_clusters.contains_key(cluster) {
                    return Err(format!(
                        "RouteConfiguration {name}: unknown cluster '{cluster}' (validate_clusters is set)"
                    ));
                }
            }
        }
        Ok(())
    }
}

type Map<T> = BTreeMap<String, Accepted<Arc<T>>>;

/// Makes the accepted resources that no longer wait the serving ones, drops serving ones no
/// longer accepted, and returns when the next waiting one's timeout runs out.
fn promote<T>(
    accepted: &Map<T>,
    active: &mut Map<T>,
    wait: impl Fn(&Accepted<Arc<T>>) -> warming::Wait,
) -> Option<Instant> {
    active.retain(|name, _| accepted.contains_key(name));
    let mut deadline: Option<Instant> = None;
    for (name, a) in accepted {
        let w = wait(a);
        if w.waiting {
            if let Some(d) = w.deadline {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        } else {
            active.insert(name.clone(), a.clone());
        }
    }
    deadline
}

/// Accepted resources that are not the ones serving under their name.
fn warming<'a, T>(
    accepted: &'a Map<T>,
    active: &'a Map<T>,
) -> impl Iterator<Item = (&'a String, &'a Accepted<Arc<T>>)> {
    accepted.iter().filter(|(name, a)| {
        let serving = active.get(*name);
        !serving.is_some_and(|x| Arc::ptr_eq(&x.built, &a.built))
    })
}

/// The name inside a resource: what state-of-the-world responses identify it by.
fn resource_name(message: &DynamicMessage) -> String {
    let field =
        if message.descriptor().full_name() == "envoy.config.endpoint.v3.ClusterLoadAssignment" {
            "cluster_name"
        } else {
            "name"
        };
    message
        .get_field_by_name(field)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
