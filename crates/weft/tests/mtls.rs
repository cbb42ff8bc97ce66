//! Mutual TLS between sidecars with SPIFFE identities from the mesh CA, configured the way
//! istiod configures ISTIO_MUTUAL: both certificates are SDS secret `default`, both ends trust
//! SDS `ROOTCA`, and each checks the other's SAN (secure naming). Every pairing of data planes
//! is tried, Weft and Envoy as client and as server; the Weft proxy is its own agent, Envoy
//! gets its secrets from `weft agent`. A client that expects another server identity, and a
//! server that expects another client identity, get no answer through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Kind, Proxy};
use weft_ca::Identity;
use weft_ca::service::Credentials;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

struct Mesh {
    /// Workload certificate lifetime, seconds (the CA's default when `None`).
    cert_ttl: Option<u64>,
    ca_address: SocketAddr,
    root: PathBuf,
    credentials: Arc<Credentials>,
    dir: tempfile::TempDir,
}

/// A process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One proxy with its identity: the Weft proxy as its own agent, Envoy with `weft agent`.
struct Sidecar {
    proxy: Proxy,
    _agent: Option<Killed>,
}

impl Mesh {
    async fn start() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let ca = support::ca::start(dir.path()).await;
        Mesh {
            cert_ttl: None,
            ca_address: ca.address,
            root: ca.root,
            credentials: ca.credentials,
            dir,
        }
    }

    /// A credential file for the service account `sa` of namespace `shop`.
    fn credential(&self, sa: &str) -> PathBuf {
        let token = self
            .credentials
            .issue(Identity::new("cluster.local", "shop", sa))
            .unwrap();
        let file = self.dir.path().join(format!("{token}.credential"));
        std::fs::write(&file, token).unwrap();
        file
    }

    fn ca_args(&self, credential: &Path) -> Vec<String> {
        let mut args = vec![
            "--ca-address".into(),
            self.ca_address.to_string(),
            "--ca-root".into(),
            self.root.display().to_string(),
            "--credential-file".into(),
            credential.display().to_string(),
        ];
        if let Some(ttl) = self.cert_ttl {
            args.extend(["--cert-ttl-s".to_string(), ttl.to_string()]);
        }
        args
    }

    /// Starts `kind` as `sa` from `template`, where `{SDS_CLUSTER}` becomes Envoy's `sds-grpc`
    /// cluster on its agent's socket (nothing for Weft, which is its own agent).
    fn sidecar(&self, kind: Kind, sa: &str, template: &str, given: &[(&str, u16)]) -> Sidecar {
        let credential = self.credential(sa);
        match kind {
            Kind::Weft => {
                let text = template.replace("{SDS_CLUSTER}", "");
                let args = self.ca_args(&credential);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Sidecar {
                    proxy: Proxy::start_with(kind, &text, given, &args),
                    _agent: None,
                }
            }
            Kind::Envoy => {
                let socket = self.dir.path().join(format!(
                    "{}.sock",
                    credential
                        .file_stem()
                        .unwrap()
                        .to_string_lossy()
                        .get(..12)
                        .unwrap()
                ));
                let agent = Command::new(support::weft_binary())
                    .arg("agent")
                    .args(self.ca_args(&credential))
                    .args(["-l", "warn", "--sds-socket"])
                    .arg(&socket)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let text = template.replace("{SDS_CLUSTER}", &sds_cluster(&socket));
                Sidecar {
                    proxy: Proxy::start(kind, &text, given),
                    _agent: Some(Killed(agent)),
                }
            }
        }
    }
}

fn sds_cluster(socket: &Path) -> String {
    format!(
        r#"
  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: sds-grpc
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ pipe: {{ path: {} }} }} }} }} ] }} ]"#,
        socket.display()
    )
}

/// Istio's SDS reference to secret `name`.
fn sds(name: &str) -> String {
    format!(
        "{{ name: {name}, sds_config: {{ api_config_source: {{ api_type: GRPC, transport_api_version: V3, grpc_services: [ {{ envoy_grpc: {{ cluster_name: sds-grpc }} }} ] }}, resource_api_version: V3 }} }}"
    )
}

/// The TLS context both ends share: certificate `default`, roots `ROOTCA`, the peer's SAN.
fn common(peer: &str) -> String {
    format!(
        r#"common_tls_context:
            tls_certificate_sds_secret_configs: [ {default} ]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: "{peer}" }} }} ]
              validation_context_sds_secret_config: {rootca}"#,
        default = sds("default"),
        rootca = sds("ROOTCA"),
    )
}

const HCM: &str = r#"name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: hcm
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
          route_config: { virtual_hosts: [ { name: all, domains: [ "*" ], routes: [ { match: { prefix: "/" }, route: { cluster: CLUSTER } } ] } ] }"#;

/// The server sidecar: mTLS in, requiring a client certificate with `peer`, to the app.
fn server(peer: &str) -> String {
    format!(
        r#"
node: {{ id: server, cluster: server }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{ADMIN}} }} }} }}
static_resources:
  listeners:
  - name: inbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{LISTEN}} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          {common}
      filters:
      - {hcm}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment: {{ cluster_name: app, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{APP}} }} }} }} }} ] }} ] }}{{SDS_CLUSTER}}
"#,
        common = common(peer),
        hcm = HCM.replace("CLUSTER", "app"),
    )
}

/// The client sidecar: plaintext in, mTLS to the server expecting `peer`.
fn client(peer: &str) -> String {
    format!(
        r#"
node: {{ id: client, cluster: client }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{ADMIN}} }} }} }}
static_resources:
  listeners:
  - name: outbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{OUT}} }} }}
    filter_chains:
    - filters:
      - {hcm}
  clusters:
  - name: web
    type: STATIC
    connect_timeout: 1s
    load_assignment: {{ cluster_name: web, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{SERVER}} }} }} }} }} ] }} ] }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.web.shop.svc.cluster.local
        {common}{{SDS_CLUSTER}}
"#,
        common = common(peer).replace("\n          ", "\n        "),
        hcm = HCM.replace("CLUSTER", "web"),
    )
}

/// The answer once both agents have their certificates: until then handshakes fail, so a
/// success is waited for, and a refusal is taken only after the certificates have had time.
async fn through(out: SocketAddr, want_ok: bool) -> String {
    if !want_ok {
        tokio::time::sleep(Duration::from_secs(2)).await;
        return support::upstream_name(out, "web.shop").await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = support::upstream_name(out, "web.shop").await;
        if got == "app" || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pairing_of_data_planes_speaks_mtls_and_checks_identities() {
    let mesh = Mesh::start().await;
    let app = support::start_echo("app").await;
    for server_kind in [Kind::Weft, Kind::Envoy] {
        let web = tokio::task::block_in_place(|| {
            mesh.sidecar(
                server_kind,
                "web",
                &server(CLIENT_ID),
                &[("APP", app.port())],
            )
        });
        let server_port = web.proxy.port("LISTEN");
        for client_kind in [Kind::Weft, Kind::Envoy] {
            let pair = format!("{client_kind:?} client to {server_kind:?} server");
            let good = tokio::task::block_in_place(|| {
                mesh.sidecar(
                    client_kind,
                    "client",
                    &client(SERVER_ID),
                    &[("SERVER", server_port)],
                )
            });
            let got = through(good.proxy.addr("OUT"), true).await;
            assert_eq!(
                got,
                "app",
                "{pair}\n{}\n{}",
                good.proxy.log(),
                web.proxy.log()
            );

            // Secure naming: the server is not who this client expects.
            let wary = tokio::task::block_in_place(|| {
                mesh.sidecar(
                    client_kind,
                    "client",
                    &client("spiffe://cluster.local/ns/shop/sa/other"),
                    &[("SERVER", server_port)],
                )
            });
            let got = through(wary.proxy.addr("OUT"), false).await;
            assert_eq!(got, "HTTP 503", "{pair}: a server of another identity");

            // The client is not who this server expects.
            let stranger = tokio::task::block_in_place(|| {
                mesh.sidecar(
                    client_kind,
                    "stranger",
                    &client(SERVER_ID),
                    &[("SERVER", server_port)],
                )
            });
            let got = through(stranger.proxy.addr("OUT"), false).await;
            assert_eq!(got, "HTTP 503", "{pair}: a client of another identity");
        }
    }
}

/// Identity of a proxy's current certificate: its serial, from admin `/certs` (Weft) or, for
/// Envoy, from the secret Envoy loaded.
async fn serial(proxy: &Proxy) -> String {
    let certs = proxy.admin("/certs").await;
    let v: serde_json::Value = serde_json::from_str(&certs).unwrap_or_default();
    v["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_string))
        .next()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_requests_across_certificate_rotations_lose_none() {
    let mut mesh = Mesh::start().await;
    // Four seconds of life: each end renews every two seconds (three seconds left too little
    // slack for a renewal on a loaded two-core machine, and an expired certificate is a lost
    // request).
    mesh.cert_ttl = Some(4);
    let app = support::start_echo("app").await;
    let web = tokio::task::block_in_place(|| {
        mesh.sidecar(
            Kind::Weft,
            "web",
            &server(CLIENT_ID),
            &[("APP", app.port())],
        )
    });
    // A fresh upstream handshake every 20 requests, so that handshakes meet renewed
    // certificates at both ends.
    let fresh = client(SERVER_ID).replace(
        "    transport_socket:\n      name: envoy.transport_sockets.tls",
        "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        common_http_protocol_options: { max_requests_per_connection: 20 }\n        explicit_http_config: { http_protocol_options: {} }\n    transport_socket:\n      name: envoy.transport_sockets.tls",
    );
    assert_ne!(fresh, client(SERVER_ID));
    for client_kind in [Kind::Weft, Kind::Envoy] {
        let c = tokio::task::block_in_place(|| {
            mesh.sidecar(
                client_kind,
                "client",
                &fresh,
                &[("SERVER", web.proxy.port("LISTEN"))],
            )
        });
        let out = c.proxy.addr("OUT");
        assert_eq!(through(out, true).await, "app");
        let (server_before, client_before) = (serial(&web.proxy).await, serial(&c.proxy).await);
        assert!(!server_before.is_empty() && !client_before.is_empty());
        let mut failed = Vec::new();
        let started = Instant::now();
        for i in 0..2000 {
            let got = support::upstream_name(out, "web.shop").await;
            if got != "app" {
                failed.push(format!("request {i}: {got}"));
            }
            // Spread over at least six seconds: two renewals or more at each end.
            let due = Duration::from_millis(3 * (i + 1));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        assert!(
            failed.is_empty(),
            "{client_kind:?} client: {} lost: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert_ne!(
            serial(&web.proxy).await,
            server_before,
            "the server renewed"
        );
        assert_ne!(
            serial(&c.proxy).await,
            client_before,
            "the {client_kind:?} client renewed"
        );
    }
}
