//! The Weft proxy. See DESIGN.md §1–2: it reads Envoy v3 config and carries the traffic.
//!
//! # Where things are
//!
//! - `config`: Envoy protos in, runtime types out. `config::supported` lists every field the
//!   proxy honours (anything else is refused, naming the field); `config::convert` turns protos
//!   into the types below.
//! - `listener`: sockets, listener filters, filter chain matching; the network filters
//!   (`http::serve` for the connection manager, `tcp` for `tcp_proxy`).
//! - `http`: the HTTP connection manager, per request:
//!   1. `http::request_check` refuses what Envoy's codec refuses, and `http::h2_guard` enforces
//!      Envoy's HTTP/2 flood limits on the connection;
//!   2. `http::router` picks the route (`select`);
//!   3. `http::filter` runs the `http_filters` chain in order (fault, CORS, local rate limit...);
//!   4. the router answers itself (direct response, redirect) or forwards
//!      (`http::router::forward`: cluster and host, rewrites, mirrors, retries in
//!      `http::attempt`);
//!   5. `http::router::finish` ends every request: the filters' response sides, counters, the
//!      access log, the upstream connection back to its pool.
//!
//!   Every reply the proxy makes itself has one cause, `http::local_reply::LocalReply`, which
//!   decides its status, response flag, `%RESPONSE_CODE_DETAILS%`, counter, body and gRPC
//!   status. `http::body::ProxyBody` is the one body type requests and responses travel in.
//! - `route`: route tables as the data path reads them (virtual hosts, matchers, actions).
//! - `cluster`: clusters, hosts, load balancers, circuit breakers, outlier detection, health
//!   checks; `cluster::manager` owns every cluster's timed work (DNS in `cluster::dns`, health
//!   check rounds, outlier intervals) for bootstrap, CDS and EDS clusters alike.
//! - `upstream`: connections to hosts (TCP, TLS, HTTP/1.1 and HTTP/2 pools).
//! - `agent`: the proxy's own Istio agent: its key, CSR and workload certificate from the mesh
//!   CA, renewed at half-life.
//! - `xds`: the ADS client; `xds::state::DynamicConfig` applies updates whole or not at all,
//!   with Envoy's warming.
//! - `server`: the process-wide `ServerState` (config snapshot, stats, shutdown), workers;
//!   `admin`, `stats`, `access_log`; `run` starts it all; `testing` serves listeners in process.
//!
//! # Adding an HTTP filter
//!
//! One module under `http/filter/` with a type implementing `http::filter::HttpFilter` (its
//! request side, and a response side if it has one) and a `Factory`: the config type it reads
//! in `http_filters`, the type it reads in `typed_per_filter_config` (if any), how to build
//! both, and the config fields it honours. Then one line in `http::filter::FACTORIES`. The
//! chain, per-route configs, `FilterConfig{disabled}`, `is_optional` and the supported-fields
//! check all follow from the registration. A filter that answers a request itself returns a
//! `LocalReply` cause (add a variant if none fits), so that its status, flag, details and
//! counter are decided with the others.

pub mod access_log;
pub mod access_log_filter;
pub mod access_log_otel;
pub mod admin;
pub mod agent;
pub mod cluster;
pub mod config;
pub mod grpc_client;
pub mod http;
pub mod istio;
pub mod jwt;
pub mod listener;
pub mod rbac;
pub mod route;
pub mod run;
pub mod server;
pub mod stats;
pub mod tcp;
pub mod testing;
pub mod trace;
pub mod upstream;
pub mod xds;
