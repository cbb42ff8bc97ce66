//! `weft logs NAME [-f]`: what a proxy of `weft up` wrote to stdout and stderr (its own
//! messages, and its access log when `accessLogFile` is `/dev/stdout`), as
//! `kubectl logs POD -c istio-proxy` shows a sidecar's. Read from the control plane's status
//! port, which knows where `weft up` keeps each proxy's output.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The proxy: its name in `weft up`'s list (`sidecar default/web-v1`), its workload
    /// (`web-v1`, `default/web-v1`), or a part of its node id.
    name: String,
    /// Keep printing what it writes, until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The control plane's status address (`weft up` prints it).
    #[arg(long, default_value = "http://127.0.0.1:15014")]
    control_plane: String,
}

/// How often `-f` asks for more.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(300);

fn encode(s: &str) -> String {
    s.replace('%', "%25")
        .replace(' ', "%20")
        .replace('/', "%2F")
        .replace('&', "%26")
        .replace('~', "%7E")
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    super::status::block_on(async {
        let base = args.control_plane.trim_end_matches('/');
        let name = encode(&args.name);
        let mut offset = 0u64;
        let mut out = std::io::stdout();
        loop {
            let url = format!("{base}/debug/logs?proxy={name}&offset={offset}");
            let body = super::status::get_bytes(&url).await?;
            offset += body.len() as u64;
            out.write_all(&body)?;
            out.flush()?;
            if !args.follow {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    })
}
