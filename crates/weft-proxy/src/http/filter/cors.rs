//! The CORS filter (`envoy.filters.http.cors`) with Envoy's semantics: the policy of the route
//! and of its virtual host (`typed_per_filter_config`) are read field by field, the route's
//! first; a preflight from an allowed origin is answered by the proxy; other requests from an
//! allowed origin get `access-control-allow-origin` (the origin itself) on their response.

use crate::route::StringMatch;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

static ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");
static REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");

/// `envoy.extensions.filters.http.cors.v3.CorsPolicy`. Unset fields stay unset so that the
/// virtual host's policy can supply them.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatch>,
    pub allow_methods: Option<HeaderValue>,
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: Option<bool>,
    pub allow_private_network_access: Option<bool>,
    pub forward_not_matching_preflights: Option<bool>,
    /// `filter_enabled`, in millionths of requests (Envoy: enabled when unset).
    pub enabled_per_million: u32,
}

/// What a response to an allowed cross-origin request gets.
#[derive(Debug, Clone)]
pub struct Simple {
    origin: HeaderValue,
    credentials: bool,
    expose: Option<HeaderValue>,
}

impl Simple {
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.origin.clone());
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

pub enum Decision {
    /// Route the request; decorate its response if the origin was allowed.
    Continue(Option<Simple>),
    /// A preflight the proxy answers: 200 with these headers.
    Preflight(HeaderMap),
}

/// The first policy (route, then virtual host) that sets a field.
struct Policies<'a>([Option<&'a CorsPolicy>; 2]);

impl<'a> Policies<'a> {
    fn first<T>(&self, f: impl Fn(&'a CorsPolicy) -> Option<T>) -> Option<T> {
        self.0.iter().flatten().find_map(|p| f(p))
    }
}

pub fn on_request(
    route: Option<&CorsPolicy>,
    vhost: Option<&CorsPolicy>,
    method: &Method,
    headers: &HeaderMap,
) -> Decision {
    let policies = Policies([route, vhost]);
    // Enabled or not is the most specific policy's say.
    let Some(main) = route.or(vhost) else {
        return Decision::Continue(None);
    };
    if main.enabled_per_million < 1_000_000
        && fastrand::u32(..1_000_000) >= main.enabled_per_million
    {
        return Decision::Continue(None);
    }
    let Some(origin) = headers.get(ORIGIN).filter(|o| !o.is_empty()) else {
        return Decision::Continue(None);
    };
    let origins = policies
        .first(|p| (!p.allow_origins.is_empty()).then_some(&p.allow_origins))
        .map_or(&[][..], Vec::as_slice);
    let allowed = origin
        .to_str()
        .is_ok_and(|o| origins.iter().any(|m| m.matches("*") || m.matches(o)));
    let credentials = policies.first(|p| p.allow_credentials).unwrap_or(false);
    let preflight = method == Method::OPTIONS
        && headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|m| !m.is_empty());
    let forward_unmatched = policies
        .first(|p| p.forward_not_matching_preflights)
        .unwrap_or(true);
    if !preflight || (!allowed && forward_unmatched) {
        let simple = allowed.then(|| Simple {
            origin: origin.clone(),
            credentials,
            expose: policies.first(|p| p.expose_headers.clone()),
        });
        return Decision::Continue(simple);
    }
    let mut out = HeaderMap::new();
    if allowed {
        // Envoy's answer passes through the filter's own response path, which adds what any
        // allowed cross-origin response gets, expose-headers included.
        Simple {
            origin: origin.clone(),
            credentials,
            expose: policies.first(|p| p.expose_headers.clone()),
        }
        .apply(&mut out);
    } else if credentials {
        out.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    // `*` answers with what the preflight asked for.
    let echo = |configured: Option<HeaderValue>, asked: &HeaderName| match configured {
        Some(v) if v == "*" => headers.get(asked).cloned(),
        other => other,
    };
    if let Some(v) = echo(
        policies.first(|p| p.allow_methods.clone()),
        &ACCESS_CONTROL_REQUEST_METHOD,
    ) {
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = echo(
        policies.first(|p| p.allow_headers.clone()),
        &ACCESS_CONTROL_REQUEST_HEADERS,
    ) {
        out.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(v) = policies.first(|p| p.max_age.clone()) {
        out.insert(ACCESS_CONTROL_MAX_AGE, v);
    }
    if policies
        .first(|p| p.allow_private_network_access)
        .unwrap_or(false)
        && headers
            .get(&REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v == "true")
    {
        out.insert(
            ALLOW_PRIVATE_NETWORK.clone(),
            HeaderValue::from_static("true"),
        );
    }
    Decision::Preflight(out)
}

/// `envoy.filters.http.cors` in a chain. It has no config of its own: the policies are the
/// route's and virtual host's.
#[derive(Debug)]
pub struct CorsFilter;

const TYPE: &str = "envoy.extensions.filters.http.cors.v3.Cors";
const POLICY_TYPE: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: Some(POLICY_TYPE),
    build: |any, cx| {
        let _: envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors =
            crate::config::convert::decode_any(any, cx.path)?;
        Ok(std::sync::Arc::new(CorsFilter))
    },
    build_per_route: |any, cx| {
        if crate::config::convert::type_name(any) != POLICY_TYPE {
            return Err(crate::config::FieldError::new(
                cx.path,
                format!("the CORS filter reads a {POLICY_TYPE} here"),
            ));
        }
        Ok(std::sync::Arc::new(crate::config::convert::cors_policy(
            any, cx.path,
        )?))
    },
    supported: &[
        (TYPE, ""),
        (
            POLICY_TYPE,
            "allow_origin_string_match allow_methods allow_headers expose_headers max_age \
             allow_credentials filter_enabled allow_private_network_access \
             forward_not_matching_preflights",
        ),
    ],
};

impl super::HttpFilter for CorsFilter {
    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        per_route: super::PerRoute<'_>,
    ) -> super::Decode {
        // Envoy's CORS filter reads the route's policy and then the virtual host's.
        let mut policies = per_route.all::<CorsPolicy>();
        let (route, vhost) = (policies.next(), policies.next());
        match on_request(route, vhost, &cx.head.method, &cx.head.headers) {
            Decision::Continue(None) => super::Decode::Continue,
            Decision::Continue(Some(simple)) => {
                let mut h = HeaderMap::new();
                simple.apply(&mut h);
                cx.stream.add_response_headers(h);
                super::Decode::Continue
            }
            Decision::Preflight(headers) => {
                let mut resp = http::Response::new(crate::http::body::ProxyBody::Empty);
                *resp.headers_mut() = headers;
                super::Decode::Respond(Box::new(resp), "cors_response")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origin: &str) -> CorsPolicy {
        CorsPolicy {
            allow_origins: vec![StringMatch::Exact {
                value: origin.into(),
                ignore_case: false,
            }],
            allow_methods: Some(HeaderValue::from_static("GET, POST")),
            enabled_per_million: 1_000_000,
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn route_fields_win_and_the_vhost_fills_the_rest() {
        let route = CorsPolicy {
            max_age: Some(HeaderValue::from_static("60")),
            ..policy("https://a.example")
        };
        let vhost = CorsPolicy {
            allow_methods: Some(HeaderValue::from_static("PUT")),
            allow_credentials: Some(true),
            ..policy("https://b.example")
        };
        let h = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ]);
        let Decision::Preflight(out) = on_request(Some(&route), Some(&vhost), &Method::OPTIONS, &h)
        else {
            panic!("not answered")
        };
        assert_eq!(out["access-control-allow-origin"], "https://a.example");
        assert_eq!(out["access-control-allow-methods"], "GET, POST");
        assert_eq!(out["access-control-allow-credentials"], "true");
        assert_eq!(out["access-control-max-age"], "60");
    }

    #[test]
    fn an_unknown_origin_is_forwarded_without_cors_headers() {
        let p = policy("https://a.example");
        let h = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ]);
        assert!(matches!(
            on_request(Some(&p), None, &Method::OPTIONS, &h),
            Decision::Continue(None)
        ));
    }
}
