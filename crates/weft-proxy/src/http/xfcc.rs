//! `x-forwarded-client-cert` (XFCC), as Envoy's connection manager writes it
//! (`forward_client_cert_details`, `set_current_client_cert_details`): what an mTLS client
//! proved, told to the application behind the proxy. Istio's sidecars append it on every
//! inbound request (`APPEND_FORWARD` with subject, URI and DNS), so an application can see the
//! caller's SPIFFE identity; a plaintext request never carries a client's own.

use http::{HeaderMap, HeaderName, HeaderValue};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// `forward_client_cert_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    /// Envoy's default: the header is removed from every request.
    #[default]
    Sanitize,
    /// Forwarded as the client sent it, on mTLS connections only.
    ForwardOnly,
    /// On mTLS connections, this hop's element is appended.
    AppendForward,
    /// On mTLS connections, the header is this hop's element alone.
    SanitizeSet,
    /// Forwarded as the client sent it, always.
    AlwaysForwardOnly,
}

impl ForwardClientCert {
    /// Whether the connection's element must be worked out.
    pub fn writes(self) -> bool {
        matches!(self, Self::AppendForward | Self::SanitizeSet)
    }
}

/// `set_current_client_cert_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CertDetails {
    pub subject: bool,
    pub cert: bool,
    pub chain: bool,
    pub uri: bool,
    pub dns: bool,
}

/// This hop's element for a connection whose client presented `chain` (DER, its certificate
/// first, whose names are `peer`) to a server whose own certificate names `local_uris`:
/// `By=…;Hash=…;Cert="…";Chain="…";Subject="…";URI=…;DNS=…`, in Envoy's order.
pub fn element(
    details: CertDetails,
    local_uris: &[String],
    chain: &[&[u8]],
    peer: &crate::rbac::PeerIdentity,
) -> String {
    let Some(cert) = chain.first().copied() else {
        return String::new();
    };
    let mut parts: Vec<String> = local_uris.iter().map(|u| format!("By={u}")).collect();
    parts.push(format!("Hash={}", sha256_hex(cert)));
    if details.cert {
        parts.push(format!("Cert=\"{}\"", url_encoded_pem(cert)));
    }
    if details.chain {
        let all: String = chain.iter().map(|c| url_encoded_pem(c)).collect();
        parts.push(format!("Chain=\"{all}\""));
    }
    if details.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject));
    }
    if details.uri {
        if peer.uris.is_empty() {
            // The key stays even when the certificate has no URI.
            parts.push("URI=".into());
        }
        parts.extend(peer.uris.iter().map(|u| format!("URI={u}")));
    }
    if details.dns {
        parts.extend(peer.dns.iter().map(|d| format!("DNS={d}")));
    }
    parts.join(";")
}

/// What RBAC's `authenticated` principal reads of a client certificate (DER).
pub fn peer_identity(der: &[u8]) -> crate::rbac::PeerIdentity {
    let Ok((_, c)) = X509Certificate::from_der(der) else {
        return crate::rbac::PeerIdentity::default();
    };
    let all = sans(&c);
    let of = |kind: &str| {
        all.iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    };
    crate::rbac::PeerIdentity {
        uris: of("URI"),
        dns: of("DNS"),
        subject: rfc2253(c.subject()),
    }
}

/// The URI SANs of a certificate (DER): a server's own, for `By`.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| {
            sans(&c)
                .into_iter()
                .filter(|(k, _)| *k == "URI")
                .map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default()
}

fn sans(c: &X509Certificate<'_>) -> Vec<(&'static str, String)> {
    let Ok(Some(ext)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(("URI", (*u).to_string())),
            GeneralName::DNSName(d) => Some(("DNS", (*d).to_string())),
            _ => None,
        })
        .collect()
}

/// A certificate as OpenSSL writes it in PEM (64 characters a line), with the characters Envoy
/// escapes escaped: newline, space, `+`, `/`, `=`.
fn url_encoded_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 11 / 10);
    for ch in pem.chars() {
        match ch {
            '\n' => out.push_str("%0A"),
            ' ' => out.push_str("%20"),
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

fn sha256_hex(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A name as OpenSSL prints it with `XN_FLAG_RFC2253`: the last RDN first, `,` between them,
/// short attribute names, RFC 2253 escaping.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut rdns = Vec::new();
    for rdn in name.iter().collect::<Vec<_>>().into_iter().rev() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let oid = a.attr_type().to_id_string();
                let key = match oid.as_str() {
                    "2.5.4.3" => "CN".to_string(),
                    "2.5.4.6" => "C".to_string(),
                    "2.5.4.7" => "L".to_string(),
                    "2.5.4.8" => "ST".to_string(),
                    "2.5.4.9" => "street".to_string(),
                    "2.5.4.10" => "O".to_string(),
                    "2.5.4.11" => "OU".to_string(),
                    "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                    "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                    "1.2.840.113549.1.9.1" => "emailAddress".to_string(),
                    other => other.to_string(),
                };
                let value = a.as_str().map(escape).unwrap_or_default();
                format!("{key}={value}")
            })
            .collect();
        rdns.push(attrs.join("+"));
    }
    rdns.join(",")
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, ch) in v.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (ch == '#' || ch == ' '))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// This hop's element as a header value, made once per connection so that a request only
/// shares it.
pub fn value(element: &str) -> HeaderValue {
    HeaderValue::from_bytes(element.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Applies `mode` to a request; `client` is the connection's element when its client presented
/// a certificate (empty when the mode writes none), `None` when it did not.
pub fn on_request(headers: &mut HeaderMap, mode: ForwardClientCert, client: Option<&HeaderValue>) {
    if mode == ForwardClientCert::AlwaysForwardOnly {
        return;
    }
    let Some(element) = client.filter(|_| mode != ForwardClientCert::Sanitize) else {
        headers.remove(&XFCC);
        return;
    };
    let updated = match (mode, headers.get(&XFCC).map(HeaderValue::as_bytes)) {
        (ForwardClientCert::AppendForward, Some(existing)) if !existing.is_empty() => {
            let mut v = existing.to_vec();
            v.push(b',');
            v.extend_from_slice(element.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        (ForwardClientCert::AppendForward | ForwardClientCert::SanitizeSet, _) => {
            Some(element.clone())
        }
        _ => return,
    };
    if let Some(v) = updated {
        headers.insert(XFCC.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let mut h = HeaderMap::new();
        h.insert(XFCC.clone(), HeaderValue::from_static("By=a;URI=forged"));
        let mut plain = h.clone();
        on_request(&mut plain, ForwardClientCert::AppendForward, None);
        let hash = value("Hash=1");
        assert!(
            plain.get(&XFCC).is_none(),
            "a plaintext client proves nothing"
        );
        let mut appended = h.clone();
        on_request(&mut appended, ForwardClientCert::AppendForward, Some(&hash));
        assert_eq!(appended[&XFCC], "By=a;URI=forged,Hash=1");
        let mut set = h.clone();
        on_request(&mut set, ForwardClientCert::SanitizeSet, Some(&hash));
        assert_eq!(set[&XFCC], "Hash=1");
        let mut sanitized = h.clone();
        on_request(&mut sanitized, ForwardClientCert::Sanitize, Some(&hash));
        assert!(sanitized.get(&XFCC).is_none());
        let mut kept = h.clone();
        on_request(&mut kept, ForwardClientCert::AlwaysForwardOnly, None);
        assert_eq!(kept[&XFCC], "By=a;URI=forged");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(escape("#1"), "\\#1");
    }
}
