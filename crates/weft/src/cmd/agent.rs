//! `weft agent`: Istio's `pilot-agent` for stock Envoy. It gets the workload certificate from
//! the mesh CA and renews it, as the Weft proxy does for itself, and serves it to Envoy over SDS
//! on a Unix socket (secrets `default` and `ROOTCA`).

use std::path::PathBuf;
use std::process::ExitCode;

/// Where the mesh CA is and how to prove who the workload is: the Weft proxy and `weft agent`
/// take the same flags.
#[derive(clap::Args, Clone)]
pub struct CaArgs {
    /// The mesh CA (HOST:PORT, the control plane's 15012): the workload certificate comes from
    /// there and is renewed at half its life.
    #[arg(long, requires_all = ["ca_root", "credential_file"])]
    pub ca_address: Option<String>,
    /// PEM roots the CA's server certificate must chain to.
    #[arg(long)]
    pub ca_root: Option<PathBuf>,
    /// The name the CA's server certificate must carry.
    #[arg(long, default_value = "istiod.istio-system.svc")]
    pub ca_server_name: String,
    /// File holding the credential that proves the workload's identity to the CA.
    #[arg(long)]
    pub credential_file: Option<PathBuf>,
    /// Lifetime to ask for the workload certificate, in seconds (the CA's default, 24 h, if
    /// unset).
    #[arg(long)]
    pub cert_ttl_s: Option<u64>,
}

impl CaArgs {
    pub fn agent(&self) -> anyhow::Result<Option<weft_proxy::agent::AgentOptions>> {
        let (Some(address), Some(root), Some(credential)) =
            (&self.ca_address, &self.ca_root, &self.credential_file)
        else {
            return Ok(None);
        };
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        Ok(Some(weft_proxy::agent::AgentOptions {
            ca_address: address.clone(),
            ca_root: read(root)?,
            ca_server_name: self.ca_server_name.clone(),
            credential: read(credential)?.trim().to_string(),
            ttl: self.cert_ttl_s.map(std::time::Duration::from_secs),
        }))
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    ca: CaArgs,
    /// The Unix socket Envoy reads its secrets from (Istio's
    /// `./var/run/secrets/workload-spiffe-uds/socket`).
    #[arg(long)]
    sds_socket: PathBuf,
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    super::control_plane::init_logging(&args.log_level);
    let Some(options) = args.ca.agent()? else {
        anyhow::bail!("--ca-address, --ca-root and --credential-file are required");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = std::sync::Arc::new(weft_proxy::agent::SecretStore::default());
        tokio::spawn(weft_proxy::agent::run(options, store.clone()));
        let socket = args.sds_socket.clone();
        tokio::select! {
            served = weft_proxy::agent::sds::serve(&socket, store) => {
                served.map_err(|e| anyhow::anyhow!("SDS on {}: {e}", socket.display()))?;
            }
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = std::fs::remove_file(&args.sds_socket);
        Ok(ExitCode::SUCCESS)
    })
}
