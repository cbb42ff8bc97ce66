//! The control plane's own metrics under istiod's names (`pilot/pkg/xds/monitoring.go`), for
//! its monitoring port's `/metrics`: pushes and rejections per xDS type, the time from a config
//! change to each proxy's push, and what triggered pushes. Printed as istiod prints them:
//! counters without a `_total` suffix (istiod's exporter adds none), so dashboards and alerts
//! written for istiod read them unchanged. prometheus-client is not used for that reason: its
//! encoder appends `_total` to every counter.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

/// `pilot_proxy_convergence_time`'s buckets, in seconds.
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; CONVERGENCE_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    pushes: BTreeMap<String, u64>,
    rejects: BTreeMap<String, u64>,
    /// (type, node, error) of each NACK still standing: `pilot_xds_<type>_reject`.
    rejected: BTreeMap<(String, String, String), ()>,
    triggers: BTreeMap<&'static str, u64>,
    convergence: Histogram,
    /// When the change being pushed started (its debounce's first event).
    change_started: Option<Instant>,
}

/// Counters the ADS server and the control plane keep.
#[derive(Debug, Default)]
pub struct XdsMetrics {
    inner: Mutex<Inner>,
}

/// istiod's short name of an xDS type (`GetMetricType`): `cds`, `eds`, `lds`, `rds`, `sds`;
/// the type URL itself otherwise.
pub fn metric_type(type_url: &str) -> String {
    let short = match type_url.rsplit('/').next().unwrap_or(type_url) {
        "envoy.config.cluster.v3.Cluster" => "cds",
        "envoy.config.endpoint.v3.ClusterLoadAssignment" => "eds",
        "envoy.config.listener.v3.Listener" => "lds",
        "envoy.config.route.v3.RouteConfiguration" => "rds",
        "envoy.extensions.transport_sockets.tls.v3.Secret" => "sds",
        _ => return type_url.to_string(),
    };
    short.to_string()
}

impl XdsMetrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A response of `type_url` sent to a proxy.
    pub fn pushed(&self, type_url: &str) {
        *self
            .inner()
            .pushes
            .entry(metric_type(type_url))
            .or_default() += 1;
    }

    /// A response that could not be sent (`<type>_senderr`).
    pub fn send_failed(&self, type_url: &str) {
        let key = format!("{}_senderr", metric_type(type_url));
        *self.inner().pushes.entry(key).or_default() += 1;
    }

    /// A proxy rejected a response.
    pub fn rejected(&self, type_url: &str, node: &str, error: &str) {
        let t = metric_type(type_url);
        let mut inner = self.inner();
        *inner.rejects.entry(t.clone()).or_default() += 1;
        inner
            .rejected
            .insert((t, node.to_string(), error.to_string()), ());
    }

    /// A proxy accepted `type_url` again: its standing rejection is gone.
    pub fn accepted(&self, type_url: &str, node: &str) {
        let t = metric_type(type_url);
        self.inner()
            .rejected
            .retain(|(ty, n, _), _| !(ty == &t && n == node));
    }

    /// A push begins for a change that started at `started` (`kind`: what changed, in istiod's
    /// `pilot_push_triggers` words: `config`, `proxy`...).
    pub fn push_started(&self, kind: &'static str, started: Instant) {
        let mut inner = self.inner();
        *inner.triggers.entry(kind).or_default() += 1;
        inner.change_started = Some(started);
    }

    /// A proxy got the push of the change under way.
    pub fn converged(&self) {
        let mut inner = self.inner();
        let Some(started) = inner.change_started else {
            return;
        };
        let seconds = started.elapsed().as_secs_f64();
        let h = &mut inner.convergence;
        for (i, b) in CONVERGENCE_BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let inner = self.inner();
        let counter = |out: &mut String, name: &str, map: &BTreeMap<String, u64>| {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (t, n) in map {
                let _ = writeln!(out, "{name}{{type=\"{t}\"}} {n}");
            }
        };
        counter(out, "pilot_xds_pushes", &inner.pushes);
        counter(out, "pilot_total_xds_rejects", &inner.rejects);
        for t in ["cds", "eds", "lds", "rds"] {
            let name = format!("pilot_xds_{t}_reject");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (ty, node, err) in inner.rejected.keys() {
                if ty == t {
                    let _ = writeln!(
                        out,
                        "{name}{{node=\"{}\",err=\"{}\"}} 1",
                        escape(node),
                        escape(err)
                    );
                }
            }
        }
        let _ = writeln!(out, "# TYPE pilot_push_triggers counter");
        for (t, n) in &inner.triggers {
            let _ = writeln!(out, "pilot_push_triggers{{type=\"{t}\"}} {n}");
        }
        let h = &inner.convergence;
        let _ = writeln!(out, "# TYPE pilot_proxy_convergence_time histogram");
        for (b, n) in CONVERGENCE_BUCKETS.iter().zip(h.buckets.iter()) {
            let _ = writeln!(out, "pilot_proxy_convergence_time_bucket{{le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "pilot_proxy_convergence_time_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "pilot_proxy_convergence_time_sum {}", h.sum);
        let _ = writeln!(out, "pilot_proxy_convergence_time_count {}", h.count);
    }
}

/// A label value in Prometheus' text format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istiods_names_types_and_buckets() {
        let m = XdsMetrics::default();
        m.pushed("type.googleapis.com/envoy.config.cluster.v3.Cluster");
        m.pushed("type.googleapis.com/envoy.config.cluster.v3.Cluster");
        m.send_failed("type.googleapis.com/envoy.config.listener.v3.Listener");
        m.rejected(
            "type.googleapis.com/envoy.config.listener.v3.Listener",
            "sidecar~1",
            "bad \"x\"",
        );
        m.push_started("config", Instant::now());
        m.converged();
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("# TYPE pilot_xds_pushes counter\n"));
        assert!(out.contains("pilot_xds_pushes{type=\"cds\"} 2\n"));
        assert!(out.contains("pilot_xds_pushes{type=\"lds_senderr\"} 1\n"));
        assert!(out.contains("pilot_total_xds_rejects{type=\"lds\"} 1\n"));
        assert!(out.contains("pilot_xds_lds_reject{node=\"sidecar~1\",err=\"bad \\\"x\\\"\"} 1\n"));
        assert!(out.contains("pilot_push_triggers{type=\"config\"} 1\n"));
        assert!(out.contains("pilot_proxy_convergence_time_bucket{le=\"0.1\"} 1\n"));
        assert!(out.contains("pilot_proxy_convergence_time_count 1\n"));
        // The standing rejection goes once the proxy accepts again; the total stays.
        m.accepted(
            "type.googleapis.com/envoy.config.listener.v3.Listener",
            "sidecar~1",
        );
        let mut out = String::new();
        m.render(&mut out);
        assert!(!out.contains("pilot_xds_lds_reject{"));
        assert!(out.contains("pilot_total_xds_rejects{type=\"lds\"} 1\n"));
    }
}
