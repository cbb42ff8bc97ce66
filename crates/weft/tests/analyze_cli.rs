//! `weft analyze` as a user or a CI pipeline runs it: istioctl's line format, exit codes (0, 64,
//! 65, 79), thresholds, suppression by flag and by annotation, JSON and YAML, namespaces,
//! skipped files, and each analyzer on an example of our own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::path::Path;
use std::process::{Command, Output};

fn weft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run weft")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A VirtualService whose subset no DestinationRule defines (its destination host, where Istio
/// points, is line 9), beside a
/// DestinationRule that defines another, with its Service and a Pod for that subset.
const MISSING_SUBSET: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [ reviews ]
  http:
  - route:
    - destination:
        host: reviews
        subset: v9
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  subsets: [ { name: v1, labels: { version: v1 } } ]
---
apiVersion: v1
kind: Service
metadata: { name: reviews }
spec:
  selector: { app: reviews }
  ports: [ { name: http, port: 9080 } ]
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v1, labels: { app: reviews, version: v1 } }
spec: { containers: [ { name: reviews, image: reviews } ] }
";

#[test]
fn findings_print_as_istioctl_prints_them_and_set_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reviews.yaml"), MISSING_SUBSET).unwrap();
    let o = weft(dir.path(), &["reviews.yaml"]);
    assert_eq!(
        o.status.code(),
        Some(79),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains(
            "Error [IST0101] (VirtualService default/reviews reviews.yaml:9) Referenced host+subset in destinationrule not found: \"reviews+v9\""
        ),
        "{}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stderr)
            .contains("Error: Analyzers found issues when analyzing namespace: default."),
        "{}",
        text(&o.stderr)
    );

    // Suppressed by code and resource, in istioctl's older `name.namespace` form and with `*`.
    for s in [
        "IST0101=VirtualService reviews.default",
        "IST0101=VirtualService *",
    ] {
        let o = weft(dir.path(), &["reviews.yaml", "-S", s]);
        assert_eq!(o.status.code(), Some(0), "{s}: {}", text(&o.stdout));
        assert!(
            text(&o.stderr)
                .contains("\u{2714} No validation issues found when analyzing reviews.yaml."),
            "{}",
            text(&o.stderr)
        );
    }
    let o = weft(
        dir.path(),
        &["reviews.yaml", "-S", "IST9999=VirtualService *"],
    );
    assert_eq!(o.status.code(), Some(79));
    assert!(text(&o.stderr).contains("Supplied message code 'IST9999' is an unknown message code"));

    // Another namespace selected: the object is placed there and the host resolves there too.
    let o = weft(dir.path(), &["reviews.yaml", "-n", "shop"]);
    assert!(
        text(&o.stdout).contains("(VirtualService shop/reviews"),
        "{}",
        text(&o.stdout)
    );

    // The output threshold hides the Error; the exit code still follows it, as in istioctl.
    let o = weft(dir.path(), &["reviews.yaml", "--output-threshold", "error"]);
    assert_eq!(o.status.code(), Some(79));
    let o = weft(
        dir.path(),
        &[
            "reviews.yaml",
            "--failure-threshold",
            "Error",
            "--output-threshold",
            "Info",
        ],
    );
    assert_eq!(o.status.code(), Some(79));

    // JSON: istioctl's keys, tab-indented; no failing exit code outside the log format.
    let o = weft(dir.path(), &["reviews.yaml", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["code"], "IST0101");
    assert_eq!(v[0]["level"], "Error");
    assert_eq!(v[0]["origin"], "VirtualService default/reviews");
    assert_eq!(v[0]["reference"], "reviews.yaml:9");
    assert_eq!(
        v[0]["documentationUrl"],
        "https://istio.io/latest/docs/reference/config/analysis/ist0101/?ref=istioctl-analyze"
    );
    assert!(text(&o.stdout).contains("\n\t{"), "{}", text(&o.stdout));
    let o = weft(dir.path(), &["reviews.yaml", "-o", "yaml"]);
    assert!(
        text(&o.stdout).contains("code: IST0101"),
        "{}",
        text(&o.stdout)
    );

    // Bad flag values are usage errors.
    for bad in [
        &["-o", "xml"][..],
        &["--failure-threshold", "fatal"][..],
        &["--analyzer", "nope.Analyzer"][..],
    ] {
        let mut args = vec!["reviews.yaml"];
        args.extend_from_slice(bad);
        assert_eq!(weft(dir.path(), &args).status.code(), Some(64), "{bad:?}");
    }
}

#[test]
fn the_annotation_suppresses_and_files_are_gathered_as_istioctl_gathers_them() {
    let dir = tempfile::tempdir().unwrap();
    let annotated = MISSING_SUBSET.replacen(
        "metadata: { name: reviews }",
        "metadata: { name: reviews, annotations: { galley.istio.io/analyze-suppress: IST0101 } }",
        1,
    );
    std::fs::write(dir.path().join("a.yaml"), annotated).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/b.yaml"),
        MISSING_SUBSET.replace("reviews", "ratings"),
    )
    .unwrap();
    let o = weft(dir.path(), &["."]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains(
            "Skipping file ./notes.txt, recognized file extensions are: [.json .yaml .yml]"
        ),
        "{}",
        text(&o.stderr)
    );
    // -R reads the subfolder, whose VirtualService is not annotated.
    let o = weft(dir.path(), &[".", "-R"]);
    assert_eq!(o.status.code(), Some(79));
    assert!(
        text(&o.stdout).contains("VirtualService default/ratings ./sub/b.yaml:9"),
        "{}",
        text(&o.stdout)
    );

    // A file that is not YAML: 65 unless --ignore-unknown.
    std::fs::write(dir.path().join("broken.yaml"), "kind: [unclosed\n").unwrap();
    let o = weft(dir.path(), &["broken.yaml"]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("Error: Some files couldn't be parsed."));
    assert_eq!(
        weft(dir.path(), &["broken.yaml", "--ignore-unknown"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn the_analyzers_are_listed_and_can_be_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let o = weft(dir.path(), &["-L"]);
    assert_eq!(o.status.code(), Some(0));
    let listed = text(&o.stdout);
    for name in [
        "* virtualservice.GatewayAnalyzer:",
        "* gateway.ConflictingGatewayAnalyzer:",
        "* service.PortNameAnalyzer:",
    ] {
        assert!(listed.contains(name), "{listed}");
    }
    std::fs::write(dir.path().join("reviews.yaml"), MISSING_SUBSET).unwrap();
    let o = weft(
        dir.path(),
        &["reviews.yaml", "--analyzer", "service.PortNameAnalyzer"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

/// Each analyzer on an example of our own: the message it must give, and on what.
#[test]
fn each_analyzer_finds_its_mistake() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "service.PortNameAnalyzer",
            "apiVersion: v1\nkind: Service\nmetadata: { name: web }\nspec:\n  ports: [ { name: web, port: 8080 } ]\n",
            "Info [IST0118] (Service default/web f.yaml:5) Port name web (port: 8080, targetPort: 0) doesn't follow the naming convention of Istio port.",
        ),
        (
            "destinationrule.CaCertificateAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: db }\nspec:\n  host: db.example.com\n  trafficPolicy:\n    tls: { mode: SIMPLE }\n",
            "Warning [IST0128] (DestinationRule default/db f.yaml:7) DestinationRule default/db in namespace default has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: db.example.com",
        ),
        (
            "destinationrule.SubsetSelectPodAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: ghost }\nspec:\n  host: ghost\n",
            "Warning [IST0174] (DestinationRule default/ghost f.yaml:5) The host ghost defined in the DestinationRule does not match any services in the mesh.",
        ),
        (
            "serviceentry.Analyzer",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: db }\nspec:\n  hosts: [ db.example.com ]\n  ports: [ { number: 5432, name: pg, protocol: TCP } ]\n",
            "Warning [IST0134] (ServiceEntry default/db f.yaml:6) ServiceEntry addresses are required for this protocol.",
        ),
        (
            "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: a }\nspec:\n  hosts: [ x.example.com ]\n  ports: [ { number: 80, name: http, protocol: HTTP } ]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: b }\nspec:\n  hosts: [ x.example.com ]\n  ports: [ { number: 80, name: tls, protocol: TLS } ]\n",
            "Warning [IST0177] (ServiceEntry default/a f.yaml:4) Multiple ServiceEntries (default/a, default/b) define the same host \"x.example.com\" and port 80 with conflicting protocols (HTTP, TLS).",
        ),
        (
            "virtualservice.DestinationHostAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: shop }\nspec:\n  hosts: [ shop ]\n  http:\n  - route: [ { destination: { host: nowhere } } ]\n",
            "Error [IST0101] (VirtualService default/shop f.yaml:7) Referenced host not found: \"nowhere\"",
        ),
        (
            "virtualservice.DestinationRuleAnalyzer",
            MISSING_SUBSET,
            "Error [IST0101] (VirtualService default/reviews f.yaml:9) Referenced host+subset in destinationrule not found: \"reviews+v9\"",
        ),
        (
            "virtualservice.GatewayAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: shop }\nspec:\n  hosts: [ shop.example.com ]\n  gateways: [ front ]\n",
            "Error [IST0101] (VirtualService default/shop f.yaml:6) Referenced gateway not found: \"front\"",
        ),
        (
            "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: a }\nspec: { hosts: [ web ] }\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: b }\nspec: { hosts: [ web ] }\n",
            "Error [IST0109] (VirtualService default/a f.yaml:4) The VirtualServices default/a,default/b associated with mesh gateway define the same host */web.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
        ),
        (
            "gateway.ConflictingGatewayAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: a }\nspec:\n  selector: { istio: ingressgateway }\n  servers: [ { port: { number: 80, name: http, protocol: HTTP }, hosts: [ shop.example.com ] } ]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: b }\nspec:\n  selector: { istio: ingressgateway }\n  servers: [ { port: { number: 80, name: http, protocol: HTTP }, hosts: [ shop.example.com ] } ]\n",
            "Error [IST0145] (Gateway default/a f.yaml:6) Conflict with gateways default/b (workload selector istio=ingressgateway, port 80, hosts shop.example.com).",
        ),
        (
            "gateway.IngressGatewayPortAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: a }\nspec:\n  selector: { istio: ingressgateway }\n  servers: [ { port: { number: 8443, name: https, protocol: HTTPS }, hosts: [ '*' ] } ]\n",
            "Warning [IST0162] (Gateway default/a f.yaml:6) The gateway is listening on a target port (port 8443) that is not defined in the Service associated with its workload instances (Pod selector istio=ingressgateway). If you need to access the gateway port through the gateway Service, it will not be available.",
        ),
        (
            "gateway.CertificateAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: a }\nspec:\n  selector: { istio: ingressgateway }\n  servers: [ { port: { number: 443, name: https, protocol: HTTPS }, hosts: [ a.example.com ], tls: { mode: SIMPLE, credentialName: cert } } ]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: b }\nspec:\n  selector: { istio: ingressgateway }\n  servers: [ { port: { number: 443, name: https, protocol: HTTPS }, hosts: [ b.example.com ], tls: { mode: SIMPLE, credentialName: cert } } ]\n",
            "Warning [IST0138] (Gateway default/a f.yaml:6) Duplicate certificate in multiple gateways [default/a default/b] may cause 404s if clients re-use HTTP2 connections.",
        ),
        (
            "sidecar.SelectorAnalyzer",
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: a }\nspec:\n  workloadSelector: { labels: { app: nobody } }\n",
            "Error [IST0101] (Sidecar default/a f.yaml:5) Referenced selector not found: \"app=nobody\"",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (analyzer, yaml, want) in cases {
        std::fs::write(dir.path().join("f.yaml"), yaml).unwrap();
        let o = weft(dir.path(), &["f.yaml", "--analyzer", analyzer]);
        let out = text(&o.stdout);
        assert!(
            out.lines().any(|l| l == *want),
            "{analyzer}: want\n{want}\ngot\n{out}{}",
            text(&o.stderr)
        );
    }
}

/// The rest of the analyzers, each on an example of our own in `tests/data/analyze/NAME.yaml`:
/// its `# want:` lines must be printed (written from Istio's templates, not from our output),
/// with `# args:` added to the command line and `# mesh:` given as `--meshConfigFile`.
#[test]
fn each_analyzer_finds_its_mistake_in_its_example() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/analyze");
    let mut with_example: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let analyzer = path.file_stem().unwrap().to_str().unwrap().to_string();
        let yaml = std::fs::read_to_string(&path).unwrap();
        let header = |key: &str| -> Vec<String> {
            yaml.lines()
                .filter_map(|l| l.strip_prefix(key))
                .map(str::to_string)
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.yaml"), &yaml).unwrap();
        let mut args = vec!["f.yaml".to_string(), "--analyzer".into(), analyzer.clone()];
        for a in header("# args: ") {
            args.extend(a.split_whitespace().map(str::to_string));
        }
        if let Some(mesh) = header("# mesh: ").first() {
            std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
            args.extend(["--meshConfigFile".into(), "mesh.yaml".into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = weft(dir.path(), &args);
        let out = text(&o.stdout);
        let wants = header("# want: ");
        assert!(!wants.is_empty(), "{analyzer}: no # want: line");
        for want in wants {
            if !out.lines().any(|l| l == want) {
                failures.push(format!(
                    "{analyzer}: want\n{want}\ngot\n{out}{}",
                    text(&o.stderr)
                ));
            }
        }
        with_example.push(analyzer);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every analyzer has an example: here, in `each_analyzer_finds_its_mistake`, or (the
    // multi-cluster one, which needs two clusters' objects) in its unit test.
    let source = include_str!("analyze_cli.rs");
    let listed = text(&weft(&examples, &["-L"]).stdout);
    for line in listed.lines() {
        let Some(name) = line.strip_prefix("* ").and_then(|l| l.split(':').next()) else {
            continue;
        };
        let inline = source.contains(&format!("\"{name}\",\n"))
            || name
                .strip_prefix("schema.ValidationAnalyzer.")
                .is_some_and(|kind| source.contains(&format!("(\"{kind}\", \"")));
        assert!(
            inline
                || with_example.iter().any(|a| a == name)
                || name == "services.MultiClusterServiceAnalyzer",
            "{name} has no example of our own"
        );
    }
}

/// Each kind's schema analyzer on one of the invalid fixtures of `weft-api` (each names the
/// line, field and message Istio's validation gives): the error comes out as IST0106 there.
#[test]
fn schema_analyzers_give_validation_errors_their_code() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../weft-api/tests/fixtures/invalid");
    for (kind, fixture) in [
        ("AuthorizationPolicy", "113-ap-deny-no-rules"),
        ("DestinationRule", "050-dr-subset-duplicate"),
        ("Gateway", "071-gw-https-no-tls"),
        ("PeerAuthentication", "104-pa-port-level-no-selector"),
        ("RequestAuthentication", "107-ra-no-issuer"),
        ("ServiceEntry", "085-se-none-with-endpoints"),
        ("Sidecar", "095-sc-empty"),
        ("Telemetry", "119-tm-provider-empty"),
        ("VirtualService", "001-vs-weights-not-100"),
        ("WorkloadEntry", "100-we-no-address"),
        ("WorkloadGroup", "103-wg-no-template"),
    ] {
        let yaml = std::fs::read_to_string(fixtures.join(format!("{fixture}.yaml"))).unwrap();
        // `# expect-error: L12 spec.http[0].route: total destination weight 110 != 100`
        let expect = yaml
            .lines()
            .find_map(|l| l.strip_prefix("# expect-error: L"))
            .unwrap();
        let (line, rest) = expect.split_once(' ').unwrap();
        let (_, message) = rest.split_once(": ").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.yaml"), &yaml).unwrap();
        let analyzer = format!("schema.ValidationAnalyzer.{kind}");
        let o = weft(dir.path(), &["f.yaml", "-A", "--analyzer", &analyzer]);
        let out = text(&o.stdout);
        // The fixtures give the start of the message.
        let want_ref = format!("f.yaml:{line}) Schema validation error: {message}");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("Error [IST0106] ({kind} "))
                    && l.contains(&want_ref)),
            "{analyzer} on {fixture}: want …{want_ref}\ngot\n{out}{}",
            text(&o.stderr)
        );
    }
}
