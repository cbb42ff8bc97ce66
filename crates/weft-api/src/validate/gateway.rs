//! Gateway and Sidecar rules: both describe listeners (ports, binds, server TLS, hosts).

use super::rules;
use super::virtual_service::destination;
use super::{Findings, label_selector};
use crate::path::FieldPath;
use crate::types::gateway::*;
use crate::types::sidecar::*;

pub(super) fn validate_gateway(f: &mut Findings, spec: &FieldPath, g: &Gateway) {
    if g.servers.is_empty() {
        f.err(
            &spec.key("servers"),
            "gateway must have at least one server",
        );
    }
    let mut port_names: Vec<&str> = Vec::new();
    for (i, s) in g.servers.iter().enumerate() {
        let sp = spec.key("servers").index(i);
        server(f, &sp, s);
        if let Some(port) = &s.port {
            let name = port.name.as_deref().unwrap_or("");
            if port_names.contains(&name) {
                f.err(
                    &sp.key("port").key("name"),
                    format!("port names in servers must be unique: duplicate name {name}"),
                );
            }
            port_names.push(name);
            let http = rules::protocol_is_http(port.protocol.as_deref().unwrap_or(""));
            if !http && s.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
                f.warn(
                    &sp.key("tls").key("httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
}

fn server(f: &mut Findings, p: &FieldPath, s: &Server) {
    if s.hosts.is_empty() {
        f.err(
            &p.key("hosts"),
            "server config must contain at least one host",
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        namespace_slash_host(f, &p.key("hosts").index(i), h, true);
    }
    let bind = s.bind.as_deref().unwrap_or("");
    let port_ok = match &s.port {
        None => {
            f.err(&p.key("port"), "port is required");
            false
        }
        Some(port) => server_port(f, &p.key("port"), port, bind),
    };
    if let Some(addr) = bind.strip_prefix("unix://") {
        f.check(&p.key("bind"), rules::validate_unix_address(addr));
        if s.port
            .as_ref()
            .and_then(|x| x.number)
            .is_some_and(|n| n != 0)
        {
            f.err(
                &p.key("port").key("number"),
                "port number must be 0 for unix domain socket",
            );
        }
    } else if !bind.is_empty() {
        f.check(&p.key("bind"), rules::validate_ip(bind));
    }
    if let Some(t) = &s.tls {
        server_tls(f, &p.key("tls"), t);
    }
    if port_ok && let Some(port) = &s.port {
        let proto = port.protocol.as_deref().unwrap_or("");
        if rules::protocol_is_tls(proto) && s.tls.is_none() {
            f.err(
                &p.key("tls"),
                "server must have TLS settings for HTTPS/TLS protocols",
            );
        } else if !rules::protocol_is_tls(proto)
            && let Some(t) = &s.tls
        {
            if rules::protocol_is_http(proto) {
                let redirect_only = t.https_redirect == Some(true)
                    && t.ca_certificates.is_none()
                    && t.private_key.is_none()
                    && t.server_certificate.is_none();
                let passthrough = t.mode == Some(ServerTlsMode::Passthrough);
                if !(redirect_only || passthrough && t.server_certificate.is_none()) {
                    f.err(
                        &p.key("tls"),
                        "server cannot have TLS settings for plain text HTTP ports",
                    );
                }
            } else {
                f.err(
                    &p.key("tls"),
                    "server cannot have TLS settings for non HTTPS/TLS ports",
                );
            }
        }
    }
}

/// Returns whether the port is usable for the protocol checks that follow.
fn server_port(f: &mut Findings, p: &FieldPath, port: &Port, bind: &str) -> bool {
    let mut ok = true;
    let proto = port.protocol.as_deref().unwrap_or("");
    if rules::parse_protocol(proto).is_none() {
        f.err(
            &p.key("protocol"),
            format!("invalid protocol {proto:?}, supported protocols are HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, TLS"),
        );
        ok = false;
    }
    let number = port.number.unwrap_or(0);
    if (number > 0 || !bind.starts_with("unix://"))
        && let Err(e) = rules::validate_port(number)
    {
        f.err(&p.key("number"), e);
        ok = false;
    }
    if port.target_port.is_some_and(|t| t > 0) {
        f.err(&p.key("targetPort"), "targetPort has no impact on Gateways");
    }
    if port.name.as_deref().unwrap_or("").is_empty() {
        f.err(&p.key("name"), "port name must be set");
        ok = false;
    }
    ok
}

pub(super) fn server_tls(f: &mut Findings, p: &FieldPath, t: &ServerTlsSettings) {
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    if matches!(
        t.min_protocol_version,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
    ) && t.cipher_suites.as_ref().is_none_or(Vec::is_empty)
    {
        f.warn(p, "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.");
    }
    match t.mode {
        Some(ServerTlsMode::IstioMutual) => {
            for (key, v, what) in [
                (
                    "serverCertificate",
                    &t.server_certificate,
                    "server certificate",
                ),
                ("privateKey", &t.private_key, "private key"),
                ("caCertificates", &t.ca_certificates, "CA bundle"),
                ("credentialName", &t.credential_name, "credentialName"),
            ] {
                if set(v) {
                    f.err(
                        &p.key(key),
                        format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                    );
                }
            }
            return;
        }
        Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
            if set(&t.ca_crl)
                || set(&t.server_certificate)
                || set(&t.private_key)
                || set(&t.ca_certificates)
                || set(&t.credential_name) =>
        {
            f.warn(
                p,
                "PASSTHROUGH mode does not use certificates, they will be ignored",
            );
        }
        _ => {}
    }
    let credentials =
        set(&t.credential_name) || t.credential_names.as_ref().is_some_and(|v| !v.is_empty());
    let needs_certs = matches!(
        t.mode,
        Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    );
    let has_tls_certs = t.tls_certificates.as_ref().is_some_and(|v| !v.is_empty());
    if needs_certs && !credentials && !has_tls_certs {
        let label = if t.mode == Some(ServerTlsMode::Simple) {
            "SIMPLE"
        } else {
            "MUTUAL"
        };
        if !set(&t.server_certificate) {
            f.err(
                &p.key("serverCertificate"),
                format!("{label} TLS requires a server certificate (or credentialName)"),
            );
        }
        if !set(&t.private_key) {
            f.err(
                &p.key("privateKey"),
                format!("{label} TLS requires a private key (or credentialName)"),
            );
        }
        if label == "MUTUAL" && !set(&t.ca_certificates) {
            f.err(
                &p.key("caCertificates"),
                "MUTUAL TLS requires a client CA bundle",
            );
        }
    }
    if set(&t.ca_crl) {
        if credentials {
            f.err(&p.key("caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the credential");
        }
        if t.mode == Some(ServerTlsMode::Simple) {
            f.err(&p.key("caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

/// Gateway and Sidecar hosts: `namespace/dnsName` (gateways also accept a plain `dnsName`).
fn namespace_slash_host(f: &mut Findings, p: &FieldPath, host: &str, gateway: bool) {
    let Some((ns, name)) = host.split_once('/') else {
        if gateway {
            host_part(f, p, host, true);
        } else {
            f.err(p, "host must be of form namespace/dnsName");
        }
        return;
    };
    if ns.is_empty() || name.is_empty() {
        f.err(
            p,
            "config namespace and dnsName in host entry cannot be empty",
        );
    }
    let special = ns == "*" || ns == "." || (!gateway && ns == "~");
    if !special && !rules::is_dns1123_label(ns) {
        let what = if gateway { "gateway" } else { "sidecar" };
        f.err(p, format!("invalid namespace value {ns:?} in {what}"));
    }
    host_part(f, p, name, gateway);
}

fn host_part(f: &mut Findings, p: &FieldPath, host: &str, gateway: bool) {
    if host != "*" && !host.contains('.') {
        f.err(p, "short names (non FQDN) are not allowed");
    }
    if let Err(e) = rules::validate_wildcard_domain(host)
        && (!gateway || !rules::is_ip(host))
    {
        f.err(p, e);
    }
    f.check(p, rules::validate_partial_wildcard(host));
}

fn sidecar_port(f: &mut Findings, p: &FieldPath, port: &Port) {
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
        f.check(&p.key("name"), rules::validate_port_name(name));
    }
    f.check(
        &p.key("protocol"),
        rules::validate_protocol(port.protocol.as_deref().unwrap_or("")),
    );
    if port.target_port.is_some_and(|t| t > 0) {
        f.err(&p.key("targetPort"), "targetPort has no impact on Sidecars");
    }
}

pub(super) fn validate_sidecar(f: &mut Findings, spec: &FieldPath, s: &Sidecar) {
    if s.workload_selector
        .as_ref()
        .is_some_and(|w| w.labels.is_empty())
    {
        f.warn(&spec.key("workloadSelector"), "sidecar: workload selector specified without labels, will be applied to all services in namespace");
    } else {
        label_selector(
            f,
            &spec.key("workloadSelector"),
            s.workload_selector.as_ref(),
        );
    }
    if s.egress.is_empty()
        && s.ingress.is_empty()
        && s.outbound_traffic_policy.is_none()
        && s.inbound_connection_pool.is_none()
    {
        f.err(spec, "sidecar: empty configuration provided");
        return;
    }
    let mut ports: Vec<i64> = Vec::new();
    for (i, ing) in s.ingress.iter().enumerate() {
        let ip = spec.key("ingress").index(i);
        let Some(port) = &ing.port else {
            f.err(
                &ip.key("port"),
                "sidecar: port is required for ingress listeners",
            );
            continue;
        };
        sidecar_port(f, &ip.key("port"), port);
        let n = port.number.unwrap_or(0);
        f.check(&ip.key("port").key("number"), rules::validate_port(n));
        if ports.contains(&n) {
            f.err(
                &ip.key("port").key("number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        ports.push(n);
        if let Some(b) = ing.bind.as_deref().filter(|b| !b.is_empty()) {
            f.check(&ip.key("bind"), rules::validate_ip(b));
        }
        if let Some(ep) = ing.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
            default_endpoint(f, &ip.key("defaultEndpoint"), ep);
        }
        if let Some(t) = &ing.tls {
            let tp = ip.key("tls");
            if t.subject_alt_names.as_ref().is_some_and(|v| !v.is_empty()) {
                f.err(
                    &tp,
                    "sidecar: subjectAltNames is not supported in ingress tls",
                );
            }
            if t.https_redirect == Some(true) {
                f.err(&tp, "sidecar: httpsRedirect is not supported");
            }
            if t.credential_name.is_some() {
                f.err(&tp, "sidecar: credentialName is not currently supported");
            }
            if matches!(
                t.mode,
                Some(ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)
            ) {
                f.err(&tp.key("mode"), "configuration is invalid: cannot set mode to ISTIO_MUTUAL or AUTO_PASSTHROUGH in sidecar ingress tls");
            }
            server_tls(f, &tp, t);
        }
    }
    let mut ports: Vec<i64> = Vec::new();
    let mut catch_all = false;
    for (i, eg) in s.egress.iter().enumerate() {
        let ep = spec.key("egress").index(i);
        match &eg.port {
            None => {
                if catch_all {
                    f.err(
                        &ep,
                        "sidecar: egress can have only one listener with empty port",
                    );
                } else if i != s.egress.len() - 1 {
                    f.err(&ep, "sidecar: the egress listener with empty port should be the last listener in the list");
                }
                catch_all = true;
            }
            Some(port) => {
                sidecar_port(f, &ep.key("port"), port);
                let n = port.number.unwrap_or(0);
                let bind = eg.bind.as_deref().unwrap_or("");
                if n == 0 {
                    match bind.strip_prefix("unix://") {
                        Some(addr) => f.check(&ep.key("bind"), rules::validate_unix_address(addr)),
                        None => f.err(&ep.key("bind"), "sidecar: ports with 0 value must have a unix domain socket bind address"),
                    }
                } else {
                    f.check(&ep.key("port").key("number"), rules::validate_port(n));
                    if !bind.is_empty() {
                        f.check(&ep.key("bind"), rules::validate_ip(bind));
                    }
                    if ports.contains(&n) {
                        f.err(
                            &ep.key("port").key("number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                    ports.push(n);
                }
            }
        }
        if eg.hosts.is_empty() {
            f.err(
                &ep.key("hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        for (j, h) in eg.hosts.iter().enumerate() {
            namespace_slash_host(f, &ep.key("hosts").index(j), h, false);
        }
    }
    if let Some(otp) = &s.outbound_traffic_policy
        && let Some(proxy) = &otp.egress_proxy
    {
        let pp = spec.key("outboundTrafficPolicy").key("egressProxy");
        if otp.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
            f.err(&pp, "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode");
        } else if proxy.port.is_none() {
            f.err(
                &pp.key("port"),
                "sidecar: egress_proxy port must be non-nil",
            );
        } else {
            f.check(
                &pp.key("host"),
                rules::validate_fqdn(proxy.host.as_deref().unwrap_or("")),
            );
            destination(f, &pp, proxy);
        }
    }
}

fn default_endpoint(f: &mut Findings, p: &FieldPath, ep: &str) {
    if let Some(addr) = ep.strip_prefix("unix://") {
        f.check(p, rules::validate_unix_address(addr));
        return;
    }
    let Some((host, port)) = ep.rsplit_once(':') else {
        f.err(p, format!("address {ep}: missing port in address"));
        return;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !host.is_empty() && !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        f.err(p, "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset");
    }
    match port.parse::<i64>() {
        Ok(n) => f.check(p, rules::validate_port(n)),
        Err(_) => f.err(
            p,
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}
