//! DestinationRule and TrafficPolicy rules.

use super::rules;
use super::virtual_service::subset_name;
use super::{Findings, export_to, workload_selector};
use crate::path::FieldPath;
use crate::types::destination_rule::*;

pub(super) fn validate_destination_rule(f: &mut Findings, spec: &FieldPath, dr: &DestinationRule) {
    match dr.host.as_deref() {
        None => f.err(&spec.key("host"), "empty domain name not allowed"),
        Some(h) => f.check(&spec.key("host"), rules::validate_wildcard_domain(h)),
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(f, &spec.key("trafficPolicy"), tp);
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let sp = spec.key("subsets").index(i);
        let name = s.name.as_deref().unwrap_or("");
        if names.contains(&name) {
            f.err(&sp.key("name"), format!("duplicate subset names: {name}"));
        }
        names.push(name);
        f.check(&sp.key("name"), subset_name(name));
        f.labels(&sp.key("labels"), &s.labels);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(f, &sp.key("trafficPolicy"), tp);
        }
    }
    export_to(f, &spec.key("exportTo"), &dr.export_to, false);
    if dr.workload_selector.is_some() && dr.export_to.iter().any(|e| e != "." && *e != f.namespace)
    {
        f.err(
            &spec.key("exportTo"),
            "destination rule with workload selector cannot have exportTo beyond current namespace",
        );
    }
    workload_selector(
        f,
        &spec.key("workloadSelector"),
        dr.workload_selector.as_ref(),
    );
}

fn traffic_policy(f: &mut Findings, p: &FieldPath, tp: &TrafficPolicy) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        f.err(p, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        f.err(p, "tunnel and proxyProtocol must not be set together");
    }
    shared_settings(
        f,
        p,
        tp.outlier_detection.as_ref(),
        tp.connection_pool.as_ref(),
        tp.load_balancer.as_ref(),
        tp.tls.as_ref(),
    );
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = p.key("portLevelSettings").index(i);
        match pl.port.as_ref().and_then(|x| x.number) {
            None => f.err(&pp.key("port"), "portTrafficPolicy must have valid port"),
            Some(n) => f.check(&pp.key("port").key("number"), rules::validate_port(n)),
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            f.err(&pp, "port traffic policy must have at least one field");
            continue;
        }
        shared_settings(
            f,
            &pp,
            pl.outlier_detection.as_ref(),
            pl.connection_pool.as_ref(),
            pl.load_balancer.as_ref(),
            pl.tls.as_ref(),
        );
    }
    if let Some(t) = &tp.tunnel {
        let tp_ = p.key("tunnel");
        if let Some(proto) = &t.protocol
            && proto != "CONNECT"
            && proto != "POST"
        {
            f.err(
                &tp_.key("protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        let host = t.target_host.as_deref().unwrap_or("");
        if rules::validate_fqdn(host).is_err() && !rules::is_ip(host) {
            f.err(
                &tp_.key("targetHost"),
                "tunnel target host must be valid FQDN or IP address",
            );
        }
        if let Err(e) = rules::validate_port(t.target_port.unwrap_or(0)) {
            f.err(
                &tp_.key("targetPort"),
                format!("tunnel target port is invalid: {e}"),
            );
        }
    }
    if let Some(b) = &tp.retry_budget {
        let bp = p.key("retryBudget");
        if let Some(pct) = b.percent
            && !(0.0..=100.0).contains(&pct)
        {
            f.err(
                &bp.key("percent"),
                format!("retry budget percent {pct} is not in range 0..100"),
            );
        }
        if let Some(c) = b.min_retry_concurrency
            && c < 0
        {
            f.err(
                &bp.key("minRetryConcurrency"),
                "minRetryConcurrency must be non-negative",
            );
        }
        if let Some(d) = &b.budget_interval {
            f.check(&bp.key("budgetInterval"), rules::validate_duration(d));
        }
    }
}

/// The settings a traffic policy and a port-level policy have in common.
fn shared_settings(
    f: &mut Findings,
    p: &FieldPath,
    outlier_detection: Option<&OutlierDetection>,
    pool: Option<&ConnectionPoolSettings>,
    lb: Option<&LoadBalancerSettings>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(o) = outlier_detection {
        outlier(f, &p.key("outlierDetection"), o);
    }
    if let Some(c) = pool {
        connection_pool(f, &p.key("connectionPool"), c);
    }
    if let Some(lb) = lb {
        load_balancer(f, &p.key("loadBalancer"), lb, outlier_detection.is_some());
    }
    if let Some(t) = tls {
        client_tls(f, &p.key("tls"), t);
    }
}

fn non_negative(f: &mut Findings, p: &FieldPath, key: &str, v: Option<i64>, what: &str) {
    if let Some(v) = v
        && v < 0
    {
        f.err(&p.key(key), format!("{what} must be non-negative"));
    }
}

fn outlier(f: &mut Findings, p: &FieldPath, o: &OutlierDetection) {
    if let Some(d) = &o.base_ejection_time {
        f.check(&p.key("baseEjectionTime"), rules::validate_duration(d));
    }
    if let Some(d) = &o.interval {
        f.check(&p.key("interval"), rules::validate_duration(d));
    }
    if o.consecutive_errors.is_some_and(|v| v != 0) {
        f.warn(
            &p.key("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !o.split_external_local_origin_errors.unwrap_or(false)
        && o.consecutive_local_origin_failures.is_some_and(|v| v > 0)
    {
        f.err(
            &p.key("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    non_negative(
        f,
        p,
        "consecutive5xxErrors",
        o.consecutive_5xx_errors,
        "consecutive5xxErrors",
    );
    non_negative(
        f,
        p,
        "consecutiveGatewayErrors",
        o.consecutive_gateway_errors,
        "consecutiveGatewayErrors",
    );
    for (key, v) in [
        ("maxEjectionPercent", o.max_ejection_percent),
        ("minHealthPercent", o.min_health_percent),
    ] {
        if let Some(v) = v {
            f.check(&p.key(key), rules::validate_percent(v));
        }
    }
}

fn connection_pool(f: &mut Findings, p: &FieldPath, c: &ConnectionPoolSettings) {
    if c.http.is_none() && c.tcp.is_none() {
        f.err(p, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &c.http {
        let hp = p.key("http");
        non_negative(
            f,
            &hp,
            "http1MaxPendingRequests",
            h.http1_max_pending_requests,
            "http1 max pending requests",
        );
        non_negative(
            f,
            &hp,
            "http2MaxRequests",
            h.http2_max_requests,
            "http2 max requests",
        );
        non_negative(
            f,
            &hp,
            "maxRequestsPerConnection",
            h.max_requests_per_connection,
            "max requests per connection",
        );
        non_negative(f, &hp, "maxRetries", h.max_retries, "max retries");
        non_negative(
            f,
            &hp,
            "maxConcurrentStreams",
            h.max_concurrent_streams,
            "max concurrent streams",
        );
        if let Some(d) = &h.idle_timeout {
            f.check(&hp.key("idleTimeout"), rules::validate_duration(d));
        }
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && h.use_client_protocol == Some(true)
        {
            f.err(
                &hp.key("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
    }
    if let Some(t) = &c.tcp {
        let tp = p.key("tcp");
        non_negative(
            f,
            &tp,
            "maxConnections",
            t.max_connections,
            "max connections",
        );
        for (key, d) in [
            ("connectTimeout", &t.connect_timeout),
            ("maxConnectionDuration", &t.max_connection_duration),
            ("idleTimeout", &t.idle_timeout),
        ] {
            if let Some(d) = d {
                f.check(&tp.key(key), rules::validate_duration(d));
            }
        }
        if let Some(ka) = &t.tcp_keepalive {
            for (key, d) in [("time", &ka.time), ("interval", &ka.interval)] {
                if let Some(d) = d {
                    f.check(
                        &tp.key("tcpKeepalive").key(key),
                        rules::validate_duration(d),
                    );
                }
            }
        }
    }
}

fn load_balancer(f: &mut Findings, p: &FieldPath, lb: &LoadBalancerSettings, has_outlier: bool) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        f.err(p, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = p.key("consistentHash");
        let keys = usize::from(ch.http_header_name.is_some())
            + usize::from(ch.http_cookie.is_some())
            + usize::from(ch.use_source_ip.is_some())
            + usize::from(ch.http_query_parameter_name.is_some());
        if keys > 1 {
            f.err(&cp, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set");
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.as_deref().unwrap_or("").is_empty() {
                f.err(
                    &cp.key("httpCookie").key("name"),
                    "name required for HttpCookie",
                );
            }
            if let Some(ttl) = &c.ttl
                && ttl.as_nanos() < 0
            {
                f.err(&cp.key("httpCookie").key("ttl"), "ttl must not be negative");
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            f.err(&cp, "only one of ringHash or maglev may be set");
        }
        if ch.minimum_ring_size.is_some_and(|v| v != 0) {
            f.warn(&cp.key("minimumRingSize"), "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead");
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                f.err(
                    &cp,
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(m) = &ch.maglev {
            let size = m.table_size.unwrap_or(0);
            let tp = cp.key("maglev").key("tableSize");
            if size == 0 {
                f.err(&tp, "tableSize must be set for maglev");
            } else if size >= 5_000_011 {
                f.err(&tp, "tableSize must be less than 5000011 for maglev");
            } else if !rules::is_prime(size) {
                f.err(&tp, "tableSize must be a prime number for maglev");
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        locality(f, &p.key("localityLbSetting"), l, has_outlier);
    }
    if let Some(d) = &lb.warmup_duration_secs {
        f.check(&p.key("warmupDurationSecs"), rules::validate_duration(d));
    }
    if let Some(w) = &lb.warmup {
        if let Some(d) = &w.duration {
            f.check(
                &p.key("warmup").key("duration"),
                rules::validate_duration(d),
            );
        }
        if let Some(m) = w.minimum_percent
            && !(0.0..=100.0).contains(&m)
        {
            f.err(
                &p.key("warmup").key("minimumPercent"),
                "minimumPercent must be in range 0..100",
            );
        }
    }
}

fn locality(f: &mut Findings, p: &FieldPath, l: &LocalityLbSetting, has_outlier: bool) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        f.err(
            p,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = p.key("distribute").index(i);
        let mut total = 0;
        for (loc, w) in &d.to {
            if !(1..=100).contains(w) {
                f.err(
                    &dp.key("to").key(loc.clone()),
                    "locality weight must be in range [1, 100]",
                );
            }
            total += w;
        }
        if total != 100 {
            f.err(
                &dp.key("to"),
                format!("total locality weight {total} != 100"),
            );
        }
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        f.warn(p, "outlier detection policy must be provided for failover");
    }
    for (i, fo) in l.failover.iter().enumerate() {
        let fp = p.key("failover").index(i);
        let (from, to) = (
            fo.from.as_deref().unwrap_or(""),
            fo.to.as_deref().unwrap_or(""),
        );
        if from == to {
            f.err(
                &fp,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            f.err(&fp, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            f.err(
                &fp,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

fn client_tls(f: &mut Findings, p: &FieldPath, t: &ClientTlsSettings) {
    let mode = t.mode;
    if t.insecure_skip_verify == Some(true) {
        if mode == Some(ClientTlsMode::Simple)
            && (t.ca_certificates.is_some()
                || t.credential_name.is_some()
                || t.subject_alt_names.is_some())
        {
            f.err(p, "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true");
        }
        if mode == Some(ClientTlsMode::Mutual)
            && (t.ca_certificates.is_some() || t.subject_alt_names.is_some())
        {
            f.err(p, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true");
        }
    }
    let simple_or_mutual = matches!(mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual));
    if simple_or_mutual && t.credential_name.is_some() {
        if t.client_certificate.is_some()
            || t.ca_certificates.is_some()
            || t.private_key.is_some()
            || t.ca_crl.is_some()
        {
            f.err(p, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
        }
        return;
    }
    if mode == Some(ClientTlsMode::Mutual) {
        if t.client_certificate.is_none() {
            f.err(
                &p.key("clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if t.private_key.is_none() {
            f.err(&p.key("privateKey"), "private key required for mutual tls");
        }
    }
}
