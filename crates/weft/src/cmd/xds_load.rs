//! `weft xds-load`: many simulated sidecars on one control plane, for the scale benchmark
//! (`bench/control-plane.sh`). Each opens an ADS stream (state of the world or delta) as a
//! captured sidecar would, subscribes to clusters, listeners, their endpoints and routes, and
//! acknowledges every response at once. The tool then edits a config file and measures how long
//! until every simulated proxy has the change.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_xds::type_url;

#[derive(clap::Args)]
pub struct Args {
    /// The control plane's ADS address.
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds: String,
    /// Simulated proxies.
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    /// Use delta xDS instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// The namespace the simulated sidecars run in.
    #[arg(long, default_value = "load")]
    namespace: String,
    /// After every proxy has its config: copy EDIT_FROM over EDIT_TO and time the push.
    #[arg(long, requires = "edit_to")]
    edit_from: Option<PathBuf>,
    #[arg(long)]
    edit_to: Option<PathBuf>,
}

/// What every stream reports: how many responses of each kind it has, and when it last got one.
#[derive(Default)]
struct Progress {
    /// Streams that hold all four types.
    complete: AtomicUsize,
    /// Responses received since the edit, per stream counted once.
    updated: AtomicUsize,
    /// Nanoseconds since `epoch` of the last stream's first post-edit response.
    last_update_ns: AtomicU64,
    first_update_ns: AtomicU64,
    edit_ns: AtomicU64,
    responses: AtomicU64,
    bytes: AtomicU64,
}

const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::LISTENER,
    type_url::ENDPOINT,
    type_url::ROUTE,
];

fn node(i: usize, ns: &str) -> Node {
    let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
    Node {
        id: format!("sidecar~{ip}~client-{i}.{ns}~{ns}.svc.cluster.local"),
        cluster: format!("client-{i}.{ns}"),
        ..Default::default()
    }
}

/// The route tables a sidecar's listeners name: `0.0.0.0_PORT` listeners use RDS `PORT`.
fn route_names(listener_names: &BTreeSet<String>) -> Vec<String> {
    listener_names
        .iter()
        .filter_map(|n| n.strip_prefix("0.0.0.0_"))
        .map(str::to_string)
        .collect()
}

/// The EDS clusters: Istio's outbound clusters are named as their EDS service names.
fn eds_names(cluster_names: &BTreeSet<String>) -> Vec<String> {
    cluster_names
        .iter()
        .filter(|n| n.starts_with("outbound|"))
        .cloned()
        .collect()
}

/// What a simulated proxy reads of a response: the resources stay bytes (as a proxy that
/// accepted them would hand them on), so that the tool measures the control plane, not itself.
#[derive(Clone, PartialEq, prost::Message)]
struct LightResponse {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    resources: Vec<bytes::Bytes>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LightResource {
    #[prost(string, tag = "3")]
    name: String,
    #[prost(bytes = "bytes", optional, tag = "2")]
    resource: Option<bytes::Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LightDeltaResponse {
    #[prost(message, repeated, tag = "2")]
    resources: Vec<LightResource>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
    #[prost(string, repeated, tag = "6")]
    removed_resources: Vec<String>,
}

/// Opens one ADS stream with light decoding of the responses.
async fn open<Req, Resp>(
    channel: tonic::transport::Channel,
    path: &'static str,
    requests: ReceiverStream<Req>,
) -> anyhow::Result<tonic::codec::Streaming<Resp>>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = http::uri::PathAndQuery::from_static(path);
    Ok(grpc
        .streaming(tonic::Request::new(requests), path, codec)
        .await?
        .into_inner())
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

struct Tracker {
    seen: [bool; 4],
    complete: bool,
    updated: bool,
    epoch: Instant,
    progress: Arc<Progress>,
}

impl Tracker {
    fn got(&mut self, type_url: &str, bytes: usize) {
        let p = &self.progress;
        p.responses.fetch_add(1, Ordering::Relaxed);
        p.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(i) = TYPES.iter().position(|t| *t == type_url) {
            self.seen[i] = true;
        }
        if !self.complete && self.seen.iter().all(|s| *s) {
            self.complete = true;
            p.complete.fetch_add(1, Ordering::Relaxed);
        }
        let edit = p.edit_ns.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_nanos() as u64;
        if edit != 0 && !self.updated && now > edit && type_url == type_url::ROUTE {
            self.updated = true;
            p.updated.fetch_add(1, Ordering::Relaxed);
            p.last_update_ns.fetch_max(now, Ordering::Relaxed);
            let _ =
                p.first_update_ns
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

async fn sotw(
    channel: tonic::transport::Channel,
    node: Node,
    mut tracker: Tracker,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let request = |type_url: &str, names: Vec<String>| DiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names: names,
        ..Default::default()
    };
    let mut first = request(type_url::CLUSTER, Vec::new());
    first.node = Some(node);
    tx.send(first).await?;
    tx.send(request(type_url::LISTENER, Vec::new())).await?;
    let mut responses =
        open::<DiscoveryRequest, LightResponse>(channel, SOTW_PATH, ReceiverStream::new(rx))
            .await?;
    let mut subscribed: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    while let Some(resp) = responses.message().await? {
        tracker.got(&resp.type_url, resp.resources.iter().map(|r| r.len()).sum());
        let names: BTreeSet<String> = resp
            .resources
            .iter()
            .filter_map(|r| any_name(&resp.type_url, r))
            .collect();
        let mut ack = request(&resp.type_url, Vec::new());
        ack.version_info = resp.version_info.clone();
        ack.response_nonce = resp.nonce.clone();
        let follow = match resp.type_url.as_str() {
            type_url::CLUSTER => Some((0, type_url::ENDPOINT, eds_names(&names))),
            type_url::LISTENER => Some((1, type_url::ROUTE, route_names(&names))),
            type_url::ENDPOINT => {
                ack.resource_names = subscribed[0].clone();
                None
            }
            _ => {
                ack.resource_names = subscribed[1].clone();
                None
            }
        };
        tx.send(ack).await?;
        if let Some((i, t, wanted)) = follow
            && wanted != subscribed[i]
        {
            subscribed[i] = wanted.clone();
            tx.send(request(t, wanted)).await?;
        }
    }
    Ok(())
}

async fn delta(
    channel: tonic::transport::Channel,
    node: Node,
    mut tracker: Tracker,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let request = |type_url: &str, names: Vec<String>| DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: names,
        ..Default::default()
    };
    let mut first = request(type_url::CLUSTER, Vec::new());
    first.node = Some(node);
    tx.send(first).await?;
    tx.send(request(type_url::LISTENER, Vec::new())).await?;
    let mut responses = open::<DeltaDiscoveryRequest, LightDeltaResponse>(
        channel,
        DELTA_PATH,
        ReceiverStream::new(rx),
    )
    .await?;
    let mut held: [BTreeSet<String>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let mut subscribed: [BTreeSet<String>; 2] = [BTreeSet::new(), BTreeSet::new()];
    while let Some(resp) = responses.message().await? {
        tracker.got(
            &resp.type_url,
            resp.resources
                .iter()
                .map(|r| r.resource.as_ref().map_or(0, bytes::Bytes::len))
                .sum(),
        );
        let slot = match resp.type_url.as_str() {
            type_url::CLUSTER => Some(0),
            type_url::LISTENER => Some(1),
            _ => None,
        };
        if let Some(i) = slot {
            for r in &resp.resources {
                held[i].insert(r.name.clone());
            }
            for r in &resp.removed_resources {
                held[i].remove(r);
            }
        }
        let mut ack = request(&resp.type_url, Vec::new());
        ack.response_nonce = resp.nonce.clone();
        tx.send(ack).await?;
        if let Some(i) = slot {
            let wanted: BTreeSet<String> = if i == 0 {
                eds_names(&held[0]).into_iter().collect()
            } else {
                route_names(&held[1]).into_iter().collect()
            };
            let add: Vec<String> = wanted.difference(&subscribed[i]).cloned().collect();
            let drop: Vec<String> = subscribed[i].difference(&wanted).cloned().collect();
            if !add.is_empty() || !drop.is_empty() {
                let mut r = request(
                    if i == 0 {
                        type_url::ENDPOINT
                    } else {
                        type_url::ROUTE
                    },
                    add,
                );
                r.resource_names_unsubscribe = drop;
                tx.send(r).await?;
                subscribed[i] = wanted;
            }
        }
    }
    Ok(())
}

/// The name of a cluster or listener in an encoded `Any` without decoding the rest of it: the
/// Any's value (field 2) holds the resource, whose field 1 is the name in both.
fn any_name(type_url: &str, any: &[u8]) -> Option<String> {
    use prost::Message;
    #[derive(Clone, PartialEq, prost::Message)]
    struct AnyValue {
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Named {
        #[prost(string, tag = "1")]
        name: String,
    }
    match type_url {
        type_url::CLUSTER | type_url::LISTENER => {
            let value = AnyValue::decode(any).ok()?.value;
            Named::decode(value.as_slice()).ok().map(|n| n.name)
        }
        _ => None,
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let progress = Arc::new(Progress::default());
        let epoch = Instant::now();
        let endpoint = format!("http://{}", args.xds);
        // Streams share a few HTTP/2 connections, as many proxies would share a network.
        let mut channels = Vec::new();
        for _ in 0..8 {
            channels.push(
                tonic::transport::Endpoint::from_shared(endpoint.clone())?
                    .connect()
                    .await?,
            );
        }
        let start = Instant::now();
        for i in 0..args.proxies {
            let client = channels[i % channels.len()].clone();
            let tracker = Tracker {
                seen: [false; 4],
                complete: false,
                updated: false,
                epoch,
                progress: progress.clone(),
            };
            let node = node(i, &args.namespace);
            let is_delta = args.delta;
            tokio::spawn(async move {
                let result = if is_delta {
                    delta(client, node, tracker).await
                } else {
                    sotw(client, node, tracker).await
                };
                if let Err(e) = result {
                    eprintln!("stream {i}: {e}");
                }
            });
        }
        let n = args.proxies;
        wait(
            || progress.complete.load(Ordering::Relaxed) >= n,
            Duration::from_secs(300),
        )
        .await?;
        let initial = start.elapsed();
        let mut report = json!({
            "proxies": n,
            "protocol": if args.delta { "delta" } else { "sotw" },
            "initial_sync_s": initial.as_secs_f64(),
            "initial_bytes": progress.bytes.load(Ordering::Relaxed),
        });
        if let (Some(from), Some(to)) = (&args.edit_from, &args.edit_to) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let text = std::fs::read(from)?;
            let tmp = to.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            let edit = epoch.elapsed().as_nanos() as u64;
            progress.edit_ns.store(edit, Ordering::Relaxed);
            std::fs::rename(&tmp, to)?;
            wait(
                || progress.updated.load(Ordering::Relaxed) >= n,
                Duration::from_secs(300),
            )
            .await?;
            let first = progress.first_update_ns.load(Ordering::Relaxed);
            let last = progress.last_update_ns.load(Ordering::Relaxed);
            report["edit_to_all_pushed_s"] = json!((last - edit) as f64 / 1e9);
            report["edit_to_first_pushed_s"] = json!((first - edit) as f64 / 1e9);
            report["first_to_last_pushed_s"] = json!((last - first) as f64 / 1e9);
        }
        report["responses"] = json!(progress.responses.load(Ordering::Relaxed));
        println!("{report}");
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait(done: impl Fn() -> bool, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(start.elapsed() < limit, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
