//! The connection manager's HTTP filter chain: Envoy's `http_filters`, in their order, any
//! number of instances of one type, the router last (the router is not a chain entry: it is
//! what runs when every filter has let the request through).
//!
//! A filter sees the request before the router (its request side), and may let it through,
//! answer it itself, or hold it for a while; the response, from the upstream or from the proxy,
//! passes back through the filters that saw the request, last first (its response side).
//!
//! Per-route config: a route's, virtual host's or route table's `typed_per_filter_config`
//! entry is keyed by the filter's *name* in the chain and parsed by its type, as Envoy does.
//! The most specific level that has an entry decides whether the filter runs
//! (`FilterConfig{disabled}`); the filter reads the levels it needs (most filters only the most
//! specific).
//!
//! Adding a filter: one module here with a `Factory` (the config types it reads, the fields it
//! honours for `config::supported`, and how to build it), and one line in `FACTORIES`.

pub mod cors;
pub mod ext_authz;
pub mod fault;
pub mod grpc_stats;
pub mod istio_stats;
pub mod jwt_authn;
pub mod local_ratelimit;
pub mod metadata_exchange;
pub mod rbac;

use super::Connection;
use super::local_reply::LocalReply;
use crate::config::FieldError;
use crate::http::body::ProxyBody;
use envoy_types::pb::google::protobuf::Any as PbAny;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Every filter type the proxy knows.
pub static FACTORIES: &[&Factory] = &[
    &fault::FACTORY,
    &cors::FACTORY,
    &local_ratelimit::FACTORY,
    &rbac::FACTORY,
    &jwt_authn::FACTORY,
    &ext_authz::FACTORY,
    &metadata_exchange::FACTORY,
    &istio_stats::FACTORY,
    &grpc_stats::FACTORY,
];

/// How a filter type is built from config.
pub struct Factory {
    /// The type of its `typed_config` in `http_filters`.
    pub type_name: &'static str,
    /// The type of its `typed_per_filter_config` entries, when it reads one.
    pub per_route_type: Option<&'static str>,
    /// The filter, from its `typed_config`.
    pub build: BuildFilter,
    /// A route's config for it, from a `typed_per_filter_config` entry.
    pub build_per_route: fn(&PbAny, &BuildContext<'_>) -> Result<Arc<RouteConfig>, FieldError>,
    /// The protobuf messages of its config and the fields of each that the filter honours, in
    /// `config::supported`'s table format.
    pub supported: &'static [(&'static str, &'static str)],
}

/// Builds a filter from its `typed_config`.
pub type BuildFilter = fn(&PbAny, &BuildContext<'_>) -> Result<Arc<dyn HttpFilter>, FieldError>;

/// A filter's per-route config, downcast by the filter that reads it.
pub type RouteConfig = dyn Any + Send + Sync;

/// What building a filter or a per-route config may need.
pub struct BuildContext<'a> {
    /// Where the config sits, for errors.
    pub path: &'a str,
    /// The connection manager's `stat_prefix` (empty for per-route configs, as in Envoy).
    pub stat_prefix: &'a str,
    pub store: &'a crate::server::StatsStore,
    /// The listener is inbound (`traffic_direction: INBOUND`).
    pub inbound: bool,
}

/// The factory for a config type, as the filter's own config or as a per-route config.
pub fn factory_for(type_name: &str) -> Option<&'static Factory> {
    FACTORIES
        .iter()
        .copied()
        .find(|f| f.type_name == type_name || f.per_route_type == Some(type_name))
}

/// One HTTP filter of a chain.
pub trait HttpFilter: Send + Sync + std::fmt::Debug {
    /// The request side (Envoy's `decodeHeaders`).
    fn on_request(&self, cx: &mut RequestContext<'_>, per_route: PerRoute<'_>) -> Decode;

    /// The response side (Envoy's `encodeHeaders`), for the upstream's answer and the proxy's
    /// own replies alike, run last filter first.
    fn on_response(&self, _stream: &mut Stream, _response: &mut http::response::Parts) {}

    /// Whether it reads the TLS connection's SNI and client certificate (worked out per
    /// connection only for the chains that have such a filter).
    fn reads_peer(&self) -> bool {
        false
    }

    /// Whether it wants `on_complete`.
    fn completes(&self) -> bool {
        false
    }

    /// When the response is done (Envoy's access log callback): every filter of the chain
    /// that `completes`, whether its request side ran or an earlier filter answered.
    fn on_complete(&self, _done: &Completed<'_>) {}
}

/// A finished request, as filters that count it see it.
pub struct Completed<'a> {
    pub conn: &'a Connection,
    pub stream: &'a Stream,
    pub status: u16,
    /// `grpc-status` of a gRPC response (trailers, or the headers of a trailers-only one).
    pub grpc_status: Option<u16>,
    pub duration: std::time::Duration,
    /// Body bytes from the client, and to it.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub cluster: Option<&'a Arc<crate::cluster::Cluster>>,
    pub host: Option<&'a Arc<crate::cluster::Host>>,
    pub route_name: &'a str,
    /// The request's `:authority` / `Host`.
    pub authority: Option<&'a http::HeaderValue>,
}

/// What a filter's request side decided.
pub enum Decode {
    /// On to the next filter.
    Continue,
    /// On to the next filter, with these request headers set (an authorization service's).
    ContinueWith(http::HeaderMap),
    /// Run this filter's request side again (what it waited for is now at hand).
    Again,
    /// The proxy answers, for this cause.
    Reply(LocalReply),
    /// The filter answers with this response (a CORS preflight); `details` is Envoy's
    /// `%RESPONSE_CODE_DETAILS%` for it.
    Respond(Box<http::Response<ProxyBody>>, &'static str),
    /// Hold the request until the future says what to do (a fault's delay).
    Pause(Pin<Box<dyn Future<Output = Decode> + Send>>),
}

/// Per-request state the filters share with the router: Envoy's stream info, as far as the
/// filters need it.
#[derive(Default)]
pub struct Stream {
    /// Response flags (`access_log::flags`).
    pub flags: u32,
    /// The request is gRPC: the proxy's own replies are gRPC replies.
    pub grpc: bool,
    /// Headers every response to this request gets (set, replacing the upstream's), from
    /// filters that decided them on the request side. Boxed: most requests have none, and the
    /// stream travels inside every request's future.
    pub response_headers: Option<Box<http::HeaderMap>>,
    /// Whatever must live as long as the request (a fault's place under `max_active_faults`).
    pub held: Vec<Box<dyn Send + Sync>>,
    /// Dynamic metadata filters wrote for later ones (`jwt_authn`'s payload, read by RBAC).
    pub metadata: Option<Box<crate::rbac::metadata::DynamicMetadata>>,
    /// Who the other side is, from Istio's metadata exchange (inline: an `Arc` and two flags,
    /// not worth an allocation per request).
    pub exchange: Option<metadata_exchange::Exchange>,
    /// The request attributes Istio's stats overrides read (`StatsConfig::attributes`).
    pub stats_attributes: Option<Box<[Box<str>]>>,
    /// A gRPC request's messages each way, once the `grpc_stats` filter counts them.
    pub grpc_messages: Option<Arc<crate::http::grpc::MessageCounts>>,
}

impl Stream {
    /// Adds `headers` to those every response gets.
    pub fn add_response_headers(&mut self, headers: http::HeaderMap) {
        match &mut self.response_headers {
            Some(h) => h.extend(headers),
            None => self.response_headers = Some(Box::new(headers)),
        }
    }
}

/// What a filter's request side works on.
pub struct RequestContext<'a> {
    pub head: &'a mut http::request::Parts,
    pub conn: &'a Connection,
    pub stream: &'a mut Stream,
    /// The client's address as the connection manager trusts it (after `x-forwarded-for`).
    pub remote: std::net::SocketAddr,
}

/// One entry of `http_filters`.
#[derive(Debug)]
pub struct FilterEntry {
    /// The filter's name: what `typed_per_filter_config` keys on.
    pub name: String,
    pub filter: Arc<dyn HttpFilter>,
    /// `disabled`: off unless a route's per-filter config turns it on.
    pub disabled: bool,
}

/// A connection manager's filters, router excluded, in their configured order.
#[derive(Debug, Default)]
pub struct FilterChain {
    pub filters: Vec<FilterEntry>,
    /// Some filter `completes`: the end of a request keeps what `Completed` needs.
    pub completes: bool,
}

/// A `typed_per_filter_config` entry.
#[derive(Debug, Clone)]
pub struct FilterOverride {
    /// `FilterConfig{disabled: true}`.
    pub disabled: bool,
    /// The config the filter reads; `None` when the entry only turns it on, or is an optional
    /// config of a type the proxy does not know.
    pub config: Option<Arc<RouteConfig>>,
}

/// A route's, virtual host's or route table's `typed_per_filter_config`, by filter name.
pub type FilterOverrides = HashMap<String, FilterOverride>;

/// The per-filter configs of the levels a request matched, most specific first: route,
/// virtual host, route table.
#[derive(Clone, Copy, Default)]
pub struct Levels<'a>(pub [Option<&'a FilterOverrides>; 3]);

impl<'a> Levels<'a> {
    fn entry(&self, name: &str, level: usize) -> Option<&'a FilterOverride> {
        self.0
            .get(level)
            .copied()
            .flatten()
            .filter(|m| !m.is_empty())
            .and_then(|m| m.get(name))
    }

    /// Whether the named filter runs: the most specific entry for it decides, else the
    /// chain's own `disabled`.
    fn enabled(&self, name: &str, disabled_by_default: bool) -> bool {
        (0..3)
            .find_map(|l| self.entry(name, l))
            .map_or(!disabled_by_default, |e| !e.disabled)
    }
}

/// The per-route configs one filter can read for one request.
#[derive(Clone, Copy)]
pub struct PerRoute<'a> {
    levels: Levels<'a>,
    name: &'a str,
}

impl<'a> PerRoute<'a> {
    /// The configs of type `T` for this filter, most specific first.
    pub fn all<T: Any>(&self) -> impl Iterator<Item = &'a T> + 'a {
        let (levels, name) = (self.levels, self.name);
        (0..3).filter_map(move |l| {
            levels
                .entry(name, l)?
                .config
                .as_deref()?
                .downcast_ref::<T>()
        })
    }

    /// The most specific config of type `T` for this filter.
    pub fn most_specific<T: Any>(&self) -> Option<&'a T> {
        self.all::<T>().next()
    }
}

/// The longest chain: which filters ran for a request is a bit each.
pub const MAX_FILTERS: usize = 64;

/// How far a request got through the chain.
pub struct Decoded {
    /// The filters whose request sides ran (and so whose response sides run), a bit each.
    pub ran: u64,
    /// `Some` when a filter answered the request itself.
    pub answer: Option<Answer>,
}

/// A filter's own answer to a request.
pub enum Answer {
    Reply(LocalReply),
    Respond(Box<http::Response<ProxyBody>>, &'static str),
}

/// Where the request sides stand: all done, or one filter holds the request.
pub enum Step {
    Done(Decoded),
    /// Filter `index` holds the request until `wait` says what it decided; `run` goes on from
    /// there.
    Paused {
        index: usize,
        ran: u64,
        wait: Pin<Box<dyn Future<Output = Decode> + Send>>,
    },
}

impl FilterChain {
    /// Runs the request sides in order from filter `from`, until one answers or holds the
    /// request. `resumed` is what the filter at `from` decided after holding it. Synchronous, so
    /// that a request no filter holds costs no future of its own.
    pub fn run(
        &self,
        cx: &mut RequestContext<'_>,
        levels: Levels<'_>,
        from: usize,
        mut ran: u64,
        mut resumed: Option<Decode>,
    ) -> Step {
        for (i, entry) in self.filters.iter().enumerate().skip(from) {
            let decision = match resumed.take() {
                Some(Decode::Again) => entry.filter.on_request(
                    cx,
                    PerRoute {
                        levels,
                        name: &entry.name,
                    },
                ),
                Some(d) => d,
                None => {
                    if !levels.enabled(&entry.name, entry.disabled) {
                        continue;
                    }
                    ran |= 1 << i;
                    let per_route = PerRoute {
                        levels,
                        name: &entry.name,
                    };
                    entry.filter.on_request(cx, per_route)
                }
            };
            let answer = match decision {
                Decode::Continue => continue,
                // A filter asked to run again only when resumed; anything else goes on.
                Decode::Again => continue,
                Decode::ContinueWith(headers) => {
                    for (name, value) in &headers {
                        cx.head.headers.insert(name.clone(), value.clone());
                    }
                    continue;
                }
                Decode::Pause(wait) => {
                    return Step::Paused {
                        index: i,
                        ran,
                        wait,
                    };
                }
                Decode::Reply(r) => Answer::Reply(r),
                Decode::Respond(resp, details) => Answer::Respond(resp, details),
            };
            return Step::Done(Decoded {
                ran,
                answer: Some(answer),
            });
        }
        Step::Done(Decoded { ran, answer: None })
    }

    /// Tells every filter that `completes` that a request is done.
    pub fn complete(&self, done: &Completed<'_>) {
        for entry in &self.filters {
            if entry.filter.completes() {
                entry.filter.on_complete(done);
            }
        }
    }

    /// Runs the response sides of the filters in `ran`, last first.
    pub fn on_response(&self, ran: u64, stream: &mut Stream, response: &mut http::response::Parts) {
        for (i, entry) in self.filters.iter().enumerate().rev() {
            if ran & (1 << i) != 0 {
                entry.filter.on_response(stream, response);
            }
        }
        if let Some(h) = stream.response_headers.take() {
            response.headers.extend(*h);
        }
    }
}
