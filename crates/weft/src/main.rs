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
    /// Find what validation of one object cannot see, with Istio's analyzers and IST message
    /// codes, as `istioctl analyze --use-kube=false` does.
    Analyze(cmd::analyze::Args),
    /// Run the proxy from an Envoy v3 bootstrap file (the one `envoy -c` accepts).
    Proxy(cmd::proxy::Args),
    /// Istio's pilot-agent for stock Envoy: the workload certificate from the mesh CA, renewed,
    /// served over SDS on a Unix socket.
    Agent(cmd::agent::Args),
    /// Run the control plane: translate a folder of Istio YAML and serve it to proxies over ADS.
    ControlPlane(cmd::control_plane::ControlPlaneArgs),
    /// Run a mesh on this machine from a folder of Istio YAML: the control plane, a sidecar per
    /// workload and a gateway per Gateway selector.
    Up(cmd::up::Args),
    /// The canary tutorial end to end: three website versions behind the ingress gateway on
    /// 127.0.0.1:8080, then 100% to v1, 90/10, and a header route to v3.
    Demo(cmd::demo::Args),
    /// Where each proxy stands with the control plane: SYNCED, STALE, NACKED per resource type.
    ProxyStatus(cmd::status::StatusArgs),
    /// A proxy's listeners, routes, clusters or endpoints, from the control plane or its admin.
    ProxyConfig(cmd::status::ConfigArgs),
    /// What a proxy of `weft up` wrote (its messages and stdout access log), as
    /// `kubectl logs POD -c istio-proxy`; `-f` follows it.
    Logs(cmd::logs::Args),
    /// The mesh dashboard the control plane serves (service graph, proxies, config): prints its
    /// address and opens it, as `istioctl dashboard`.
    Dashboard(cmd::dashboard::Args),
    /// Benchmark tool: many simulated sidecars on one control plane (bench/control-plane.sh).
    XdsLoad(cmd::xds_load::Args),
    /// How `weft up` starts a proxy: becomes PROGRAM, to be killed when process PARENT goes.
    #[command(hide = true)]
    ExecWithParent {
        parent: u32,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        program: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args),
        Command::Analyze(args) => cmd::analyze::run(&args),
        Command::Proxy(args) => cmd::proxy::run(&args),
        Command::Agent(args) => cmd::agent::run(&args),
        Command::ControlPlane(args) => cmd::control_plane::run(&args),
        Command::Up(args) => cmd::up::run(&args),
        Command::Demo(args) => cmd::demo::run(&args),
        Command::ProxyStatus(args) => cmd::status::proxy_status(&args),
        Command::ProxyConfig(args) => cmd::status::proxy_config(&args),
        Command::Logs(args) => cmd::logs::run(&args),
        Command::Dashboard(args) => cmd::dashboard::run(&args),
        Command::XdsLoad(args) => cmd::xds_load::run(&args),
        Command::ExecWithParent { parent, program } => {
            cmd::up::fleet::exec_with_parent(parent, &program).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap checks a subcommand's arguments only when that subcommand is parsed; this checks
    /// them all (two flattened structs of one name once broke `weft up` alone).
    #[test]
    fn every_command_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
