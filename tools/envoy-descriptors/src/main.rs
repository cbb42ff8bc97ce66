//! Writes `crates/weft-proxy/descriptors/envoy.bin`: a FileDescriptorSet of the Envoy v3 protos the
//! proxy understands, compiled from the `.proto` files that ship inside the `envoy-types` crate.
//!
//! The proxy needs descriptors (not only prost structs) for two things prost cannot do: reading the
//! proto3 JSON/YAML form of a bootstrap (with `@type` in `Any`), and walking a decoded message to
//! name every field that is set but not implemented.

use anyhow::{Context, Result};

/// Root files; their imports come along. Keep in step with `weft-proxy/src/config/supported.rs`.
const ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/path/match/uri_template/v3/uri_template_match.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/access_loggers/open_telemetry/v3/logs_service.proto",
    "envoy/extensions/filters/http/grpc_stats/v3/config.proto",
    "envoy/extensions/access_loggers/filters/cel/v3/cel.proto",
    "envoy/config/trace/v3/zipkin.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
];

/// Compiled apart from `ROOTS`: their relative reference `common.ratelimit.v3…` would resolve
/// into `envoy.extensions.filters.common` (the fault filter's package) in one pool, which protox,
/// stricter than protoc, refuses. Compiled types carry full names, so the sets merge safely.
const APART: &[&str] = &[
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/network/local_ratelimit/v3/local_rate_limit.proto",
];

const INCLUDE_DIRS: &[&str] = &[
    "data-plane-api",
    "xds",
    "googleapis",
    "protoc-gen-validate",
    "cel-spec",
    "client_model",
    "opentelemetry-proto",
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let proto_root = args.next().context("usage: envoy-descriptors ENVOY_TYPES_PROTO_DIR OUT")?;
    let out = args.next().context("usage: envoy-descriptors ENVOY_TYPES_PROTO_DIR OUT")?;
    let includes: Vec<String> = INCLUDE_DIRS.iter().map(|d| format!("{proto_root}/{d}")).collect();
    let mut compiler = protox::Compiler::new(&includes)?;
    // Source info would triple the size and the proxy never reads comments.
    compiler.include_source_info(false).include_imports(true);
    for root in ROOTS {
        compiler.open_file(root).with_context(|| format!("compiling {root}"))?;
    }
    let mut set = compiler.file_descriptor_set();
    let mut apart = protox::Compiler::new(&includes)?;
    apart.include_source_info(false).include_imports(true);
    for root in APART {
        apart.open_file(root).with_context(|| format!("compiling {root}"))?;
    }
    for file in apart.file_descriptor_set().file {
        if !set.file.iter().any(|f| f.name == file.name) {
            set.file.push(file);
        }
    }
    let bytes = prost::Message::encode_to_vec(&set);
    std::fs::write(&out, &bytes).with_context(|| format!("writing {out}"))?;
    println!("{out}: {} bytes, {} files", bytes.len(), set.file.len());
    Ok(())
}
