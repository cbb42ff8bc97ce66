//! Identities under `weft up --secure-xds-address`: each Weft proxy, as its own agent, gets a
//! workload certificate from the mesh CA naming the SPIFFE identity of its workload's service
//! account (Istio's ingress gateway account for the gateway), seen on its admin `/certs` as on
//! Envoy's; each credential proves its own proxy's identity only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::up::Up;
use support::{Req, try_request};

/// The SPIFFE URIs of a proxy's `default` secret, from its admin `/certs`.
async fn identities(admin: SocketAddr) -> Vec<String> {
    let Ok(r) = try_request(admin, &Req::get("admin", "/certs")).await else {
        return Vec::new();
    };
    let Some(v) = r.json() else {
        return Vec::new();
    };
    v["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .flat_map(|c| {
            c["subject_alt_names"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s["uri"].as_str().map(str::to_string))
        .collect()
}

fn admin(status: &Value, name: &str) -> SocketAddr {
    Up::proxy(status, name).unwrap()["admin"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_weft_proxy_gets_the_identity_of_its_service_account() {
    let echo = support::start_echo("web-v1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.yaml"),
        support::up::base_mesh(echo.port()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("api.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: api, namespace: shop }\nspec: { address: 127.0.0.1, serviceAccount: api-sa, labels: { app: api } }\n",
    )
    .unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
        "--ca-dir".to_string(),
        ca_dir.path().display().to_string(),
        "--workload-cert-ttl-s".to_string(),
        "7200".to_string(),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(dir.path(), false, &args));
    let status = tokio::task::block_in_place(|| {
        up.wait_status("three proxies", |s| {
            s["proxies"].as_array().is_some_and(|p| p.len() == 3)
        })
    });
    let want = [
        (
            "gateway istio=ingressgateway",
            "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        ),
        (
            "sidecar default/web-v1",
            "spiffe://cluster.local/ns/default/sa/default",
        ),
        (
            "sidecar shop/api",
            "spiffe://cluster.local/ns/shop/sa/api-sa",
        ),
    ];
    for (name, identity) in want {
        let admin = admin(&status, name);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = identities(admin).await;
            if got == [identity] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: identities {got:?}, want {identity}\n{}",
                up.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The CA's default lifetime, as asked (the CA backdates by a minute for clock skew).
    let certs = try_request(
        admin(&status, "sidecar shop/api"),
        &Req::get("admin", "/certs"),
    )
    .await
    .unwrap()
    .json()
    .unwrap();
    let leaf = &certs["certificates"][0]["cert_chain"][0];
    let lifetime = leaf["expiration_time_seconds"].as_u64().unwrap()
        - leaf["valid_from_seconds"].as_u64().unwrap();
    assert_eq!(lifetime, 7200 + 60, "{certs}");
    // The credentials are the proxies' own: readable by their owner only.
    let run_dir = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == format!("weft-up-{}", up.child.id()))
        })
        .expect("the run folder");
    let credential = run_dir.join("sidecar-shop-api.credential");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&credential).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// Connects gRPC to a Unix socket (tonic dials URIs; this dials the socket whatever the URI).
#[derive(Clone)]
struct UnixConnector(std::path::PathBuf);

impl tonic::codegen::Service<tonic::codegen::http::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::codegen::http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            Ok(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        })
    }
}

/// The SPIFFE URIs of secret `default` as an agent serves it over SDS on `socket`, read with
/// `openssl x509`.
async fn sds_identities(socket: &std::path::Path, scratch: &std::path::Path) -> Vec<String> {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
    use prost::Message;
    let Ok(channel) = tonic::transport::Endpoint::from_static("http://agent")
        .connect_with_connector(UnixConnector(socket.to_path_buf()))
        .await
    else {
        return Vec::new();
    };
    let Ok(response) = SecretDiscoveryServiceClient::new(channel)
        .fetch_secrets(DiscoveryRequest {
            resource_names: vec!["default".into()],
            ..Default::default()
        })
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for any in response.into_inner().resources {
        let Ok(s) = Secret::decode(any.value.as_slice()) else {
            continue;
        };
        let Some(secret::Type::TlsCertificate(tls)) = s.r#type else {
            continue;
        };
        let Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(
            pem,
        )) = tls.certificate_chain.and_then(|d| d.specifier)
        else {
            continue;
        };
        let file = scratch.join("leaf.pem");
        std::fs::write(&file, pem).unwrap();
        let text = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&file)
            .output()
            .unwrap();
        out.extend(
            String::from_utf8_lossy(&text.stdout)
                .split([',', '\n'])
                .filter_map(|s| s.trim().strip_prefix("URI:").map(str::to_string)),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envoy_gets_its_identity_from_an_agent_of_its_own() {
    let echo = support::start_echo("web-v1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.yaml"),
        support::up::base_mesh(echo.port()),
    )
    .unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let args = [
        "--secure-xds-address".to_string(),
        "127.0.0.1:0".to_string(),
        "--ca-dir".to_string(),
        ca_dir.path().display().to_string(),
    ];
    let up = tokio::task::block_in_place(|| Up::start_with(dir.path(), true, &args));
    tokio::task::block_in_place(|| {
        up.wait_status("two proxies", |s| {
            s["proxies"].as_array().is_some_and(|p| p.len() == 2)
        })
    });
    let run_dir = std::env::temp_dir().join(format!("weft-up-{}", up.child.id()));
    let scratch = tempfile::tempdir().unwrap();
    for (socket, identity) in [
        (
            "gateway-istio-ingressgateway.sds.sock",
            "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        ),
        (
            "sidecar-default-web-v1.sds.sock",
            "spiffe://cluster.local/ns/default/sa/default",
        ),
    ] {
        let path = run_dir.join(socket);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = sds_identities(&path, scratch.path()).await;
            if got == [identity] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{socket}: {got:?}, want {identity}\n{}",
                up.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Envoy's bootstrap names its agent's socket as Istio's `sds-grpc` cluster.
    let bootstrap: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("sidecar-default-web-v1.yaml")).unwrap(),
    )
    .unwrap();
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap();
    let sds = clusters.iter().find(|c| c["name"] == "sds-grpc").unwrap();
    assert_eq!(
        sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"],
        run_dir
            .join("sidecar-default-web-v1.sds.sock")
            .display()
            .to_string()
    );
}
