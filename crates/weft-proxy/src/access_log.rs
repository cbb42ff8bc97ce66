//! Access logs in Envoy's command-operator format (`%RESPONSE_FLAGS%` and friends), as text or
//! JSON, to stdout, stderr or a file. Lines go to one writer thread so a slow disk never blocks
//! a worker.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Envoy's response flags, printed in Envoy's order.
pub mod flags {
    pub const UH: u32 = 1 << 0; // no healthy upstream
    pub const UF: u32 = 1 << 1; // upstream connection failure
    pub const UO: u32 = 1 << 2; // upstream overflow
    pub const NR: u32 = 1 << 3; // no route
    pub const URX: u32 = 1 << 4;
    pub const UT: u32 = 1 << 5; // upstream request timeout
    pub const UC: u32 = 1 << 6; // upstream connection termination
    pub const DC: u32 = 1 << 7; // downstream connection termination
    pub const LR: u32 = 1 << 8;
    pub const DI: u32 = 1 << 9;
    pub const FI: u32 = 1 << 10;
    pub const NC: u32 = 1 << 11; // no cluster
    pub const UPE: u32 = 1 << 12; // upstream protocol error
    pub const DPE: u32 = 1 << 13; // downstream protocol error
    pub const SI: u32 = 1 << 14; // stream idle timeout
    pub const RL: u32 = 1 << 15; // rate limited locally
    pub const NAMES: [(u32, &str); 16] = [
        (RL, "RL"),
        (UH, "UH"),
        (UF, "UF"),
        (UO, "UO"),
        (NR, "NR"),
        (URX, "URX"),
        (UT, "UT"),
        (UC, "UC"),
        (DC, "DC"),
        (LR, "LR"),
        (DI, "DI"),
        (FI, "FI"),
        (NC, "NC"),
        (UPE, "UPE"),
        (DPE, "DPE"),
        (SI, "SI"),
    ];

    pub fn render(bits: u32) -> String {
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Text(String),
    StartTime,
    Method,
    /// `%REQ(A?B)%`: header A, else B; `max` truncates.
    Req {
        name: String,
        alt: Option<String>,
        max: Option<usize>,
    },
    Resp {
        name: String,
        alt: Option<String>,
        max: Option<usize>,
    },
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    RequestedServerName,
    /// `%TRACE_ID%`: the active span's trace id.
    TraceId,
    /// Operators Envoy fills only in cases the Weft proxy does not report (a connection's
    /// termination details, an upstream TLS failure's reason): `-`.
    NotRecorded,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressNoPort,
    DownstreamLocalAddress,
    RouteName,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Text(Vec<Token>),
    /// Keys in the order given, each a list of tokens.
    Json(Vec<(String, Vec<Token>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Stdout,
    Stderr,
    File(String),
}

/// Where an access log's entries go.
#[derive(Debug)]
pub enum Output {
    /// Lines for a file or stream, written by its thread.
    Lines(mpsc::Sender<String>),
    /// Records for an OpenTelemetry collector; `format` is their body.
    Otel(std::sync::Arc<crate::access_log_otel::OtelLog>),
}

#[derive(Debug)]
pub struct AccessLog {
    pub format: Format,
    pub output: Output,
    /// Only entries it matches are written.
    pub filter: Option<crate::access_log_filter::Filter>,
}

/// Parses a format string into tokens; unknown operators are an error naming them.
pub fn parse_format(s: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find('%') {
        if start > 0 {
            tokens.push(Token::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            return Err(format!("unterminated command operator in {s:?}"));
        };
        let op = &after[..end];
        if op.is_empty() {
            tokens.push(Token::Text("%".into()));
        } else {
            tokens.push(parse_operator(op)?);
        }
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        tokens.push(Token::Text(rest.to_string()));
    }
    Ok(tokens)
}

fn parse_operator(op: &str) -> Result<Token, String> {
    let header = |args: &str| -> Result<(String, Option<String>, Option<usize>), String> {
        let (inner, max) = match args.split_once("):") {
            Some((inner, max)) => (
                inner,
                Some(
                    max.parse::<usize>()
                        .map_err(|_| format!("bad length in %{op}%"))?,
                ),
            ),
            None => (
                args.strip_suffix(')')
                    .ok_or_else(|| format!("missing ) in %{op}%"))?,
                None,
            ),
        };
        let (name, alt) = match inner.split_once('?') {
            Some((a, b)) => (a.to_ascii_lowercase(), Some(b.to_ascii_lowercase())),
            None => (inner.to_ascii_lowercase(), None),
        };
        Ok((name, alt, max))
    };
    if let Some(args) = op.strip_prefix("REQ(") {
        let (name, alt, max) = header(args)?;
        return Ok(Token::Req { name, alt, max });
    }
    if let Some(args) = op.strip_prefix("RESP(") {
        let (name, alt, max) = header(args)?;
        return Ok(Token::Resp { name, alt, max });
    }
    Ok(match op {
        "START_TIME" => Token::StartTime,
        "PROTOCOL" => Token::Protocol,
        "RESPONSE_CODE" => Token::ResponseCode,
        "RESPONSE_FLAGS" => Token::ResponseFlags,
        "RESPONSE_CODE_DETAILS" => Token::ResponseCodeDetails,
        "BYTES_RECEIVED" => Token::BytesReceived,
        "BYTES_SENT" => Token::BytesSent,
        "DURATION" => Token::Duration,
        "UPSTREAM_HOST" => Token::UpstreamHost,
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Token::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Token::UpstreamLocalAddress,
        "REQUESTED_SERVER_NAME" => Token::RequestedServerName,
        "TRACE_ID" => Token::TraceId,
        "CONNECTION_TERMINATION_DETAILS" | "UPSTREAM_TRANSPORT_FAILURE_REASON" => {
            Token::NotRecorded
        }
        "DOWNSTREAM_REMOTE_ADDRESS" => Token::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Token::DownstreamRemoteAddressNoPort,
        "DOWNSTREAM_LOCAL_ADDRESS" => Token::DownstreamLocalAddress,
        "ROUTE_NAME" => Token::RouteName,
        "METHOD" => Token::Method,
        other => {
            return Err(format!(
                "command operator %{other}% is not supported by the Weft proxy"
            ));
        }
    })
}

/// The request as the router forwarded it, kept for the log line written when the response ends.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
}

/// What one request (or TCP connection) leaves for the access log.
pub struct Entry<'a> {
    pub start: SystemTime,
    pub protocol: &'a str,
    pub request: Option<&'a RequestInfo>,
    pub response: Option<&'a http::HeaderMap>,
    pub status: u16,
    pub flags: u32,
    /// `%RESPONSE_CODE_DETAILS%`: why the response is what it is (Envoy's words).
    pub details: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: &'a str,
    pub upstream_local: Option<SocketAddr>,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    pub route_name: &'a str,
    /// The TLS SNI the client asked for.
    pub requested_server_name: Option<&'a str>,
    /// The request's trace ids, when its connection manager traces.
    pub trace: Option<crate::trace::Ids>,
}

impl Entry<'_> {
    fn value(&self, token: &Token) -> Option<String> {
        let header = |map: Option<&http::HeaderMap>,
                      name: &str,
                      alt: &Option<String>,
                      max: &Option<usize>| {
            let get = |n: &str| -> Option<String> {
                match (n, self.request) {
                    (":method", Some(r)) => Some(r.method.as_str().to_string()),
                    (":path", Some(r)) => r.uri.path_and_query().map(|p| p.as_str().to_string()),
                    (":authority", Some(r)) => r
                        .uri
                        .authority()
                        .map(|a| a.as_str().to_string())
                        .or_else(|| {
                            r.headers
                                .get("host")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        }),
                    (":scheme", _) => Some("http".to_string()),
                    _ => map
                        .and_then(|m| m.get(n))
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                }
            };
            let mut v = get(name).or_else(|| alt.as_deref().and_then(get))?;
            if let Some(max) = max {
                v.truncate(*max);
            }
            Some(v)
        };
        match token {
            Token::Text(t) => Some(t.clone()),
            Token::StartTime => Some(format_time(self.start)),
            Token::Method => self.request.map(|r| r.method.to_string()),
            Token::Req { name, alt, max } => {
                header(self.request.map(|r| &r.headers), name, alt, max)
            }
            Token::Resp { name, alt, max } => header(self.response, name, alt, max),
            // A TCP connection has none: `-`, as Envoy prints it.
            Token::Protocol => (!self.protocol.is_empty()).then(|| self.protocol.to_string()),
            Token::ResponseCode => Some(self.status.to_string()),
            Token::ResponseFlags => Some(flags::render(self.flags)),
            Token::ResponseCodeDetails => {
                (!self.details.is_empty()).then(|| self.details.to_string())
            }
            Token::BytesReceived => Some(self.bytes_received.to_string()),
            Token::BytesSent => Some(self.bytes_sent.to_string()),
            Token::Duration => Some(self.duration.as_millis().to_string()),
            Token::UpstreamHost => self.upstream_host.map(|h| h.to_string()),
            Token::UpstreamCluster => {
                (!self.upstream_cluster.is_empty()).then(|| self.upstream_cluster.to_string())
            }
            Token::UpstreamLocalAddress => self.upstream_local.map(|a| a.to_string()),
            Token::RequestedServerName => self.requested_server_name.map(str::to_string),
            Token::TraceId => self
                .trace
                .map(|t| crate::trace::context::trace_id_hex(t.trace_id, t.wide)),
            Token::NotRecorded => None,
            Token::DownstreamRemoteAddress => Some(self.downstream_remote.to_string()),
            Token::DownstreamRemoteAddressNoPort => Some(self.downstream_remote.ip().to_string()),
            Token::DownstreamLocalAddress => Some(self.downstream_local.to_string()),
            Token::RouteName => (!self.route_name.is_empty()).then(|| self.route_name.to_string()),
        }
    }

    pub fn render(&self, format: &Format) -> String {
        match format {
            Format::Text(tokens) => {
                let mut out = String::with_capacity(256);
                for t in tokens {
                    out.push_str(&self.value(t).unwrap_or_else(|| "-".to_string()));
                }
                out
            }
            Format::Json(fields) => {
                let mut map = serde_json::Map::new();
                for (key, tokens) in fields {
                    let value = if let [single] = tokens.as_slice() {
                        match (single, self.value(single)) {
                            (_, None) => serde_json::Value::Null,
                            (
                                Token::ResponseCode
                                | Token::BytesReceived
                                | Token::BytesSent
                                | Token::Duration,
                                Some(v),
                            ) => v
                                .parse::<u64>()
                                .map(Into::into)
                                .unwrap_or(serde_json::Value::String(v)),
                            (_, Some(v)) => serde_json::Value::String(v),
                        }
                    } else {
                        let mut s = String::new();
                        for t in tokens {
                            s.push_str(&self.value(t).unwrap_or_else(|| "-".to_string()));
                        }
                        serde_json::Value::String(s)
                    };
                    map.insert(key.clone(), value);
                }
                let mut line = serde_json::Value::Object(map).to_string();
                line.push('\n');
                line
            }
        }
    }
}

impl AccessLog {
    pub fn log(&self, entry: &Entry<'_>, shared: &crate::server::ServerState) {
        if self.filter.as_ref().is_some_and(|f| !f.matches(entry)) {
            return;
        }
        match &self.output {
            // The writer thread only stops at exit; a failed send loses one line, never a
            // request.
            Output::Lines(sender) => {
                let _ = sender.send(entry.render(&self.format));
            }
            Output::Otel(otel) => match crate::http::side::endpoint(shared, &otel.cluster) {
                Some(addr) => crate::access_log_otel::log(otel, addr, entry, &self.format),
                None => tracing::debug!(
                    cluster = %otel.cluster,
                    "access log record dropped: the collector's cluster has no endpoint"
                ),
            },
        }
    }
}

/// Starts the writer thread for a sink and returns the sending half.
pub fn open(sink: &Sink) -> Result<mpsc::Sender<String>, std::io::Error> {
    let mut out: Box<dyn std::io::Write + Send> = match sink {
        Sink::Stdout => Box::new(std::io::stdout()),
        Sink::Stderr => Box::new(std::io::stderr()),
        Sink::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("weft-access-log".into())
        .spawn(move || {
            while let Ok(line) = rx.recv() {
                let _ = out.write_all(line.as_bytes());
                while let Ok(more) = rx.try_recv() {
                    let _ = out.write_all(more.as_bytes());
                }
                let _ = out.flush();
            }
        })?;
    Ok(tx)
}

/// `2026-11-21T16:12:00.123Z`, Envoy's default START_TIME.
pub fn format_time(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let mut s = String::with_capacity(24);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
    s
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_format_parses() {
        let tokens = parse_format(DEFAULT_FORMAT).unwrap();
        assert!(tokens.contains(&Token::ResponseFlags));
        assert!(parse_format("%NOPE%").unwrap_err().contains("%NOPE%"));
    }

    #[test]
    fn time_is_utc_iso8601_with_millis() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_190_400_123);
        assert_eq!(format_time(t), "2026-11-20T16:00:00.123Z");
        assert_eq!(flags::render(flags::UH | flags::NR), "UH,NR");
        assert_eq!(flags::render(0), "-");
    }
}
