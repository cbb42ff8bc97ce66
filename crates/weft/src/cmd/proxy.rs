//! `weft proxy`: the data plane, configured by an Envoy v3 bootstrap.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Envoy v3 bootstrap (YAML or JSON): the same file `envoy -c` takes.
    #[arg(short = 'c', long = "config-path", required_unless_present = "xds")]
    config: Option<String>,
    /// ADS server (HOST:PORT) to take listeners, routes, clusters and endpoints from, instead of
    /// the bootstrap's `dynamic_resources.ads_config`.
    #[arg(long)]
    xds: Option<String>,
    /// With --xds: use delta xDS instead of state of the world.
    #[arg(long, requires = "xds")]
    xds_delta: bool,
    /// The node id sent to the control plane (replaces the bootstrap's `node.id`).
    #[arg(long)]
    node_id: Option<String>,
    /// Seconds a removed listener's connections may take to finish, as Envoy's --drain-time-s.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    drain_time_s: u64,
    /// Worker threads, as Envoy's --concurrency (Istio runs sidecars with 2).
    #[arg(long, default_value_t = default_concurrency())]
    concurrency: usize,
    /// `serve` (default) or `validate`: check the bootstrap and exit, as `envoy --mode validate`.
    #[arg(long, default_value = "serve", value_parser = ["serve", "validate"])]
    mode: String,
    /// Log level for the proxy's own log (not the access log).
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    #[command(flatten)]
    ca: super::agent::CaArgs,
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // `weft up` writes each proxy's log to a file: colour codes only for a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "weft_proxy={0},weft={0}",
            args.log_level
        )))
        .init();
    if args.mode == "validate" {
        let Some(config) = &args.config else {
            eprintln!("--mode validate needs -c FILE");
            return Ok(ExitCode::from(2));
        };
        return match weft_proxy::run::validate(config) {
            Ok(()) => {
                println!("configuration '{config}' OK");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        };
    }
    let options = weft_proxy::run::Options {
        config_path: args.config.clone(),
        concurrency: args.concurrency.max(1),
        drain_time: std::time::Duration::from_secs(args.drain_time_s),
        xds_address: args.xds.clone(),
        xds_delta: args.xds_delta,
        node_id: args.node_id.clone(),
        agent: args.ca.agent()?,
    };
    match weft_proxy::run::run(&options) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
