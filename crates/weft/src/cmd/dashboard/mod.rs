//! The mesh dashboard the control plane serves (`/dashboard`, its data at `/dashboard/data`),
//! and `weft dashboard`, which points a browser at it. One page, no external scripts or
//! fonts: a live service graph (request rate, error rate, p50/p99 latency per edge, from the
//! proxies' Istio metrics, scraped every 2 s), each proxy's sync state, and every config
//! object with its validation state and problems, by file and line.
//!
//! An edge is a pair (source workload, destination workload) as the destination's sidecar
//! reports it (`reporter="destination"`); rates and latencies are over the last scrape
//! interval, as Prometheus' `rate()` and `histogram_quantile()` would compute them.

use super::monitor::Logs;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PAGE: &str = include_str!("page.html");

/// How often the proxies are scraped.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);

/// The duration buckets the proxies print (Envoy's defaults, in milliseconds).
use weft_proxy::istio::metrics::BUCKETS;

/// Cumulative counts of one edge at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counts {
    requests: f64,
    errors: f64,
    /// Cumulative per bucket bound (`le`), then `+Inf`.
    buckets: [f64; BUCKETS.len() + 1],
}

type Edge = (String, String);

/// The last two scrapes of every edge.
#[derive(Debug, Default)]
pub struct Graph {
    last: BTreeMap<Edge, Counts>,
    previous: BTreeMap<Edge, Counts>,
    interval: Duration,
    at: Option<Instant>,
}

pub type Shared = Arc<Mutex<Graph>>;

/// The value of label `name` in a series' label text.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = labels
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || labels.as_bytes()[i - 1] == b',')?
        .0
        + key.len();
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// Adds one proxy's `/stats/prometheus` to `into`.
fn add_scrape(text: &str, into: &mut BTreeMap<Edge, Counts>) {
    for line in text.lines() {
        let (metric, rest) = match line.split_once('{') {
            Some(x) => x,
            None => continue,
        };
        if metric != "istio_requests_total"
            && metric != "istio_request_duration_milliseconds_bucket"
        {
            continue;
        }
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if label(labels, "reporter") != Some("destination") {
            continue;
        }
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let node = |w: &str, ns: &str| {
            format!(
                "{}.{}",
                label(labels, w).unwrap_or("unknown"),
                label(labels, ns).unwrap_or("unknown")
            )
        };
        let edge = (
            node("source_workload", "source_workload_namespace"),
            node("destination_workload", "destination_workload_namespace"),
        );
        let c = into.entry(edge).or_default();
        if metric == "istio_requests_total" {
            c.requests += value;
            if label(labels, "response_code").is_some_and(|code| code.starts_with('5')) {
                c.errors += value;
            }
        } else {
            let le = label(labels, "le").unwrap_or("+Inf");
            let i = if le == "+Inf" {
                BUCKETS.len()
            } else {
                let Ok(b) = le.parse::<f64>() else { continue };
                match BUCKETS.iter().position(|x| (*x - b).abs() < 1e-9) {
                    Some(i) => i,
                    None => continue,
                }
            };
            c.buckets[i] += value;
        }
    }
}

/// Prometheus' `histogram_quantile` over cumulative bucket counts.
fn quantile(q: f64, buckets: &[f64; BUCKETS.len() + 1]) -> Option<f64> {
    let total = buckets[BUCKETS.len()];
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        let count = buckets[i];
        if count >= rank {
            let width = bound - lower_bound;
            let in_bucket = count - lower_count;
            if in_bucket <= 0.0 {
                return Some(*bound);
            }
            return Some(lower_bound + width * (rank - lower_count) / in_bucket);
        }
        lower_bound = *bound;
        lower_count = count;
    }
    Some(BUCKETS[BUCKETS.len() - 1])
}

/// Scrapes every proxy of `proxies` every 2 s into `graph`, until the runtime stops.
pub async fn scrape(proxies: Logs, graph: Shared) {
    let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
    loop {
        tick.tick().await;
        let targets: Vec<std::net::SocketAddr> = proxies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|k| k.stats)
            .collect();
        let mut now = BTreeMap::new();
        for t in targets {
            let url = format!("http://{t}/stats/prometheus");
            if let Ok(Ok(text)) =
                tokio::time::timeout(Duration::from_secs(1), super::status::get_bytes(&url)).await
            {
                add_scrape(&String::from_utf8_lossy(&text), &mut now);
            }
        }
        let mut g = graph.lock().unwrap_or_else(|p| p.into_inner());
        g.interval = g.at.map_or(SCRAPE_INTERVAL, |a| a.elapsed());
        g.at = Some(Instant::now());
        g.previous = std::mem::replace(&mut g.last, now);
    }
}

/// The graph's edges: totals, and rates over the last interval.
pub fn edges(graph: &Graph) -> Vec<Value> {
    let secs = graph.interval.as_secs_f64().max(0.001);
    graph
        .last
        .iter()
        .map(|((from, to), c)| {
            let before = graph.previous.get(&(from.clone(), to.clone()));
            let mut delta = c.clone();
            if let Some(b) = before {
                delta.requests -= b.requests;
                delta.errors -= b.errors;
                for (d, p) in delta.buckets.iter_mut().zip(b.buckets.iter()) {
                    *d -= p;
                }
            }
            let rate = delta.requests.max(0.0) / secs;
            json!({
                "from": from,
                "to": to,
                "requests": c.requests,
                "errors": c.errors,
                "rps": (rate * 100.0).round() / 100.0,
                "error_rate": if delta.requests > 0.0 { delta.errors / delta.requests } else { 0.0 },
                "p50_ms": quantile(0.5, &delta.buckets),
                "p99_ms": quantile(0.99, &delta.buckets),
            })
        })
        .collect()
}

#[derive(clap::Args)]
pub struct Args {
    /// The control plane's status address (`weft up` prints it).
    #[arg(long, default_value = "http://127.0.0.1:15014")]
    control_plane: String,
    /// Print the address only; do not start a browser.
    #[arg(long)]
    no_browser: bool,
}

/// `weft dashboard`: checks the control plane answers, prints the dashboard's address and, with
/// a desktop, opens it (as `istioctl dashboard` does).
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let base = args.control_plane.trim_end_matches('/').to_string();
    super::status::block_on(async {
        super::status::get_bytes(&format!("{base}/ready")).await?;
        Ok(())
    })?;
    let url = format!("{base}/dashboard");
    println!("{url}");
    if !args.no_browser && std::env::var_os("DISPLAY").is_some() {
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_rates_and_quantiles_from_two_scrapes() {
        let scrape = |n: u32, slow: u32| {
            let l = "reporter=\"destination\",source_workload=\"gw\",source_workload_namespace=\"istio-system\",destination_workload=\"web-v1\",destination_workload_namespace=\"default\"";
            let mut t = format!(
                "istio_requests_total{{{l},response_code=\"200\"}} {n}\nistio_requests_total{{{l},response_code=\"503\"}} {slow}\n"
            );
            for (b, c) in [("5", n), ("10", n + slow), ("+Inf", n + slow)] {
                t += &format!("istio_request_duration_milliseconds_bucket{{{l},le=\"{b}\"}} {c}\n");
            }
            t
        };
        let mut g = Graph::default();
        add_scrape(&scrape(10, 0), &mut g.previous);
        add_scrape(&scrape(30, 20), &mut g.last);
        g.interval = Duration::from_secs(2);
        let e = &edges(&g)[0];
        assert_eq!(e["from"], "gw.istio-system");
        assert_eq!(e["to"], "web-v1.default");
        assert_eq!(e["requests"], 50.0);
        assert_eq!(e["rps"], 20.0);
        assert_eq!(e["error_rate"], 0.5);
        // 40 new requests: 20 under 5 ms, 20 between 5 and 10.
        let p50 = e["p50_ms"].as_f64().unwrap();
        assert!((p50 - 5.0).abs() < 1e-9, "{p50}");
        let p99 = e["p99_ms"].as_f64().unwrap();
        assert!(p99 > 9.0 && p99 <= 10.0, "{p99}");
    }
}
