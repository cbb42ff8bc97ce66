//! `envoy.filters.http.rbac`: Envoy's RBAC HTTP filter. The shadow engine (`shadow_rules`) is
//! evaluated and counted first and never blocks; then the enforced one (`rules`), whose denial
//! is Envoy's 403 `RBAC: access denied`. Without `rules` the filter enforces nothing.

use crate::http::local_reply::LocalReply;
use crate::rbac::{Enforcer, Subject};
use crate::route::RequestView;
use std::sync::Arc;

pub const TYPE: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";

#[derive(Debug)]
pub struct RbacFilter {
    enforcer: Enforcer,
    /// The metadata keys the shadow engine's outcome is written under, made once:
    /// `shadow_rules_stat_prefix` then `shadow_effective_policy_id` / `shadow_engine_result`.
    policy_key: String,
    result_key: String,
}

/// The dynamic metadata namespace of the filter's shadow outcome.
pub const NAMESPACE: &str = "envoy.filters.http.rbac";

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: None,
    build: |any, cx| {
        use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as PbRbac;
        let pb: PbRbac = crate::config::convert::decode_any(any, cx.path)?;
        let rules = pb
            .rules
            .as_ref()
            .map(|r| crate::config::convert::rbac_engine(r, &format!("{}.rules", cx.path)))
            .transpose()?;
        let shadow = pb
            .shadow_rules
            .as_ref()
            .map(|r| crate::config::convert::rbac_engine(r, &format!("{}.shadow_rules", cx.path)))
            .transpose()?;
        let base = crate::rbac::join(&format!("http.{}", cx.stat_prefix), "rbac.");
        let enforced = crate::rbac::join(&base, &pb.rules_stat_prefix);
        let shadow_prefix = crate::rbac::join(&base, &pb.shadow_rules_stat_prefix);
        let stats = cx.store.rbac(&enforced, &shadow_prefix);
        Ok(Arc::new(RbacFilter {
            enforcer: Enforcer {
                rules,
                shadow,
                stats,
            },
            policy_key: format!("{}shadow_effective_policy_id", pb.shadow_rules_stat_prefix),
            result_key: format!("{}shadow_engine_result", pb.shadow_rules_stat_prefix),
        }))
    },
    build_per_route: |_, cx| {
        Err(crate::config::FieldError::new(
            cx.path,
            "RBACPerRoute is not supported by the Weft proxy",
        ))
    },
    supported: &[
        (
            TYPE,
            "rules shadow_rules rules_stat_prefix shadow_rules_stat_prefix",
        ),
        (
            "envoy.config.rbac.v3.RBAC",
            "action=ALLOW|DENY|LOG policies",
        ),
        ("envoy.config.rbac.v3.Policy", "permissions principals"),
        (
            "envoy.config.rbac.v3.Permission",
            "any and_rules or_rules not_rule header url_path uri_template destination_ip \
             destination_port destination_port_range requested_server_name metadata",
        ),
        (
            "envoy.config.core.v3.TypedExtensionConfig",
            "name typed_config",
        ),
        (
            "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
            "path_template",
        ),
        ("envoy.config.rbac.v3.Permission.Set", "rules"),
        (
            "envoy.config.rbac.v3.Principal",
            "any and_ids or_ids not_id authenticated source_ip direct_remote_ip remote_ip header \
             url_path metadata",
        ),
        ("envoy.config.rbac.v3.Principal.Set", "ids"),
        (
            "envoy.config.rbac.v3.Principal.Authenticated",
            "principal_name",
        ),
        ("envoy.type.matcher.v3.PathMatcher", "path"),
        ("envoy.type.v3.Int32Range", "start end"),
        // Metadata: decided when read (no filter writes dynamic metadata yet).
        (
            "envoy.type.matcher.v3.MetadataMatcher",
            "filter path value invert",
        ),
        ("envoy.type.matcher.v3.MetadataMatcher.PathSegment", "key"),
        (
            "envoy.type.matcher.v3.ValueMatcher",
            "null_match double_match string_match bool_match present_match list_match or_match",
        ),
        ("envoy.type.matcher.v3.ValueMatcher.NullMatch", ""),
        ("envoy.type.matcher.v3.DoubleMatcher", "range exact"),
        ("envoy.type.v3.DoubleRange", "start end"),
        ("envoy.type.matcher.v3.ListMatcher", "one_of"),
        ("envoy.type.matcher.v3.OrMatcher", "value_matchers"),
    ],
};

impl super::HttpFilter for RbacFilter {
    fn reads_peer(&self) -> bool {
        true
    }

    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        _per_route: super::PerRoute<'_>,
    ) -> super::Decode {
        let head = &*cx.head;
        let path_and_query = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = path_and_query
            .split(['?', '#'])
            .next()
            .unwrap_or(path_and_query);
        let authority = head
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| head.uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let view = RequestView {
            method: head.method.as_str(),
            scheme: head
                .uri
                .scheme_str()
                .unwrap_or(if cx.conn.tls { "https" } else { "http" }),
            authority,
            path,
            query: path_and_query.split_once('?').map(|(_, q)| q),
            path_and_query,
            headers: &head.headers,
        };
        let subject = Subject {
            request: Some(&view),
            local: cx.conn.local,
            direct_remote: cx.conn.peer,
            remote: cx.remote,
            sni: cx.conn.sni.as_deref(),
            tls: cx.conn.tls,
            peer: cx.conn.peer_identity.as_deref(),
            metadata: cx.stream.metadata.as_deref(),
        };
        let (shadow, decision) = self.enforcer.decide_with_shadow(&subject);
        if let Some(outcome) = shadow {
            let fields = cx
                .stream
                .metadata
                .get_or_insert_with(Default::default)
                .entry(NAMESPACE.to_string())
                .or_default();
            if let Some(policy) = outcome.policy {
                fields.insert(self.policy_key.clone(), policy.into());
            }
            let result = if outcome.allowed { "allowed" } else { "denied" };
            fields.insert(self.result_key.clone(), result.into());
        }
        match decision {
            Ok(()) => super::Decode::Continue,
            Err(details) => super::Decode::Reply(LocalReply::RbacDenied { details }),
        }
    }
}
