//! A trace collector for tests: takes Zipkin v2 JSON (`POST /api/v2/spans`, answered 202) and
//! OTLP over HTTP (`POST /v1/traces`, protobuf), and keeps every span in one form.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A span as either exporter sent it: ids in hex.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: String,
    pub id: String,
    pub parent: Option<String>,
    pub kind: String,
    pub name: String,
    pub tags: std::collections::BTreeMap<String, String>,
    /// `zipkin` or `otlp`.
    pub via: &'static str,
}

pub type Spans = Arc<Mutex<Vec<Span>>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn zipkin(body: &[u8]) -> Vec<Span> {
    let list: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap_or_default();
    list.iter()
        .map(|s| Span {
            trace_id: s["traceId"].as_str().unwrap_or_default().to_string(),
            id: s["id"].as_str().unwrap_or_default().to_string(),
            parent: s["parentId"].as_str().map(str::to_string),
            kind: s["kind"].as_str().unwrap_or_default().to_string(),
            name: s["name"].as_str().unwrap_or_default().to_string(),
            tags: s["tags"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            via: "zipkin",
        })
        .collect()
}

fn otlp(body: &[u8]) -> Vec<Span> {
    use weft_proto::otlp;
    let Ok(req) = <otlp::ExportTraceServiceRequest as prost::Message>::decode(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    kind: match s.kind {
                        otlp::SPAN_KIND_SERVER => "SERVER".into(),
                        otlp::SPAN_KIND_CLIENT => "CLIENT".into(),
                        k => k.to_string(),
                    },
                    name: s.name,
                    tags: s
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, kv.value.map(|v| v.string_value).unwrap_or_default()))
                        .collect(),
                    via: "otlp",
                });
            }
        }
    }
    out
}

/// Starts the collector; the spans it receives are pushed to the returned list.
pub async fn start() -> (SocketAddr, Spans) {
    let spans: Spans = Arc::default();
    let kept = spans.clone();
    let addr = super::serve_each(move |stream| {
        let kept = kept.clone();
        async move {
            let service = service_fn(move |req: http::Request<Incoming>| {
                let kept = kept.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await?.to_bytes();
                    let (got, status) = match path.as_str() {
                        "/api/v2/spans" => (zipkin(&body), 202),
                        "/v1/traces" => (otlp(&body), 200),
                        _ => (Vec::new(), 404),
                    };
                    kept.lock().unwrap().extend(got);
                    Ok::<_, hyper::Error>(
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await;
    (addr, spans)
}
