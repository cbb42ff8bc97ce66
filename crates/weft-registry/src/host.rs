//! Host names as Istio reads them in config: a short name is relative to the namespace of the
//! object it is written in (`reviews` in `default` is `reviews.default.svc.cluster.local`); a
//! name with a dot, an IP address or `*` is taken as written.

use std::net::IpAddr;

/// The FQDN of `host` written in an object of `namespace`, with the mesh's `domain_suffix`
/// (`cluster.local` by default).
pub fn fqdn(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') || host.parse::<IpAddr>().is_ok() {
        return host.to_string();
    }
    let mut out = host.to_string();
    if !namespace.is_empty() {
        out.push('.');
        out.push_str(namespace);
    }
    if !domain_suffix.is_empty() {
        out.push_str(".svc.");
        out.push_str(domain_suffix);
    }
    out
}

/// The FQDN of a Kubernetes Service.
pub fn kube_service(name: &str, namespace: &str, domain_suffix: &str) -> String {
    format!("{name}.{namespace}.svc.{domain_suffix}")
}

/// Whether a config host (possibly `*.suffix` or `*`) covers a service host, as Istio matches
/// VirtualService and Sidecar hosts against the registry.
pub fn matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_relative_to_the_namespace() {
        let d = "cluster.local";
        assert_eq!(
            fqdn("reviews", "default", d),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(fqdn("reviews.prod", "default", d), "reviews.prod");
        assert_eq!(
            fqdn("reviews.prod.svc.cluster.local", "default", d),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(fqdn("*.example.com", "default", d), "*.example.com");
        assert_eq!(fqdn("*", "default", d), "*");
        assert_eq!(fqdn("10.0.0.1", "default", d), "10.0.0.1");
        assert_eq!(fqdn("::1", "default", d), "::1");
        assert_eq!(fqdn("web", "", ""), "web");
    }

    #[test]
    fn wildcards_cover_names_under_them() {
        assert!(matches("*", "a.b"));
        assert!(matches("*.example.com", "www.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches(
            "Reviews.default.svc.cluster.local",
            "reviews.default.svc.cluster.local"
        ));
        assert!(!matches(
            "ratings.default.svc.cluster.local",
            "reviews.default.svc.cluster.local"
        ));
    }
}
