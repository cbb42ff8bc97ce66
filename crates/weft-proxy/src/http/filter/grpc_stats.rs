//! `envoy.filters.http.grpc_stats`: counts the messages of gRPC requests each way as their
//! bodies pass, and charges each finished gRPC request to its cluster's `grpc.*` stats (its
//! `grpc-status`, success or failure, and message counts). With `emit_filter_state` the counts
//! are also left for later filters, which is how Istio's stats get
//! `istio_request_messages_total` and `istio_response_messages_total`.
//!
//! Per-method stat names (`stats_for_all_methods: true`, an allowlist) and the upstream
//! request-time histogram are refused, naming the field.

use crate::config::FieldError;
use crate::http::grpc::MessageCounts;
use crate::stats;
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::{
    FilterConfig, filter_config::PerMethodStatSpecifier,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub const TYPE: &str = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";

#[derive(Debug)]
pub struct GrpcStats {
    emit_filter_state: bool,
}

pub static FACTORY: super::Factory = super::Factory {
    type_name: TYPE,
    per_route_type: None,
    build: |any, cx| {
        let c: FilterConfig = crate::config::convert::decode_any(any, cx.path)?;
        if let Some(PerMethodStatSpecifier::StatsForAllMethods(b)) = &c.per_method_stat_specifier
            && b.value
        {
            return Err(FieldError::new(
                format!("{}.stats_for_all_methods", cx.path),
                "per-method gRPC stats are not supported by the Weft proxy",
            ));
        }
        Ok(Arc::new(GrpcStats {
            emit_filter_state: c.emit_filter_state,
        }))
    },
    build_per_route: |_, cx| {
        Err(FieldError::new(
            cx.path,
            "per-route gRPC stats config is not supported by the Weft proxy",
        ))
    },
    supported: &[(TYPE, "emit_filter_state stats_for_all_methods")],
};

impl super::HttpFilter for GrpcStats {
    fn on_request(
        &self,
        cx: &mut super::RequestContext<'_>,
        _: super::PerRoute<'_>,
    ) -> super::Decode {
        if cx.stream.grpc && cx.stream.grpc_messages.is_none() {
            cx.stream.grpc_messages = Some(Arc::new(MessageCounts {
                emitted: self.emit_filter_state,
                ..Default::default()
            }));
        }
        super::Decode::Continue
    }

    fn completes(&self) -> bool {
        true
    }

    fn on_complete(&self, done: &super::Completed<'_>) {
        let (Some(counts), Some(cluster)) = (&done.stream.grpc_messages, done.cluster) else {
            return;
        };
        let g = &cluster.stats.grpc;
        if let Some(status) = done.grpc_status {
            if let Some(c) = g.statuses.get(usize::from(status)) {
                stats::inc(c);
            }
            stats::inc(if status == 0 { &g.success } else { &g.failure });
            stats::inc(&g.total);
        }
        stats::add(
            &g.request_message_count,
            counts.request.load(Ordering::Relaxed),
        );
        stats::add(
            &g.response_message_count,
            counts.response.load(Ordering::Relaxed),
        );
    }
}
