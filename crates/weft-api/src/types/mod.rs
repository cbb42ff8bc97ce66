//! Typed Istio and Kubernetes resources, with Istio's field names (camelCase in YAML).

pub mod common;
pub mod destination_rule;
pub mod envoy_filter;
pub mod gateway;
pub mod kube;
pub mod mesh;
pub mod security;
pub mod service_entry;
pub mod sidecar;
pub mod telemetry;
pub mod virtual_service;
