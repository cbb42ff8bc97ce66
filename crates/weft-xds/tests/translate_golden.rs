//! Golden tests of translation: Istio YAML in `tests/golden/CASE.yaml`, for each proxy of the
//! case the Envoy resources it gets, in Envoy's JSON form, in `tests/golden/CASE.PROXY.json`.
//! Each output also lists the problems translation reported and the fields the Weft proxy
//! would refuse, so that a change in either shows up in review.
//!
//! `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-xds --test translate_golden` rewrites the files;
//! the diff is then the change to review.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Map, json};
use std::path::PathBuf;
use weft_api::load::LoadResult;
use weft_api::types::mesh::MeshConfig;
use weft_xds::translate::{Inputs, Proxy, generate};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn inputs(case: &str) -> Inputs {
    let mut loaded = LoadResult::default();
    loaded.load_path(&dir().join(format!("{case}.yaml")));
    assert!(!loaded.has_errors(), "{case}: {:?}", loaded.problems);
    let resources: Vec<_> = loaded.objects.into_iter().map(|o| o.resource).collect();
    let mesh_file = dir().join(format!("{case}-mesh.yaml"));
    let mesh = match std::fs::read_to_string(&mesh_file) {
        Ok(text) => MeshConfig::from_yaml(&text).unwrap().resolve(),
        Err(_) => MeshConfig::default().resolve(),
    };
    Inputs::new(&resources, mesh)
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// A proxy as it would introduce itself over xDS.
fn node(id: &str, labels: &[(&str, &str)], meta: &[(&str, &str)]) -> Proxy {
    let mut l = Struct::default();
    for (k, v) in labels {
        l.fields.insert(k.to_string(), text(v));
    }
    let mut m = Struct::default();
    m.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(l)),
        },
    );
    for (k, v) in meta {
        m.fields.insert(k.to_string(), text(v));
    }
    Proxy::from_node(&Node {
        id: id.into(),
        metadata: Some(m),
        ..Default::default()
    })
    .unwrap()
}

/// A resource in Envoy's JSON form, with the fields the Weft proxy would refuse.
fn render(
    type_name: &str,
    bytes: Vec<u8>,
    unsupported: &mut Vec<String>,
    name: &str,
) -> serde_json::Value {
    let pool = weft_proxy::config::pool();
    let descriptor = pool.get_message_by_name(type_name).unwrap();
    let message = DynamicMessage::decode(descriptor, bytes.as_slice()).unwrap();
    for e in weft_proxy::config::supported::check(&message, "") {
        unsupported.push(format!("{type_name} {name}: {e}"));
    }
    message
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().use_proto_field_name(true),
        )
        .unwrap()
}

fn output(inputs: &Inputs, proxy: &Proxy) -> serde_json::Value {
    let g = generate(inputs, proxy);
    let mut unsupported = Vec::new();
    let mut section = |type_name: &str, items: Vec<(String, Vec<u8>)>| {
        let mut m = Map::new();
        for (name, bytes) in items {
            let v = render(type_name, bytes, &mut unsupported, &name);
            m.insert(name, v);
        }
        serde_json::Value::Object(m)
    };
    let listeners = section(
        "envoy.config.listener.v3.Listener",
        g.listeners
            .iter()
            .map(|(k, v)| (k.clone(), v.encode_to_vec()))
            .collect(),
    );
    let routes = section(
        "envoy.config.route.v3.RouteConfiguration",
        g.routes
            .iter()
            .map(|(k, v)| (k.clone(), v.encode_to_vec()))
            .collect(),
    );
    let clusters = section(
        "envoy.config.cluster.v3.Cluster",
        g.clusters
            .iter()
            .map(|(k, v)| (k.clone(), v.encode_to_vec()))
            .collect(),
    );
    let endpoints = section(
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        g.endpoints
            .iter()
            .map(|(k, v)| (k.clone(), v.encode_to_vec()))
            .collect(),
    );
    json!({
        "problems": g.problems,
        "weft_proxy_unsupported": unsupported,
        "listeners": listeners,
        "routes": routes,
        "clusters": clusters,
        "endpoints": endpoints,
    })
}

/// Compares with the golden file, or rewrites it under `WEFT_UPDATE_GOLDEN`.
fn golden(case: &str, proxy_name: &str, proxy: &Proxy) -> serde_json::Value {
    let actual = output(&inputs(case), proxy);
    let path = dir().join(format!("{case}.{proxy_name}.json"));
    let pretty = serde_json::to_string_pretty(&actual).unwrap() + "\n";
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    } else {
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run with WEFT_UPDATE_GOLDEN=1",
                path.display()
            )
        });
        assert!(
            expected == pretty,
            "{} differs from the translation; run with WEFT_UPDATE_GOLDEN=1 and review the diff",
            path.display()
        );
    }
    actual
}

fn gateway() -> Proxy {
    node(
        "router~10.0.0.100~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
        &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
        &[
            ("WEFT_GATEWAY_PORTS", "80=8080,443=8443"),
            ("WEFT_GATEWAY_ADDRESS", "127.0.0.1"),
        ],
    )
}

#[test]
fn canary_tutorial() {
    let gw = golden("canary", "ingressgateway", &gateway());
    // The gateway sends everything to version-1, whose only endpoint is web-v1.
    let route = &gw["routes"]["http.8080"]["virtual_hosts"][0];
    assert_eq!(route["domains"], json!(["*"]));
    assert_eq!(
        route["routes"][0]["route"]["cluster"],
        "outbound|80|version-1|website.default.svc.cluster.local"
    );
    let v1 = &gw["endpoints"]["outbound|80|version-1|website.default.svc.cluster.local"];
    assert_eq!(
        v1["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"],
        18081
    );
    assert_eq!(
        gw["listeners"]["0.0.0.0_8080"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    assert_eq!(gw["problems"], json!([]));

    let sidecar = golden(
        "canary",
        "web-v1",
        &node(
            "sidecar~127.0.0.1~web-v1.default~default.svc.cluster.local",
            &[("app", "website"), ("version", "website-version-1")],
            &[],
        ),
    );
    // The mesh VirtualService is bound to the gateway only: sidecars use the default route.
    let vh = &sidecar["routes"]["80"]["virtual_hosts"][0];
    assert_eq!(vh["name"], "website.default.svc.cluster.local:80");
    assert!(
        vh["domains"]
            .as_array()
            .unwrap()
            .contains(&json!("website"))
    );
    assert_eq!(
        vh["routes"][0]["route"]["cluster"],
        "outbound|80||website.default.svc.cluster.local"
    );
    // Its own port is served on virtualInbound.
    assert!(sidecar["clusters"]["inbound|18081||"].is_object());

    let no_capture = golden(
        "canary",
        "http-proxy",
        &node(
            "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
            &[("app", "client")],
            &[("INTERCEPTION_MODE", "NONE"), ("HTTP_PROXY_PORT", "15080")],
        ),
    );
    assert_eq!(
        no_capture["listeners"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["127.0.0.1_15080"]
    );
    assert!(
        no_capture["routes"]["http_proxy"]["virtual_hosts"][0]["domains"]
            .as_array()
            .unwrap()
            .contains(&json!("website"))
    );
    for out in [&gw, &sidecar, &no_capture] {
        assert_eq!(
            out["weft_proxy_unsupported"],
            json!([]),
            "the Weft proxy must take the canary config"
        );
    }
}

#[test]
fn gateways_terminate_tls_and_redirect_to_https() {
    let gw = golden("gateway-tls", "ingressgateway", &gateway());
    assert_eq!(gw["problems"], json!([]));
    let https = &gw["listeners"]["0.0.0.0_8443"];
    assert_eq!(
        https["listener_filters"][0]["name"],
        "envoy.filters.listener.tls_inspector"
    );
    let chains = https["filter_chains"].as_array().unwrap();
    let chain = |name: &str| {
        chains
            .iter()
            .find(|c| c["filter_chain_match"]["server_names"] == json!([name]))
            .unwrap_or_else(|| panic!("no chain for {name}: {https}"))
    };
    // The seed's SIMPLE server: its files, h2 and HTTP/1.1, no client certificate.
    let seed = &chain("ext-host.example.com")["transport_socket"]["typed_config"];
    let common = &seed["common_tls_context"];
    assert_eq!(common["alpn_protocols"], json!(["h2", "http/1.1"]));
    assert_eq!(
        common["tls_certificates"][0]["certificate_chain"]["filename"],
        "/tmp/tls.crt"
    );
    assert_eq!(seed["require_client_certificate"], false);
    // MUTUAL requires a client certificate from the CA; OPTIONAL_MUTUAL asks without requiring.
    let mutual = &chain("app.example.com")["transport_socket"]["typed_config"];
    assert_eq!(mutual["require_client_certificate"], true);
    assert_eq!(
        mutual["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
        "/etc/gw/clients-ca.pem"
    );
    let optional = &chain("*.wild.example.com")["transport_socket"]["typed_config"];
    assert_eq!(optional["require_client_certificate"], false);
    assert_eq!(
        optional["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"],
        "TLSv1_3"
    );
    // PASSTHROUGH shares the port: its chain forwards the TLS bytes as they are.
    assert!(
        chain("pass.example.com").get("transport_socket").is_none(),
        "{https}"
    );
    // Each terminating server has its own route table, named as istiod names it.
    let table = &gw["routes"]["https.443.https.ext-host-gwy.default"]["virtual_hosts"][0];
    assert_eq!(
        table["routes"][0]["route"]["cluster"],
        "outbound|80||web.default.svc.cluster.local"
    );
    // httpsRedirect: the routed host and the unrouted one both send plain requests to https.
    let plain = gw["routes"]["http.8080"]["virtual_hosts"]
        .as_array()
        .unwrap();
    for host in ["app.example.com", "legacy.example.com"] {
        let v = plain
            .iter()
            .find(|v| v["domains"][0] == host)
            .unwrap_or_else(|| panic!("no virtual host for {host}"));
        assert_eq!(v["require_tls"], "ALL", "{v}");
    }
}

#[test]
fn traffic_management_fields() {
    let productpage = node(
        "sidecar~10.0.0.20~productpage.bookinfo~bookinfo.svc.cluster.local",
        &[("app", "productpage")],
        &[],
    );
    let out = golden("traffic", "productpage", &productpage);
    // The Sidecar's egress hosts hide other namespaces' services.
    let clusters = out["clusters"].as_object().unwrap();
    assert!(!clusters.keys().any(|k| k.contains("hidden.other")));
    assert!(clusters.contains_key("outbound|80||httpbin.org"));
    // DestinationRule lookup: the service's own namespace before the root namespace.
    // ROUND_ROBIN is the enum's zero value, which Envoy's JSON leaves out.
    assert_eq!(
        clusters["outbound|9080||reviews.bookinfo.svc.cluster.local"].get("lb_policy"),
        None
    );
    assert_eq!(
        clusters["outbound|80||httpbin.org"]["lb_policy"],
        "LEAST_REQUEST"
    );
    assert_eq!(
        clusters["outbound|9080|v2|reviews.bookinfo.svc.cluster.local"]["lb_policy"],
        "RING_HASH"
    );
    assert_eq!(
        clusters["outbound|9090||ratings.bookinfo.svc.cluster.local"]["lb_policy"],
        "MAGLEV"
    );
    assert_eq!(
        clusters["outbound|5432||ratings.bookinfo.svc.cluster.local"]["lb_policy"],
        "RANDOM"
    );
    // REGISTRY_ONLY: unknown hosts get 502, unknown destinations the black hole.
    let vhosts = out["routes"]["9080"]["virtual_hosts"].as_array().unwrap();
    assert!(vhosts.iter().any(|v| v["name"] == "block_all"));
    assert_eq!(
        out["listeners"]["virtualOutbound"]["filter_chains"][0]["name"],
        "BlackHoleCluster"
    );
    // The weight-0 destination names a subset no rule defines: reported, and left out.
    assert_eq!(
        out["problems"],
        json!([
            "VirtualService bookinfo/reviews: http[1].route[2]: destination.subset: subset v3 of reviews.bookinfo.svc.cluster.local is not defined by a DestinationRule; requests get 503 (NC)"
        ])
    );

    // A source-label match applies to productpage only; the reviews workload itself does not
    // get it.
    let reviews = golden(
        "traffic",
        "reviews-v1",
        &node(
            "sidecar~10.0.0.11~reviews-v1.bookinfo~bookinfo.svc.cluster.local",
            &[
                ("app", "reviews"),
                ("version", "v1"),
                ("istio-locality", "us-east.zone-a"),
            ],
            &[],
        ),
    );
    // Locality failover (the mesh's default, with the rule's outlier detection): the proxy's
    // own zone first, the rest of its region next, as istiod places them for this proxy.
    let eds =
        &reviews["endpoints"]["outbound|9080||reviews.bookinfo.svc.cluster.local"]["endpoints"];
    let placed: Vec<(String, u64)> = eds
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["locality"]["zone"].as_str().unwrap_or("").to_string(),
                l["priority"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        placed,
        vec![("zone-a".to_string(), 0), ("zone-b".to_string(), 1)],
        "{eds:#}"
    );
    let count = |o: &serde_json::Value| {
        o["routes"]["9080"]["virtual_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "reviews.bookinfo.svc.cluster.local:9080")
            .unwrap()["routes"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&out), count(&reviews) + 1);
}

#[test]
fn problems_are_reported_and_the_rest_translates() {
    let out = golden(
        "problems",
        "client",
        &node(
            "sidecar~10.0.0.5~client.default~default.svc.cluster.local",
            &[("app", "client")],
            &[],
        ),
    );
    let problems: Vec<String> = serde_json::from_value(out["problems"].clone()).unwrap();
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(
        has("VirtualService default/a-first: http[0].route[0]: destination.subset: subset missing"),
        "{problems:?}"
    );
    assert!(
        has(
            "VirtualService default/a-first: http[1].route[0]: destination.host: no service nowhere.example.com"
        ),
        "{problems:?}"
    );
    assert!(
        has(
            "VirtualService default/b-conflict: host web.default.svc.cluster.local is already claimed"
        ),
        "{problems:?}"
    );
    // ISTIO_MUTUAL as istiod builds it (cluster_tls.go, buildUpstreamClusterTLSContext): SNI
    // `outbound_.<port>_.<subset>_.<host>` (`_` for no subset), the workload certificate and the
    // mesh roots from SDS on `sds-grpc`, istiod's ALPN for a non-HTTP/2 cluster, TLS 1.2 to 1.3.
    assert!(!has("ISTIO_MUTUAL"), "{problems:?}");
    let tls = &out["clusters"]["outbound|80||web.default.svc.cluster.local"]["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "outbound_.80_._.web.default.svc.cluster.local");
    let common = &tls["common_tls_context"];
    assert_eq!(
        common["alpn_protocols"],
        serde_json::json!(["istio-peer-exchange", "istio"])
    );
    assert_eq!(
        common["tls_params"]["tls_minimum_protocol_version"],
        "TLSv1_2"
    );
    assert_eq!(
        common["tls_params"]["tls_maximum_protocol_version"],
        "TLSv1_3"
    );
    let sds = |v: &serde_json::Value, name: &str| {
        assert_eq!(v["name"], name);
        let api = &v["sds_config"]["api_config_source"];
        assert_eq!(api["api_type"], "GRPC");
        assert_eq!(api["set_node_on_first_message_only"], true);
        assert_eq!(
            api["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            "sds-grpc"
        );
        assert_eq!(v["sds_config"]["initial_fetch_timeout"], "0s");
    };
    sds(&common["tls_certificate_sds_secret_configs"][0], "default");
    sds(
        &common["combined_validation_context"]["validation_context_sds_secret_config"],
        "ROOTCA",
    );
    // The server's identities (istiod's `PushContext.ServiceAccounts`): the endpoints' accounts
    // in the service's namespace and the ServiceEntry's subjectAltNames, sorted, as exact
    // matches in the untyped field istiod writes.
    let db = &out["clusters"]["outbound|5432||db.example.com"]["transport_socket"]["typed_config"];
    assert_eq!(db["sni"], "outbound_.5432_._.db.example.com");
    assert_eq!(
        db["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_subject_alt_names"],
        serde_json::json!([
            { "exact": "spiffe://cluster.local/ns/db/sa/db" },
            { "exact": "spiffe://cluster.local/ns/default/sa/replica" }
        ])
    );
    // The first VirtualService still routes.
    assert!(
        out["routes"]["80"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap()
            .len()
            == 2
    );
    let gw = golden("problems", "ingressgateway", &gateway());
    assert!(
        gw["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(serde_json::Value::as_str)
            .any(|p| p.contains("Gateway default/secure: servers[0]")),
        "{}",
        gw["problems"]
    );
}

#[test]
fn delegation_tls_and_visibility() {
    let gw = golden("delegation", "ingressgateway", &gateway());
    // The delegate's routes sit under the root's match, in the delegate's order; the pair that
    // cannot both hold (/ratings under /reviews) is dropped; the missing delegate is reported.
    let routes = &gw["routes"]["http.8080"]["virtual_hosts"][0]["routes"];
    let prefixes: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["match"]["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["/reviews/v2", "/reviews", "/"]);
    assert_eq!(routes[0]["match"]["headers"][0]["name"], "x-beta");
    assert!(
        routes[0]["metadata"]["filter_metadata"]["istio"]["config"]
            .as_str()
            .unwrap()
            .ends_with("/virtual-service/reviews-routes")
    );
    let problems = gw["problems"].to_string();
    assert!(problems.contains("VirtualService bookinfo/root: http[1].delegate: VirtualService bookinfo/nowhere does not exist"), "{problems}");
    // PASSTHROUGH: a chain for the claimed SNI name, to the STATIC ServiceEntry's cluster.
    let l = &gw["listeners"]["0.0.0.0_8443"];
    assert_eq!(
        l["filter_chains"][0]["filter_chain_match"]["server_names"],
        json!(["secure.example.com"])
    );
    assert_eq!(
        l["listener_filters"][0]["name"],
        "envoy.filters.listener.tls_inspector"
    );
    // Weights and localities of WorkloadEntries reach the load assignment.
    let cla = &gw["endpoints"]["outbound|9080|v1|reviews.bookinfo.svc.cluster.local"];
    assert_eq!(cla["endpoints"][0]["locality"]["zone"], "zone-1");
    assert_eq!(
        cla["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"],
        3
    );

    let frontend = golden(
        "delegation",
        "frontend",
        &node(
            "sidecar~10.3.0.1~web.frontend~frontend.svc.cluster.local",
            &[("app", "web")],
            &[],
        ),
    );
    let clusters = frontend["clusters"].as_object().unwrap();
    // exportTo ".": neither the bookinfo-only Service nor its VirtualService reach frontend.
    assert!(!clusters.keys().any(|k| k.contains("internal-only")));
    let vh = &frontend["routes"]["9080"]["virtual_hosts"][0];
    assert_eq!(vh["routes"][0]["name"], "default");
    // Resolution NONE is the original destination; STATIC is EDS with the entry's endpoints.
    assert_eq!(
        clusters["outbound|443||api.example.com"]["type"],
        "ORIGINAL_DST"
    );
    assert_eq!(clusters["outbound|443||secure.example.com"]["type"], "EDS");
    // TLS on 443: one chain per host by SNI, the VirtualService's for secure.example.com.
    let chains = frontend["listeners"]["0.0.0.0_443"]["filter_chains"]
        .as_array()
        .unwrap();
    let names: Vec<String> = chains
        .iter()
        .map(|c| c["filter_chain_match"]["server_names"].to_string())
        .collect();
    assert_eq!(
        names,
        [
            r#"["secure.example.com"]"#,
            r#"["*.wild.example.com"]"#,
            r#"["api.example.com"]"#,
            "null"
        ]
    );
    assert_eq!(frontend["problems"], json!([]));
    for out in [&gw, &frontend] {
        assert_eq!(out["weft_proxy_unsupported"], json!([]));
    }
}

#[test]
fn sidecar_ingress_listeners() {
    let labels = [("app", "website"), ("version", "v1")];
    let none = golden(
        "ingress",
        "no-capture",
        &node(
            "sidecar~127.0.0.1~web-v1.default~default.svc.cluster.local",
            &labels,
            &[("INTERCEPTION_MODE", "NONE"), ("HTTP_PROXY_PORT", "15080")],
        ),
    );
    // Bound at the workload's address, to the defaultEndpoint (0.0.0.0 is the workload's own).
    let http = &none["listeners"]["127.0.0.1_18081"];
    assert_eq!(http["address"]["socket_address"]["port_value"], 18081);
    let app =
        &none["clusters"]["inbound|18081||"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
    assert_eq!(
        app["endpoint"]["address"]["socket_address"]["port_value"],
        28081
    );
    assert!(none["listeners"]["127.0.0.1_19000"].is_object());
    assert!(
        none["problems"][0]
            .as_str()
            .unwrap()
            .contains("Sidecar default/web-v1: ingress[2].defaultEndpoint")
    );
    assert_eq!(none["weft_proxy_unsupported"], json!([]));

    let captured = golden(
        "ingress",
        "captured",
        &node(
            "sidecar~127.0.0.1~web-v1.default~default.svc.cluster.local",
            &labels,
            &[],
        ),
    );
    let chains: Vec<&str> = captured["listeners"]["virtualInbound"]["filter_chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        chains,
        [
            "0.0.0.0_18081",
            "0.0.0.0_19000",
            "InboundPassthroughCluster"
        ]
    );
}
