//! Broken edits to a running `weft up`, one kind of mistake at a time: each is reported with its
//! file, line, object and field, in the same words by `weft validate`, in `weft up`'s output, on
//! `/debug/problems` and in the status file, while the mesh keeps serving its last good config.
//! The line each problem belongs to is marked `# <-` in its YAML.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{Req, try_request};

struct Case {
    mistake: &'static str,
    yaml: &'static str,
    /// `Kind namespace/name`, when the mistake leaves an object to name.
    object: Option<&'static str>,
    field: Option<&'static str>,
    reason: &'static str,
    warning: bool,
}

const CASES: &[Case] = &[
    Case {
        mistake: "kind typo",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualServise  # <-\nmetadata: { name: typo }\nspec: {}\n",
        object: Some("VirtualServise default/typo"),
        field: Some("kind"),
        reason: "did you mean VirtualService?",
        warning: false,
    },
    Case {
        mistake: "kind in another group",
        yaml: "apiVersion: networking.istio.io/v1\nkind: AuthorizationPolicy  # <-\nmetadata: { name: ap }\nspec: {}\n",
        object: Some("AuthorizationPolicy default/ap"),
        field: Some("kind"),
        reason: "did you mean AuthorizationPolicy (in security.istio.io)?",
        warning: false,
    },
    Case {
        mistake: "version not served",
        yaml: "apiVersion: networking.istio.io/v2  # <-\nkind: VirtualService\nmetadata: { name: v2 }\nspec: { hosts: [ web ] }\n",
        object: Some("VirtualService default/v2"),
        field: Some("apiVersion"),
        reason: "is not served as networking.istio.io/v2",
        warning: false,
    },
    Case {
        mistake: "name missing",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { namespace: default }  # <-\nspec: { hosts: [ web ], http: [ { route: [ { destination: { host: web } } ] } ] }\n",
        object: Some("VirtualService default/<unnamed>"),
        field: Some("metadata.name"),
        reason: "name is required",
        warning: false,
    },
    Case {
        mistake: "name invalid",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: Bad_Name }  # <-\nspec: { hosts: [ web ], http: [ { route: [ { destination: { host: web } } ] } ] }\n",
        object: Some("VirtualService default/Bad_Name"),
        field: Some("metadata.name"),
        reason: "invalid name",
        warning: false,
    },
    Case {
        mistake: "weights",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - route:  # <-\n    - { destination: { host: web }, weight: 90 }\n    - { destination: { host: web }, weight: 20 }\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].route"),
        reason: "total destination weight 110 != 100",
        warning: false,
    },
    Case {
        mistake: "regex",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - match:\n    - uri: { regex: \"(\" }  # <-\n    route: [ { destination: { host: web } } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].match[0].uri.regex"),
        reason: "invalid regex",
        warning: false,
    },
    Case {
        mistake: "regex past RE2's repeat limit",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - match:\n    - uri: { regex: \"/v(1|2){2000}\" }  # <-\n    route: [ { destination: { host: web } } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].match[0].uri.regex"),
        reason: "invalid repeat count: (1|2){2000}",
        warning: false,
    },
    Case {
        mistake: "fault percentage",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - fault:\n      abort:\n        httpStatus: 503\n        percentage: { value: 150 }  # <-\n    route: [ { destination: { host: web } } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].fault.abort.percentage.value"),
        reason: "150",
        warning: false,
    },
    Case {
        mistake: "route and redirect",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - redirect: { uri: /x }  # <-\n    route: [ { destination: { host: web } } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0]"),
        reason: "both route and redirect",
        warning: false,
    },
    Case {
        mistake: "negative attempts",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - route: [ { destination: { host: web } } ]\n    retries:\n      attempts: -2  # <-\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].retries.attempts"),
        reason: "negative",
        warning: false,
    },
    Case {
        mistake: "string for a list",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: web  # <-\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.hosts"),
        reason: "expected a list",
        warning: false,
    },
    Case {
        mistake: "duration unit",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - timeout: 1fortnight  # <-\n    route: [ { destination: { host: web } } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].timeout"),
        reason: "invalid duration",
        warning: false,
    },
    Case {
        mistake: "negative duration",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - timeout: -1s  # <-\n    route: [ { destination: { host: web } } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].timeout"),
        reason: "",
        warning: false,
    },
    Case {
        mistake: "exportTo",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  exportTo:\n  - not_a_namespace  # <-\n  http: [ { route: [ { destination: { host: web } } ] } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.exportTo[0]"),
        reason: "exportTo",
        warning: false,
    },
    Case {
        mistake: "mirror percentage",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - mirrorPercentage:\n      value: 200  # <-\n    mirror: { host: web }\n    route: [ { destination: { host: web } } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].mirrorPercentage.value"),
        reason: "100",
        warning: false,
    },
    Case {
        mistake: "header name",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  http:\n  - match:\n    - headers:\n        \"bad header\": { exact: x }  # <-\n    route: [ { destination: { host: web } } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].match[0].headers[\"bad header\"]"),
        reason: "not a valid header name",
        warning: false,
    },
    Case {
        mistake: "port range",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web ]\n  tcp:\n  - route:\n    - destination:\n        host: web\n        port: { number: 99999 }  # <-\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.tcp[0].route[0].destination.port.number"),
        reason: "99999",
        warning: false,
    },
    Case {
        mistake: "subset without name",
        yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec:\n  host: web\n  subsets:\n  - labels: { v: \"1\" }  # <-\n",
        object: Some("DestinationRule default/d"),
        field: Some("spec.subsets[0].name"),
        reason: "subset name",
        warning: false,
    },
    Case {
        mistake: "unknown enum value",
        yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec:\n  host: web\n  trafficPolicy:\n    loadBalancer:\n      simple: FASTEST  # <-\n",
        object: Some("DestinationRule default/d"),
        field: Some("spec.trafficPolicy.loadBalancer.simple"),
        reason: "FASTEST",
        warning: false,
    },
    Case {
        mistake: "negative limit",
        yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec:\n  host: web\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: -1  # <-\n",
        object: Some("DestinationRule default/d"),
        field: Some("spec.trafficPolicy.connectionPool.tcp.maxConnections"),
        reason: "non-negative",
        warning: false,
    },
    Case {
        mistake: "gateway without hosts",
        yaml: "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: g }\nspec:\n  selector: { istio: ingressgateway }\n  servers:\n  - port: { number: 80, name: http, protocol: HTTP }  # <-\n",
        object: Some("Gateway default/g"),
        field: Some("spec.servers[0].hosts"),
        reason: "at least one host",
        warning: false,
    },
    Case {
        mistake: "gateway port",
        yaml: "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: g }\nspec:\n  selector: { istio: ingressgateway }\n  servers:\n  - port:\n      number: 70000  # <-\n      name: http\n      protocol: HTTP\n    hosts: [ \"*\" ]\n",
        object: Some("Gateway default/g"),
        field: Some("spec.servers[0].port.number"),
        reason: "70000",
        warning: false,
    },
    Case {
        mistake: "TLS without certificate",
        yaml: "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: g }\nspec:\n  selector: { istio: ingressgateway }\n  servers:\n  - port: { number: 443, name: https, protocol: HTTPS }\n    hosts: [ \"*\" ]\n    tls: { mode: SIMPLE }  # <-\n",
        object: Some("Gateway default/g"),
        field: Some("spec.servers[0].tls.serverCertificate"),
        reason: "server certificate",
        warning: false,
    },
    Case {
        mistake: "service entry without hosts",
        yaml: "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: s }\nspec:  # <-\n  ports: [ { number: 80, name: http, protocol: HTTP } ]\n  resolution: DNS\n",
        object: Some("ServiceEntry default/s"),
        field: Some("spec.hosts"),
        reason: "at least one host",
        warning: false,
    },
    Case {
        mistake: "static endpoint not an IP",
        yaml: "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: s }\nspec:\n  hosts: [ a.example ]\n  ports: [ { number: 80, name: http, protocol: HTTP } ]\n  resolution: STATIC\n  endpoints:\n  - address: not-an-ip  # <-\n",
        object: Some("ServiceEntry default/s"),
        field: Some("spec.endpoints[0].address"),
        reason: "not a valid IP address",
        warning: false,
    },
    Case {
        mistake: "workload address",
        yaml: "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: we }\nspec:\n  address: \"bad address!\"  # <-\n  labels: { app: other }\n",
        object: Some("WorkloadEntry default/we"),
        field: Some("spec.address"),
        reason: "bad address!",
        warning: false,
    },
    Case {
        mistake: "sidecar egress host",
        yaml: "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: sc }\nspec:\n  egress:\n  - hosts:\n    - bad  # <-\n",
        object: Some("Sidecar default/sc"),
        field: Some("spec.egress[0].hosts[0]"),
        reason: "namespace/dnsName",
        warning: false,
    },
    Case {
        mistake: "mTLS mode",
        yaml: "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: pa }\nspec:\n  mtls:\n    mode: SOMETIMES  # <-\n",
        object: Some("PeerAuthentication default/pa"),
        field: Some("spec.mtls.mode"),
        reason: "SOMETIMES",
        warning: false,
    },
    Case {
        mistake: "policy action",
        yaml: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: ap }\nspec:\n  action: MAYBE  # <-\n",
        object: Some("AuthorizationPolicy default/ap"),
        field: Some("spec.action"),
        reason: "MAYBE",
        warning: false,
    },
    Case {
        mistake: "condition key",
        yaml: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: ap }\nspec:\n  rules:\n  - when:\n    - key: request.nonsense  # <-\n      values: [ x ]\n",
        object: Some("AuthorizationPolicy default/ap"),
        field: Some("spec.rules[0].when[0].key"),
        reason: "request.nonsense",
        warning: false,
    },
    Case {
        mistake: "JWKS URI",
        yaml: "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: { name: ra }\nspec:\n  jwtRules:\n  - issuer: me\n    jwksUri: \"not a uri\"  # <-\n",
        object: Some("RequestAuthentication default/ra"),
        field: Some("spec.jwtRules[0].jwksUri"),
        reason: "not a valid",
        warning: false,
    },
    Case {
        mistake: "sampling percentage",
        yaml: "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: { name: t }\nspec:\n  tracing:\n  - randomSamplingPercentage: 250  # <-\n",
        object: Some("Telemetry default/t"),
        field: Some("spec.tracing[0].randomSamplingPercentage"),
        reason: "range",
        warning: false,
    },
    Case {
        mistake: "service port",
        yaml: "apiVersion: v1\nkind: Service\nmetadata: { name: other }\nspec:\n  ports:\n  - port: 0  # <-\n",
        object: Some("Service default/other"),
        field: Some("spec.ports[0].port"),
        reason: "range",
        warning: false,
    },
    Case {
        mistake: "YAML syntax",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web\n  http: [ ]  # <-\n",
        object: None,
        field: None,
        reason: "invalid YAML",
        warning: false,
    },
    Case {
        mistake: "duplicate",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: web }  # <-\nspec:\n  hosts: [ \"*\" ]\n  gateways: [ web-gateway ]\n  http: [ { route: [ { destination: { host: nowhere } } ] } ]\n",
        object: Some("VirtualService default/web"),
        field: Some("metadata.name"),
        reason: "duplicate: VirtualService default/web is already defined at",
        warning: false,
    },
    Case {
        mistake: "rule for a missing host",
        yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec:\n  host: nowhere  # <-\n",
        object: Some("DestinationRule default/d"),
        field: Some("spec.host"),
        reason: "The host nowhere defined in the DestinationRule does not match any services in the mesh. [IST0174 Warning]",
        warning: true,
    },
    Case {
        mistake: "missing subset",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web.example ]\n  http:\n  - route:\n    - destination:\n        host: web  # <-\n        subset: v9\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[0].route[0].destination.host"),
        reason: "Referenced host+subset in destinationrule not found: \"web+v9\" [IST0101 Error]",
        warning: true,
    },
    Case {
        mistake: "missing gateway",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web.example ]\n  gateways:\n  - no-such-gateway  # <-\n  http: [ { route: [ { destination: { host: web } } ] } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.gateways[0]"),
        reason: "Referenced gateway not found: \"no-such-gateway\" [IST0101 Error]",
        warning: true,
    },
    Case {
        mistake: "unknown field",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web.example ]\n  htp: [ ]  # <-\n  http: [ { route: [ { destination: { host: web } } ] } ]\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.htp"),
        reason: "unknown field",
        warning: true,
    },
    // `istioctl analyze`'s findings, with their codes.
    Case {
        mistake: "port name Istio cannot read (IST0118)",
        yaml: "apiVersion: v1\nkind: Service\nmetadata: { name: odd }\nspec:\n  selector: { app: web }\n  ports:\n  - { name: foo, port: 9000 }  # <-\n",
        object: Some("Service default/odd"),
        field: Some("spec.ports[0]"),
        reason: "Port name foo (port: 9000, targetPort: 0) doesn't follow the naming convention of Istio port. [IST0118 Info]",
        warning: true,
    },
    Case {
        mistake: "subset that selects no workload (IST0173)",
        yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec:\n  host: web\n  subsets:\n  - name: v9  # <-\n    labels: { version: v9 }\n  - name: v1\n    labels: { version: v1 }\n",
        object: Some("DestinationRule default/d"),
        field: Some("spec.subsets[0]"),
        reason: "The Subset v9 defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream). [IST0173 Error]",
        warning: true,
    },
    Case {
        mistake: "rule after a catch-all (IST0130)",
        yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: w }\nspec:\n  hosts: [ web.example ]\n  http:\n  - route: [ { destination: { host: web } } ]\n  - route: [ { destination: { host: web } } ]  # <-\n",
        object: Some("VirtualService default/w"),
        field: Some("spec.http[1]"),
        reason: "VirtualService rule #1 not used (only the last rule can have no matches). [IST0130 Warning]",
        warning: true,
    },
    Case {
        mistake: "two gateways on one port and host (IST0145)",
        yaml: "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: other-gateway }\nspec:\n  selector: { istio: ingressgateway }\n  servers:\n  - port: { number: 80, name: http, protocol: HTTP }  # <-\n    hosts: [ \"*\" ]\n",
        object: Some("Gateway default/other-gateway"),
        field: Some("spec.servers[0]"),
        reason: "Conflict with gateways default/web-gateway (workload selector istio=ingressgateway, port 80, hosts *). [IST0145 Error]",
        warning: true,
    },
];

/// The problem line every surface must show for `case`, up to its reason.
fn expected_prefix(case: &Case, file: &str) -> String {
    let line = case
        .yaml
        .lines()
        .position(|l| l.ends_with("# <-"))
        .expect("every case marks its line")
        + 1;
    let mut out = format!("{file}:{line}: ");
    if case.warning {
        out.push_str("warning: ");
    }
    if let Some(o) = case.object {
        out.push_str(&format!("{o}: "));
    }
    if let Some(f) = case.field {
        out.push_str(&format!("{f}: "));
    }
    out
}

fn find<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    prefix: &str,
    reason: &str,
) -> Option<&'a str> {
    lines
        .into_iter()
        .find(|l| l.starts_with(prefix) && l.contains(reason))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

async fn broken_edits(envoy: bool) {
    assert!(CASES.len() >= 30, "{} kinds of mistake", CASES.len());
    let (dir, up, gateway) = support::up::mesh(envoy, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while support::upstream_name(gateway, "web.example").await != "web-v1" {
        assert!(Instant::now() < deadline, "the mesh never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let monitoring = up.status().unwrap()["control_plane"]["monitoring"]
        .as_str()
        .unwrap()
        .parse::<SocketAddr>()
        .unwrap();
    let edit = dir.path().join("edit.yaml");
    let file = edit.display().to_string();
    let mut failures = Vec::new();
    for case in CASES {
        let before = up.generation();
        std::fs::write(&edit, case.yaml).unwrap();
        let status = tokio::task::block_in_place(|| {
            up.wait_status(case.mistake, |s| {
                s["config"]["generation"].as_u64() > Some(before)
            })
        });
        let prefix = expected_prefix(case, &file);
        let list = if case.warning { "warnings" } else { "errors" };
        let Some(reported) = find(strings(&status["config"][list]), &prefix, case.reason) else {
            failures.push(format!(
                "{}: status file {list} lack {prefix}…{}…: {:#}",
                case.mistake, case.reason, status["config"][list]
            ));
            continue;
        };
        let reported = reported.to_string();
        // /debug/problems says the same.
        let problems = try_request(monitoring, &Req::get("weft", "/debug/problems"))
            .await
            .unwrap()
            .json()
            .unwrap();
        let key = if case.warning {
            "config_warnings"
        } else {
            "config_errors"
        };
        if !strings(&problems[key]).contains(&reported.as_str()) {
            failures.push(format!(
                "{}: /debug/problems lacks {reported}",
                case.mistake
            ));
        }
        // weft validate says the same (a duplicate is a warning there: files given together
        // need not be one folder).
        let out = std::process::Command::new(support::weft_binary())
            .arg("validate")
            .arg("-f")
            .arg(dir.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let same = text
            .lines()
            .any(|l| l == reported || l.replacen(": warning: ", ": ", 1) == reported);
        if !same {
            failures.push(format!(
                "{}: weft validate lacks {reported}:\n{text}",
                case.mistake
            ));
        }
    }
    // weft up's own output carries each line too.
    let err = up.stderr();
    for case in CASES {
        let prefix = expected_prefix(case, &file);
        if find(
            err.lines()
                .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest)),
            &prefix,
            case.reason,
        )
        .is_none()
        {
            failures.push(format!("{}: weft up's stderr lacks {prefix}", case.mistake));
        }
    }
    // An object too large for the API server.
    let before = up.generation();
    let big = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: big }}\nspec:\n  hosts: [ big.example ]\n  http:\n  - route: [ {{ destination: {{ host: web }} }} ]\n    headers: {{ request: {{ set: {{ x-big: \"{}\" }} }} }}\n",
        "x".repeat(1600 * 1024)
    );
    std::fs::write(&edit, big).unwrap();
    let status = tokio::task::block_in_place(|| {
        up.wait_status("the large object", |s| {
            s["config"]["generation"].as_u64() > Some(before)
        })
    });
    let prefix = format!("{file}:1: VirtualService default/big: object is ");
    if find(
        strings(&status["config"]["errors"]),
        &prefix,
        "more than the 1572864",
    )
    .is_none()
    {
        failures.push(format!("large object: {:#}", status["config"]["errors"]));
    }
    assert!(
        failures.is_empty(),
        "{} of {} mistakes misreported:\n{}",
        failures.len(),
        CASES.len() + 1,
        failures.join("\n")
    );
    // Through all of it the mesh kept its last good config.
    assert_eq!(
        support::upstream_name(gateway, "web.example").await,
        "web-v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edits_are_reported_with_file_line_object_and_field_with_weft_proxies() {
    broken_edits(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edits_are_reported_with_file_line_object_and_field_with_envoy() {
    broken_edits(true).await;
}
