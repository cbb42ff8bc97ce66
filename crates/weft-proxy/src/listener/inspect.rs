//! Listener filters that look at a connection's first bytes without consuming them:
//! `tls_inspector` (is it TLS, which SNI and ALPN does the ClientHello carry) and
//! `http_inspector` (is plaintext HTTP/1.x or h2c). What they find selects the filter chain.

/// What the listener filters learned about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// `tls` or `raw_buffer` (Envoy's default when no filter says otherwise).
    pub transport_protocol: &'static str,
    /// The ClientHello's SNI, lowercase; empty when none.
    pub server_name: String,
    /// ALPN from the ClientHello, or `http/1.1`, `http/1.0`, `h2c` from the HTTP inspector.
    pub application_protocols: Vec<String>,
}

impl Default for Detected {
    fn default() -> Self {
        Detected {
            transport_protocol: "raw_buffer",
            server_name: String::new(),
            application_protocols: Vec::new(),
        }
    }
}

/// The outcome of looking at the bytes that have arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek<T> {
    /// More bytes are needed to decide.
    NeedMore,
    /// The bytes are not this protocol.
    No,
    Yes(T),
}

/// Envoy reads at most this much of a ClientHello (`max_client_hello_size`, 64 KiB).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub struct ClientHello {
    pub server_name: String,
    pub alpn: Vec<String>,
}

/// Parses a TLS ClientHello from the start of a connection, across records if it is split.
pub fn client_hello(buf: &[u8]) -> Peek<ClientHello> {
    // A handshake record of TLS 1.0 to 1.3 (all use 0x0301..0x0304 on the record layer).
    match buf {
        [] => return Peek::NeedMore,
        [0x16] | [0x16, 0x03] => return Peek::NeedMore,
        [0x16, 0x03, minor, ..] if *minor <= 0x04 => {}
        _ => return Peek::No,
    }
    // Reassemble the handshake message from consecutive records.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return Peek::NeedMore;
        }
        if rest[0] != 0x16 {
            return Peek::No;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let Some(fragment) = rest.get(5..5 + len) else {
            return Peek::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != 0x01 {
                return Peek::No;
            }
            let body_len = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if body_len + 4 > MAX_CLIENT_HELLO {
                return Peek::No;
            }
            if handshake.len() >= body_len + 4 {
                return match parse_hello(&handshake[4..4 + body_len]) {
                    Some(hello) => Peek::Yes(hello),
                    None => Peek::No,
                };
            }
        }
    }
}

/// A cursor over the ClientHello body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn parse_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello {
        server_name: String::new(),
        alpn: Vec::new(),
    };
    if r.0.is_empty() {
        return Some(hello);
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = Reader(extensions.vec16()?);
        match kind {
            // server_name: a list of (type, name); type 0 is a host name.
            0 => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        hello.server_name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    }
                }
            }
            // application_layer_protocol_negotiation
            16 => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    hello
                        .alpn
                        .push(String::from_utf8_lossy(list.vec8()?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Envoy's HTTP inspector: `h2c` for the HTTP/2 preface, `http/1.1` or `http/1.0` for a
/// request line, nothing otherwise.
pub fn http_protocol(buf: &[u8]) -> Peek<&'static str> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Peek::Yes("h2c")
        } else {
            Peek::NeedMore
        };
    }
    // METHOD SP request-target SP HTTP/1.x CRLF
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = match line_end {
        Some(i) => &buf[..i],
        None if buf.len() >= 8 * 1024 => return Peek::No,
        None => {
            // Give up early on bytes that cannot start a method token.
            let token_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
            return if buf[..token_end].iter().all(u8::is_ascii_uppercase) {
                Peek::NeedMore
            } else {
                Peek::No
            };
        }
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Peek::No;
    };
    if method.is_empty() || !method.iter().all(u8::is_ascii_uppercase) || target.is_empty() {
        return Peek::No;
    }
    match version {
        b"HTTP/1.1" => Peek::Yes("http/1.1"),
        b"HTTP/1.0" => Peek::Yes("http/1.0"),
        _ => Peek::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls or OpenSSL would send it, reduced to the fields that matter.
    fn hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            entry.extend((name.len() as u16).to_be_bytes());
            entry.extend(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            ext.extend(0u16.to_be_bytes());
            ext.extend((list.len() as u16).to_be_bytes());
            ext.extend(list);
        }
        if !alpn.is_empty() {
            let mut protos = Vec::new();
            for p in alpn {
                protos.push(p.len() as u8);
                protos.extend(p.as_bytes());
            }
            let mut list = (protos.len() as u16).to_be_bytes().to_vec();
            list.extend(protos);
            ext.extend(16u16.to_be_bytes());
            ext.extend((list.len() as u16).to_be_bytes());
            ext.extend(list);
        }
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![1u8, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend(body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn sni_and_alpn_come_out_of_a_client_hello() {
        let bytes = hello(Some("Api.Example.COM"), &["h2", "http/1.1"]);
        assert_eq!(
            client_hello(&bytes),
            Peek::Yes(ClientHello {
                server_name: "api.example.com".into(),
                alpn: vec!["h2".into(), "http/1.1".into()],
            })
        );
        for cut in [1, 3, 5, 20, bytes.len() - 1] {
            assert_eq!(client_hello(&bytes[..cut]), Peek::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn a_hello_split_over_two_records_is_reassembled() {
        let whole = hello(Some("split.test"), &[]);
        let hs = &whole[5..];
        let (a, b) = hs.split_at(10);
        let mut bytes = vec![0x16, 0x03, 0x01, 0, a.len() as u8];
        bytes.extend(a);
        bytes.extend([0x16, 0x03, 0x01, (b.len() >> 8) as u8, b.len() as u8]);
        bytes.extend(b);
        let Peek::Yes(h) = client_hello(&bytes) else {
            panic!("not parsed")
        };
        assert_eq!(h.server_name, "split.test");
    }

    #[test]
    fn plaintext_and_garbage_are_not_tls() {
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Peek::No);
        assert_eq!(
            client_hello(&[0x16, 0x03, 0x01, 0, 4, 2, 0, 0, 0]),
            Peek::No
        );
        // Truncated lengths inside the hello are refused, not trusted.
        let mut bad = hello(Some("x.test"), &[]);
        // The extensions' length, after the record and handshake headers and the fixed fields.
        bad[50] = 0xff;
        bad[51] = 0xff;
        assert_eq!(client_hello(&bad), Peek::No);
    }

    #[test]
    fn http_inspector_names_the_protocol() {
        assert_eq!(
            http_protocol(b"GET / HTTP/1.1\r\nhost: a\r\n"),
            Peek::Yes("http/1.1")
        );
        assert_eq!(
            http_protocol(b"POST /x HTTP/1.0\r\n"),
            Peek::Yes("http/1.0")
        );
        assert_eq!(http_protocol(H2_PREFACE), Peek::Yes("h2c"));
        assert_eq!(http_protocol(b"PRI * HT"), Peek::NeedMore);
        assert_eq!(http_protocol(b"GET /long-pa"), Peek::NeedMore);
        assert_eq!(http_protocol(b"\x16\x03\x01"), Peek::No);
        assert_eq!(http_protocol(b"SSH-2.0-OpenSSH\r\n"), Peek::No);
        assert_eq!(http_protocol(b"GET / HTTP/2\r\n"), Peek::No);
    }
}
