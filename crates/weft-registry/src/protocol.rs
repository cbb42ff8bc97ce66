//! The protocol of a service port, decided as Istio decides it: an explicit protocol (a
//! ServiceEntry's `protocol`, a Kubernetes `appProtocol`), else the port name's
//! `<protocol>[-<suffix>]` convention, else unknown (Istio then sniffs; Weft treats it as TCP).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    HttpProxy,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
    /// Nothing says: Istio sniffs such ports; they are carried as TCP.
    Unsupported,
}

impl Protocol {
    /// Istio's protocol names, case-insensitive; anything else is `Unsupported`.
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http_proxy" => Protocol::HttpProxy,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => Protocol::Unsupported,
        }
    }

    /// From a port name: `http`, `http-web`, `grpc-web-ui` (the `grpc-web` prefix is checked
    /// before the part up to the first dash).
    pub fn from_port_name(name: &str) -> Protocol {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("grpc-web") {
            return Protocol::GrpcWeb;
        }
        let prefix = lower.split('-').next().unwrap_or_default();
        Protocol::parse(prefix)
    }

    /// A Kubernetes Service or EndpointSlice port: UDP by its L4 protocol, then `appProtocol`
    /// (with the Kubernetes well-known `kubernetes.io/h2c`, `ws` and `wss`), then the name.
    pub fn for_kube_port(name: &str, app_protocol: Option<&str>, l4: Option<&str>) -> Protocol {
        if l4.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
            return Protocol::Udp;
        }
        if let Some(app) = app_protocol {
            let known = match app {
                "kubernetes.io/h2c" => Protocol::Http2,
                "kubernetes.io/ws" => Protocol::Http,
                "kubernetes.io/wss" => Protocol::Https,
                other => Protocol::parse(other),
            };
            if known != Protocol::Unsupported {
                return known;
            }
        }
        Protocol::from_port_name(name)
    }

    /// A ServiceEntry (or Gateway) port: its `protocol`, else its name.
    pub fn for_istio_port(protocol: Option<&str>, name: &str) -> Protocol {
        match protocol.map(Protocol::parse) {
            Some(p) if p != Protocol::Unsupported => p,
            _ => Protocol::from_port_name(name),
        }
    }

    /// Carried by the HTTP connection manager (routes, retries, faults apply).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }

    /// Needs HTTP/2 towards the upstream.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    /// TLS the mesh does not terminate: routed by SNI.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Istio's spelling, as written in config and shown by `weft proxy-config`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Unsupported => "UnsupportedProtocol",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol::{self, *};

    #[test]
    fn port_names_follow_istios_convention() {
        for (name, want) in [
            ("http", Http),
            ("HTTP", Http),
            ("http-web", Http),
            ("http2", Http2),
            ("grpc", Grpc),
            ("grpc-api", Grpc),
            ("grpc-web", GrpcWeb),
            ("grpc-web-ui", GrpcWeb),
            ("https-admin", Https),
            ("tls", Tls),
            ("tcp-db", Tcp),
            ("mongo", Mongo),
            ("redis-cache", Redis),
            ("mysql", Mysql),
            ("web", Unsupported),
            ("httpx", Unsupported),
            ("", Unsupported),
        ] {
            assert_eq!(Protocol::from_port_name(name), want, "{name}");
        }
    }

    #[test]
    fn kubernetes_ports_prefer_udp_then_app_protocol_then_name() {
        assert_eq!(Protocol::for_kube_port("http", None, Some("UDP")), Udp);
        assert_eq!(
            Protocol::for_kube_port("web", Some("kubernetes.io/h2c"), Some("TCP")),
            Http2
        );
        assert_eq!(
            Protocol::for_kube_port("web", Some("kubernetes.io/ws"), None),
            Http
        );
        assert_eq!(
            Protocol::for_kube_port("web", Some("kubernetes.io/wss"), None),
            Https
        );
        assert_eq!(Protocol::for_kube_port("http", Some("grpc"), None), Grpc);
        // An appProtocol Istio does not know falls back to the name.
        assert_eq!(
            Protocol::for_kube_port("http-x", Some("example.com/custom"), None),
            Http
        );
        assert_eq!(Protocol::for_kube_port("web", None, None), Unsupported);
    }

    #[test]
    fn istio_ports_prefer_their_protocol() {
        assert_eq!(Protocol::for_istio_port(Some("HTTPS"), "http"), Https);
        assert_eq!(Protocol::for_istio_port(None, "grpc-x"), Grpc);
        assert_eq!(Protocol::for_istio_port(Some(""), "tcp"), Tcp);
    }
}
