//! `weft proxy-status` and `weft proxy-config`, as istioctl's: where each proxy stands with the
//! control plane, and the listeners, routes, clusters, endpoints and secrets of one proxy — as
//! the control plane made them (with the Istio objects they came from), as the proxy holds them
//! (its admin `/config_dump`, Envoy's or Weft's), or, with no mesh running, as a folder of YAML
//! would make them (`-f DIR --workload NS/NAME`, see `offline`).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The control plane's status address (`weft up` prints it).
    #[arg(long, default_value = "http://127.0.0.1:15014")]
    control_plane: String,
    /// Only proxies whose id contains this.
    proxy: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    Secrets,
    All,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Short,
    Json,
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    #[arg(value_enum)]
    section: Section,
    /// The proxy: its node id, or a part of it (`web-v1.default`, `istio-ingressgateway`).
    /// Not with `-f`.
    proxy: Option<String>,
    /// With no mesh running: the folder of Istio YAML to translate (with `--workload` or
    /// `--gateway`).
    #[arg(short = 'f', long = "filename")]
    dir: Option<std::path::PathBuf>,
    /// With `-f`: MeshConfig YAML, as `weft up` takes it.
    #[arg(long)]
    mesh_config: Option<std::path::PathBuf>,
    /// With `-f`: the WorkloadEntry or Pod whose sidecar to show, NAMESPACE/NAME.
    #[arg(long)]
    workload: Option<String>,
    /// With `-f`: a gateway proxy with these labels (`istio=ingressgateway`).
    #[arg(long)]
    gateway: Option<String>,
    #[arg(long, default_value = "http://127.0.0.1:15014")]
    control_plane: String,
    /// Read the proxy's own admin `/config_dump` at this address instead (Envoy's or Weft's).
    #[arg(long)]
    admin: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "short")]
    output: Output,
}

/// A GET, its body as text; anything but 200 is an error carrying the body.
async fn get(url: &str) -> anyhow::Result<String> {
    let body = get_bytes(url).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A GET, its body as it came; anything but 200 is an error carrying the body.
pub(crate) async fn get_bytes(url: &str) -> anyhow::Result<Bytes> {
    let uri: http::Uri = url.parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("{url}: no host"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header("host", authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        let why = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.into_owned());
        anyhow::bail!("{url}: {status}: {why}");
    }
    Ok(body)
}

pub(crate) fn block_on<T>(
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

pub fn proxy_status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    block_on(async {
        let base = args.control_plane.trim_end_matches('/');
        let syncz: Value = serde_json::from_str(&get(&format!("{base}/debug/syncz")).await?)?;
        let problems: Value = serde_json::from_str(&get(&format!("{base}/debug/problems")).await?)?;
        print!("{}", status_table(&syncz, args.proxy.as_deref()));
        let notes = problem_lines(&problems);
        if !notes.is_empty() {
            println!();
            for n in &notes {
                println!("{n}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// istioctl's table: one row per proxy, one column per type.
pub fn status_table(syncz: &Value, filter: Option<&str>) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "CDS".into(),
        "LDS".into(),
        "EDS".into(),
        "RDS".into(),
    ]];
    let mut nacks = Vec::new();
    for p in syncz.as_array().into_iter().flatten() {
        let name = p["proxy"].as_str().unwrap_or_default();
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let mut row = vec![name.to_string()];
        for t in ["CDS", "LDS", "EDS", "RDS"] {
            let s = &p["types"][t];
            row.push(s["status"].as_str().unwrap_or("?").to_string());
            if let Some(e) = s["error"].as_str() {
                nacks.push(format!("{name} {t} NACKED: {e}"));
            }
        }
        rows.push(row);
    }
    let mut out = table(&rows);
    for n in nacks {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

/// The control plane's problems, one line each.
pub fn problem_lines(problems: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for e in problems["config_errors"].as_array().into_iter().flatten() {
        out.push(format!(
            "config refused (the last good config serves): {}",
            e.as_str().unwrap_or_default()
        ));
    }
    for e in problems["gateways_without_proxy"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(e.as_str().unwrap_or_default().to_string());
    }
    for e in problems["registry"].as_array().into_iter().flatten() {
        out.push(e.as_str().unwrap_or_default().to_string());
    }
    if let Some(m) = problems["translation"].as_object() {
        let mut seen = std::collections::BTreeSet::new();
        for list in m.values() {
            for e in list.as_array().into_iter().flatten() {
                if let Some(e) = e.as_str()
                    && seen.insert(e.to_string())
                {
                    out.push(e.to_string());
                }
            }
        }
    }
    if let Some(m) = problems["refused_proxies"].as_object() {
        for (id, why) in m {
            out.push(format!(
                "proxy {id} refused: {}",
                why.as_str().unwrap_or_default()
            ));
        }
    }
    out
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn proxy_config(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    block_on(async {
        let resources = match (&args.dir, &args.admin) {
            (Some(dir), _) => super::offline::dump(
                dir.clone(),
                args.mesh_config.clone(),
                args.workload.as_deref(),
                args.gateway.as_deref(),
            )?,
            (None, Some(admin)) => {
                let base = admin.trim_end_matches('/');
                let dump: Value =
                    serde_json::from_str(&get(&format!("{base}/config_dump?include_eds")).await?)?;
                from_admin(&dump)
            }
            (None, None) => {
                let base = args.control_plane.trim_end_matches('/');
                let syncz: Value =
                    serde_json::from_str(&get(&format!("{base}/debug/syncz")).await?)?;
                let wanted = args.proxy.as_deref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "name the proxy (or, with no mesh running, -f DIR --workload NS/NAME)"
                    )
                })?;
                let id = resolve(&syncz, wanted)?;
                let id_q = id.replace('~', "%7E");
                serde_json::from_str(
                    &get(&format!("{base}/debug/config_dump?proxyID={id_q}")).await?,
                )?
            }
        };
        let sections: &[&str] = match args.section {
            Section::Listeners => &["listeners"],
            Section::Routes => &["routes"],
            Section::Clusters => &["clusters"],
            Section::Endpoints => &["endpoints"],
            Section::Secrets => &["secrets"],
            Section::All => &["listeners", "routes", "clusters", "endpoints", "secrets"],
        };
        let empty = Value::Object(serde_json::Map::new());
        match args.output {
            Output::Json => {
                let mut out = serde_json::Map::new();
                for s in sections {
                    out.insert(
                        (*s).to_string(),
                        resources.get(*s).unwrap_or(&empty).clone(),
                    );
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Output::Short => {
                for (i, s) in sections.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    print!("{}", short(s, resources.get(*s).unwrap_or(&empty)));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The one proxy whose id is or contains `wanted`.
fn resolve(syncz: &Value, wanted: &str) -> anyhow::Result<String> {
    let ids: Vec<&str> = syncz
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["proxy"].as_str())
        .collect();
    if ids.contains(&wanted) {
        return Ok(wanted.to_string());
    }
    let matching: Vec<&&str> = ids.iter().filter(|i| i.contains(wanted)).collect();
    match matching.as_slice() {
        [one] => Ok((**one).to_string()),
        [] => anyhow::bail!(
            "no connected proxy matches {wanted:?} (connected: {})",
            ids.join(", ")
        ),
        many => anyhow::bail!(
            "{wanted:?} matches several proxies: {}",
            many.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A proxy's `/config_dump` in the control plane's shape: resources by name per section.
pub fn from_admin(dump: &Value) -> Value {
    let mut out = serde_json::json!({
        "listeners": {}, "routes": {}, "clusters": {}, "endpoints": {}
    });
    for config in dump["configs"].as_array().into_iter().flatten() {
        let t = config["@type"].as_str().unwrap_or_default();
        let (section, list, key, inner) = match t.rsplit('.').next().unwrap_or_default() {
            "ClustersConfigDump" => ("clusters", "dynamic_active_clusters", "cluster", None),
            "ListenersConfigDump" => (
                "listeners",
                "dynamic_listeners",
                "active_state",
                Some("listener"),
            ),
            "RoutesConfigDump" => ("routes", "dynamic_route_configs", "route_config", None),
            "EndpointsConfigDump" => (
                "endpoints",
                "dynamic_endpoint_configs",
                "endpoint_config",
                None,
            ),
            _ => continue,
        };
        for item in config[list].as_array().into_iter().flatten() {
            let mut v = &item[key];
            if let Some(inner) = inner {
                v = &v[inner];
            }
            let name = v["name"]
                .as_str()
                .or_else(|| v["cluster_name"].as_str())
                .unwrap_or_default()
                .to_string();
            if !name.is_empty() {
                out[section][name] = v.clone();
            }
        }
    }
    out
}

fn provenance(v: &Value) -> String {
    v["metadata"]["filter_metadata"]["istio"]["config"]
        .as_str()
        .map(|p| {
            // `/apis/networking.istio.io/v1/namespaces/NS/KIND/NAME` → `KIND NS/NAME`
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                [.., "namespaces", ns, kind, name] => format!("{kind} {ns}/{name}"),
                _ => p.to_string(),
            }
        })
        .unwrap_or_default()
}

fn socket(v: &Value) -> String {
    let s = &v["socket_address"];
    format!(
        "{}:{}",
        s["address"].as_str().unwrap_or_default(),
        s["port_value"]
    )
}

/// istioctl's short tables.
fn short(section: &str, items: &Value) -> String {
    let empty = serde_json::Map::new();
    let items = items.as_object().unwrap_or(&empty);
    let mut rows: Vec<Vec<String>> = Vec::new();
    match section {
        "listeners" => {
            rows.push(vec![
                "NAME".into(),
                "ADDRESS".into(),
                "CHAINS".into(),
                "FROM".into(),
            ]);
            for (name, l) in items {
                let chains = l["filter_chains"].as_array().map_or(0, Vec::len);
                rows.push(vec![
                    name.clone(),
                    socket(&l["address"]),
                    chains.to_string(),
                    provenance(l),
                ]);
                // What each chain runs before its terminal filter (RBAC, JWT), once per kind.
                let mut seen = std::collections::BTreeSet::new();
                for c in l["filter_chains"].as_array().into_iter().flatten() {
                    for f in c["filters"].as_array().into_iter().flatten() {
                        let http = f["typed_config"]["http_filters"].as_array();
                        let names: Vec<&str> = http
                            .into_iter()
                            .flatten()
                            .chain(std::iter::once(f))
                            .filter_map(|h| h["name"].as_str())
                            .filter(|n| n.contains("rbac") || n.contains("jwt_authn"))
                            .collect();
                        for n in names {
                            if seen.insert(n.to_string()) {
                                rows.push(vec![
                                    format!("  + {n}"),
                                    String::new(),
                                    String::new(),
                                    String::new(),
                                ]);
                            }
                        }
                    }
                }
            }
        }
        "routes" => {
            rows.push(vec![
                "NAME".into(),
                "VIRTUAL HOST".into(),
                "DOMAINS".into(),
                "MATCH".into(),
                "DESTINATION".into(),
                "FROM".into(),
            ]);
            for (name, rc) in items {
                for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
                    let domains: Vec<&str> = vh["domains"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let shown = if domains.len() > 2 {
                        format!("{} +{} more", domains[..2].join(","), domains.len() - 2)
                    } else {
                        domains.join(",")
                    };
                    for r in vh["routes"].as_array().into_iter().flatten() {
                        let m = &r["match"];
                        let matcher = ["prefix", "path", "safe_regex"]
                            .iter()
                            .find_map(|k| {
                                m.get(*k).map(|v| {
                                    format!(
                                        "{k} {}",
                                        v.as_str()
                                            .map_or_else(|| v["regex"].to_string(), str::to_string)
                                    )
                                })
                            })
                            .unwrap_or_default();
                        let headers = m["headers"].as_array().map_or(0, Vec::len);
                        let matcher = if headers > 0 {
                            format!("{matcher} +{headers} headers")
                        } else {
                            matcher
                        };
                        let dest = if let Some(c) = r["route"]["cluster"].as_str() {
                            c.to_string()
                        } else if let Some(ws) =
                            r["route"]["weighted_clusters"]["clusters"].as_array()
                        {
                            ws.iter()
                                .map(|w| {
                                    format!(
                                        "{}={}",
                                        w["name"].as_str().unwrap_or_default(),
                                        w["weight"]
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(" ")
                        } else if r.get("redirect").is_some() {
                            "redirect".into()
                        } else if let Some(s) = r["direct_response"]["status"].as_u64() {
                            format!("direct {s}")
                        } else {
                            String::new()
                        };
                        rows.push(vec![
                            name.clone(),
                            vh["name"].as_str().unwrap_or_default().to_string(),
                            shown.clone(),
                            matcher,
                            dest,
                            provenance(r),
                        ]);
                    }
                }
            }
        }
        "clusters" => {
            rows.push(vec![
                "NAME".into(),
                "TYPE".into(),
                "LB".into(),
                "FROM".into(),
            ]);
            for (name, c) in items {
                rows.push(vec![
                    name.clone(),
                    c["type"].as_str().unwrap_or("STATIC").to_string(),
                    c["lb_policy"].as_str().unwrap_or("ROUND_ROBIN").to_string(),
                    provenance(c),
                ]);
            }
        }
        "secrets" => {
            rows.push(vec!["NAME".into(), "TYPE".into()]);
            for (name, secret) in items {
                let kind = ["tls_certificate", "validation_context", "generic_secret"]
                    .into_iter()
                    .find(|k| secret.get(*k).is_some())
                    .unwrap_or("-");
                rows.push(vec![name.clone(), kind.to_string()]);
            }
        }
        _ => {
            rows.push(vec!["CLUSTER".into(), "ENDPOINT".into(), "LOCALITY".into()]);
            for (name, cla) in items {
                for group in cla["endpoints"].as_array().into_iter().flatten() {
                    let l = &group["locality"];
                    let locality = [l["region"].as_str(), l["zone"].as_str()]
                        .iter()
                        .flatten()
                        .copied()
                        .collect::<Vec<_>>()
                        .join("/");
                    for e in group["lb_endpoints"].as_array().into_iter().flatten() {
                        rows.push(vec![
                            name.clone(),
                            socket(&e["endpoint"]["address"]),
                            locality.clone(),
                        ]);
                    }
                }
            }
        }
    }
    table(&rows)
}
