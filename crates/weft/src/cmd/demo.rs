//! `weft demo`: the canary tutorial of the seeds, end to end on this machine. Three versions of
//! a website run as built-in workloads behind the ingress gateway on 127.0.0.1:8080, each with
//! its sidecar in front and a workload identity from the mesh CA; the demo writes the
//! tutorial's YAML to a folder, then walks the three steps by editing it — all traffic to
//! version-1, a 90/10 split, a header that reaches version-3 — and shows where the requests
//! went after each edit. A fourth step turns STRICT mTLS on with one PeerAuthentication: a
//! plaintext client is refused at a workload's sidecar, the gateway still gets through, and the
//! identities both ends of that hop presented are shown. A fifth adds authorization
//! (`demo_policy`): only the gateway may call, only to GET, and `/admin` wants a JWT. The mesh
//! then keeps running for the user's own edits.

use super::up::{self, Up};
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Where the demo writes its YAML (edit it while the demo runs).
    #[arg(long, default_value = "weft-demo")]
    pub dir: PathBuf,
    /// Walk the three steps, then exit instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Requests sent through the gateway after each step.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub xds_address: String,
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub monitoring_address: String,
    /// The mesh CA and ADS over TLS (Istio's 15012): every proxy gets its workload identity,
    /// and the mesh speaks mTLS.
    #[arg(long, default_value = "127.0.0.1:15012")]
    pub secure_xds_address: String,
    /// Where the mesh CA keeps its root [default: weft up's, $XDG_STATE_HOME/weft/ca, else
    /// ~/.local/state/weft/ca].
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// The port the ingress gateway listens on for the Gateway's port 80.
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,
    /// First port for the proxies' admin and HTTP proxy ports; 0 picks free ports.
    #[arg(long, default_value_t = 15100)]
    pub port_base: u16,
    /// Ports of the three website versions.
    #[arg(long, num_args = 3, default_values_t = [18081u16, 18082, 18083])]
    pub website_ports: Vec<u16>,
    #[arg(short = 'l', long = "log-level", default_value = "warn")]
    pub log_level: String,
    /// Scrape the mesh with Debian's `prometheus` (as `weft up --prometheus`).
    #[arg(long)]
    pub prometheus: bool,
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub prometheus_address: String,
}

/// The workloads: the tutorial's `website` Service, with its three Deployments as
/// WorkloadEntries (there is no Kubernetes to run them).
fn workloads(ports: &[u16]) -> String {
    let mut out = String::from(
        "# The tutorial's Service; its three Deployments (web-v1..3) run here as WorkloadEntries.\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: website\nspec:\n  ports:\n  - port: 80\n    \
         targetPort: 80\n    protocol: TCP\n    name: http\n  selector:\n    app: website\n",
    );
    for (i, port) in ports.iter().enumerate() {
        let v = i + 1;
        out.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: web-v{v}\n  \
             namespace: default\nspec:\n  address: 127.0.0.1\n  ports:\n    http: {port}\n  labels:\n    \
             app: website\n    version: website-version-{v}\n  serviceAccount: website\n"
        ));
    }
    out
}

const GATEWAY_AND_RULE: &str = include_str!("demo-gateway.yaml");

/// The VirtualService of each step.
const STEPS: [(&str, &str); 3] = [
    (
        "step 1: all traffic to version-1",
        r#"  http:
  - route:
    - destination:
        host: website
        subset: version-1
"#,
    ),
    (
        "step 2: canary, 90% to version-1 and 10% to version-2",
        r#"  http:
  - route:
    - destination:
        host: website
        subset: version-1
      weight: 90
    - destination:
        host: website
        subset: version-2
      weight: 10
"#,
    ),
    (
        "step 3: requests with header x-website-version: 3 go to version-3",
        r#"  http:
  - match:
    - headers:
        x-website-version:
          exact: "3"
    route:
    - destination:
        host: website
        subset: version-3
  - route:
    - destination:
        host: website
        subset: version-1
      weight: 90
    - destination:
        host: website
        subset: version-2
      weight: 10
"#,
    ),
];

fn virtual_service(step: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata:\n  \
         name: website-virtual-service\nspec:\n  hosts:\n  - \"*\"\n  gateways:\n  - website-gateway\n{step}"
    )
}

/// One version of the website: a page that says which version it is.
async fn serve_website(listener: tokio::net::TcpListener, version: usize) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<_>| async move {
                let body = format!("<h1>Welcome to the website, version-{version}</h1>\n");
                let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("text/html"));
                resp.headers_mut()
                    .insert("x-website-version", http::HeaderValue::from(version as u64));
                // Who called, as the website's sidecar told it: the demo shows it.
                if let Some(xfcc) = req.headers().get("x-forwarded-client-cert") {
                    resp.headers_mut()
                        .insert("x-forwarded-client-cert", xfcc.clone());
                }
                Ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A GET through the gateway: the version that answered, or why none did.
async fn get(gateway: SocketAddr, header: Option<(&str, &str)>) -> Result<String, String> {
    get_with_caller(gateway, header).await.map(|(v, _)| v)
}

/// What a request through the gateway got: its status, the version that answered (if one
/// did), who the website was told called it, and the body.
pub(super) struct Answer {
    pub status: u16,
    pub version: Option<String>,
    pub caller: Option<String>,
    pub body: String,
}

/// A request to `website.example.com` at `gateway` on a new connection.
pub(super) async fn request(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(gateway)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "website.example.com");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let text = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = resp.status().as_u16();
    let version = text("x-website-version").map(|v| format!("version-{v}"));
    let caller = text("x-forwarded-client-cert");
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
    Ok(Answer {
        status,
        version,
        caller,
        body,
    })
}

/// `get`, with the `x-forwarded-client-cert` the website was given.
async fn get_with_caller(
    gateway: SocketAddr,
    header: Option<(&str, &str)>,
) -> Result<(String, Option<String>), String> {
    let headers: Vec<(&str, &str)> = header.into_iter().collect();
    let a = request(gateway, "GET", "/", &headers).await?;
    let status = a.status;
    a.version
        .map(|v| (v, a.caller))
        .ok_or_else(|| format!("HTTP {status}"))
}

/// Where `n` requests went.
async fn tally(
    gateway: SocketAddr,
    n: usize,
    header: Option<(&str, &str)>,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let key = get(gateway, header).await.unwrap_or_else(|e| e);
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn show(t: &BTreeMap<String, usize>, n: usize) -> String {
    t.iter()
        .map(|(k, v)| format!("{k}: {v} ({:.0}%)", *v as f64 * 100.0 / n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until requests through the gateway get an answer from `expected`.
async fn until_serving(
    gateway: SocketAddr,
    expected: &str,
    header: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if get(gateway, header).await.as_deref() == Ok(expected) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway on {gateway} did not route to {expected} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    super::control_plane::init_logging(&args.log_level);
    anyhow::ensure!(
        args.website_ports.len() == 3,
        "--website-ports takes three ports"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        std::fs::create_dir_all(&args.dir)?;
        // Steps 4 and 5 write these; a run before this one may have left them.
        let _ = std::fs::remove_file(args.dir.join("security.yaml"));
        let _ = std::fs::remove_file(args.dir.join("policy.yaml"));
        let routing = args.dir.join("website-routing.yaml");
        write(&args.dir.join("website.yaml"), &workloads(&args.website_ports))?;
        write(
            &routing,
            &format!("{GATEWAY_AND_RULE}---\n{}", virtual_service(STEPS[0].1)),
        )?;
        for (i, port) in args.website_ports.iter().enumerate() {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", *port))
                .await
                .with_context(|| format!("website version-{} cannot listen on 127.0.0.1:{port}", i + 1))?;
            tokio::spawn(serve_website(l, i + 1));
        }
        let up_args = up::Args {
            control: super::control_plane::ControlPlaneArgs {
                dir: args.dir.clone(),
                mesh_config: None,
                xds_address: args.xds_address.clone(),
                monitoring_address: args.monitoring_address.clone(),
                log_level: args.log_level.clone(),
                secure_xds_address: Some(args.secure_xds_address.clone()),
                ca_dir: args.ca_dir.clone(),
                cacerts: None,
                workload_cert_ttl_s: 86_400,
            },
            gateway_address: "127.0.0.1".into(),
            gateway_ports: vec![format!("80={}", args.gateway_port)],
            port_base: args.port_base,
            envoy: None,
            keep_logs: false,
            status_file: None,
            prometheus: args.prometheus,
            prometheus_address: args.prometheus_address.clone(),
        };
        let mut mesh: Up = up::start(&up_args).await?;
        let gateway = SocketAddr::from(([127, 0, 0, 1], args.gateway_port));
        println!("weft demo: the canary tutorial, with its YAML in {}\n", args.dir.display());
        print!("{}", mesh.describe("127.0.0.1"));
        let mut signals = up::StopSignals::listen()?;
        // Where version-1's sidecar takes the mesh's traffic for it.
        let inbound = {
            let fleet = mesh.fleet.lock().unwrap_or_else(|p| p.into_inner());
            fleet
                .fronts
                .of("default", "web-v1")
                .first()
                .and_then(|(address, _, port)| {
                    format!("{}:{port}", weft_xds::translate::fronting_host(address)).parse().ok()
                })
        };
        let result = tokio::select! {
            result = steps(args, gateway, &routing, inbound) => result,
            signal = signals.first() => {
                tracing::info!(signal, "stopping the demo");
                mesh.stop();
                return Ok(ExitCode::SUCCESS);
            }
        };
        if let Err(e) = &result {
            eprintln!("weft demo: {e:#}");
            mesh.stop();
            return Ok(ExitCode::from(1));
        }
        println!("\nTry it:");
        println!("  curl http://127.0.0.1:{}/", args.gateway_port);
        println!("  curl -H 'x-website-version: 3' http://127.0.0.1:{}/", args.gateway_port);
        if let Some(inbound) = inbound {
            println!("  curl http://{inbound}/    (version-1's sidecar: refused, mTLS only)");
        }
        println!("  curl -X POST http://127.0.0.1:{}/    (403: only GET is allowed)", args.gateway_port);
        println!(
            "  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:{}/admin    (TOKEN: the demo's token above)",
            args.gateway_port
        );
        println!("  weft proxy-status --control-plane http://{}", mesh.control.monitoring);
        if args.exit {
            mesh.stop();
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "\nEdit {} (weights, matches, subsets): each save is validated and pushed. Ctrl-C stops the demo.",
            routing.display()
        );
        signals.first().await;
        mesh.stop();
        Ok(ExitCode::SUCCESS)
    })
}

async fn steps(
    args: &Args,
    gateway: SocketAddr,
    routing: &Path,
    inbound: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let n = args.requests;
    for (i, (title, vs)) in STEPS.iter().enumerate() {
        if i > 0 {
            write(
                routing,
                &format!("{GATEWAY_AND_RULE}---\n{}", virtual_service(vs)),
            )?;
        }
        println!(
            "\n{title}  (VirtualService website-virtual-service in {})",
            routing.display()
        );
        match i {
            0 => until_serving(gateway, "version-1", None).await?,
            1 => until_serving(gateway, "version-2", None).await?,
            _ => until_serving(gateway, "version-3", Some(("x-website-version", "3"))).await?,
        }
        let plain = tally(gateway, n, None).await;
        println!(
            "  {n} requests:                              {}",
            show(&plain, n)
        );
        if i == 2 {
            let tagged = tally(gateway, n, Some(("x-website-version", "3"))).await;
            println!(
                "  {n} requests with x-website-version: 3:    {}",
                show(&tagged, n)
            );
        }
    }
    let inbound = inbound.context("version-1 has no sidecar in front of it")?;
    strict_mtls(args, gateway, inbound).await?;
    super::demo_policy::step(&args.dir, gateway).await
}

/// One PeerAuthentication turns STRICT mTLS on for the whole mesh.
const STRICT: &str = "# Step 4: the whole mesh takes mTLS only.\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n";

/// Step 4: STRICT mTLS. A plaintext client at version-1's sidecar is refused; the gateway,
/// which speaks the mesh's mTLS, still gets through; and the website shows who called it.
async fn strict_mtls(args: &Args, gateway: SocketAddr, inbound: SocketAddr) -> anyhow::Result<()> {
    let file = args.dir.join("security.yaml");
    println!(
        "\nstep 4: STRICT mTLS for the whole mesh  (PeerAuthentication default in istio-system, in {})",
        file.display()
    );
    let before = get(inbound, None).await.unwrap_or_else(|e| e);
    println!("  before, a plaintext client at {inbound} (version-1's sidecar) got: {before}");
    write(&file, STRICT)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        match get(inbound, None).await {
            Err(e) if !e.starts_with("HTTP ") => break e,
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "version-1's sidecar at {inbound} still takes plaintext 15 s after STRICT"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("  now, a plaintext client at {inbound}: refused ({refused})");
    until_serving(gateway, "version-1", None).await?;
    let n = args.requests;
    let through = tally(gateway, n, None).await;
    println!(
        "  {n} requests through the gateway:        {}",
        show(&through, n)
    );
    let (_, caller) = get_with_caller(gateway, None)
        .await
        .map_err(|e| anyhow::anyhow!("through the gateway: {e}"))?;
    let caller = caller.context("the website was not told who called it")?;
    // The last element is the hop into the website: its sidecar (By) and the gateway (URI).
    let last = caller.rsplit(',').next().unwrap_or_default();
    let field = |key: &str| {
        last.split(';')
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or("(none)")
            .to_string()
    };
    println!("  identities on the mTLS hop into the website:");
    println!(
        "    {:<33}{}",
        "the ingress gateway presented",
        field("URI=")
    );
    println!(
        "    {:<33}{}",
        "the website's sidecar presented",
        field("By=")
    );
    Ok(())
}
