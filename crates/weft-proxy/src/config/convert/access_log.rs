//! Access logs (a connection manager's or a TCP proxy's `access_log`): Envoy's file and
//! stream loggers, its OpenTelemetry logger, and the filters that pick which entries go out.

use super::{Result, decode_any, type_name};
use crate::access_log::{self, AccessLog, Format, Output, Sink};
use crate::config::FieldError;
use crate::server::StatsStore;
use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog as PbAccessLog, access_log as pb_access_log,
};
use envoy_types::pb::envoy::config::core::v3::grpc_service;
use envoy_types::pb::envoy::config::core::v3::{
    SubstitutionFormatString, data_source, substitution_format_string,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3::OpenTelemetryAccessLogConfig;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StderrAccessLog, StdoutAccessLog, stderr_access_log, stdout_access_log,
};
use envoy_types::pb::opentelemetry::proto::common::v1::{AnyValue, any_value};

pub(super) fn access_logs(
    list: &[PbAccessLog],
    path: &str,
    store: &StatsStore,
) -> Result<Vec<AccessLog>> {
    let mut out = Vec::new();
    for (i, log) in list.iter().enumerate() {
        let lpath = format!("{path}[{i}].typed_config");
        let Some(pb_access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
            return Err(FieldError::new(lpath, "is required"));
        };
        let (output, format) = match type_name(any) {
            "envoy.extensions.access_loggers.file.v3.FileAccessLog" => {
                let f: FileAccessLog = decode_any(any, &lpath)?;
                let format = match &f.access_log_format {
                    Some(file_access_log::AccessLogFormat::LogFormat(s)) => Some(s.clone()),
                    Some(_) => return Err(FieldError::new(&lpath, "only log_format is supported")),
                    None => None,
                };
                let sink = match f.path.as_str() {
                    "/dev/stdout" => Sink::Stdout,
                    "/dev/stderr" => Sink::Stderr,
                    "" => return Err(FieldError::new(format!("{lpath}.path"), "is required")),
                    p => Sink::File(p.to_string()),
                };
                (
                    lines(&sink, &lpath)?,
                    log_format(format.as_ref(), &format!("{lpath}.log_format"))?,
                )
            }
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog" => {
                let f: StdoutAccessLog = decode_any(any, &lpath)?;
                let stdout_access_log::AccessLogFormat::LogFormat(s) = f
                    .access_log_format
                    .unwrap_or(stdout_access_log::AccessLogFormat::LogFormat(
                        SubstitutionFormatString::default(),
                    ));
                (
                    lines(&Sink::Stdout, &lpath)?,
                    log_format(Some(&s), &format!("{lpath}.log_format"))?,
                )
            }
            "envoy.extensions.access_loggers.stream.v3.StderrAccessLog" => {
                let f: StderrAccessLog = decode_any(any, &lpath)?;
                let stderr_access_log::AccessLogFormat::LogFormat(s) = f
                    .access_log_format
                    .unwrap_or(stderr_access_log::AccessLogFormat::LogFormat(
                        SubstitutionFormatString::default(),
                    ));
                (
                    lines(&Sink::Stderr, &lpath)?,
                    log_format(Some(&s), &format!("{lpath}.log_format"))?,
                )
            }
            OTEL => {
                let c: OpenTelemetryAccessLogConfig = decode_any(any, &lpath)?;
                otel(&c, &lpath, store)?
            }
            other => {
                return Err(FieldError::new(
                    lpath,
                    format!("access logger {other} is not supported by the Weft proxy"),
                ));
            }
        };
        let filter = match &log.filter {
            Some(f) => Some(log_filter(f, &format!("{path}[{i}].filter"))?),
            None => None,
        };
        out.push(AccessLog {
            format,
            output,
            filter,
        });
    }
    Ok(out)
}

/// A file or stream, with its writer thread.
fn lines(sink: &Sink, path: &str) -> Result<Output> {
    access_log::open(sink)
        .map(Output::Lines)
        .map_err(|e| FieldError::new(path, format!("cannot open {sink:?}: {e}")))
}

const OTEL: &str = "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig";

/// A string `AnyValue`: the only kind of body or attribute the Weft proxy formats.
fn any_text(v: &AnyValue, path: &str) -> Result<Format> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => access_log::parse_format(s)
            .map(Format::Text)
            .map_err(|e| FieldError::new(path, e)),
        _ => Err(FieldError::new(
            path,
            "only string values are supported by the Weft proxy",
        )),
    }
}

/// Envoy's OpenTelemetry logger. `common_config.filter_state_objects_to_log` (which istiod
/// sets) is read by Envoy's gRPC loggers but not by this one, and so not here either.
// `common_config` is deprecated, and still what istiod sets.
#[allow(deprecated)]
fn otel(
    c: &OpenTelemetryAccessLogConfig,
    path: &str,
    store: &StatsStore,
) -> Result<(Output, Format)> {
    let common = c.common_config.clone().unwrap_or_default();
    if c.http_service.is_some() {
        return Err(FieldError::new(
            format!("{path}.http_service"),
            "OTLP logs over HTTP are not supported by the Weft proxy; use grpc_service",
        ));
    }
    let (grpc, gpath) = match (&c.grpc_service, &common.grpc_service) {
        (Some(g), _) => (g, format!("{path}.grpc_service")),
        (None, Some(g)) => (g, format!("{path}.common_config.grpc_service")),
        (None, None) => {
            return Err(FieldError::new(
                format!("{path}.grpc_service"),
                "is required",
            ));
        }
    };
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(target)) = &grpc.target_specifier else {
        return Err(FieldError::new(
            format!("{gpath}.envoy_grpc"),
            "is required (google_grpc is not supported by the Weft proxy)",
        ));
    };
    let body = match &c.body {
        Some(b) => any_text(b, &format!("{path}.body"))?,
        None => Format::Text(Vec::new()),
    };
    let mut attributes = Vec::new();
    for (i, kv) in c
        .attributes
        .iter()
        .flat_map(|l| l.values.iter())
        .enumerate()
    {
        let apath = format!("{path}.attributes.values[{i}]");
        let Some(v) = &kv.value else {
            return Err(FieldError::new(format!("{apath}.value"), "is required"));
        };
        attributes.push((kv.key.clone(), any_text(v, &format!("{apath}.value"))?));
    }
    let log_name = if c.log_name.is_empty() {
        common.log_name.clone()
    } else {
        c.log_name.clone()
    };
    let mut resource: Vec<(String, String)> = Vec::new();
    if !c.disable_builtin_labels {
        let local = store.istio.local();
        resource.push(("log_name".into(), log_name));
        resource.push(("zone_name".into(), local.zone.clone()));
        resource.push(("cluster_name".into(), local.service_cluster.clone()));
        resource.push(("node_name".into(), local.id.clone()));
    }
    for (i, kv) in c
        .resource_attributes
        .iter()
        .flat_map(|l| l.values.iter())
        .enumerate()
    {
        let Some(any_value::Value::StringValue(v)) =
            kv.value.as_ref().and_then(|v| v.value.as_ref())
        else {
            return Err(FieldError::new(
                format!("{path}.resource_attributes.values[{i}].value"),
                "only string values are supported by the Weft proxy",
            ));
        };
        // A later value of the same key wins, as in Envoy.
        resource.retain(|(k, _)| k != &kv.key);
        resource.push((kv.key.clone(), v.clone()));
    }
    let interval = c
        .buffer_flush_interval
        .as_ref()
        .or(common.buffer_flush_interval.as_ref());
    let bytes = c
        .buffer_size_bytes
        .as_ref()
        .or(common.buffer_size_bytes.as_ref());
    let log = crate::access_log_otel::OtelLog {
        cluster: target.cluster_name.clone(),
        authority: if target.authority.is_empty() {
            target.cluster_name.clone()
        } else {
            target.authority.clone()
        },
        attributes,
        resource,
        flush_interval: super::duration(interval)
            .filter(|d| !d.is_zero())
            .unwrap_or(crate::access_log_otel::DEFAULT_FLUSH_INTERVAL),
        buffer_bytes: bytes.map_or(crate::access_log_otel::DEFAULT_BUFFER_BYTES, |b| {
            b.value as usize
        }),
    };
    Ok((Output::Otel(std::sync::Arc::new(log)), body))
}

/// An access log's `filter`, of the kinds `access_log_filter` knows.
fn log_filter(
    f: &envoy_types::pb::envoy::config::accesslog::v3::AccessLogFilter,
    path: &str,
) -> Result<crate::access_log_filter::Filter> {
    use crate::access_log_filter::{Filter, Op};
    use envoy_types::pb::envoy::config::accesslog::v3::{
        access_log_filter::FilterSpecifier as S, comparison_filter::Op as PbOp,
    };
    let list = |filters: &[envoy_types::pb::envoy::config::accesslog::v3::AccessLogFilter],
                what: &str| {
        filters
            .iter()
            .enumerate()
            .map(|(i, f)| log_filter(f, &format!("{path}.{what}.filters[{i}]")))
            .collect::<Result<Vec<_>>>()
    };
    Ok(match &f.filter_specifier {
        Some(S::StatusCodeFilter(s)) => {
            let c = s.comparison.clone().unwrap_or_default();
            let value = c.value.map_or(0, |v| v.default_value);
            Filter::Status {
                op: match PbOp::try_from(c.op).unwrap_or(PbOp::Eq) {
                    PbOp::Eq => Op::Eq,
                    PbOp::Ge => Op::Ge,
                    PbOp::Le => Op::Le,
                    PbOp::Ne => Op::Ne,
                },
                value: u16::try_from(value).map_err(|_| {
                    FieldError::new(
                        format!("{path}.status_code_filter.comparison.value"),
                        "is not a status code",
                    )
                })?,
            }
        }
        Some(S::ResponseFlagFilter(r)) => {
            let mut bits = 0;
            for (i, name) in r.flags.iter().enumerate() {
                let Some((bit, _)) = access_log::flags::NAMES.iter().find(|(_, n)| n == name)
                else {
                    return Err(FieldError::new(
                        format!("{path}.response_flag_filter.flags[{i}]"),
                        format!("{name:?} is not a response flag the Weft proxy sets"),
                    ));
                };
                bits |= bit;
            }
            Filter::Flags(bits)
        }
        Some(S::AndFilter(a)) => Filter::And(list(&a.filters, "and_filter")?),
        Some(S::OrFilter(o)) => Filter::Or(list(&o.filters, "or_filter")?),
        Some(S::ExtensionFilter(x)) => {
            let tpath = format!("{path}.extension_filter.typed_config");
            let any = match &x.config_type {
                Some(envoy_types::pb::envoy::config::accesslog::v3::extension_filter::ConfigType::TypedConfig(a)) => a,
                None => return Err(FieldError::new(tpath, "is required")),
            };
            if type_name(any) != "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter" {
                return Err(FieldError::new(
                    tpath,
                    format!(
                        "access log filter {} is not supported by the Weft proxy",
                        type_name(any)
                    ),
                ));
            }
            let cel: envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter =
                decode_any(any, &tpath)?;
            Filter::Cel(
                crate::access_log_filter::parse(&cel.expression)
                    .map_err(|e| FieldError::new(format!("{tpath}.expression"), e))?,
            )
        }
        _ => {
            return Err(FieldError::new(
                path,
                "only status_code_filter, response_flag_filter, and_filter, or_filter and the CEL extension_filter are supported",
            ));
        }
    })
}

fn log_format(f: Option<&SubstitutionFormatString>, path: &str) -> Result<Format> {
    let text = |s: &str| {
        access_log::parse_format(s)
            .map(Format::Text)
            .map_err(|e| FieldError::new(path, e))
    };
    let Some(f) = f else {
        return text(access_log::DEFAULT_FORMAT);
    };
    match &f.format {
        None => text(access_log::DEFAULT_FORMAT),
        Some(substitution_format_string::Format::TextFormatSource(ds)) => match &ds.specifier {
            Some(data_source::Specifier::InlineString(s)) => text(s),
            Some(data_source::Specifier::InlineBytes(b)) => text(&String::from_utf8_lossy(b)),
            _ => Err(FieldError::new(
                format!("{path}.text_format_source"),
                "only inline_string is supported",
            )),
        },
        Some(substitution_format_string::Format::JsonFormat(s)) => {
            let mut fields = Vec::new();
            for (k, v) in &s.fields {
                let Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(t)) = &v.kind
                else {
                    return Err(FieldError::new(
                        format!("{path}.json_format.{k}"),
                        "only string values are supported",
                    ));
                };
                let tokens = access_log::parse_format(t)
                    .map_err(|e| FieldError::new(format!("{path}.json_format.{k}"), e))?;
                fields.push((k.clone(), tokens));
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Format::Json(fields))
        }
        Some(_) => Err(FieldError::new(
            path,
            "only text_format_source and json_format are supported",
        )),
    }
}
