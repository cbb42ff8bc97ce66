//! Why the proxy answered a request itself. Every local reply has one cause, and the cause alone
//! decides the status, the response flag, Envoy's `%RESPONSE_CODE_DETAILS%`, the counter, the
//! body and, for gRPC clients, the gRPC status: the strings are Envoy 1.40's, read off its access
//! log for the same requests.

use crate::access_log::flags;
use crate::stats::{self, HttpStats};
use http::StatusCode;

/// Why an upstream connection could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The host refused the connection.
    Refused,
    /// No connection within `connect_timeout`.
    Timeout,
    /// The TLS or HTTP/2 handshake failed.
    Handshake,
}

/// A request Envoy's codec or connection manager refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamError {
    /// HTTP/1.0 or older (`accept_http_10` is off): 426.
    LowVersion,
    /// What Envoy's HTTP/1 parser rejects: an unknown or lowercase method, a request target
    /// that is not a path, a malformed chunked body.
    Codec,
    /// A `transfer-encoding` other than `chunked`: 501.
    InvalidTransferEncoding,
    ContentLengthAndChunked,
    /// `OPTIONS *` and other targets that are not paths: 404, no route looked at.
    AbsolutePathRejected,
    MissingHost,
    /// A `Host`/`:authority` with characters an authority may not have.
    InvalidAuthority,
    /// The header section is over `max_request_headers_kb`: 431.
    HeadersTooLarge,
    /// A header name with `_` under `headers_with_underscores_action: REJECT_REQUEST`.
    Underscore,
}

impl DownstreamError {
    /// Envoy closes the connection after answering: the rest of what the client sent cannot be
    /// trusted to be framed as it says.
    pub fn closes_connection(self) -> bool {
        !matches!(self, DownstreamError::AbsolutePathRejected)
    }

    /// Refused by Envoy's codec, before a request exists: flag DPE, the status's reason phrase
    /// as the body, no request in the access log. The others (a missing Host, `OPTIONS *`) are
    /// refused by the connection manager, after the request was parsed.
    pub fn by_codec(self) -> bool {
        !matches!(
            self,
            DownstreamError::MissingHost | DownstreamError::AbsolutePathRejected
        )
    }
}

/// The proxy's own answer, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// No route matched (or the route table has not arrived).
    NoRoute,
    /// The route names a cluster the proxy does not have; the status is the route's
    /// `cluster_not_found_response_code`.
    ClusterNotFound(StatusCode),
    /// The cluster has no host to send to.
    NoHealthyUpstream,
    /// The circuit breakers refused the request.
    Overflow,
    /// No connection to the chosen host.
    ConnectFailure(ConnectFailure),
    /// The upstream's answer could not be parsed.
    UpstreamProtocolError,
    /// The upstream closed or reset the stream before its answer's headers.
    UpstreamReset,
    /// The route timeout covering every try expired.
    UpstreamTimeout,
    /// The last try's `per_try_timeout` expired.
    PerTryTimeout,
    /// The last try's `per_try_idle_timeout` expired.
    PerTryIdleTimeout,
    /// A retry found the request body no longer kept (it outgrew the buffer limit).
    RetryBufferExceeded,
    /// A stream timer expired; `request_complete` says whether the request had all arrived
    /// (Envoy answers 408 while it is still arriving, 504 after).
    StreamIdleTimeout {
        request_complete: bool,
    },
    RequestTimeout {
        request_complete: bool,
    },
    MaxStreamDuration {
        request_complete: bool,
    },
    /// The fault filter aborted the request.
    FaultAbort(super::filter::fault::Abort),
    /// The local rate limit filter found no token; the status is its configured one.
    RateLimited(StatusCode),
    /// An upgrade the connection manager does not list.
    UpgradeRefused,
    /// The client's request is refused, as Envoy's codec refuses it.
    Downstream(DownstreamError),
    /// The request cannot be forwarded as it is (a redirect or rewrite that makes an invalid
    /// header or URI); `details` is Envoy's word for it.
    BadRequest {
        details: &'static str,
    },
    /// The RBAC filter denied the request; `details` names the policy that did.
    RbacDenied {
        details: &'static str,
    },
    /// `jwt_authn` refused the request's token (or its absence).
    JwtDenied(crate::jwt::JwtError),
}

impl LocalReply {
    pub fn status(&self) -> StatusCode {
        use LocalReply::*;
        match self {
            NoRoute => StatusCode::NOT_FOUND,
            RbacDenied { .. } => StatusCode::FORBIDDEN,
            JwtDenied(e) => e.status(),
            ClusterNotFound(s) | RateLimited(s) => *s,
            NoHealthyUpstream | Overflow | ConnectFailure(_) | UpstreamReset => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamProtocolError => StatusCode::BAD_GATEWAY,
            UpstreamTimeout | PerTryTimeout | PerTryIdleTimeout => StatusCode::GATEWAY_TIMEOUT,
            RetryBufferExceeded => StatusCode::INSUFFICIENT_STORAGE,
            StreamIdleTimeout { request_complete }
            | RequestTimeout { request_complete }
            | MaxStreamDuration { request_complete } => {
                if *request_complete {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::REQUEST_TIMEOUT
                }
            }
            FaultAbort(super::filter::fault::Abort::Http(s)) => *s,
            // Envoy answers a gRPC abort with 200; gRPC clients read the status from the
            // trailers, others get the text.
            FaultAbort(super::filter::fault::Abort::Grpc(_)) => StatusCode::OK,
            UpgradeRefused => StatusCode::FORBIDDEN,
            BadRequest { .. } => StatusCode::BAD_REQUEST,
            Downstream(e) => match e {
                DownstreamError::LowVersion => StatusCode::UPGRADE_REQUIRED,
                DownstreamError::InvalidTransferEncoding => StatusCode::NOT_IMPLEMENTED,
                DownstreamError::AbsolutePathRejected => StatusCode::NOT_FOUND,
                DownstreamError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The response flag (`%RESPONSE_FLAGS%`), 0 for none.
    pub fn flag(&self) -> u32 {
        use LocalReply::*;
        match self {
            NoRoute => flags::NR,
            ClusterNotFound(_) => flags::NC,
            NoHealthyUpstream => flags::UH,
            Overflow => flags::UO,
            ConnectFailure(_) => flags::UF,
            UpstreamProtocolError => flags::UPE,
            UpstreamReset => flags::UC,
            UpstreamTimeout | PerTryTimeout | PerTryIdleTimeout => flags::UT,
            StreamIdleTimeout { .. } => flags::SI,
            FaultAbort(_) => flags::FI,
            RateLimited(_) => flags::RL,
            Downstream(e) if e.by_codec() => flags::DPE,
            Downstream(_) => 0,
            RetryBufferExceeded
            | RequestTimeout { .. }
            | MaxStreamDuration { .. }
            | UpgradeRefused
            | BadRequest { .. }
            | RbacDenied { .. }
            | JwtDenied(_) => 0,
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%`.
    pub fn details(&self) -> &'static str {
        use LocalReply::*;
        match self {
            NoRoute => "route_not_found",
            ClusterNotFound(_) => "cluster_not_found",
            NoHealthyUpstream => "no_healthy_upstream",
            Overflow => "upstream_reset_before_response_started{overflow}",
            ConnectFailure(self::ConnectFailure::Refused) => {
                "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"
            }
            ConnectFailure(self::ConnectFailure::Timeout) => {
                "upstream_reset_before_response_started{connection_timeout}"
            }
            ConnectFailure(self::ConnectFailure::Handshake) => {
                "upstream_reset_before_response_started{remote_connection_failure}"
            }
            UpstreamProtocolError => "upstream_reset_before_response_started{protocol_error}",
            UpstreamReset => "upstream_reset_before_response_started{connection_termination}",
            UpstreamTimeout => "response_timeout",
            PerTryTimeout => "upstream_per_try_timeout",
            PerTryIdleTimeout => "upstream_per_try_idle_timeout",
            RetryBufferExceeded => "request_payload_exceeded_retry_buffer_limit",
            StreamIdleTimeout { .. } => "stream_idle_timeout",
            RequestTimeout { .. } => "request_overall_timeout",
            MaxStreamDuration { .. } => "max_duration_timeout",
            FaultAbort(_) => "fault_filter_abort",
            RateLimited(_) => "local_rate_limited",
            UpgradeRefused => "upgrade_failed",
            BadRequest { details } | RbacDenied { details } => details,
            JwtDenied(e) => e.details(),
            Downstream(e) => match e {
                DownstreamError::LowVersion => "low_version",
                DownstreamError::Codec => "http1.codec_error",
                DownstreamError::InvalidTransferEncoding => "http1.invalid_transfer_encoding",
                DownstreamError::ContentLengthAndChunked => {
                    "http1.content_length_and_chunked_not_allowed"
                }
                DownstreamError::AbsolutePathRejected => "absolute_path_rejected",
                DownstreamError::MissingHost => "missing_host_header",
                DownstreamError::InvalidAuthority => "http.invalid_authority",
                DownstreamError::HeadersTooLarge => "http1.headers_too_large",
                DownstreamError::Underscore => "unexpected_underscore",
            },
        }
    }

    pub fn body(&self) -> &'static str {
        use LocalReply::*;
        match self {
            NoRoute | ClusterNotFound(_) | UpgradeRefused | BadRequest { .. } => "",
            RbacDenied { .. } => "RBAC: access denied",
            JwtDenied(e) => e.message(),
            // Envoy's codec errors say the status's reason phrase.
            Downstream(e) if e.by_codec() => self.status().canonical_reason().unwrap_or(""),
            Downstream(_) => "",
            NoHealthyUpstream => "no healthy upstream",
            Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            ConnectFailure(self::ConnectFailure::Timeout) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
            }
            ConnectFailure(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
            }
            UpstreamProtocolError => {
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
            }
            UpstreamReset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            UpstreamTimeout | PerTryTimeout | PerTryIdleTimeout => "upstream request timeout",
            RetryBufferExceeded => "exceeded request buffer limit while retrying upstream",
            StreamIdleTimeout { .. } => "stream timeout",
            RequestTimeout { .. } => "request timeout",
            MaxStreamDuration { .. } => "downstream duration timeout",
            FaultAbort(_) => "fault filter abort",
            RateLimited(_) => "local_rate_limited",
        }
    }

    /// The gRPC status a gRPC client gets, where it is not the one Envoy maps from the HTTP
    /// status.
    pub fn grpc_status(&self) -> Option<u16> {
        match self {
            LocalReply::MaxStreamDuration { .. } => Some(super::grpc::DEADLINE_EXCEEDED),
            LocalReply::FaultAbort(super::filter::fault::Abort::Grpc(code)) => {
                u16::try_from(*code).ok()
            }
            _ => None,
        }
    }

    /// The reply says `x-envoy-overloaded: true` (unless `suppress_envoy_headers`).
    pub fn overloaded(&self) -> bool {
        matches!(self, LocalReply::Overflow)
    }

    /// The reply stands for the upstream's answer: it counts in the cluster's
    /// `upstream_rq_<code>`, as Envoy counts the replies its router makes for a host.
    pub fn counts_as_upstream(&self) -> bool {
        use LocalReply::*;
        matches!(
            self,
            Overflow
                | ConnectFailure(_)
                | UpstreamProtocolError
                | UpstreamReset
                | UpstreamTimeout
                | PerTryTimeout
                | PerTryIdleTimeout
        )
    }

    /// The connection manager's counter for this cause, if it has one (`http.<prefix>.*`).
    pub fn count(&self, s: &HttpStats) {
        use LocalReply::*;
        match self {
            NoRoute => stats::inc(&s.no_route),
            ClusterNotFound(_) => stats::inc(&s.no_cluster),
            StreamIdleTimeout { .. } => stats::inc(&s.downstream_rq_idle_timeout),
            RequestTimeout { .. } => stats::inc(&s.downstream_rq_timeout),
            MaxStreamDuration { .. } => stats::inc(&s.downstream_rq_max_duration_reached),
            Downstream(e) if e.by_codec() => stats::inc(&s.downstream_cx_protocol_error),
            _ => {}
        }
    }
}

impl From<&crate::upstream::ConnectError> for LocalReply {
    fn from(e: &crate::upstream::ConnectError) -> Self {
        use crate::upstream::ConnectError as E;
        match e {
            E::Overflow => LocalReply::Overflow,
            E::Refused(_) => LocalReply::ConnectFailure(ConnectFailure::Refused),
            E::Timeout => LocalReply::ConnectFailure(ConnectFailure::Timeout),
            E::Handshake(_) | E::Tls(_) => LocalReply::ConnectFailure(ConnectFailure::Handshake),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_envoys_wording() {
        assert_eq!(
            LocalReply::ConnectFailure(ConnectFailure::Refused).body(),
            "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
        );
        assert_eq!(
            LocalReply::Overflow.body(),
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        );
    }

    #[test]
    fn stream_timers_answer_408_until_the_request_is_in() {
        let early = LocalReply::StreamIdleTimeout {
            request_complete: false,
        };
        let late = LocalReply::StreamIdleTimeout {
            request_complete: true,
        };
        assert_eq!(early.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
