//! Clusters: one per visible service port (`outbound|PORT||HOST`) and one per DestinationRule
//! subset (`outbound|PORT|SUBSET|HOST`), with the rule's traffic policy; Istio's fixed
//! `BlackHoleCluster` and `PassthroughCluster`; and, for sidecars, `inbound|PORT||`.

use super::config::{Obj, Scope};
use super::endpoint;
use super::pb;
use super::{Generated, Inputs};
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, CommonLbConfig, DiscoveryType, DnsLookupFamily, EdsClusterConfig,
    LbPolicy, MaglevLbConfig, RingHashLbConfig, common_lb_config,
};
use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, Cluster, OutlierDetection};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
    explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt32Value;
use weft_api::types::destination_rule::{
    ConnectionPoolSettings, DestinationRule, H2UpgradePolicy, LoadBalancerSettings,
    OutlierDetection as IstioOutlier, SimpleLb, TrafficPolicy,
};
use weft_registry::{Protocol, Resolution, Service, ServicePort};

pub const BLACK_HOLE: &str = "BlackHoleCluster";
pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";

/// `outbound|PORT|SUBSET|HOST`, Istio's cluster name.
pub fn outbound_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

pub fn inbound_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The settings that apply to one cluster, after subset- and port-level overrides.
#[derive(Default, Clone)]
pub struct Policy<'a> {
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a IstioOutlier>,
    pub tls: Option<&'a weft_api::types::destination_rule::ClientTlsSettings>,
}

impl<'a> Policy<'a> {
    /// A traffic policy over `self`, its port-level settings for `port` over that, as Istio
    /// merges them: each setting replaced whole, not field by field.
    pub fn merge(mut self, tp: Option<&'a TrafficPolicy>, port: u16) -> Policy<'a> {
        let Some(tp) = tp else { return self };
        self.load_balancer = tp.load_balancer.as_ref().or(self.load_balancer);
        self.connection_pool = tp.connection_pool.as_ref().or(self.connection_pool);
        self.outlier_detection = tp.outlier_detection.as_ref().or(self.outlier_detection);
        self.tls = tp.tls.as_ref().or(self.tls);
        let port_level = tp.port_level_settings.iter().find(|p| {
            p.port
                .as_ref()
                .and_then(|s| s.number)
                .is_some_and(|n| n == i64::from(port))
        });
        if let Some(p) = port_level {
            self.load_balancer = p.load_balancer.as_ref().or(self.load_balancer);
            self.connection_pool = p.connection_pool.as_ref().or(self.connection_pool);
            self.outlier_detection = p.outlier_detection.as_ref().or(self.outlier_detection);
            self.tls = p.tls.as_ref().or(self.tls);
        }
        self
    }
}

/// The DestinationRule policy for a service port and subset (`""` for none).
pub fn policy<'a>(dr: Option<&'a Obj<DestinationRule>>, subset: &str, port: u16) -> Policy<'a> {
    let Some(dr) = dr else {
        return Policy::default();
    };
    let base = Policy::default().merge(dr.spec.traffic_policy.as_ref(), port);
    if subset.is_empty() {
        return base;
    }
    let sub = dr
        .spec
        .subsets
        .iter()
        .find(|s| s.name.as_deref() == Some(subset));
    base.merge(sub.and_then(|s| s.traffic_policy.as_ref()), port)
}

/// Every outbound cluster the proxy may route to, with their load assignments.
pub fn outbound(inputs: &Inputs, scope: &Scope<'_>, out: &mut Generated) {
    for fixed in [black_hole(), passthrough(inputs, PASSTHROUGH)] {
        out.clusters.insert(fixed.name.clone(), fixed);
    }
    for service in &scope.services {
        let dr = scope.destination_rule(&service.hostname, &service.namespace);
        for port in &service.ports {
            if port.protocol == Protocol::Udp {
                continue;
            }
            let mut subsets = vec![(String::new(), None)];
            if let Some(dr) = dr {
                for s in &dr.spec.subsets {
                    if let Some(name) = s.name.clone().filter(|n| !n.is_empty()) {
                        subsets.push((name, Some(&s.labels)));
                    }
                }
            }
            for (subset, labels) in subsets {
                let name = outbound_name(port.number, &subset, &service.hostname);
                let policy = policy(dr, &subset, port.number);
                let Some(mut cluster) = build(inputs, scope, service, port, &name, &policy, dr)
                else {
                    continue;
                };
                let plan = super::locality::plan(
                    policy
                        .load_balancer
                        .and_then(|l| l.locality_lb_setting.as_ref()),
                    service.traffic_distribution,
                    &inputs.mesh.locality_lb_setting,
                    policy.outlier_detection.is_some(),
                    scope.locality,
                    scope.labels,
                );
                if plan.as_ref().is_some_and(super::locality::Plan::weighted) {
                    cluster
                        .common_lb_config
                        .get_or_insert_with(Default::default)
                        .locality_config_specifier = Some(
                        common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                            Default::default(),
                        ),
                    );
                }
                if is_eds(&cluster) {
                    out.endpoints.insert(
                        name.clone(),
                        endpoint::assignment(
                            &name,
                            service,
                            port.number,
                            labels,
                            plan.as_ref(),
                            &|e| super::peer_authn::mtls_ready(inputs, e),
                        ),
                    );
                }
                out.clusters.insert(name, cluster);
            }
        }
    }
}

fn is_eds(c: &Cluster) -> bool {
    c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
}

fn build(
    inputs: &Inputs,
    scope: &Scope<'_>,
    service: &Service,
    port: &ServicePort,
    name: &str,
    policy: &Policy<'_>,
    dr: Option<&Obj<DestinationRule>>,
) -> Option<Cluster> {
    let passthrough_lb = policy
        .load_balancer
        .and_then(|lb| lb.simple)
        .is_some_and(|s| s == SimpleLb::Passthrough);
    let mut c = Cluster {
        name: name.to_string(),
        connect_timeout: Some(pb::duration(
            policy
                .connection_pool
                .and_then(|p| p.tcp.as_ref())
                .and_then(|t| t.connect_timeout)
                .unwrap_or(inputs.mesh.connect_timeout),
        )),
        ..Default::default()
    };
    let discovery = match service.resolution {
        _ if passthrough_lb => DiscoveryType::OriginalDst,
        Resolution::ClientSideLb => DiscoveryType::Eds,
        Resolution::DnsLb => DiscoveryType::StrictDns,
        Resolution::DnsRoundRobin => DiscoveryType::LogicalDns,
        Resolution::Passthrough => DiscoveryType::OriginalDst,
    };
    c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(discovery as i32));
    match discovery {
        DiscoveryType::Eds => {
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(pb::ads()),
                service_name: name.to_string(),
            });
        }
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            // As istiod writes them: the proxy's own address family only (V4_ONLY unless the
            // proxy is IPv6-only), refreshed when the answer's TTL runs out, else at the mesh's
            // rate.
            c.dns_lookup_family = if scope.ipv6_only {
                DnsLookupFamily::V6Only
            } else {
                DnsLookupFamily::V4Only
            } as i32;
            #[allow(deprecated)]
            {
                c.dns_refresh_rate = Some(pb::duration(inputs.mesh.dns_refresh_rate));
                c.respect_dns_ttl = true;
            }
            let mut cla: ClusterLoadAssignment =
                endpoint::assignment(name, service, port.number, None, None, &|e| {
                    super::peer_authn::mtls_ready(inputs, e)
                });
            if discovery == DiscoveryType::LogicalDns {
                // LOGICAL_DNS takes exactly one name.
                for group in &mut cla.endpoints {
                    group.lb_endpoints.truncate(1);
                }
                cla.endpoints.retain(|g| !g.lb_endpoints.is_empty());
                cla.endpoints.truncate(1);
            }
            c.load_assignment = Some(cla);
        }
        _ => {}
    }
    c.lb_policy = if discovery == DiscoveryType::OriginalDst {
        LbPolicy::ClusterProvided as i32
    } else {
        load_balancer(&mut c, policy.load_balancer) as i32
    };
    let h2 = protocol_options(&mut c, port.protocol, policy.connection_pool);
    connection_pool(&mut c, policy.connection_pool);
    if let Some(od) = policy.outlier_detection {
        c.outlier_detection = Some(outlier_detection(od));
        // Istio turns Envoy's panic mode off unless minHealthPercent asks for it.
        c.common_lb_config = Some(CommonLbConfig {
            healthy_panic_threshold: Some(Percent {
                value: od.min_health_percent.map_or(0.0, |p| p as f64),
            }),
            ..Default::default()
        });
    }
    let mesh = super::upstream_tls::MeshTls {
        sni: istio_mtls_sni(name),
        service_accounts: service_accounts(service, &inputs.mesh.trust_domain),
        h2,
    };
    if policy.tls.is_none() && auto_mtls(inputs, service, discovery) {
        c.transport_socket_matches = super::upstream_tls::auto_mtls(&mesh);
    }
    if let Some(tls) = policy.tls {
        let mut secrets = Vec::new();
        let credential = super::upstream_tls::Credential {
            inputs,
            namespace: scope.namespace,
            secrets: &mut secrets,
        };
        let socket =
            super::upstream_tls::transport_socket(tls, &service.hostname, &mesh, credential);
        scope.secrets.borrow_mut().extend(secrets);
        match socket {
            Ok(socket) => c.transport_socket = socket,
            Err(why) => {
                let origin = dr.map(|d| d.label()).unwrap_or_default();
                scope.problem(format!(
                    "{origin}: trafficPolicy.tls for {name}: {why}; the cluster is left out \
                     rather than sent in plaintext"
                ));
                return None;
            }
        }
    }
    let mut meta = vec![services_metadata(service)];
    if let Some(dr) = dr {
        meta.push(("config", pb::string(&dr.config_path())));
    }
    c.metadata = Some(pb::istio_metadata(meta));
    Some(c)
}

/// Whether a cluster without a DestinationRule `tls` originates the mesh's mTLS to those of its
/// endpoints that take it (istiod's `buildUpstreamTLSSettings` with auto mTLS): not to a
/// service outside the mesh, not through ORIGINAL_DST, not when the mesh has no certificates
/// or turns `enableAutoMtls` off, and not when the service's namespace (or the mesh) disables
/// mTLS (`BestEffortInferServiceMTLSMode`; workload and port levels act per endpoint).
fn auto_mtls(inputs: &Inputs, service: &weft_registry::Service, discovery: DiscoveryType) -> bool {
    inputs.mesh.enable_auto_mtls
        && inputs.mesh_identity
        && !service.mesh_external
        && discovery != DiscoveryType::OriginalDst
        && super::peer_authn::namespace_mode(inputs, &service.namespace)
            != super::peer_authn::Mode::Disable
}

/// istiod's SNI for mesh mTLS (`BuildDNSSrvSubsetKey`): `outbound_.9080_.v1_.reviews...`, and
/// `outbound_.9080_._.reviews...` without a subset, from the cluster name
/// `outbound|9080|v1|reviews...`.
pub(super) fn istio_mtls_sni(cluster_name: &str) -> String {
    let parts: Vec<&str> = cluster_name.splitn(4, '|').collect();
    match parts.as_slice() {
        [direction, port, subset, host] => format!("{direction}_.{port}_.{subset}_.{host}"),
        _ => cluster_name.to_string(),
    }
}

/// The identities a service's workloads run as (istiod's `PushContext.ServiceAccounts`): each
/// endpoint's service account as a SPIFFE URI in the service's namespace, and those the service
/// declares (a ServiceEntry's `subjectAltNames`, as written), sorted, once each.
fn service_accounts(service: &weft_registry::Service, trust_domain: &str) -> Vec<String> {
    let td = trust_domain.replace('@', ".");
    let mut out: Vec<String> = service
        .endpoints
        .iter()
        .filter_map(|e| e.service_account.as_deref().filter(|s| !s.is_empty()))
        .map(|sa| format!("spiffe://{td}/ns/{}/sa/{sa}", service.namespace))
        .chain(service.service_accounts.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The short name of a service (`reviews` of `reviews.default.svc.cluster.local`).
fn service_name(s: &Service) -> &str {
    s.hostname.split('.').next().unwrap_or(&s.hostname)
}

/// Istio's default is LEAST_REQUEST.
fn load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>) -> LbPolicy {
    let Some(lb) = lb else {
        return LbPolicy::LeastRequest;
    };
    if let Some(ch) = &lb.consistent_hash {
        if let Some(m) = &ch.maglev {
            c.lb_config = Some(
                envoy_types::pb::envoy::config::cluster::v3::cluster::LbConfig::MaglevLbConfig(
                    MaglevLbConfig {
                        table_size: m
                            .table_size
                            .and_then(|n| u64::try_from(n).ok())
                            .map(|value| envoy_types::pb::google::protobuf::UInt64Value { value }),
                    },
                ),
            );
            return LbPolicy::Maglev;
        }
        let min = ch
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(ch.minimum_ring_size)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(1024);
        c.lb_config = Some(
            envoy_types::pb::envoy::config::cluster::v3::cluster::LbConfig::RingHashLbConfig(
                RingHashLbConfig {
                    minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                        value: min,
                    }),
                    ..Default::default()
                },
            ),
        );
        return LbPolicy::RingHash;
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        _ => LbPolicy::LeastRequest,
    }
}

/// HTTP/2 towards http2 and gRPC ports (and HTTP ports a DestinationRule upgrades); the
/// client's own protocol when `useClientProtocol` says so.
/// Sets the cluster's HTTP protocol options; whether it speaks HTTP/2 explicitly (istiod's
/// `isHttp2Cluster`).
fn protocol_options(
    c: &mut Cluster,
    protocol: Protocol,
    pool: Option<&ConnectionPoolSettings>,
) -> bool {
    let http = pool.and_then(|p| p.http.as_ref());
    let use_client = http.and_then(|h| h.use_client_protocol).unwrap_or(false);
    let upgrade = http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
    let h2 = matches!(
        protocol,
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
    ) || (protocol == Protocol::Http && upgrade);
    let idle = http.and_then(|h| h.idle_timeout);
    let per_connection = http
        .and_then(|h| h.max_requests_per_connection)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0);
    let common = (idle.is_some() || per_connection.is_some()).then(|| CommonHttpOptions {
        idle_timeout: idle.map(pb::duration),
        max_requests_per_connection: per_connection.map(|value| UInt32Value { value }),
        ..Default::default()
    });
    let choice = if use_client && matches!(protocol, Protocol::Http | Protocol::Http2) {
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            },
        ))
    } else if h2 {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions {
                    max_concurrent_streams: http
                        .and_then(|h| h.max_concurrent_streams)
                        .and_then(|n| u32::try_from(n).ok())
                        .map(|value| UInt32Value { value }),
                    ..Default::default()
                })),
            },
        ))
    } else {
        None
    };
    let explicit_h2 = matches!(choice, Some(UpstreamProtocolOptions::ExplicitHttpConfig(_)));
    if choice.is_none() && common.is_none() {
        return explicit_h2;
    }
    let options = HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: choice,
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        pb::any(&options),
    );
    explicit_h2
}

/// istiod's circuit breakers (`getDefaultCircuitBreakerThresholds`): every limit at its
/// maximum, with the remaining capacity published. Envoy's own defaults (1024 connections,
/// pending and requests, 3 retries in flight) would fail requests Istio lets through: with a
/// retry policy and one bad instance, more than 3 retries are soon in flight.
fn default_thresholds() -> Thresholds {
    let max = Some(UInt32Value { value: u32::MAX });
    Thresholds {
        max_connections: max,
        max_pending_requests: max,
        max_requests: max,
        max_retries: max,
        track_remaining: true,
        ..Default::default()
    }
}

fn default_circuit_breakers() -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![default_thresholds()],
        ..Default::default()
    }
}

/// connectionPool limits over istiod's defaults: a limit replaces the default only when it is
/// above 0, as istiod's `applyConnectionPool` does.
fn connection_pool(c: &mut Cluster, pool: Option<&ConnectionPoolSettings>) {
    let mut t = default_thresholds();
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    let set = |slot: &mut Option<UInt32Value>, n: Option<i64>| {
        if let Some(value) = n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
            *slot = Some(UInt32Value { value });
        }
    };
    set(&mut t.max_connections, tcp.and_then(|t| t.max_connections));
    set(
        &mut t.max_pending_requests,
        http.and_then(|h| h.http1_max_pending_requests),
    );
    set(&mut t.max_requests, http.and_then(|h| h.http2_max_requests));
    set(&mut t.max_retries, http.and_then(|h| h.max_retries));
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![t],
        ..Default::default()
    });
}

fn outlier_detection(od: &IstioOutlier) -> OutlierDetection {
    let u32v = |n: Option<i64>| {
        n.and_then(|n| u32::try_from(n).ok())
            .map(|value| UInt32Value { value })
    };
    let mut out = OutlierDetection {
        interval: od.interval.map(pb::duration),
        base_ejection_time: od.base_ejection_time.map(pb::duration),
        max_ejection_percent: u32v(od.max_ejection_percent),
        split_external_local_origin_errors: od.split_external_local_origin_errors.unwrap_or(false),
        consecutive_local_origin_failure: u32v(od.consecutive_local_origin_failures),
        ..Default::default()
    };
    // As istiod: 5xx ejection is on only when asked for (consecutive5xxErrors, or the
    // deprecated consecutiveErrors); gateway errors likewise; success rate stays off.
    match od.consecutive_5xx_errors.or(od.consecutive_errors) {
        Some(n) if n > 0 => {
            out.consecutive_5xx = u32v(Some(n));
            out.enforcing_consecutive_5xx = u32v(Some(100));
        }
        _ => out.enforcing_consecutive_5xx = u32v(Some(0)),
    }
    match od.consecutive_gateway_errors {
        Some(n) if n > 0 => {
            out.consecutive_gateway_failure = u32v(Some(n));
            out.enforcing_consecutive_gateway_failure = u32v(Some(100));
        }
        _ => out.enforcing_consecutive_gateway_failure = u32v(Some(0)),
    }
    out.enforcing_success_rate = u32v(Some(0));
    out
}

/// Nothing behind it: connections to it fail, as REGISTRY_ONLY wants.
fn black_hole() -> Cluster {
    Cluster {
        name: BLACK_HOLE.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(pb::millis(10_000)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: BLACK_HOLE.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The connection's original destination, as ALLOW_ANY wants.
pub fn passthrough(inputs: &Inputs, name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        connect_timeout: Some(pb::duration(inputs.mesh.connect_timeout)),
        lb_policy: LbPolicy::ClusterProvided as i32,
        circuit_breakers: Some(default_circuit_breakers()),
        ..Default::default()
    }
}

/// `filter_metadata.istio.services` of a service's clusters: where the stats filter reads
/// `destination_service`, `_name` and `_namespace` from.
fn services_metadata(
    service: &Service,
) -> (&'static str, envoy_types::pb::google::protobuf::Value) {
    (
        "services",
        pb::list(vec![pb::object([
            ("host", pb::string(&service.hostname)),
            ("name", pb::string(service_name(service))),
            ("namespace", pb::string(&service.namespace)),
        ])]),
    )
}

/// A sidecar's cluster for one port of its own workload: the application on `address:port`,
/// with the service it is an endpoint of (for the stats filter), when there is one. HTTP/2 and
/// gRPC ports reach the application over HTTP/2, as istiod's `setUpstreamProtocol` sets for
/// either direction.
pub fn inbound(
    inputs: &Inputs,
    port: u16,
    address: &str,
    target: u16,
    service: Option<&Service>,
    protocol: Protocol,
) -> Cluster {
    let name = inbound_name(port);
    let mut c = Cluster {
        metadata: service.map(|s| pb::istio_metadata([services_metadata(s)])),
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(pb::duration(inputs.mesh.connect_timeout)),
        load_assignment: Some(endpoint::single(&name, address, target)),
        circuit_breakers: Some(default_circuit_breakers()),
        ..Default::default()
    };
    if matches!(
        protocol,
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
    ) {
        protocol_options(&mut c, protocol, None);
    }
    c
}
