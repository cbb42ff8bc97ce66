//! Istio's message catalog (`pkg/config/analysis/msg/messages.yaml`): every code `istioctl
//! analyze` can print, with its name, level and template (Go `fmt` verbs), so that messages,
//! `--suppress` codes and output match istioctl's.

use super::Level;

/// One kind of message.
#[derive(Debug, PartialEq, Eq)]
pub struct MessageType {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
    pub template: &'static str,
}

const fn m(
    code: &'static str,
    name: &'static str,
    level: Level,
    template: &'static str,
) -> MessageType {
    MessageType {
        code,
        name,
        level,
        template,
    }
}

pub static CATALOG: &[MessageType] = &[
    m(
        "IST0001",
        "InternalError",
        Level::Error,
        "Internal error: %v",
    ),
    m("IST0002", "Deprecated", Level::Warning, "Deprecated: %s"),
    m(
        "IST0101",
        "ReferencedResourceNotFound",
        Level::Error,
        "Referenced %s not found: %q",
    ),
    m(
        "IST0102",
        "NamespaceNotInjected",
        Level::Info,
        "The namespace is not enabled for Istio injection. Run 'kubectl label namespace %s istio-injection=enabled' to enable it, or 'kubectl label namespace %s istio-injection=disabled' to explicitly mark it as not needing injection.",
    ),
    m(
        "IST0103",
        "PodMissingProxy",
        Level::Warning,
        "The pod %s is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
    ),
    m(
        "IST0106",
        "SchemaValidationError",
        Level::Error,
        "Schema validation error: %v",
    ),
    m(
        "IST0107",
        "MisplacedAnnotation",
        Level::Warning,
        "Misplaced annotation: %s can only be applied to %s",
    ),
    m(
        "IST0108",
        "UnknownAnnotation",
        Level::Warning,
        "Unknown annotation: %s",
    ),
    m(
        "IST0109",
        "ConflictingMeshGatewayVirtualServiceHosts",
        Level::Error,
        "The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
    ),
    m(
        "IST0110",
        "ConflictingSidecarWorkloadSelectors",
        Level::Error,
        "The Sidecars %v in namespace %q select the same workload pod %q, which can lead to undefined behavior.",
    ),
    m(
        "IST0111",
        "MultipleSidecarsWithoutWorkloadSelectors",
        Level::Error,
        "The Sidecars %v in namespace %q have no workload selector, which can lead to undefined behavior.",
    ),
    m(
        "IST0112",
        "VirtualServiceDestinationPortSelectorRequired",
        Level::Error,
        "This VirtualService routes to a service %q that exposes multiple ports %v. Specifying a port in the destination is required to disambiguate.",
    ),
    m(
        "IST0116",
        "DeploymentAssociatedToMultipleServices",
        Level::Warning,
        "This deployment %s is associated with multiple services using port %d but different protocols: %v",
    ),
    m(
        "IST0118",
        "PortNameIsNotUnderNamingConvention",
        Level::Info,
        "Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port.",
    ),
    m(
        "IST0123",
        "NamespaceMultipleInjectionLabels",
        Level::Warning,
        "The namespace has more than one type of injection labels %v, which may lead to undefined behavior. Make sure only one injection label exists.",
    ),
    m(
        "IST0125",
        "InvalidAnnotation",
        Level::Warning,
        "Invalid annotation %s: %s",
    ),
    m(
        "IST0126",
        "UnknownMeshNetworksServiceRegistry",
        Level::Error,
        "Unknown service registry %s in network %s",
    ),
    m(
        "IST0127",
        "NoMatchingWorkloadsFound",
        Level::Warning,
        "No matching workloads for this resource with the following labels: %s",
    ),
    m(
        "IST0128",
        "NoServerCertificateVerificationDestinationLevel",
        Level::Warning,
        "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server identity for host: %s",
    ),
    m(
        "IST0129",
        "NoServerCertificateVerificationPortLevel",
        Level::Warning,
        "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server identity for host: %s at port %s",
    ),
    m(
        "IST0130",
        "VirtualServiceUnreachableRule",
        Level::Warning,
        "VirtualService rule %v not used (%s).",
    ),
    m(
        "IST0131",
        "VirtualServiceIneffectiveMatch",
        Level::Info,
        "VirtualService rule %v match %v is not used (duplicate/overlapping match in rule %v).",
    ),
    m(
        "IST0132",
        "VirtualServiceHostNotFoundInGateway",
        Level::Warning,
        "one or more host %v defined in VirtualService %s not found in Gateway %s.",
    ),
    m(
        "IST0133",
        "SchemaWarning",
        Level::Warning,
        "Schema validation warning: %v",
    ),
    m(
        "IST0134",
        "ServiceEntryAddressesRequired",
        Level::Warning,
        "ServiceEntry addresses are required for this protocol.",
    ),
    m(
        "IST0135",
        "DeprecatedAnnotation",
        Level::Info,
        "Annotation %q has been deprecated%s and may not work in future Istio versions.",
    ),
    m(
        "IST0136",
        "AlphaAnnotation",
        Level::Info,
        "Annotation %q is part of an alpha-phase feature and may be incompletely supported.",
    ),
    m(
        "IST0137",
        "DeploymentConflictingPorts",
        Level::Warning,
        "This deployment %s is associated with multiple services %v using targetPort %q but different ports: %v.",
    ),
    m(
        "IST0138",
        "GatewayDuplicateCertificate",
        Level::Warning,
        "Duplicate certificate in multiple gateways %v may cause 404s if clients re-use HTTP2 connections.",
    ),
    m("IST0139", "InvalidWebhook", Level::Error, "%v"),
    m(
        "IST0140",
        "IngressRouteRulesNotAffected",
        Level::Warning,
        "Subset in virtual service %s has no effect on ingress gateway %s requests",
    ),
    m(
        "IST0141",
        "InsufficientPermissions",
        Level::Error,
        "Missing required permission to create resource %v (%v)",
    ),
    m(
        "IST0142",
        "UnsupportedKubernetesVersion",
        Level::Error,
        "The Kubernetes Version %q is lower than the minimum version: %v",
    ),
    m(
        "IST0143",
        "LocalhostListener",
        Level::Error,
        "Port %v is exposed in a Service but listens on localhost. It will not be exposed to other pods.",
    ),
    m(
        "IST0144",
        "InvalidApplicationUID",
        Level::Warning,
        "User ID (UID) 1337 is reserved for the sidecar proxy.",
    ),
    m(
        "IST0145",
        "ConflictingGateways",
        Level::Error,
        "Conflict with gateways %s (workload selector %s, port %s, hosts %v).",
    ),
    m(
        "IST0146",
        "ImageAutoWithoutInjectionWarning",
        Level::Warning,
        "%s %s contains `image: auto` but does not match any Istio injection webhook selectors.",
    ),
    m(
        "IST0147",
        "ImageAutoWithoutInjectionError",
        Level::Error,
        "%s %s contains `image: auto` but does not match any Istio injection webhook selectors.",
    ),
    m(
        "IST0148",
        "NamespaceInjectionEnabledByDefault",
        Level::Info,
        "is enabled for Istio injection, as Istio is installed with enableNamespacesByDefault as true.",
    ),
    m(
        "IST0149",
        "JwtClaimBasedRoutingWithoutRequestAuthN",
        Level::Error,
        "The virtual service uses the JWT claim based routing (key: %s) but found no request authentication for the gateway (%s) pod (%s). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing.",
    ),
    m(
        "IST0150",
        "ExternalNameServiceTypeInvalidPortName",
        Level::Warning,
        "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly",
    ),
    m(
        "IST0151",
        "EnvoyFilterUsesRelativeOperation",
        Level::Warning,
        "This EnvoyFilter does not have a priority and has a relative patch operation set which can cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.",
    ),
    m(
        "IST0152",
        "EnvoyFilterUsesReplaceOperationIncorrectly",
        Level::Error,
        "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.",
    ),
    m(
        "IST0153",
        "EnvoyFilterUsesAddOperationIncorrectly",
        Level::Error,
        "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
    ),
    m(
        "IST0154",
        "EnvoyFilterUsesRemoveOperationIncorrectly",
        Level::Error,
        "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
    ),
    m(
        "IST0155",
        "EnvoyFilterUsesRelativeOperationWithProxyVersion",
        Level::Warning,
        "This EnvoyFilter does not have a priority and has a relative patch operation (NSTERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and proxyVersion set which can cause the EnvoyFilter not to be applied during an upgrade. Using the INSERT_FIRST or ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.",
    ),
    m(
        "IST0156",
        "UnsupportedGatewayAPIVersion",
        Level::Error,
        "The Gateway API CRD version %v is lower than the minimum version: %v",
    ),
    m(
        "IST0172",
        "FutureUnsupportedGatewayAPIVersion",
        Level::Warning,
        "The Gateway API CRD version %v is lower than the minimum version: %v",
    ),
    m(
        "IST0157",
        "InvalidTelemetryProvider",
        Level::Warning,
        "The Telemetry %v in namespace %q with empty providers will be ignored.",
    ),
    m(
        "IST0158",
        "PodsIstioProxyImageMismatchInNamespace",
        Level::Warning,
        "The Istio proxy images of the pods running in the namespace do not match the image defined in the injection configuration (pod names: %v). This often happens after upgrading the Istio control-plane and can be fixed by redeploying the pods.",
    ),
    m(
        "IST0159",
        "ConflictingTelemetryWorkloadSelectors",
        Level::Error,
        "The Telemetries %v in namespace %q select the same workload pod %q, which can lead to undefined behavior.",
    ),
    m(
        "IST0160",
        "MultipleTelemetriesWithoutWorkloadSelectors",
        Level::Error,
        "The Telemetries %v in namespace %q have no workload selector, which can lead to undefined behavior.",
    ),
    m(
        "IST0161",
        "InvalidGatewayCredential",
        Level::Error,
        "The credential referenced by the Gateway %s in namespace %s is invalid, which can cause the traffic not to work as expected.",
    ),
    m(
        "IST0162",
        "GatewayPortNotDefinedOnService",
        Level::Warning,
        "The gateway is listening on a target port (port %d) that is not defined in the Service associated with its workload instances (Pod selector %s). If you need to access the gateway port through the gateway Service, it will not be available.",
    ),
    m(
        "IST0163",
        "InvalidExternalControlPlaneConfig",
        Level::Warning,
        "The hostname (%s) that was provided for the webhook (%s) to reach the ingress gateway on the external control plane cluster %s. Traffic may not flow properly.",
    ),
    m(
        "IST0164",
        "ExternalControlPlaneAddressIsNotAHostname",
        Level::Info,
        "The address (%s) that was provided for the webhook (%s) to reach the ingress gateway on the external control plane cluster is an IP address. This is not recommended for a production environment.",
    ),
    m(
        "IST0165",
        "ReferencedInternalGateway",
        Level::Warning,
        "Gateway reference in VirtualService %s is to an implementation-generated internal Gateway: %s.",
    ),
    m(
        "IST0166",
        "IneffectiveSelector",
        Level::Warning,
        "Ineffective selector on Kubernetes Gateway %s. Use the TargetRef field instead.",
    ),
    m(
        "IST0167",
        "IneffectivePolicy",
        Level::Warning,
        "The policy has no impact: %s.",
    ),
    m(
        "IST0168",
        "UnknownUpgradeCompatibility",
        Level::Warning,
        "The configuration %q changed in release %s, but compatibility cannot be automatically detected: %s. Or, install with `--set compatibilityVersion=%s` to retain the old default.",
    ),
    m(
        "IST0169",
        "UpdateIncompatibility",
        Level::Warning,
        "The configuration %q changed in release %s: %s. Or, install with `--set compatibilityVersion=%s` to retain the old default.",
    ),
    m(
        "IST0170",
        "MultiClusterInconsistentService",
        Level::Warning,
        "The service %v in namespace %q is inconsistent across clusters %q, which can lead to undefined behaviors. The inconsistent behaviors are: %v.",
    ),
    m(
        "IST0171",
        "NegativeConditionStatus",
        Level::Warning,
        "A condition with a negative status is present: type=%s, reason=%s, message=%s.",
    ),
    m(
        "IST0173",
        "DestinationRuleSubsetNotSelectPods",
        Level::Error,
        "The Subset %s defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
    ),
    m(
        "IST0174",
        "UnknownDestinationRuleHost",
        Level::Warning,
        "The host %s defined in the DestinationRule does not match any services in the mesh.",
    ),
    m(
        "IST0175",
        "JwksUriFetchUnrestricted",
        Level::Warning,
        "BLOCKED_CIDRS_IN_JWKS_URIS is not configured but %d RequestAuthentication resource(s) exist (%s). Consider configuring it to restrict JWKS URI fetches to trusted networks.",
    ),
    m(
        "IST0176",
        "GatewayAPICRDVersionBelowMinimum",
        Level::Warning,
        "Gateway API CRD %q is at version %q but Istio requires at least %q; resources of this kind will not be processed. Upgrade the Gateway API CRDs to satisfy the minimum version.",
    ),
    m(
        "IST0177",
        "ConflictingServiceEntryProtocol",
        Level::Warning,
        "Multiple ServiceEntries (%s) define the same host %q and port %d with conflicting protocols (%s).",
    ),
];

/// The message type with this code.
pub fn by_code(code: &str) -> Option<&'static MessageType> {
    CATALOG.iter().find(|t| t.code == code)
}
