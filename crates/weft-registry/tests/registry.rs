//! The registry built from YAML as users write it: Kubernetes Services with EndpointSlices,
//! Endpoints or only Pods, and ServiceEntries with inline endpoints, a workloadSelector, or DNS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use weft_api::load::LoadResult;
use weft_registry::{Options, Protocol, Registry, Resolution, Service};

fn build(yaml: &str) -> Registry {
    let mut loaded = LoadResult::default();
    loaded.load_str("test.yaml", yaml);
    assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    let resources: Vec<_> = loaded.objects.into_iter().map(|o| o.resource).collect();
    Registry::build(&resources, &Options::default())
}

fn one<'a>(r: &'a Registry, host: &str) -> &'a Service {
    let found: Vec<_> = r.by_host(host).collect();
    assert_eq!(found.len(), 1, "{host}: {:?}", r.services);
    found[0]
}

/// (address:port -> service port, ready, labels' version, service account)
fn endpoints(s: &Service) -> Vec<String> {
    let mut out: Vec<String> = s
        .endpoints
        .iter()
        .map(|e| {
            format!(
                "{}:{}->{} ready={} version={} sa={} locality={} weight={} from={}",
                e.address,
                e.port,
                e.service_port,
                e.ready,
                e.labels.get("version").map_or("-", String::as_str),
                e.service_account.as_deref().unwrap_or("-"),
                e.locality.as_deref().unwrap_or("-"),
                e.weight,
                e.origin.kind,
            )
        })
        .collect();
    out.sort();
    out
}

const KUBE: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec:
  clusterIP: 10.96.0.10
  selector: { app: reviews }
  ports:
  - { name: http, port: 9080, targetPort: 9080 }
  - { name: grpc-api, port: 9090, appProtocol: grpc }
  - { name: metrics, port: 15090, protocol: UDP }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc
  namespace: bookinfo
  labels: { kubernetes.io/service-name: reviews }
addressType: IPv4
ports:
- { name: http, port: 9080 }
- { name: grpc-api, port: 19090 }
endpoints:
- addresses: [10.0.0.1]
  conditions: { ready: true }
  targetRef: { kind: Pod, name: reviews-v1-1, namespace: bookinfo }
- addresses: [10.0.0.2]
  conditions: { ready: false }
  targetRef: { kind: Pod, name: reviews-v2-1, namespace: bookinfo }
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-1
  namespace: bookinfo
  labels: { app: reviews, version: v1, istio-locality: us-east.zone-a }
spec:
  serviceAccountName: bookinfo-reviews
  containers: [ { name: app, image: reviews } ]
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v2-1, namespace: bookinfo, labels: { app: reviews, version: v2 } }
spec: { containers: [ { name: app, image: reviews } ] }
---
apiVersion: v1
kind: Service
metadata: { name: ratings, namespace: bookinfo }
spec:
  selector: { app: ratings }
  ports: [ { name: http-web, port: 80, targetPort: web } ]
---
apiVersion: v1
kind: Pod
metadata: { name: ratings-1, namespace: bookinfo, labels: { app: ratings, version: v1 } }
spec:
  containers: [ { name: app, image: ratings, ports: [ { name: web, containerPort: 8080 } ] } ]
status: { podIP: 10.0.1.1 }
---
apiVersion: v1
kind: Pod
metadata: { name: other, namespace: bookinfo, labels: { app: other } }
spec: { containers: [ { name: app, image: other } ] }
status: { podIP: 10.0.1.9 }
---
apiVersion: v1
kind: Service
metadata: { name: details, namespace: bookinfo }
spec:
  clusterIP: None
  ports: [ { name: tcp, port: 9080 } ]
---
apiVersion: v1
kind: Endpoints
metadata: { name: details, namespace: bookinfo }
subsets:
- addresses: [ { ip: 10.0.2.1 } ]
  notReadyAddresses: [ { ip: 10.0.2.2 } ]
  ports: [ { name: tcp, port: 9080 } ]
---
apiVersion: v1
kind: Service
metadata:
  name: legacy
  namespace: bookinfo
  annotations: { networking.istio.io/exportTo: "., istio-system" }
spec:
  type: ExternalName
  externalName: legacy.example.com
  ports: [ { name: web, port: 80 } ]
"#;

#[test]
fn kubernetes_services_take_endpoints_from_slices_endpoints_or_pods() {
    let r = build(KUBE);
    assert!(r.problems.is_empty(), "{:?}", r.problems);

    let reviews = one(&r, "reviews.bookinfo.svc.cluster.local");
    assert_eq!(reviews.addresses, ["10.96.0.10"]);
    assert_eq!(reviews.resolution, Resolution::ClientSideLb);
    let ports: Vec<_> = reviews
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.number, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            ("http", 9080, Protocol::Http),
            ("grpc-api", 9090, Protocol::Grpc),
            ("metrics", 15090, Protocol::Udp),
        ]
    );
    // The slice's ports are matched to the Service's by name; the Pod gives labels, locality
    // and service account; a not-ready endpoint is kept, marked.
    assert_eq!(
        endpoints(reviews),
        [
            "10.0.0.1:19090->9090 ready=true version=v1 sa=bookinfo-reviews locality=us-east/zone-a weight=1 from=EndpointSlice",
            "10.0.0.1:9080->9080 ready=true version=v1 sa=bookinfo-reviews locality=us-east/zone-a weight=1 from=EndpointSlice",
            "10.0.0.2:19090->9090 ready=false version=v2 sa=default locality=- weight=1 from=EndpointSlice",
            "10.0.0.2:9080->9080 ready=false version=v2 sa=default locality=- weight=1 from=EndpointSlice",
        ]
    );

    // No slice and no Endpoints: the selected Pods, on the container port named by targetPort.
    let ratings = one(&r, "ratings.bookinfo.svc.cluster.local");
    assert_eq!(ratings.ports[0].protocol, Protocol::Http);
    assert_eq!(
        endpoints(ratings),
        ["10.0.1.1:8080->80 ready=true version=v1 sa=default locality=- weight=1 from=Pod"]
    );

    let details = one(&r, "details.bookinfo.svc.cluster.local");
    assert_eq!(details.resolution, Resolution::Passthrough);
    assert!(details.addresses.is_empty());
    assert_eq!(
        endpoints(details),
        [
            "10.0.2.1:9080->9080 ready=true version=- sa=- locality=- weight=1 from=Endpoints",
            "10.0.2.2:9080->9080 ready=false version=- sa=- locality=- weight=1 from=Endpoints",
        ]
    );

    let legacy = one(&r, "legacy.bookinfo.svc.cluster.local");
    assert_eq!(legacy.resolution, Resolution::DnsLb);
    assert_eq!(legacy.export_to, [".", "istio-system"]);
    assert_eq!(legacy.ports[0].protocol, Protocol::Unsupported);
    assert_eq!(
        endpoints(legacy),
        ["legacy.example.com:80->80 ready=true version=- sa=- locality=- weight=1 from=Service"]
    );
    assert_eq!(reviews.export_to, ["*"]);
}

const ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: external-api, namespace: default }
spec:
  hosts: [ api.example.com ]
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - { number: 443, name: https, protocol: TLS }
  - { number: 80, name: http-plain, protocol: HTTP, targetPort: 8080 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: vms, namespace: default }
spec:
  hosts: [ vm.internal, vm-alias.internal ]
  addresses: [ 240.0.0.1 ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 8080, name: http, protocol: HTTP } ]
  endpoints:
  - { address: 192.168.0.1, ports: { http: 9080 }, labels: { version: v1 }, locality: us-west/zone-b, weight: 3, serviceAccount: vm-sa, network: vpc-1 }
  - { address: 192.168.0.2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: selected, namespace: default }
spec:
  hosts: [ app.mesh ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 80, name: grpc-x, targetPort: 7070 } ]
  workloadSelector: { labels: { app: selected } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: selected-vm, namespace: default }
spec: { address: 10.1.0.1, labels: { app: selected, version: v1 }, serviceAccount: app-sa }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: elsewhere, namespace: other }
spec: { address: 10.1.0.2, labels: { app: selected } }
---
apiVersion: v1
kind: Pod
metadata: { name: selected-pod, namespace: default, labels: { app: selected, version: v2 } }
spec: { containers: [ { name: app, image: x } ] }
status: { podIP: 10.1.0.3 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: passthrough, namespace: default }
spec:
  hosts: [ "*.wild.example" ]
  ports: [ { number: 443, name: tls, protocol: TLS } ]
"#;

#[test]
fn service_entries_take_inline_selected_or_dns_endpoints() {
    let r = build(ENTRIES);
    assert!(r.problems.is_empty(), "{:?}", r.problems);

    // DNS without endpoints: the host itself is the endpoint, on the target port.
    let api = one(&r, "api.example.com");
    assert!(api.mesh_external);
    assert_eq!(api.resolution, Resolution::DnsLb);
    assert_eq!(
        api.ports.iter().map(|p| p.protocol).collect::<Vec<_>>(),
        [Protocol::Tls, Protocol::Http]
    );
    assert_eq!(
        endpoints(api),
        [
            "api.example.com:443->443 ready=true version=- sa=- locality=- weight=1 from=ServiceEntry",
            "api.example.com:8080->80 ready=true version=- sa=- locality=- weight=1 from=ServiceEntry",
        ]
    );

    // Every host of an entry is a service of its own, with the same endpoints; a WorkloadEntry
    // port map names the port, weights and localities carry over.
    for host in ["vm.internal", "vm-alias.internal"] {
        let vm = one(&r, host);
        assert!(!vm.mesh_external);
        assert_eq!(vm.addresses, ["240.0.0.1"]);
        assert_eq!(vm.resolution, Resolution::ClientSideLb);
        assert_eq!(
            endpoints(vm),
            [
                "192.168.0.1:9080->8080 ready=true version=v1 sa=vm-sa locality=us-west/zone-b weight=3 from=ServiceEntry",
                "192.168.0.2:8080->8080 ready=true version=v2 sa=- locality=- weight=1 from=ServiceEntry",
            ]
        );
        assert_eq!(vm.endpoints[0].network.as_deref(), Some("vpc-1"));
    }

    // workloadSelector: WorkloadEntries and Pods of the entry's namespace only.
    let app = one(&r, "app.mesh");
    assert_eq!(app.ports[0].protocol, Protocol::Grpc);
    assert_eq!(
        endpoints(app),
        [
            "10.1.0.1:7070->80 ready=true version=v1 sa=app-sa locality=- weight=1 from=WorkloadEntry",
            "10.1.0.3:7070->80 ready=true version=v2 sa=default locality=- weight=1 from=Pod",
        ]
    );

    // Resolution NONE (the default) and location MESH_EXTERNAL (the default).
    let wild = one(&r, "*.wild.example");
    assert_eq!(wild.resolution, Resolution::Passthrough);
    assert!(wild.mesh_external);
    assert!(wild.endpoints.is_empty());
}

#[test]
fn unusable_ports_are_reported_naming_the_object() {
    let r = build(
        r#"
apiVersion: v1
kind: Service
metadata: { name: broken, namespace: ns1 }
spec:
  ports: [ { name: http, port: 70000 }, { name: http-ok, port: 80 } ]
"#,
    );
    assert_eq!(
        r.problems,
        ["Service ns1/broken: spec.ports[0].port: not a port number"]
    );
    assert_eq!(one(&r, "broken.ns1.svc.cluster.local").ports.len(), 1);
}

#[test]
fn a_kubernetes_service_selects_workload_entries_of_its_namespace() {
    let r = build(
        r#"
apiVersion: v1
kind: Service
metadata: { name: website, namespace: default }
spec:
  ports: [ { name: http, port: 80, targetPort: 8080 }, { name: tcp-admin, port: 9000 } ]
  selector: { app: website }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: web-v1, namespace: default }
spec:
  address: 127.0.0.1
  labels: { app: website, version: website-version-1 }
  ports: { http: 18081 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: web-v2, namespace: default }
spec:
  address: 127.0.0.2
  labels: { app: website, version: website-version-2 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: elsewhere, namespace: other }
spec:
  address: 127.0.0.3
  labels: { app: website }
"#,
    );
    let web = one(&r, "website.default.svc.cluster.local");
    assert_eq!(
        endpoints(web),
        [
            "127.0.0.1:18081->80 ready=true version=website-version-1 sa=- locality=- weight=1 from=WorkloadEntry",
            "127.0.0.1:9000->9000 ready=true version=website-version-1 sa=- locality=- weight=1 from=WorkloadEntry",
            "127.0.0.2:8080->80 ready=true version=website-version-2 sa=- locality=- weight=1 from=WorkloadEntry",
            "127.0.0.2:9000->9000 ready=true version=website-version-2 sa=- locality=- weight=1 from=WorkloadEntry",
        ]
    );
}

#[test]
fn traffic_distribution_comes_from_the_spec_or_istios_annotation() {
    use weft_registry::TrafficDistribution;
    let r = build(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: spec-wins
  namespace: ns1
  annotations: { networking.istio.io/traffic-distribution: PreferSameNode }
spec: { trafficDistribution: PreferClose, ports: [ { name: http, port: 80 } ] }
---
apiVersion: v1
kind: Service
metadata:
  name: by-annotation
  namespace: ns1
  annotations: { networking.istio.io/traffic-distribution: prefersamenode }
spec: { ports: [ { name: http, port: 80 } ] }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: ns1
  annotations: { networking.istio.io/traffic-distribution: PreferSameZone }
spec: { hosts: [ a.example.com ], ports: [ { number: 80, name: http } ], resolution: DNS }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: typo
  namespace: ns1
  annotations: { networking.istio.io/traffic-distribution: PreferNearby }
spec: { hosts: [ b.example.com ], ports: [ { number: 80, name: http } ], resolution: DNS }
"#,
    );
    let td = |host: &str| one(&r, host).traffic_distribution;
    assert_eq!(
        td("spec-wins.ns1.svc.cluster.local"),
        TrafficDistribution::PreferSameZone
    );
    assert_eq!(
        td("by-annotation.ns1.svc.cluster.local"),
        TrafficDistribution::PreferSameNode
    );
    assert_eq!(td("a.example.com"), TrafficDistribution::PreferSameZone);
    assert_eq!(td("b.example.com"), TrafficDistribution::Any);
    assert_eq!(
        r.problems,
        [
            "ServiceEntry ns1/typo: metadata.annotations[networking.istio.io/traffic-distribution]: \"PreferNearby\" is not PreferClose, PreferSameZone or PreferSameNode; as in Istio, no preference applies"
        ]
    );
}
