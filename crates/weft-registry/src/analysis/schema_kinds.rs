//! `schema.ValidationAnalyzer.<Kind>` for each Istio kind Weft validates (not EnvoyFilter, whose
//! patches it does not read): the object's validation errors and
//! warnings, with Istio's codes (IST0106 SchemaValidationError, IST0133 SchemaWarning) at their
//! fields. `weft up` and `weft validate` already report the same problems in validation's own
//! lines, so a live context gets none of them from here.

use super::{Context, Findings};
use weft_api::Severity;
use weft_api::validate::validate;

/// Validation findings of every `kind` object, as IST0106 and IST0133.
pub(super) fn schema(ctx: &Context, out: &mut Findings, kind: &str) {
    if ctx.live {
        return;
    }
    for o in &ctx.objects {
        // Gateway API's Gateway is not Istio's.
        if o.resource.kind() != kind || !o.resource.api_version().contains("istio.io/") {
            continue;
        }
        // Istio validates the spec; names and namespaces are the API server's, and analysis
        // places objects in namespaces of its own (`""` under `-A`).
        let spec = validate(&o.resource)
            .into_iter()
            .filter(|d| !d.path.to_string().starts_with("metadata"));
        for d in spec {
            let code = match d.severity {
                Severity::Error => "IST0106",
                Severity::Warning => "IST0133",
            };
            out.add(o, &d.path, code, &[d.message]);
        }
    }
}

macro_rules! per_kind {
    ($($f:ident $kind:literal;)*) => {
        $(pub fn $f(ctx: &Context, out: &mut Findings) {
            schema(ctx, out, $kind);
        })*
    };
}

per_kind! {
    authorization_policy "AuthorizationPolicy";
    destination_rule "DestinationRule";
    gateway "Gateway";
    peer_authentication "PeerAuthentication";
    request_authentication "RequestAuthentication";
    service_entry "ServiceEntry";
    sidecar "Sidecar";
    telemetry "Telemetry";
    virtual_service "VirtualService";
    workload_entry "WorkloadEntry";
    workload_group "WorkloadGroup";
}
