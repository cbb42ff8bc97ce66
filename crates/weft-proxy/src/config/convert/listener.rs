//! Listener (with its filter chains and network filters) → `listener::Listener`.

use super::cluster::ip_socket_address;
use super::{Result, decode_any, duration, route_configuration, type_name};
use crate::config::FieldError;
use crate::http::{Codec, HttpConnectionManager, RouteSource, ServerHeader};
use crate::listener::{
    Cidr, FilterChain, FilterChainMatch, Listener, ListenerFilters, NetworkFilter,
};
use crate::server::StatsStore;
use crate::tcp::TcpProxy;
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const NETWORK_RBAC: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";
const NETWORK_RATE_LIMIT: &str =
    "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit";
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";

pub fn listener(l: &pb::Listener, path: &str, store: &StatsStore) -> Result<Listener> {
    let address = ip_socket_address(l.address.as_ref(), &format!("{path}.address"))?;
    let name = if l.name.is_empty() {
        address.to_string()
    } else {
        l.name.clone()
    };
    // Istio's stats filter reports as the destination on inbound listeners.
    let inbound = l.traffic_direction
        == envoy_types::pb::envoy::config::core::v3::TrafficDirection::Inbound as i32;
    let mut filter_chains = Vec::new();
    for (i, fc) in l.filter_chains.iter().enumerate() {
        filter_chains.push(filter_chain(
            fc,
            &format!("{path}.filter_chains[{i}]"),
            store,
            inbound,
        )?);
    }
    if filter_chains.is_empty() {
        return Err(FieldError::new(
            format!("{path}.filter_chains"),
            "at least one filter chain is required",
        ));
    }
    let listener_filters = listener_filters(l, path)?;
    let stat_key = if l.stat_prefix.is_empty() {
        format!("{}_{}", address.ip(), address.port())
    } else {
        l.stat_prefix.clone()
    };
    let ssl_stats = filter_chains
        .iter()
        .any(|c| c.tls.is_some())
        .then(|| store.ssl(&stat_key));
    Ok(Listener {
        name,
        address,
        filter_chains,
        listener_filters,
        use_original_dst: l.use_original_dst.as_ref().is_some_and(|b| b.value),
        bind_to_port: l.bind_to_port.as_ref().is_none_or(|b| b.value),
        ssl_stats,
        stats: store.listener(&stat_key),
        worker_stats: store.listener_workers(&stat_key),
        drain: tokio::sync::watch::channel(false).0,
    })
}

const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const HTTP_INSPECTOR: &str = "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
const ORIGINAL_DST: &str = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst";

fn listener_filters(l: &pb::Listener, path: &str) -> Result<ListenerFilters> {
    let mut out = ListenerFilters::default();
    for (i, f) in l.listener_filters.iter().enumerate() {
        let fpath = format!("{path}.listener_filters[{i}].typed_config");
        let Some(pb::listener_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            return Err(FieldError::new(fpath, "is required"));
        };
        match type_name(any) {
            TLS_INSPECTOR => out.tls_inspector = true,
            HTTP_INSPECTOR => out.http_inspector = true,
            ORIGINAL_DST => out.original_dst = true,
            other => {
                return Err(FieldError::new(
                    fpath,
                    format!("listener filter {other} is not supported by the Weft proxy"),
                ));
            }
        }
    }
    if let Some(t) = duration(l.listener_filters_timeout.as_ref()) {
        out.timeout = (!t.is_zero()).then_some(t);
    }
    out.continue_on_timeout = l.continue_on_listener_filters_timeout;
    Ok(out)
}

pub(super) fn cidrs(list: &[CidrRange], path: &str) -> Result<Vec<Cidr>> {
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let rpath = format!("{path}[{i}]");
        let address: IpAddr = r
            .address_prefix
            .parse()
            .map_err(|_| FieldError::new(format!("{rpath}.address_prefix"), "not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let len = r.prefix_len.as_ref().map_or(max, |v| v.value);
        if len > max {
            return Err(FieldError::new(
                format!("{rpath}.prefix_len"),
                format!("must be at most {max}"),
            ));
        }
        out.push(Cidr {
            address,
            len: len as u8,
        });
    }
    Ok(out)
}

fn filter_chain(
    fc: &pb::FilterChain,
    path: &str,
    store: &StatsStore,
    inbound: bool,
) -> Result<FilterChain> {
    let mut matcher = FilterChainMatch::default();
    if let Some(m) = &fc.filter_chain_match {
        let mpath = format!("{path}.filter_chain_match");
        matcher.source_prefix_ranges = cidrs(
            &m.source_prefix_ranges,
            &format!("{mpath}.source_prefix_ranges"),
        )?;
        for (i, p) in m.source_ports.iter().enumerate() {
            matcher.source_ports.push(u16::try_from(*p).map_err(|_| {
                FieldError::new(
                    format!("{mpath}.source_ports[{i}]"),
                    "must be at most 65535",
                )
            })?);
        }
        matcher.server_names = m
            .server_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        for (i, n) in matcher.server_names.iter().enumerate() {
            if n.contains('*') && !(n.starts_with("*.") && n.matches('*').count() == 1) {
                return Err(FieldError::new(
                    format!("{mpath}.server_names[{i}]"),
                    "a wildcard must be a leading `*.`",
                ));
            }
        }
        matcher.transport_protocol =
            (!m.transport_protocol.is_empty()).then(|| m.transport_protocol.clone());
        matcher.application_protocols = m.application_protocols.clone();
        if let Some(p) = &m.destination_port {
            matcher.destination_port = Some(u16::try_from(p.value).map_err(|_| {
                FieldError::new(
                    format!("{path}.filter_chain_match.destination_port"),
                    "must be at most 65535",
                )
            })?);
        }
        matcher.prefix_ranges = cidrs(&m.prefix_ranges, &format!("{mpath}.prefix_ranges"))?;
    }
    // Connection rate limits may come first; the terminal filter is last.
    let Some((filter, limits)) = fc.filters.split_last() else {
        return Err(FieldError::new(
            format!("{path}.filters"),
            "a terminal network filter (http_connection_manager or tcp_proxy) is required",
        ));
    };
    let mut rate_limits = Vec::new();
    let mut rbac = Vec::new();
    let mut exchange = None;
    let mut istio_stats = None;
    for (i, f) in limits.iter().enumerate() {
        let tpath = format!("{path}.filters[{i}].typed_config");
        let Some(pb::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            return Err(FieldError::new(tpath, "is required"));
        };
        match type_name(any) {
            NETWORK_RATE_LIMIT => {
                rate_limits.push(super::local_ratelimit::connection_rate_limit(
                    &decode_any(any, &tpath)?,
                    &tpath,
                    store,
                )?);
            }
            NETWORK_RBAC => {
                rbac.push(Arc::new(super::rbac::network(
                    &decode_any(any, &tpath)?,
                    &tpath,
                    store,
                )?));
            }
            TYPED_STRUCT => {
                exchange = Some(metadata_exchange(&decode_any(any, &tpath)?, &tpath)?);
            }
            crate::http::filter::istio_stats::TYPE => {
                let pb: weft_proto::PluginConfig = decode_any(any, &tpath)?;
                let reporting = super::duration(pb.tcp_reporting_duration.as_ref())
                    .filter(|d| !d.is_zero())
                    .unwrap_or(std::time::Duration::from_secs(5));
                istio_stats = Some(Arc::new(crate::istio::metrics::TcpStatsFilter {
                    config: Arc::new(crate::http::filter::istio_stats::stats_config(
                        &pb, &tpath, inbound,
                    )?),
                    registry: store.istio.clone(),
                    reporting,
                }));
            }
            _ => {
                return Err(FieldError::new(
                    tpath,
                    "only envoy.filters.network.local_ratelimit, envoy.filters.network.rbac, \
                     istio.metadata_exchange and istio.stats may come before the terminal \
                     network filter",
                ));
            }
        }
    }
    let fpath = format!("{path}.filters[{}]", limits.len());
    let Some(pb::filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(FieldError::new(
            format!("{fpath}.typed_config"),
            "is required",
        ));
    };
    let tpath = format!("{fpath}.typed_config");
    let filter = match type_name(any) {
        HCM => NetworkFilter::Http(Arc::new(connection_manager(
            &decode_any(any, &tpath)?,
            &tpath,
            store,
            inbound,
        )?)),
        TCP_PROXY => NetworkFilter::Tcp(Arc::new(tcp_proxy(
            &decode_any(any, &tpath)?,
            &tpath,
            store,
        )?)),
        other => {
            return Err(FieldError::new(
                tpath,
                format!("network filter {other} is not supported by the Weft proxy"),
            ));
        }
    };
    let tls = match &fc.transport_socket {
        Some(t) => Some(super::tls::downstream(
            t,
            &format!("{path}.transport_socket"),
        )?),
        None => None,
    };
    Ok(FilterChain {
        name: fc.name.clone(),
        matcher,
        tls,
        rate_limits,
        rbac,
        exchange,
        istio_stats,
        filter,
    })
}

const TYPED_STRUCT: &str = "udpa.type.v1.TypedStruct";
const EXCHANGE_TYPE: &str =
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange";

/// istio-proxy's `MetadataExchange` (`protocol`, `enable_discovery`, `additional_labels`), as
/// a `TypedStruct`. `enable_discovery` asks istio-proxy to look a peer without the exchange up
/// in its workload discovery, which the Weft proxy does not have: such a peer is `unknown`,
/// as it is to istio-proxy when discovery finds nothing.
pub(super) fn metadata_exchange(
    t: &weft_proto::TypedStruct,
    path: &str,
) -> Result<crate::istio::exchange::ExchangeConfig> {
    use envoy_types::pb::google::protobuf::value::Kind;
    if t.type_url != EXCHANGE_TYPE {
        return Err(FieldError::new(
            format!("{path}.type_url"),
            format!(
                "{:?} is not a network filter the Weft proxy has",
                t.type_url
            ),
        ));
    }
    let mut protocol = String::new();
    for (k, v) in t.value.iter().flat_map(|s| s.fields.iter()) {
        match (k.as_str(), &v.kind) {
            ("protocol", Some(Kind::StringValue(p))) => protocol = p.clone(),
            ("enable_discovery", Some(Kind::BoolValue(_))) => {}
            ("additional_labels", Some(Kind::ListValue(l))) if l.values.is_empty() => {}
            _ => {
                return Err(FieldError::new(
                    format!("{path}.value.{k}"),
                    "is not supported by the Weft proxy",
                ));
            }
        }
    }
    if protocol.is_empty() {
        return Err(FieldError::new(
            format!("{path}.value.protocol"),
            "is required",
        ));
    }
    Ok(crate::istio::exchange::ExchangeConfig { protocol })
}

fn connection_manager(
    h: &hcm::HttpConnectionManager,
    path: &str,
    store: &StatsStore,
    inbound: bool,
) -> Result<HttpConnectionManager> {
    let codec = match h.codec_type {
        0 => Codec::Auto,
        1 => Codec::Http1,
        2 => Codec::Http2,
        _ => {
            return Err(FieldError::new(
                format!("{path}.codec_type"),
                "HTTP/3 is not supported by the Weft proxy",
            ));
        }
    };
    let route = match &h.route_specifier {
        Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Static(Arc::new(route_configuration(
                rc,
                &format!("{path}.route_config"),
                true,
                store,
            )?))
        }
        Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) => {
            if rds.route_config_name.is_empty() {
                return Err(FieldError::new(
                    format!("{path}.rds.route_config_name"),
                    "is required",
                ));
            }
            let Some(source) = rds.config_source.as_ref().filter(|c| super::is_ads(c)) else {
                return Err(FieldError::new(
                    format!("{path}.rds.config_source"),
                    "must be {ads: {}}",
                ));
            };
            RouteSource::Rds {
                name: rds.route_config_name.clone(),
                initial_fetch_timeout: super::initial_fetch_timeout(source),
            }
        }
        _ => {
            return Err(FieldError::new(
                format!("{path}.route_config"),
                "one of route_config or rds is required",
            ));
        }
    };
    let Some((last, others)) = h.http_filters.split_last() else {
        return Err(FieldError::new(
            format!("{path}.http_filters"),
            "must end with envoy.filters.http.router",
        ));
    };
    let filters = super::http_filters::filter_chain(
        others,
        &format!("{path}.http_filters"),
        &h.stat_prefix,
        store,
        inbound,
    )?;
    let rpath = format!("{path}.http_filters[{}]", h.http_filters.len() - 1);
    let suppress_envoy_headers = match &last.config_type {
        Some(hcm::http_filter::ConfigType::TypedConfig(any)) if type_name(any) == ROUTER => {
            let router: Router = decode_any(any, &rpath)?;
            router.suppress_envoy_headers
        }
        _ => {
            return Err(FieldError::new(
                rpath,
                "the last HTTP filter must be envoy.filters.http.router",
            ));
        }
    };
    let server_header = match h.server_header_transformation {
        1 => ServerHeader::AppendIfAbsent,
        2 => ServerHeader::PassThrough,
        _ => ServerHeader::Overwrite,
    };
    let server_name = if h.server_name.is_empty() {
        "envoy"
    } else {
        h.server_name.as_str()
    };
    let server_name = http::HeaderValue::from_str(server_name)
        .map_err(|_| FieldError::new(format!("{path}.server_name"), "not a valid header value"))?;
    let common = h.common_http_protocol_options.as_ref();
    let opath = format!("{path}.common_http_protocol_options");
    // The options message is shared with clusters, where this one is honoured.
    if common.is_some_and(|o| o.max_requests_per_connection.is_some()) {
        return Err(FieldError::new(
            format!("{opath}.max_requests_per_connection"),
            "is not supported by the Weft proxy on a connection manager",
        ));
    }
    let idle_timeout = match super::not_negative(
        common.and_then(|o| o.idle_timeout.as_ref()),
        format!("{opath}.idle_timeout"),
    )? {
        None => Some(Duration::from_secs(3600)),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    };
    // Envoy allows 1 to 8192 KiB.
    let max_request_headers_kb = h.max_request_headers_kb.as_ref().map_or(60, |v| v.value);
    if !(1..=8192).contains(&max_request_headers_kb) {
        return Err(FieldError::new(
            format!("{path}.max_request_headers_kb"),
            "must be between 1 and 8192",
        ));
    }
    let max_headers_count = common
        .and_then(|o| o.max_headers_count.as_ref())
        .map_or(crate::http::DEFAULT_MAX_HEADERS as u32, |v| v.value);
    if max_headers_count == 0 {
        return Err(FieldError::new(
            format!("{opath}.max_headers_count"),
            "must be at least 1",
        ));
    }
    let headers_with_underscores = match common.map_or(0, |o| o.headers_with_underscores_action) {
        1 => crate::http::request_check::UnderscoreAction::RejectRequest,
        2 => crate::http::request_check::UnderscoreAction::DropHeader,
        _ => crate::http::request_check::UnderscoreAction::Allow,
    };
    let max_stream_duration = super::not_negative(
        common.and_then(|o| o.max_stream_duration.as_ref()),
        format!("{opath}.max_stream_duration"),
    )?
    .filter(|d| !d.is_zero());
    use crate::http::xfcc::{CertDetails, ForwardClientCert};
    let forward_client_cert = match h.forward_client_cert_details {
        1 => ForwardClientCert::ForwardOnly,
        2 => ForwardClientCert::AppendForward,
        3 => ForwardClientCert::SanitizeSet,
        4 => ForwardClientCert::AlwaysForwardOnly,
        _ => ForwardClientCert::Sanitize,
    };
    let client_cert_details =
        h.set_current_client_cert_details
            .as_ref()
            .map_or(CertDetails::default(), |d| CertDetails {
                subject: d.subject.as_ref().is_some_and(|b| b.value),
                cert: d.cert,
                chain: d.chain,
                uri: d.uri,
                dns: d.dns,
            });
    let tracer = match &h.tracing {
        Some(t) => super::tracing::tracer(t, &format!("{path}.tracing"), inbound)?,
        None => None,
    };
    Ok(HttpConnectionManager {
        tracer,
        forward_client_cert,
        client_cert_details,
        max_request_headers_bytes: max_request_headers_kb as usize * 1024,
        max_headers_count: max_headers_count as usize,
        headers_with_underscores,
        idle_timeout,
        max_stream_duration,
        stat_prefix: h.stat_prefix.clone(),
        codec,
        route,
        access_logs: super::access_log::access_logs(
            &h.access_log,
            &format!("{path}.access_log"),
            store,
        )?,
        generate_request_id: h.generate_request_id.as_ref().is_none_or(|b| b.value),
        use_remote_address: h.use_remote_address.as_ref().is_some_and(|b| b.value),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        request_timeout: duration(h.request_timeout.as_ref()).filter(|d| !d.is_zero()),
        stream_idle_timeout: match duration(h.stream_idle_timeout.as_ref()) {
            None => Some(Duration::from_secs(300)),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        },
        server_name,
        server_header,
        suppress_envoy_headers,
        filters,
        upgrades: h
            .upgrade_configs
            .iter()
            .filter(|u| u.enabled.as_ref().is_none_or(|b| b.value))
            .map(|u| u.upgrade_type.to_ascii_lowercase())
            .collect(),
        allow_connect: h
            .http2_protocol_options
            .as_ref()
            .is_some_and(|o| o.allow_connect),
        h2_flood: {
            let h2 = h.http2_protocol_options.as_ref();
            let defaults = crate::http::h2_guard::FloodLimits::default();
            let control = h2
                .and_then(|o| o.max_outbound_control_frames.as_ref())
                .map_or(defaults.max_outbound_control_frames, |v| v.value);
            if control == 0 {
                return Err(FieldError::new(
                    format!("{path}.http2_protocol_options.max_outbound_control_frames"),
                    "must be at least 1",
                ));
            }
            crate::http::h2_guard::FloodLimits {
                max_outbound_control_frames: control,
                max_consecutive_inbound_frames_with_empty_payload: h2
                    .and_then(|o| o.max_consecutive_inbound_frames_with_empty_payload.as_ref())
                    .map_or(
                        defaults.max_consecutive_inbound_frames_with_empty_payload,
                        |v| v.value,
                    ),
            }
        },
        h2_max_concurrent_streams: h
            .http2_protocol_options
            .as_ref()
            .and_then(|o| o.max_concurrent_streams.as_ref())
            .map(|v| v.value),
        stats: store.http(&h.stat_prefix),
    })
}

fn tcp_proxy(t: &tcp::TcpProxy, path: &str, store: &StatsStore) -> Result<TcpProxy> {
    let clusters = match &t.cluster_specifier {
        Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(c)) if !c.is_empty() => vec![(c.clone(), 1)],
        Some(tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            let list: Vec<(String, u64)> = w
                .clusters
                .iter()
                .map(|c| (c.name.clone(), u64::from(c.weight)))
                .collect();
            if list.iter().map(|(_, w)| w).sum::<u64>() == 0 {
                return Err(FieldError::new(
                    format!("{path}.weighted_clusters.clusters"),
                    "at least one weight must be positive",
                ));
            }
            list
        }
        _ => {
            return Err(FieldError::new(
                path,
                "one of cluster or weighted_clusters is required",
            ));
        }
    };
    let idle_timeout = match duration(t.idle_timeout.as_ref()) {
        None => Some(Duration::from_secs(3600)),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    };
    Ok(TcpProxy {
        stat_prefix: t.stat_prefix.clone(),
        clusters,
        idle_timeout,
        access_logs: super::access_log::access_logs(
            &t.access_log,
            &format!("{path}.access_log"),
            store,
        )?,
        stats: store.tcp(&t.stat_prefix),
    })
}
