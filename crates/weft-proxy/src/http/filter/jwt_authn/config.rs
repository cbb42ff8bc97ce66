//! `JwtAuthentication` → the filter. What the proxy does not do is refused by name.

use super::{JwtAuthn, Provider, Requirement, Rule, Source};
use crate::config::FieldError;
use crate::jwt::{Checks, Jwks};
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as pb;
use http::HeaderName;

type Result<T> = std::result::Result<T, FieldError>;

pub const SUPPORTED: &[(&str, &str)] = &[
    (super::TYPE, "providers rules bypass_cors_preflight"),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.JwtProvider",
        "issuer audiences forward from_headers from_params from_cookies forward_payload_header \
         pad_forward_payload_header payload_in_metadata normalize_payload_in_metadata \
         clock_skew_seconds claim_to_headers clear_route_cache local_jwks remote_jwks",
    ),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.RemoteJwks",
        "http_uri cache_duration",
    ),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.JwtProvider.NormalizePayload",
        "space_delimited_claims",
    ),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.JwtHeader",
        "name value_prefix",
    ),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.JwtClaimToHeader",
        "header_name claim_name",
    ),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.RequirementRule",
        "match requires",
    ),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.JwtRequirement",
        "provider_name requires_any requires_all allow_missing allow_missing_or_failed",
    ),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.JwtRequirementOrList",
        "requirements",
    ),
    (
        "envoy.extensions.filters.http.jwt_authn.v3.JwtRequirementAndList",
        "requirements",
    ),
];

pub fn build(c: &pb::JwtAuthentication, path: &str) -> Result<JwtAuthn> {
    let mut names: Vec<&String> = c.providers.keys().collect();
    names.sort();
    let mut providers = Vec::new();
    for name in &names {
        providers.push(provider(
            name,
            &c.providers[*name],
            &format!("{path}.providers[\"{name}\"]"),
        )?);
    }
    let index = |n: &str| names.iter().position(|x| x.as_str() == n);
    let mut rules = Vec::new();
    for (i, r) in c.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        let m = r
            .r#match
            .as_ref()
            .ok_or_else(|| FieldError::new(format!("{rpath}.match"), "is required"))?;
        let (prefix, exact) = match &m.path_specifier {
            Some(PathSpecifier::Prefix(p)) => (Some(p.clone()), None),
            Some(PathSpecifier::Path(p)) => (None, Some(p.clone())),
            _ => {
                return Err(FieldError::new(
                    format!("{rpath}.match"),
                    "only prefix and path matches are supported by the Weft proxy",
                ));
            }
        };
        if !m.headers.is_empty() || !m.query_parameters.is_empty() {
            return Err(FieldError::new(
                format!("{rpath}.match"),
                "header and query parameter matches are not supported by the Weft proxy",
            ));
        }
        let requires = match &r.requirement_type {
            Some(pb::requirement_rule::RequirementType::Requires(req)) => {
                Some(requirement(req, &index, &format!("{rpath}.requires"))?)
            }
            Some(pb::requirement_rule::RequirementType::RequirementName(_)) => {
                return Err(FieldError::new(
                    format!("{rpath}.requirement_name"),
                    "requirement_map is not supported by the Weft proxy",
                ));
            }
            None => None,
        };
        rules.push(Rule {
            prefix,
            path: exact,
            requires,
        });
    }
    Ok(JwtAuthn {
        providers,
        rules,
        bypass_cors_preflight: c.bypass_cors_preflight,
    })
}

fn requirement(
    r: &pb::JwtRequirement,
    index: &dyn Fn(&str) -> Option<usize>,
    path: &str,
) -> Result<Requirement> {
    use pb::jwt_requirement::RequiresType as T;
    let list = |reqs: &[pb::JwtRequirement], field: &str| {
        reqs.iter()
            .enumerate()
            .map(|(i, x)| requirement(x, index, &format!("{path}.{field}.requirements[{i}]")))
            .collect::<Result<Vec<_>>>()
    };
    Ok(match &r.requires_type {
        Some(T::ProviderName(n)) => Requirement::Provider(index(n).ok_or_else(|| {
            FieldError::new(
                format!("{path}.provider_name"),
                format!("no provider is named {n:?}"),
            )
        })?),
        Some(T::RequiresAny(l)) => Requirement::Any(list(&l.requirements, "requires_any")?),
        Some(T::RequiresAll(l)) => Requirement::All(list(&l.requirements, "requires_all")?),
        Some(T::AllowMissing(_)) => Requirement::AllowMissing,
        Some(T::AllowMissingOrFailed(_)) => Requirement::AllowMissingOrFailed,
        Some(_) => {
            return Err(FieldError::new(
                path,
                "only provider_name, requires_any, requires_all, allow_missing and \
                 allow_missing_or_failed are supported by the Weft proxy",
            ));
        }
        None => return Err(FieldError::new(path, "a requirement is required")),
    })
}

fn header_name(name: &str, path: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| FieldError::new(path, format!("{name:?} is not a header name")))
}

fn provider(name: &str, p: &pb::JwtProvider, path: &str) -> Result<Provider> {
    use pb::jwt_provider::JwksSourceSpecifier as J;
    let jwks = match &p.jwks_source_specifier {
        Some(J::LocalJwks(ds)) => {
            let text = match &ds.specifier {
                Some(Specifier::InlineString(s)) => s.clone(),
                Some(Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => {
                    return Err(FieldError::new(
                        format!("{path}.local_jwks"),
                        "only inline_string and inline_bytes are supported by the Weft proxy",
                    ));
                }
            };
            super::JwksSource::Local(Jwks::parse(&text).map_err(|why| {
                FieldError::new(
                    format!("{path}.local_jwks"),
                    format!("Provider '{name}' in jwt_authn config has invalid local jwks: {why}"),
                )
            })?)
        }
        Some(J::RemoteJwks(r)) => {
            use envoy_types::pb::envoy::config::core::v3::http_uri::HttpUpstreamType;
            let rpath = format!("{path}.remote_jwks.http_uri");
            let u = r
                .http_uri
                .as_ref()
                .ok_or_else(|| FieldError::new(&rpath, "is required"))?;
            let Some(HttpUpstreamType::Cluster(cluster)) = &u.http_upstream_type else {
                return Err(FieldError::new(format!("{rpath}.cluster"), "is required"));
            };
            let uri: http::Uri = u
                .uri
                .parse()
                .map_err(|e| FieldError::new(format!("{rpath}.uri"), format!("{e}")))?;
            if uri.scheme_str() != Some("http") {
                return Err(FieldError::new(
                    format!("{rpath}.uri"),
                    "only http URIs are supported by the Weft proxy",
                ));
            }
            let timeout = crate::config::convert::duration(u.timeout.as_ref())
                .ok_or_else(|| FieldError::new(format!("{rpath}.timeout"), "is required"))?;
            let cache = crate::config::convert::duration(r.cache_duration.as_ref())
                .unwrap_or(std::time::Duration::from_secs(600));
            super::JwksSource::Remote(std::sync::Arc::new(super::remote::RemoteJwks::new(
                cluster.clone(),
                uri,
                timeout,
                cache,
            )))
        }
        None => return Err(FieldError::new(format!("{path}.jwks"), "is required")),
    };
    if p.subjects.is_some() || p.require_expiration || p.max_lifetime.is_some() {
        return Err(FieldError::new(
            path,
            "subjects, require_expiration and max_lifetime are not supported by the Weft proxy",
        ));
    }
    let mut from = Vec::new();
    for (i, h) in p.from_headers.iter().enumerate() {
        from.push(Source::Header(
            header_name(&h.name, &format!("{path}.from_headers[{i}].name"))?,
            h.value_prefix.clone(),
        ));
    }
    from.extend(p.from_params.iter().cloned().map(Source::Param));
    from.extend(p.from_cookies.iter().cloned().map(Source::Cookie));
    if from.is_empty() {
        from.push(Source::Header(
            http::header::AUTHORIZATION,
            "Bearer ".into(),
        ));
        from.push(Source::Param("access_token".into()));
    }
    let mut claim_to_headers = Vec::new();
    for (i, c) in p.claim_to_headers.iter().enumerate() {
        claim_to_headers.push((
            header_name(
                &c.header_name,
                &format!("{path}.claim_to_headers[{i}].header_name"),
            )?,
            c.claim_name.clone(),
        ));
    }
    Ok(Provider {
        name: name.to_string(),
        checks: Checks {
            issuer: p.issuer.clone(),
            audiences: p.audiences.clone(),
            clock_skew_s: if p.clock_skew_seconds == 0 {
                60
            } else {
                u64::from(p.clock_skew_seconds)
            },
        },
        from,
        forward: p.forward,
        forward_payload_header: (!p.forward_payload_header.is_empty())
            .then(|| {
                header_name(
                    &p.forward_payload_header,
                    &format!("{path}.forward_payload_header"),
                )
            })
            .transpose()?,
        pad_forward_payload_header: p.pad_forward_payload_header,
        payload_in_metadata: (!p.payload_in_metadata.is_empty())
            .then(|| p.payload_in_metadata.clone()),
        claim_to_headers,
        space_delimited_claims: p
            .normalize_payload_in_metadata
            .as_ref()
            .map(|n| n.space_delimited_claims.clone())
            .unwrap_or_default(),
        jwks,
    })
}
