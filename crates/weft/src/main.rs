//! The `weft` command: every Weft process and tool starts here.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Weft: an Istio-compatible service mesh. It reads your Istio YAML unchanged.
#[derive(Parser)]
#[command(name = "weft", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check Istio and Kubernetes YAML as Istio's admission webhook would, reporting every error.
    Validate(cmd::validate::Args),
    /// Run the proxy from an Envoy v3 bootstrap file (the one `envoy -c` accepts).
    Proxy(cmd::proxy::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args),
        Command::Proxy(args) => cmd::proxy::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::from(2)
        }
    }
}
