//! `envoy.filters.http.fault`'s `HTTPFault`, as the filter's own config or a route's, into the
//! policy the router applies.

use super::{Result, duration};
use crate::config::FieldError;
use crate::http::filter::fault::{Abort, FaultPolicy, Share, Source};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use http::StatusCode;

/// A share per million, as Envoy reads it: the numerator over its denominator (100 % when
/// unset), capped at the whole.
pub(super) fn per_million(p: Option<&FractionalPercent>) -> u32 {
    let Some(p) = p else { return 1_000_000 };
    let scale = match p.denominator {
        0 => 10_000, // HUNDRED
        1 => 100,    // TEN_THOUSAND
        _ => 1,      // MILLION
    };
    p.numerator.saturating_mul(scale).min(1_000_000)
}

fn share(p: Option<&FractionalPercent>) -> Share {
    let unit = match p.map(|p| p.denominator) {
        None | Some(0) => 10_000,
        Some(1) => 100,
        Some(_) => 1,
    };
    Share {
        per_million: per_million(p),
        unit,
    }
}

/// An `HTTPFault`, the filter's own or a route's.
pub(crate) fn fault_from_any(
    any: &envoy_types::pb::google::protobuf::Any,
    path: &str,
) -> Result<FaultPolicy> {
    let f: HttpFault = super::decode_any(any, path)?;
    fault_policy(&f, path)
}

fn fault_policy(f: &HttpFault, path: &str) -> Result<FaultPolicy> {
    let delay = match &f.delay {
        None => None,
        Some(d) => match &d.fault_delay_secifier {
            Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)) => {
                if fixed.seconds < 0 || fixed.nanos < 0 {
                    return Err(FieldError::new(
                        format!("{path}.delay.fixed_delay"),
                        "must not be negative",
                    ));
                }
                let d_std = duration(Some(fixed)).unwrap_or_default();
                Some((Source::Fixed(d_std), share(d.percentage.as_ref())))
            }
            Some(fault_delay::FaultDelaySecifier::HeaderDelay(_)) => {
                Some((Source::Header, share(d.percentage.as_ref())))
            }
            None => {
                return Err(FieldError::new(
                    format!("{path}.delay"),
                    "fixed_delay or header_delay is required",
                ));
            }
        },
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let kind = match &a.error_type {
                Some(fault_abort::ErrorType::HttpStatus(code)) => {
                    let status = u16::try_from(*code)
                        .ok()
                        .filter(|c| (200..600).contains(c))
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .ok_or_else(|| {
                            FieldError::new(
                                format!("{path}.abort.http_status"),
                                format!("{code} is not a status from 200 to 599"),
                            )
                        })?;
                    Source::Fixed(Abort::Http(status))
                }
                Some(fault_abort::ErrorType::GrpcStatus(code)) => Source::Fixed(Abort::Grpc(*code)),
                Some(fault_abort::ErrorType::HeaderAbort(_)) => Source::Header,
                None => {
                    return Err(FieldError::new(
                        format!("{path}.abort"),
                        "http_status, grpc_status or header_abort is required",
                    ));
                }
            };
            Some((kind, share(a.percentage.as_ref())))
        }
    };
    Ok(FaultPolicy {
        delay,
        abort,
        max_active: f.max_active_faults.as_ref().map(|m| u64::from(m.value)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_scale_and_cap_as_envoy_reads_them() {
        let fp = |numerator, denominator| FractionalPercent {
            numerator,
            denominator,
        };
        assert_eq!(per_million(Some(&fp(30, 0))), 300_000);
        assert_eq!(per_million(Some(&fp(1, 1))), 100);
        assert_eq!(per_million(Some(&fp(1000, 2))), 1000);
        assert_eq!(per_million(Some(&fp(250, 0))), 1_000_000);
        assert_eq!(per_million(None), 1_000_000);
    }
}
