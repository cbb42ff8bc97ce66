//! Istio's 15012 on `weft control-plane`: real Envoy takes its config over ADS on TLS, checking
//! the control plane's certificate against the mesh root and istiod's name, as an Istio proxy
//! does; an Envoy that trusts another root gets nothing. The certificate service on the same
//! port refuses a caller without a credential, and the CA's root is kept in `--ca-dir`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Kind, Proxy, Req, try_request};

struct ControlPlane {
    child: Child,
    secure: SocketAddr,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn control_plane(folder: &Path, ca_dir: &Path) -> ControlPlane {
    let mut child = Command::new(support::weft_binary())
        .arg("control-plane")
        .arg("-f")
        .arg(folder)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--monitoring-address",
            "127.0.0.1:0",
        ])
        .args(["--secure-xds-address", "127.0.0.1:0", "--ca-dir"])
        .arg(ca_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let secure = loop {
        let line = lines.next().expect("the control plane's banner").unwrap();
        if let Some(a) = line.strip_prefix("weft control-plane: xDS and CA over TLS on ") {
            break a.parse().unwrap();
        }
    };
    ControlPlane { child, secure }
}

/// The ingress gateway's bootstrap, as `weft up` writes it, with ADS over TLS trusting `root`.
fn gateway_bootstrap(root: &Path) -> String {
    format!(
        r#"
node:
  id: router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local
  cluster: gateway
  metadata:
    NAMESPACE: istio-system
    LABELS: {{ istio: ingressgateway }}
    INTERCEPTION_MODE: NONE
    WEFT_GATEWAY_PORTS: "80={{GATEWAY}}"
    WEFT_GATEWAY_ADDRESS: 127.0.0.1
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{ADMIN}} }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [ {{ envoy_grpc: {{ cluster_name: xds-grpc }} }} ]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: istiod.istio-system.svc
        common_tls_context:
          alpn_protocols: [ h2 ]
          validation_context:
            trusted_ca: {{ filename: {root} }}
            match_typed_subject_alt_names:
            - {{ san_type: DNS, matcher: {{ exact: istiod.istio-system.svc }} }}
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{XDS}} }} }} }}
"#,
        root = root.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_takes_its_config_over_tls_from_a_control_plane_it_can_verify() {
    let echo = support::start_echo("web-v1").await;
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("mesh.yaml"),
        support::up::base_mesh(echo.port()),
    )
    .unwrap();
    // This gateway has no agent to get certificates from (no `sds-grpc`), so the mesh does
    // not originate mTLS on its own, as Istio's `enableAutoMtls: false` says.
    std::fs::write(
        folder.path().join("istio.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: istio, namespace: istio-system }\ndata:\n  mesh: |\n    enableAutoMtls: false\n",
    )
    .unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let cp = control_plane(folder.path(), ca_dir.path());
    let root = ca_dir.path().join("root-cert.pem");
    assert!(root.exists(), "the CA's root is kept in --ca-dir");

    let envoy = tokio::task::block_in_place(|| {
        Proxy::start(
            Kind::Envoy,
            &gateway_bootstrap(&root),
            &[("XDS", cp.secure.port())],
        )
    });
    let gateway = envoy.addr("GATEWAY");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = support::upstream_name(gateway, "web.example").await;
        if got == "web-v1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no config over TLS: {got}\n{}",
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An Envoy that trusts another root refuses the control plane's certificate.
    let other = tempfile::tempdir().unwrap();
    weft_ca::Ca::open(other.path(), None, "cluster.local").unwrap();
    let stranger = Proxy::spawn(
        Kind::Envoy,
        &gateway_bootstrap(&other.path().join("root-cert.pem")),
        &[("XDS", cp.secure.port())],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = match try_request(stranger.addr("ADMIN"), &Req::get("admin", "/stats")).await {
            Ok(r) => String::from_utf8_lossy(&r.body).into_owned(),
            Err(_) => String::new(),
        };
        if support::counter(&stats, "cluster.xds-grpc.ssl.fail_verify_error") > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no verification failure:\n{stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        support::upstream_name(stranger.addr("GATEWAY"), "web.example").await,
        "web-v1"
    );

    // The certificate service shares the port, and wants a credential.
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", cp.secure))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    std::fs::read_to_string(&root).unwrap(),
                ))
                .domain_name("istiod.istio-system.svc"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let request = weft_ca::service::IstioCertificateRequest {
        csr: "-".into(),
        validity_duration: 0,
    };
    let status = client
        .unary::<_, weft_ca::service::IstioCertificateResponse, _>(
            tonic::Request::new(request),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                weft_ca::service::CREATE_CERTIFICATE_PATH,
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}
