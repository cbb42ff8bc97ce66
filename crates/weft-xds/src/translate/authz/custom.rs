//! CUSTOM AuthorizationPolicies, as istiod's ext_authz builder writes them: per provider (by
//! name), an RBAC filter whose shadow rules (`istio-ext-authz-PROVIDER-ns[NS]-policy[NAME]-rule[I]`)
//! mark the requests to check, then `envoy.filters.http.ext_authz` enabled by that mark, asking
//! the provider's service (MeshConfig `extensionProviders`, HTTP or gRPC). A provider that is
//! unknown or cannot be used denies what its rules match instead, and says why.

use super::super::pb;
use super::{Authorization, model};
use envoy_types::pb::envoy::config::core::v3::{
    GrpcService, HeaderValue, HttpUri, grpc_service, http_uri,
};
use envoy_types::pb::envoy::config::rbac::v3::{Policy, Rbac, rbac};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    AuthorizationRequest, AuthorizationResponse, ExtAuthz, HttpService, ext_authz,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListStringMatcher, MetadataMatcher, StringMatcher, ValueMatcher, metadata_matcher,
    string_matcher, value_matcher,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use std::collections::{BTreeMap, HashMap};
use weft_api::types::mesh::ExtensionProvider;
use weft_api::types::security::AuthorizationAction;

const DEFAULT_TIMEOUT_S: i64 = 600;

/// The provider's ext_authz config, or why it cannot be used.
fn ext_authz(inputs: &super::super::Inputs, p: &ExtensionProvider) -> Result<ExtAuthz, String> {
    let (config, http) = match (&p.envoy_ext_authz_http, &p.envoy_ext_authz_grpc) {
        (Some(h), None) => (h, true),
        (None, Some(g)) => (g, false),
        _ => return Err("it is not an envoyExtAuthzHttp or envoyExtAuthzGrpc provider".into()),
    };
    let port = config
        .port
        .filter(|p| (1..=65535).contains(p))
        .ok_or("its port must be 1 to 65535")?;
    let (ns, host) = match config.service.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, config.service.as_str()),
    };
    let found: Vec<&weft_registry::Service> = inputs
        .registry
        .services
        .iter()
        .filter(|s| s.hostname == host && ns.is_none_or(|n| s.namespace == n))
        .collect();
    let service = match found.as_slice() {
        [one] => one,
        [] => {
            return Err(format!(
                "could not find service {}:{port} in the registry",
                config.service
            ));
        }
        _ => {
            return Err(format!(
                "found {host} in several namespaces, specify the namespace as NAMESPACE/HOSTNAME"
            ));
        }
    };
    let cluster = format!("outbound|{port}||{}", service.hostname);
    let timeout = config
        .timeout
        .map(pb::duration)
        .unwrap_or_else(|| pb::millis(DEFAULT_TIMEOUT_S * 1000));
    let status_on_error = match config.status_on_error.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(HttpStatus {
            code: s
                .parse::<i32>()
                .ok()
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| format!("statusOnError {s:?} is not an HTTP status"))?,
        }),
        None => None,
    };
    let metadata = MetadataMatcher {
        filter: "envoy.filters.http.rbac".into(),
        path: vec![metadata_matcher::PathSegment {
            segment: Some(metadata_matcher::path_segment::Segment::Key(
                "istio_ext_authz_shadow_effective_policy_id".into(),
            )),
        }],
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Prefix(format!(
                    "istio-ext-authz-{}",
                    p.name
                ))),
                ..Default::default()
            })),
        }),
        invert: false,
    };
    let mut out = ExtAuthz {
        transport_api_version: 2, // V3
        failure_mode_allow: config.fail_open.unwrap_or(false),
        status_on_error,
        filter_enabled_metadata: Some(metadata),
        ..Default::default()
    };
    if http {
        let path_prefix = config.path_prefix.clone().unwrap_or_default();
        if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
            return Err(format!("pathPrefix {path_prefix:?} must start with /"));
        }
        out.allowed_headers = headers(&config.include_request_headers_in_check)?;
        let add: BTreeMap<&String, &String> =
            config.include_additional_headers_in_check.iter().collect();
        let headers_to_add: Vec<HeaderValue> = add
            .into_iter()
            .map(|(k, v)| HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .collect();
        let upstream = headers(&config.headers_to_upstream_on_allow)?;
        let client = headers(&config.headers_to_downstream_on_deny)?;
        out.services = Some(ext_authz::Services::HttpService(HttpService {
            server_uri: Some(HttpUri {
                uri: format!("http://{}", service.hostname),
                timeout: Some(timeout),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
            }),
            path_prefix,
            authorization_request: (!headers_to_add.is_empty()).then(|| {
                #[allow(deprecated)]
                AuthorizationRequest {
                    headers_to_add,
                    ..Default::default()
                }
            }),
            authorization_response: (upstream.is_some() || client.is_some()).then(|| {
                AuthorizationResponse {
                    allowed_upstream_headers: upstream,
                    allowed_client_headers: client,
                    ..Default::default()
                }
            }),
            ..Default::default()
        }));
    } else {
        out.services = Some(ext_authz::Services::GrpcService(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: cluster,
                    authority: service.hostname.clone(),
                    ..Default::default()
                },
            )),
            timeout: Some(timeout),
            ..Default::default()
        }));
    }
    if config.other.contains_key("includeRequestBodyInCheck") {
        return Err("includeRequestBodyInCheck is not supported by Weft yet".into());
    }
    Ok(out)
}

/// Header names as istiod matches them: case-insensitive, `x*` a prefix, `*x` a suffix.
fn headers(names: &[String]) -> Result<Option<ListStringMatcher>, String> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut patterns = Vec::new();
    for n in names {
        if n == "*" {
            return Err("a header may not be `*`".into());
        }
        patterns.push(StringMatcher {
            match_pattern: Some(super::matcher::wildcard(n)),
            ignore_case: true,
        });
    }
    Ok(Some(ListStringMatcher { patterns }))
}

fn filter(name: &str, any: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

/// The CUSTOM filters of a workload's HTTP chains: per provider, RBAC marking then ext_authz
/// asking, or RBAC denying for a provider that cannot be used.
pub fn http_filters(
    inputs: &super::super::Inputs,
    policies: &[&Authorization],
    trust_domains: &[String],
    ports: &[(u16, u16)],
    problem: &dyn Fn(String),
) -> Vec<HttpFilter> {
    let mut by_provider: BTreeMap<String, Vec<&Authorization>> = BTreeMap::new();
    for a in policies {
        if a.obj.spec.action == Some(AuthorizationAction::Custom) {
            let name = a
                .obj
                .spec
                .provider
                .as_ref()
                .and_then(|p| p.name.clone())
                .unwrap_or_default();
            by_provider.entry(name).or_default().push(a);
        }
    }
    let mut out = Vec::new();
    for (provider, custom) in by_provider {
        let found: Vec<&ExtensionProvider> = inputs
            .mesh
            .extension_providers
            .iter()
            .filter(|p| p.name == provider)
            .collect();
        let config = match found.as_slice() {
            [one] => ext_authz(inputs, one),
            [] => Err(format!(
                "available providers are {:?} but found {provider:?}",
                inputs
                    .mesh
                    .extension_providers
                    .iter()
                    .map(|p| &p.name)
                    .collect::<Vec<_>>()
            )),
            _ => Err(format!("several extensionProviders are named {provider:?}")),
        };
        let suffix = if config.is_err() {
            "-deny-due-to-bad-CUSTOM-action"
        } else {
            ""
        };
        let mut rules: HashMap<String, Policy> = HashMap::new();
        for a in &custom {
            let base = format!(
                "istio-ext-authz-{provider}-ns[{}]-policy[{}]",
                a.obj.namespace, a.obj.name
            );
            let target = model::Target {
                tcp: false,
                strict: true,
                namespace: &a.obj.namespace,
                trust_domains,
                ports,
            };
            let list = a.obj.spec.rules.as_deref().unwrap_or_default();
            if list.is_empty() {
                rules.insert(format!("{base}-rule[0]{suffix}"), model::never());
            }
            for (i, rule) in list.iter().enumerate() {
                let mut skipped = Vec::new();
                if let Ok(p) = model::policy(rule, target, &mut skipped) {
                    rules.insert(format!("{base}-rule[{i}]{suffix}"), p);
                }
            }
        }
        let rbac_of = |policies| Rbac {
            action: rbac::Action::Deny as i32,
            policies,
            ..Default::default()
        };
        match config {
            Ok(ext) => {
                out.push(filter(
                    super::HTTP_RBAC,
                    pb::any(&HttpRbac {
                        shadow_rules: Some(rbac_of(rules)),
                        shadow_rules_stat_prefix: "istio_ext_authz_".into(),
                        ..Default::default()
                    }),
                ));
                out.push(filter("envoy.filters.http.ext_authz", pb::any(&ext)));
            }
            Err(why) => {
                for a in &custom {
                    problem(format!(
                        "{}: CUSTOM provider {provider:?} cannot be used ({why}): what its rules match is denied",
                        a.obj.label()
                    ));
                }
                out.push(filter(
                    super::HTTP_RBAC,
                    pb::any(&HttpRbac {
                        rules: Some(rbac_of(rules)),
                        shadow_rules_stat_prefix: "istio_dry_run_allow_".into(),
                        ..Default::default()
                    }),
                ));
            }
        }
    }
    out
}
