//! `gateway.SecretAnalyzer`: a Gateway server's `credentialName` must name a Secret in the
//! namespace of the workload the gateway selects, not of the Gateway (IST0101), and that Secret
//! must hold a certificate and key whose certificate parses and is valid now (IST0161). A gateway
//! that selects no pod gets IST0101 for its selector instead.
//!
//! Like istiod when it serves the credential, Istio checks only the certificate: the key need be
//! present and non-empty, but is not parsed or matched against the certificate.

use super::{Context, Findings};
use crate::selects;
use serde_json::Value;
use std::collections::BTreeMap;
use weft_api::path::FieldPath;
use weft_api::types::common::Labels;

/// A Secret's `data`, decoded, by key.
type SecretData = BTreeMap<String, Vec<u8>>;

pub fn secrets(ctx: &Context, out: &mut Findings) {
    let pods: Vec<(&str, &Labels)> = ctx
        .objects
        .iter()
        .filter(|o| o.resource.kind() == "Pod")
        .map(|o| (Context::namespace(o), &o.resource.metadata().labels))
        .collect();
    // A Secret whose data is not base64 never reaches Istio's store, so it counts as missing.
    let secrets: Vec<(&str, &str, SecretData)> = ctx
        .objects
        .iter()
        .filter(|o| o.resource.kind() == "Secret")
        .filter_map(|o| {
            let data = secret_data(&Context::json(o))?;
            Some((Context::namespace(o), o.resource.name(), data))
        })
        .collect();
    for o in &ctx.objects {
        if o.resource.kind() != "Gateway"
            || !o.resource.api_version().starts_with("networking.istio.io/")
        {
            continue;
        }
        let json = Context::json(o);
        let selector: Labels = json
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        // Istio takes the namespace of the first pod selected, and treats "" as no pod.
        let ns = pods
            .iter()
            .find(|(_, labels)| selects(&selector, labels))
            .map_or("", |(ns, _)| *ns);
        if ns.is_empty() {
            let at = match selector.keys().next() {
                Some(k) => FieldPath::root()
                    .key("spec")
                    .key("selector")
                    .key(k.as_str()),
                None => FieldPath::root(),
            };
            let text: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.add(o, &at, "IST0101", &["selector".into(), text.join(",")]);
            continue;
        }
        let servers = json
            .pointer("/spec/servers")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, server) in servers.iter().enumerate() {
            let Some(name) = server
                .pointer("/tls/credentialName")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
            else {
                continue;
            };
            // `ns/name` names a Secret elsewhere; a bare name is in the workload's namespace.
            let (secret_ns, secret_name) = name.split_once('/').unwrap_or((ns, name));
            let at = FieldPath::root()
                .key("spec")
                .key("servers")
                .index(i)
                .key("tls")
                .key("credentialName");
            match secrets
                .iter()
                .find(|(n, s, _)| *n == secret_ns && *s == secret_name)
            {
                None => {
                    let args = ["credentialName".to_string(), name.to_string()];
                    out.add(o, &at, "IST0101", &args);
                }
                Some((_, _, data)) if !valid_credential(data) => {
                    let args = [o.resource.name().to_string(), ns.to_string()];
                    out.add(o, &at, "IST0161", &args);
                }
                Some(_) => {}
            }
        }
    }
}

/// Istio's `ExtractCertInfo` then `ValidateCertificate`: `cert` and `key`, else `tls.crt` and
/// `tls.key`, both non-empty; then the certificate must be valid.
fn valid_credential(data: &BTreeMap<String, Vec<u8>>) -> bool {
    let filled = |k: &str| data.get(k).filter(|v| !v.is_empty());
    let generic = (filled("cert"), filled("key"));
    let tls = (filled("tls.crt"), filled("tls.key"));
    match (generic, tls) {
        ((Some(cert), Some(_)), _) | (_, (Some(cert), Some(_))) => certificate_valid(cert),
        _ => false,
    }
}

/// The first PEM block, whatever its type, holds one or more DER certificates; each must
/// parse and be within its validity period now.
fn certificate_valid(pem: &[u8]) -> bool {
    let Some(der) = first_pem_block(pem) else {
        return false;
    };
    let mut rest = der.as_slice();
    while !rest.is_empty() {
        match x509_parser::parse_x509_certificate(rest) {
            Ok((next, cert)) if cert.validity().is_valid() => rest = next,
            _ => return false,
        }
    }
    true
}

/// Go's `pem.Decode`: the first well-formed block (BEGIN line, optional `Key: value` headers,
/// base64 body, END line of the same type with nothing after it on the line); blocks that are
/// not well-formed are skipped.
fn first_pem_block(data: &[u8]) -> Option<Vec<u8>> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    const DASHES: &[u8] = b"-----";
    let mut rest = data;
    loop {
        rest = if rest.starts_with(BEGIN) {
            rest.get(BEGIN.len()..)?
        } else {
            let at = find(rest, b"\n-----BEGIN ")?;
            rest.get(at + 1 + BEGIN.len()..)?
        };
        let (type_line, after) = line(rest);
        rest = after;
        let Some(kind) = type_line.strip_suffix(DASHES) else {
            continue;
        };
        let mut headers = false;
        loop {
            if rest.is_empty() {
                return None;
            }
            let (l, next) = line(rest);
            if !l.contains(&b':') {
                break;
            }
            headers = true;
            rest = next;
        }
        let (body_end, trailer_at) = if !headers && rest.starts_with(END) {
            (0, END.len())
        } else {
            match find(rest, b"\n-----END ") {
                Some(i) => (i, i + 1 + END.len()),
                None => continue,
            }
        };
        let trailer = rest.get(trailer_at..).unwrap_or_default();
        let trailer_len = kind.len() + DASHES.len();
        let (Some(end_line), Some(after_end)) =
            (trailer.get(..trailer_len), trailer.get(trailer_len..))
        else {
            continue;
        };
        if !end_line.starts_with(kind)
            || !end_line.ends_with(DASHES)
            || !line(after_end).0.is_empty()
        {
            continue;
        }
        let body: Vec<u8> = rest
            .get(..body_end)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|b| !matches!(*b, b' ' | b'\t'))
            .collect();
        if let Some(bytes) = decode_base64(&body) {
            return Some(bytes);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One line without its newline and trailing blanks, and what follows it.
fn line(data: &[u8]) -> (&[u8], &[u8]) {
    let (mut l, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            data.get(..i).unwrap_or_default(),
            data.get(i + 1..).unwrap_or_default(),
        ),
        None => (data, &[][..]),
    };
    while let [head @ .., last] = l
        && matches!(*last, b' ' | b'\t' | b'\r')
    {
        l = head;
    }
    (l, rest)
}

/// A Secret's `data` as the Kubernetes client decodes it (null values are empty); `None` when
/// a value is not a base64 string, which fails decoding of the whole Secret.
fn secret_data(secret: &Value) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut out: BTreeMap<String, Vec<u8>> = match secret.get("data").filter(|d| !d.is_null()) {
        None => BTreeMap::new(),
        Some(data) => data
            .as_object()?
            .iter()
            .map(|(k, v)| {
                let bytes = match v {
                    Value::Null => Vec::new(),
                    Value::String(s) => decode_base64(s.as_bytes())?,
                    _ => return None,
                };
                Some((k.clone(), bytes))
            })
            .collect::<Option<_>>()?,
    };
    // A file's `stringData` is what the API server would have merged into `data`.
    for (k, v) in secret
        .get("stringData")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(text) = v.as_str() {
            out.insert(k.clone(), text.as_bytes().to_vec());
        }
    }
    Some(out)
}

/// Go's `base64.StdEncoding`: padded, line breaks ignored, stray bits after the last byte
/// allowed.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let text: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !matches!(*b, b'\r' | b'\n'))
        .collect();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let quads = text.len() / 4;
    let mut out = Vec::with_capacity(quads * 3);
    for (n, quad) in text.chunks_exact(4).enumerate() {
        let mut acc = 0u32;
        let mut pad = 0usize;
        for (i, &c) in quad.iter().enumerate() {
            let v = if c == b'=' {
                // Padding only fills the last one or two places of the last quad.
                if n + 1 != quads || i < 2 {
                    return None;
                }
                pad += 1;
                0
            } else if pad > 0 {
                return None;
            } else {
                sextet(c)?
            };
            acc = (acc << 6) | u32::from(v);
        }
        out.extend(acc.to_be_bytes().iter().skip(1).take(3 - pad));
    }
    Some(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_as_go_does() {
        assert_eq!(decode_base64(b"aHVzaAo=").as_deref(), Some(&b"hush\n"[..]));
        assert_eq!(decode_base64(b"aHVz\naA==").as_deref(), Some(&b"hush"[..]));
        assert_eq!(decode_base64(b"").as_deref(), Some(&b""[..]));
        assert!(decode_base64(b"aHVzaA").is_none());
        assert!(decode_base64(b"aH=zaA==").is_none());
        assert!(decode_base64(b"a===").is_none());
    }

    #[test]
    fn pem_blocks_need_matching_end_lines() {
        let pem = b"junk\n-----BEGIN X-----\naGk=\n-----END X-----\n";
        assert_eq!(first_pem_block(pem).as_deref(), Some(&b"hi"[..]));
        let bad =
            b"-----BEGIN X-----\naGk=\n-----END Y-----\n-----BEGIN Z-----\naGE=\n-----END Z-----";
        assert_eq!(first_pem_block(bad).as_deref(), Some(&b"ha"[..]));
        assert!(first_pem_block(b"hush hush hush\n").is_none());
        assert!(!certificate_valid(
            b"-----BEGIN CERTIFICATE-----\naGk=\n-----END CERTIFICATE-----\n"
        ));
    }
}
