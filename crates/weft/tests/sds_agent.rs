//! `weft agent` as Istio's pilot-agent for stock Envoy: real Envoy, with a listener that takes
//! its certificate from SDS secret `default` on the agent's Unix socket (as istiod's config
//! references it), presents the workload certificate the agent got from the mesh CA, and the
//! renewed one after renewal. What Envoy presents is read and verified by `openssl`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Kind, Proxy};
use weft_ca::Identity;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A listener whose certificate is SDS secret `default` from the `sds-grpc` cluster: Istio's
/// shape, with the cluster on the agent's socket.
fn bootstrap(socket: &Path) -> String {
    format!(
        r#"
node: {{ id: sidecar~127.0.0.1~web.shop~shop.svc.cluster.local, cluster: web }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{ADMIN}} }} }}
static_resources:
  listeners:
  - name: inbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{LISTEN}} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: default
              sds_config:
                api_config_source:
                  api_type: GRPC
                  transport_api_version: V3
                  grpc_services: [ {{ envoy_grpc: {{ cluster_name: sds-grpc }} }} ]
                resource_api_version: V3
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inbound
          cluster: app
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{APP}} }} }} }} }} ] }} ]
  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: sds-grpc
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ pipe: {{ path: {socket} }} }} }} }} ] }} ]
"#,
        socket = socket.display()
    )
}

/// The certificate Envoy presents on `port`, as `openssl x509 -text` prints it, after checking
/// that it verifies against `root`.
fn presented(dir: &Path, port: u16, root: &Path) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let leaf = dir.join("presented.pem");
    std::fs::write(&leaf, &text[begin..end]).ok()?;
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg(&leaf)
        .output()
        .ok()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // A 4 s certificate can expire between the handshake and this check when the machine is
    // loaded (a debug build renews slowly there): look again, the next one must verify.
    if !verify.status.success() && said.contains("expired") {
        return None;
    }
    assert!(verify.status.success(), "{said}");
    let x509 = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&leaf)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&x509.stdout).into_owned())
}

fn serial(text: &str) -> String {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "Serial Number:" {
            return lines.next().unwrap_or("").trim().to_string();
        }
    }
    String::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_presents_the_agents_certificate_over_sds_and_its_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = support::ca::start(dir.path()).await;
    let token = mesh
        .credentials
        .issue(Identity::new("cluster.local", "shop", "web"))
        .unwrap();
    let (ca_address, root) = (mesh.address, mesh.root.clone());
    let token_file = dir.path().join("credential");
    std::fs::write(&token_file, &token).unwrap();
    let socket = dir.path().join("sds.sock");
    let _agent = Killed(
        Command::new(support::weft_binary())
            .arg("agent")
            .arg("--ca-address")
            .arg(ca_address.to_string())
            .arg("--ca-root")
            .arg(&root)
            .arg("--credential-file")
            .arg(&token_file)
            .args(["--cert-ttl-s", "4", "-l", "warn", "--sds-socket"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let app = support::start_tcp_echo().await;
    let envoy = tokio::task::block_in_place(|| {
        Proxy::start(Kind::Envoy, &bootstrap(&socket), &[("APP", app.port())])
    });
    let port = envoy.port("LISTEN");

    let first = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(t) = presented(dir.path(), port, &root) {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "no certificate presented\n{}",
                envoy.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(
        first.contains("URI:spiffe://cluster.local/ns/shop/sa/web"),
        "{first}"
    );
    let certs = envoy.admin("/certs").await;
    assert!(
        certs.contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{certs}"
    );

    // Four seconds of life: renewed after about two, and Envoy presents the new one.
    let first_serial = serial(&first);
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            if let Some(t) = presented(dir.path(), port, &root)
                && serial(&t) != first_serial
            {
                assert!(t.contains("URI:spiffe://cluster.local/ns/shop/sa/web"));
                break;
            }
            assert!(Instant::now() < deadline, "the renewal never reached Envoy");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}
