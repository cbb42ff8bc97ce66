//! The Weft proxy. See DESIGN.md §1–2: it reads Envoy v3 config and carries the traffic.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cluster;
pub mod config;
pub mod http;
pub mod listener;
pub mod route;
pub mod run;
pub mod server;
pub mod stats;
pub mod tcp;
pub mod testing;
pub mod upstream;
pub mod xds;
