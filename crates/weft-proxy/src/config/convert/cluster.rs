//! Cluster → `cluster::ClusterConfig`.

use super::{Result, decode_any, duration, type_name};
use crate::cluster::hash;
use crate::cluster::{
    ClusterConfig, Discovery, DnsFamily, EndpointAddress, EndpointConfig, Health, LbPolicy,
    LocalityConfig, OriginalDstConfig, TransportSocketMatch, UpstreamProtocol,
};
use crate::config::FieldError;
use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub fn cluster(c: &pb::Cluster, path: &str) -> Result<ClusterConfig> {
    if c.name.is_empty() {
        return Err(FieldError::new(format!("{path}.name"), "is required"));
    }
    let discovery = match &c.cluster_discovery_type {
        None | Some(pb::cluster::ClusterDiscoveryType::Type(0)) => Discovery::Static,
        Some(pb::cluster::ClusterDiscoveryType::Type(1)) => Discovery::StrictDns,
        Some(pb::cluster::ClusterDiscoveryType::Type(2)) => Discovery::LogicalDns,
        Some(pb::cluster::ClusterDiscoveryType::Type(3)) => Discovery::Eds,
        Some(pb::cluster::ClusterDiscoveryType::Type(4)) => Discovery::OriginalDst,
        Some(_) => {
            return Err(FieldError::new(
                format!("{path}.type"),
                "not supported by the Weft proxy",
            ));
        }
    };
    let lb_policy = match c.lb_policy {
        0 => LbPolicy::RoundRobin,
        1 => least_request_variant(c.metadata.as_ref(), path)?,
        3 => LbPolicy::Random,
        2 => {
            let (mut min_size, mut max_size) = (hash::DEFAULT_MIN_RING, hash::DEFAULT_MAX_RING);
            if let Some(pb::cluster::LbConfig::RingHashLbConfig(r)) = &c.lb_config {
                min_size = r.minimum_ring_size.as_ref().map_or(min_size, |v| v.value);
                max_size = r.maximum_ring_size.as_ref().map_or(max_size, |v| v.value);
            }
            if min_size > max_size || min_size == 0 {
                return Err(FieldError::new(
                    format!("{path}.ring_hash_lb_config"),
                    format!(
                        "minimum_ring_size ({min_size}) must be at least 1 and at most maximum_ring_size ({max_size})"
                    ),
                ));
            }
            LbPolicy::RingHash { min_size, max_size }
        }
        // CLUSTER_PROVIDED: ORIGINAL_DST picks its own host.
        6 => LbPolicy::RoundRobin,
        5 => {
            let mut table_size = hash::DEFAULT_MAGLEV_TABLE;
            if let Some(pb::cluster::LbConfig::MaglevLbConfig(m)) = &c.lb_config {
                table_size = m.table_size.as_ref().map_or(table_size, |v| v.value);
            }
            // Envoy's limit, and the paper's requirement that the size be prime.
            if table_size > 5_000_011 || !is_prime(table_size) {
                return Err(FieldError::new(
                    format!("{path}.maglev_lb_config.table_size"),
                    "must be a prime number no larger than 5000011",
                ));
            }
            LbPolicy::Maglev { table_size }
        }
        other => {
            return Err(FieldError::new(
                format!("{path}.lb_policy"),
                format!("value {other} is not supported"),
            ));
        }
    };
    let asks_variant = c
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("weft"))
        .is_some_and(|w| w.fields.contains_key("least_request"));
    if asks_variant && c.lb_policy != 1 {
        return Err(FieldError::new(
            format!("{path}.metadata.filter_metadata.weft.least_request"),
            "applies only to lb_policy LEAST_REQUEST",
        ));
    }
    let mut protocol = UpstreamProtocol::Http1;
    let mut h2_max_concurrent_streams = None;
    #[allow(deprecated)]
    let mut common = c.common_http_protocol_options;
    #[allow(deprecated)]
    let mut max_requests_per_connection = c.max_requests_per_connection.as_ref().map(|v| v.value);
    #[allow(deprecated)]
    if let Some(h2) = &c.http2_protocol_options {
        downstream_only(h2, &format!("{path}.http2_protocol_options"))?;
        protocol = UpstreamProtocol::Http2;
        h2_max_concurrent_streams = h2.max_concurrent_streams.as_ref().map(|v| v.value);
    }
    for (key, any) in &c.typed_extension_protocol_options {
        let opath = format!("{path}.typed_extension_protocol_options[{key}]");
        if type_name(any) != HTTP_PROTOCOL_OPTIONS || key != HTTP_PROTOCOL_OPTIONS {
            return Err(FieldError::new(
                opath,
                format!("{key} is not supported by the Weft proxy"),
            ));
        }
        let options: HttpProtocolOptions = decode_any(any, &opath)?;
        if options.common_http_protocol_options.is_some() {
            common = options.common_http_protocol_options;
        }
        match options.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    downstream_only(
                        &h2,
                        &format!("{opath}.explicit_http_config.http2_protocol_options"),
                    )?;
                    protocol = UpstreamProtocol::Http2;
                    h2_max_concurrent_streams = h2.max_concurrent_streams.as_ref().map(|v| v.value);
                }
                Some(ProtocolConfig::HttpProtocolOptions(_)) => protocol = UpstreamProtocol::Http1,
                _ => {
                    return Err(FieldError::new(
                        format!("{opath}.explicit_http_config"),
                        "one of http_protocol_options or http2_protocol_options is required",
                    ));
                }
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
                if let Some(h2) = &d.http2_protocol_options {
                    downstream_only(
                        h2,
                        &format!("{opath}.use_downstream_protocol_config.http2_protocol_options"),
                    )?;
                }
                protocol = if d.http2_protocol_options.is_some() {
                    UpstreamProtocol::Downstream
                } else {
                    UpstreamProtocol::Http1
                };
                h2_max_concurrent_streams = d
                    .http2_protocol_options
                    .as_ref()
                    .and_then(|h2| h2.max_concurrent_streams.as_ref())
                    .map(|v| v.value);
            }
            _ => {}
        }
    }
    let dns_family = match c.dns_lookup_family {
        1 => DnsFamily::V4Only,
        2 => DnsFamily::V6Only,
        3 => DnsFamily::V4Preferred,
        4 => DnsFamily::All,
        _ => DnsFamily::Auto,
    };
    // Envoy requires more than 1 ms. Deprecated in favour of the DNS cluster extension, but
    // what istiod writes.
    #[allow(deprecated)]
    let dns_refresh_rate = match super::positive(
        c.dns_refresh_rate.as_ref(),
        format!("{path}.dns_refresh_rate"),
    )? {
        None => crate::cluster::dns::DEFAULT_REFRESH,
        Some(d) if d <= Duration::from_millis(1) => {
            return Err(FieldError::new(
                format!("{path}.dns_refresh_rate"),
                "must be greater than 1ms",
            ));
        }
        Some(d) => d,
    };
    let localities = match &c.load_assignment {
        Some(la) => load_assignment(la, &format!("{path}.load_assignment"), discovery)?,
        None => Vec::new(),
    };
    let eds_service_name = match (&c.eds_cluster_config, discovery) {
        (Some(eds), Discovery::Eds) if !eds.service_name.is_empty() => eds.service_name.clone(),
        _ => c.name.clone(),
    };
    let eds_initial_fetch_timeout = match c
        .eds_cluster_config
        .as_ref()
        .and_then(|e| e.eds_config.as_ref())
    {
        Some(source) if !super::is_ads(source) => {
            return Err(FieldError::new(
                format!("{path}.eds_cluster_config.eds_config"),
                "must be {ads: {}}: the Weft proxy takes EDS over ADS",
            ));
        }
        Some(source) => super::initial_fetch_timeout(source),
        None => Some(super::DEFAULT_INITIAL_FETCH_TIMEOUT),
    };
    if discovery == Discovery::Eds && !localities.is_empty() {
        return Err(FieldError::new(
            format!("{path}.load_assignment"),
            "an EDS cluster takes its endpoints from EDS, not from load_assignment",
        ));
    }
    let mut original_dst = OriginalDstConfig::default();
    if discovery == Discovery::OriginalDst {
        if c.lb_policy != 6 {
            return Err(FieldError::new(
                format!("{path}.lb_policy"),
                "an ORIGINAL_DST cluster must use CLUSTER_PROVIDED",
            ));
        }
        if !localities.is_empty() {
            return Err(FieldError::new(
                format!("{path}.load_assignment"),
                "an ORIGINAL_DST cluster takes no endpoints",
            ));
        }
        if let Some(pb::cluster::LbConfig::OriginalDstLbConfig(cfg)) = &c.lb_config {
            let opath = format!("{path}.original_dst_lb_config");
            if cfg.use_http_header {
                let name = if cfg.http_header_name.is_empty() {
                    "x-envoy-original-dst-host"
                } else {
                    cfg.http_header_name.as_str()
                };
                original_dst.http_header = Some(
                    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(
                        |_| {
                            FieldError::new(
                                format!("{opath}.http_header_name"),
                                "not a header name",
                            )
                        },
                    )?,
                );
            }
            if let Some(port) = &cfg.upstream_port_override {
                original_dst.port_override = Some(u16::try_from(port.value).map_err(|_| {
                    FieldError::new(
                        format!("{opath}.upstream_port_override"),
                        "must be at most 65535",
                    )
                })?);
            }
        }
    } else if c.lb_policy == 6 {
        return Err(FieldError::new(
            format!("{path}.lb_policy"),
            "CLUSTER_PROVIDED is for ORIGINAL_DST clusters",
        ));
    }
    if discovery == Discovery::LogicalDns
        && localities.iter().map(|l| l.endpoints.len()).sum::<usize>() != 1
    {
        return Err(FieldError::new(
            format!("{path}.load_assignment"),
            "LOGICAL_DNS clusters must have a single locality with a single endpoint",
        ));
    }
    if let Some(n) = common
        .as_ref()
        .and_then(|o| o.max_requests_per_connection.as_ref())
    {
        max_requests_per_connection = Some(n.value);
    }
    // The options message is shared with the connection manager, where this one is honoured.
    if common
        .as_ref()
        .is_some_and(|o| o.max_stream_duration.is_some())
    {
        return Err(FieldError::new(
            format!("{path}.common_http_protocol_options.max_stream_duration"),
            "an upstream max_stream_duration is not supported by the Weft proxy",
        ));
    }
    if let Some(o) = common.as_ref() {
        let upstream_only = [
            ("max_headers_count", o.max_headers_count.is_some()),
            (
                "headers_with_underscores_action",
                o.headers_with_underscores_action != 0,
            ),
        ];
        if let Some((field, _)) = upstream_only.iter().find(|(_, set)| *set) {
            return Err(FieldError::new(
                format!("{path}.common_http_protocol_options.{field}"),
                "is not supported by the Weft proxy on a cluster",
            ));
        }
    }
    let idle_timeout = match common.as_ref().and_then(|o| o.idle_timeout.as_ref()) {
        None => Some(Duration::from_secs(3600)),
        Some(d) => duration(Some(d)).filter(|d| !d.is_zero()),
    };
    Ok(ClusterConfig {
        circuit_breakers: super::resilience::circuit_breakers(
            c.circuit_breakers.as_ref(),
            &format!("{path}.circuit_breakers"),
        )?,
        max_requests_per_connection: super::resilience::max_requests_per_connection(
            max_requests_per_connection,
        ),
        idle_timeout,
        outlier_detection: match &c.outlier_detection {
            Some(od) => Some(super::resilience::outlier_detection(
                od,
                &format!("{path}.outlier_detection"),
            )?),
            None => None,
        },
        health_check: super::resilience::health_checks(
            &c.health_checks,
            &c.name,
            &format!("{path}.health_checks"),
        )?,
        healthy_panic_threshold: super::resilience::healthy_panic_threshold(
            c.common_lb_config.as_ref(),
            &format!("{path}.common_lb_config"),
        )?,
        locality_weighted: c.common_lb_config.as_ref().is_some_and(|l| {
            matches!(
                l.locality_config_specifier,
                Some(pb::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
            )
        }),
        istio_service: istio_service(c.metadata.as_ref()),
        exchange: upstream_filters(&c.filters, &format!("{path}.filters"))?,
        name: c.name.clone(),
        stat_name: if c.alt_stat_name.is_empty() {
            c.name.clone()
        } else {
            c.alt_stat_name.clone()
        },
        discovery,
        connect_timeout: duration(c.connect_timeout.as_ref()).unwrap_or(Duration::from_secs(5)),
        lb_policy,
        protocol,
        h2_max_concurrent_streams,
        dns_family,
        dns_refresh_rate,
        #[allow(deprecated)]
        respect_dns_ttl: c.respect_dns_ttl,
        localities,
        eds_service_name,
        eds_initial_fetch_timeout,
        original_dst,
        tls: match &c.transport_socket {
            Some(t) => super::tls::transport_socket(t, &format!("{path}.transport_socket"))?,
            None => None,
        },
        tls_matches: c
            .transport_socket_matches
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mpath = format!("{path}.transport_socket_matches[{i}]");
                Ok(TransportSocketMatch {
                    name: m.name.clone(),
                    criteria: m.r#match.as_ref().map(match_pairs).unwrap_or_default(),
                    tls: match &m.transport_socket {
                        Some(t) => super::tls::any_transport_socket(
                            t,
                            &format!("{mpath}.transport_socket"),
                        )?,
                        None => None,
                    },
                })
            })
            .collect::<Result<_>>()?,
    })
}

/// A metadata struct as (key, value) pairs, values in one text form, for
/// `transport_socket_matches` against `envoy.transport_socket_match` endpoint metadata.
fn match_pairs(s: &envoy_types::pb::google::protobuf::Struct) -> Vec<(String, String)> {
    use envoy_types::pb::google::protobuf::value::Kind;
    s.fields
        .iter()
        .map(|(k, v)| {
            let value = match &v.kind {
                Some(Kind::StringValue(s)) => s.clone(),
                // Other kinds never equal a string of the same text.
                other => format!("\u{0}{other:?}"),
            };
            (k.clone(), value)
        })
        .collect()
}

/// HTTP/2 options that the proxy honours only towards clients (flood limits, extended CONNECT):
/// set on a cluster, they are refused rather than ignored.
fn downstream_only(
    h2: &envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions,
    path: &str,
) -> Result<()> {
    let set = [
        (
            "max_outbound_control_frames",
            h2.max_outbound_control_frames.is_some(),
        ),
        (
            "max_consecutive_inbound_frames_with_empty_payload",
            h2.max_consecutive_inbound_frames_with_empty_payload
                .is_some(),
        ),
        ("allow_connect", h2.allow_connect),
    ];
    match set.iter().find(|(_, on)| *on) {
        Some((field, _)) => Err(FieldError::new(
            format!("{path}.{field}"),
            "is not supported by the Weft proxy on a cluster",
        )),
        None => Ok(()),
    }
}

/// LEAST_REQUEST, or its peak EWMA variant when the cluster's `weft` metadata asks for it
/// (`least_request: peak_ewma`, `peak_ewma_decay: <seconds>s`).
fn least_request_variant(
    metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
    path: &str,
) -> Result<LbPolicy> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let Some(weft) = metadata.and_then(|m| m.filter_metadata.get("weft")) else {
        return Ok(LbPolicy::LeastRequest);
    };
    let mpath = format!("{path}.metadata.filter_metadata.weft");
    let text = |key: &str| match weft.fields.get(key).and_then(|v| v.kind.as_ref()) {
        None => Ok(None),
        Some(Kind::StringValue(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(FieldError::new(
            format!("{mpath}.{key}"),
            "must be a string",
        )),
    };
    match text("least_request")? {
        None => Ok(LbPolicy::LeastRequest),
        Some("peak_ewma") => {
            let decay = match text("peak_ewma_decay")? {
                None => crate::cluster::peak_ewma::DEFAULT_DECAY,
                Some(d) => d
                    .strip_suffix('s')
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        FieldError::new(
                            format!("{mpath}.peak_ewma_decay"),
                            format!("{d:?} is not a positive duration in seconds such as \"10s\""),
                        )
                    })?,
            };
            Ok(LbPolicy::PeakEwma { decay })
        }
        Some(other) => Err(FieldError::new(
            format!("{mpath}.least_request"),
            format!("unknown variant {other:?}: peak_ewma is the one there is"),
        )),
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// The endpoints of a `ClusterLoadAssignment`, from a cluster's `load_assignment` or from EDS.
pub fn load_assignment(
    la: &ClusterLoadAssignment,
    path: &str,
    discovery: Discovery,
) -> Result<Vec<LocalityConfig>> {
    let mut localities = Vec::new();
    for (i, l) in la.endpoints.iter().enumerate() {
        let lpath = format!("{path}.endpoints[{i}]");
        let mut endpoints = Vec::new();
        for (j, e) in l.lb_endpoints.iter().enumerate() {
            let epath = format!("{lpath}.lb_endpoints[{j}]");
            let Some(HostIdentifier::Endpoint(endpoint)) = &e.host_identifier else {
                return Err(FieldError::new(format!("{epath}.endpoint"), "is required"));
            };
            let address = endpoint_address(
                endpoint.address.as_ref(),
                &format!("{epath}.endpoint.address"),
                discovery,
            )?;
            let health = match e.health_status {
                2..=4 => Health::Unhealthy, // UNHEALTHY, DRAINING, TIMEOUT
                5 => Health::Degraded,
                _ => Health::Healthy,
            };
            endpoints.push(EndpointConfig {
                address,
                weight: e.load_balancing_weight.as_ref().map_or(1, |w| w.value),
                health,
                hostname: endpoint.hostname.clone(),
                locality: u32::try_from(i).unwrap_or(u32::MAX),
                locality_weight: l.load_balancing_weight.as_ref().map_or(0, |w| w.value),
                socket_match: e
                    .metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                    .map(match_pairs)
                    .unwrap_or_default()
                    .into(),
            });
        }
        localities.push(LocalityConfig {
            priority: l.priority,
            endpoints,
        });
    }
    Ok(localities)
}

fn endpoint_address(
    address: Option<&Address>,
    path: &str,
    discovery: Discovery,
) -> Result<EndpointAddress> {
    let (host, port) = socket_address(address, path)?;
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(EndpointAddress::Ip(SocketAddr::new(ip, port))),
        Err(_) if matches!(discovery, Discovery::StrictDns | Discovery::LogicalDns) => {
            Ok(EndpointAddress::Dns { host, port })
        }
        Err(_) => Err(FieldError::new(
            format!("{path}.socket_address.address"),
            format!(
                "{host:?} is not an IP address (STATIC and EDS clusters need IP addresses; use STRICT_DNS for names)"
            ),
        )),
    }
}

/// An `Address` that must be a TCP socket address with an IP (listeners, admin).
pub fn ip_socket_address(address: Option<&Address>, path: &str) -> Result<SocketAddr> {
    let (host, port) = socket_address(address, path)?;
    let ip: IpAddr = host.parse().map_err(|_| {
        FieldError::new(
            format!("{path}.socket_address.address"),
            format!("{host:?} is not an IP address"),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// The host and port of an `Address` that must be a TCP socket address.
pub(crate) fn socket_address(address: Option<&Address>, path: &str) -> Result<(String, u16)> {
    let Some(Address {
        address: Some(address::Address::SocketAddress(sa)),
    }) = address
    else {
        return Err(FieldError::new(
            format!("{path}.socket_address"),
            "is required",
        ));
    };
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(*p).map_err(|_| {
            FieldError::new(
                format!("{path}.socket_address.port_value"),
                "must be at most 65535",
            )
        })?,
        _ => {
            return Err(FieldError::new(
                format!("{path}.socket_address.port_value"),
                "is required",
            ));
        }
    };
    if sa.address.is_empty() {
        return Err(FieldError::new(
            format!("{path}.socket_address.address"),
            "is required",
        ));
    }
    Ok((sa.address.clone(), port))
}

/// `filter_metadata.istio.services[0]` (`host`, `name`, `namespace`), as istiod writes it on a
/// service's clusters: the destination service of Istio's metrics.
/// A cluster's `filters`: istio-proxy's metadata exchange is the one the Weft proxy has.
fn upstream_filters(
    filters: &[pb::Filter],
    path: &str,
) -> Result<Option<crate::istio::exchange::ExchangeConfig>> {
    let mut exchange = None;
    for (i, f) in filters.iter().enumerate() {
        let tpath = format!("{path}[{i}].typed_config");
        let Some(any) = &f.typed_config else {
            return Err(FieldError::new(tpath, "is required"));
        };
        if super::type_name(any) != "udpa.type.v1.TypedStruct" {
            return Err(FieldError::new(
                tpath,
                format!(
                    "upstream network filter {} is not supported by the Weft proxy",
                    super::type_name(any)
                ),
            ));
        }
        exchange = Some(super::listener::metadata_exchange(
            &super::decode_any(any, &tpath)?,
            &tpath,
        )?);
    }
    Ok(exchange)
}

fn istio_service(
    metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
) -> Option<std::sync::Arc<crate::istio::metrics::ServiceLabels>> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let istio = metadata?.filter_metadata.get("istio")?;
    let Some(Kind::ListValue(list)) = istio.fields.get("services")?.kind.as_ref() else {
        return None;
    };
    let Some(Kind::StructValue(first)) = list.values.first()?.kind.as_ref() else {
        return None;
    };
    let get = |k: &str| match first.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s.clone(),
        _ => String::new(),
    };
    Some(std::sync::Arc::new(crate::istio::metrics::ServiceLabels {
        host: get("host"),
        name: get("name"),
        namespace: get("namespace"),
    }))
}
