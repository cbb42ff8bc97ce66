//! `x-forwarded-client-cert` and the ALPN a client of the mesh offers, in real Envoy 1.40 and
//! `weft proxy` from one bootstrap (tests/data/xfcc.yaml): the header the upstream receives
//! must be the same byte for byte, for a client certificate with a subject, a SPIFFE URI and a
//! DNS name, under APPEND_FORWARD (what istiod writes on a sidecar's inbound listeners),
//! SANITIZE_SET (also with the client's certificate and chain, as on istiod's gateways) and the
//! default SANITIZE; and a client offering only Istio's ALPN values to a
//! server that speaks `h2` and `http/1.1` is served with no protocol agreed, not refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rcgen::DnType;
use support::certs::{ca, client_config, leaf_named};
use support::{Kind, Proxy, Req, try_request_tls_alpn};

const TEMPLATE: &str = include_str!("data/xfcc.yaml");
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfcc_and_istio_alpn_match_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("weft test CA");
    let server = leaf_named(&ca1, &["server.test"], &[SERVER_ID], &[]);
    let client = leaf_named(
        &ca1,
        &["client.test", "other.test"],
        &[CLIENT_ID],
        &[
            (DnType::CommonName, "client, the first"),
            (DnType::OrganizationName, "weft"),
        ],
    );
    for (file, text) in [
        ("ca.pem", &ca1.pem),
        ("server.pem", &server.pem),
        ("server-key.pem", &server.key_pem),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let echo = support::start_echo("echo").await;
    let template = TEMPLATE.replace("@DIR@", dir.path().to_str().unwrap());
    let given = [("ECHO", echo.port())];
    let t = template.clone();
    let envoy = tokio::task::spawn_blocking(move || Proxy::start(Kind::Envoy, &t, &given));
    let weft = tokio::task::spawn_blocking(move || Proxy::start(Kind::Weft, &template, &given));
    let (envoy, weft) = (envoy.await.unwrap(), weft.await.unwrap());
    let config = client_config(&ca1, Some(&client));

    let mut req = Req::get("server.test", "/");
    req.headers.push((
        "x-forwarded-client-cert".into(),
        "By=spiffe://forged;Hash=00".into(),
    ));
    let mut seen = Vec::new();
    for proxy in [&envoy, &weft] {
        let mut got = Vec::new();
        for (listener, alpn) in [
            ("APPEND", vec![b"http/1.1".to_vec()]),
            ("SET", vec![b"http/1.1".to_vec()]),
            ("SANITIZE", vec![b"http/1.1".to_vec()]),
            ("GATEWAY", vec![b"http/1.1".to_vec()]),
            // What a client sidecar offers for plain HTTP/1.1 over the mesh's mTLS.
            (
                "APPEND",
                vec![b"istio-peer-exchange".to_vec(), b"istio".to_vec()],
            ),
        ] {
            let r = try_request_tls_alpn(proxy.addr(listener), &req, &config, "server.test", alpn)
                .await
                .unwrap_or_else(|e| panic!("{:?} {listener}: {e}", proxy.kind));
            assert_eq!(r.status, 200, "{:?} {listener}", proxy.kind);
            let j = r.json().unwrap();
            got.push(j["headers"]["x-forwarded-client-cert"].clone());
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "Envoy, then Weft");
    let append = seen[1][0].as_str().unwrap();
    assert!(
        append.starts_with("By=spiffe://forged;Hash=00,"),
        "{append}"
    );
    let element = append.split_once(',').unwrap().1;
    assert!(
        element.starts_with(&format!("By={SERVER_ID};Hash=")),
        "{element}"
    );
    assert!(element.contains(&format!(";URI={CLIENT_ID};DNS=client.test;DNS=other.test")));
    assert!(element.contains("Subject=\""), "{element}");
    let set = seen[1][1].as_str().unwrap();
    assert!(
        set.starts_with(&format!("By={SERVER_ID};Hash="))
            && set.ends_with(&format!(";URI={CLIENT_ID}")),
        "{set}"
    );
    assert!(
        seen[1][2].is_null(),
        "SANITIZE keeps nothing: {}",
        seen[1][2]
    );
    let gateway = seen[1][3].as_str().unwrap();
    assert!(
        gateway.contains(";Cert=\"-----BEGIN%20CERTIFICATE-----%0A")
            && gateway.contains(";Chain=\"-----BEGIN%20CERTIFICATE-----%0A"),
        "{gateway}"
    );
}
