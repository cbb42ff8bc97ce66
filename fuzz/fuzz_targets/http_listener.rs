//! Any bytes from a client to an HTTP listener, served in process: a refusal or a closed
//! connection is fine, a panic or a hang is a bug. The listener has a filter chain (fault,
//! local rate limit, CORS), direct responses, redirects, rewrites and a cluster whose host
//! refuses connections, so that every stage of a request can be reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;
use weft_proxy::testing::InProcess;

const BOOTSTRAP: &str = include_str!("http_listener.yaml");

struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: InProcess,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // Paused time: the proxy's timers and the harness's quiet wait cost no real time.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let proxy = runtime.block_on(async { InProcess::from_yaml(BOOTSTRAP) }).unwrap();
        Harness { runtime, proxy }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.runtime.block_on(async {
        // A second of (paused) quiet ends the exchange; every timer of the bootstrap is shorter
        // than a hang would be.
        let out = h.proxy.exchange("http", data, Duration::from_secs(1)).await;
        assert!(out.is_some());
    });
});
