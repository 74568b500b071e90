//! The server name a TLS client asks for, read from its ClientHello without consuming it: the
//! gateway picks the server (and, for `PASSTHROUGH`, the route) before any handshake, the
//! sidecar routes a TLS port's connections by it (VirtualService `tls` rules), and a
//! passed-through connection must reach the backend byte for byte.

use std::time::Duration;

use tokio::{net::TcpStream, time::Instant};

/// The TLS record type of a handshake (what a ClientHello arrives in).
pub const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME_EXTENSION: u16 = 0;
/// The largest TLS record a ClientHello can come in (2^14 bytes and its 5-byte header).
const MAX_RECORD: usize = 5 + (1 << 14);

/// What the first bytes of a connection say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS handshake.
    NotTls,
    /// More bytes are needed (`usize`: how many in all).
    Incomplete(usize),
    /// A ClientHello, with its SNI host name if it sent one.
    ClientHello(Option<String>),
}

/// Reads the ClientHello in the first TLS record of `buf`. A ClientHello that does not fit
/// its first record (rare: very large hellos) counts as one without SNI.
pub fn parse(buf: &[u8]) -> Hello {
    if buf.is_empty() {
        return Hello::Incomplete(5);
    }
    if buf[0] != HANDSHAKE {
        return Hello::NotTls;
    }
    if buf.len() < 5 {
        return Hello::Incomplete(5);
    }
    let record_len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < 5 + record_len {
        return Hello::Incomplete(5 + record_len);
    }
    let record = &buf[5..5 + record_len];
    match Reader(record).client_hello_sni() {
        Some(sni) => Hello::ClientHello(sni),
        None if record.first() == Some(&CLIENT_HELLO) => Hello::ClientHello(None),
        None => Hello::NotTls,
    }
}

/// A cursor over a byte slice; every read fails (None) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }

    /// A vector with a length prefix of `width` bytes.
    fn vec(&mut self, width: usize) -> Option<Reader<'a>> {
        let len = match width {
            1 => self.u8()? as usize,
            2 => self.u16()? as usize,
            _ => self.u24()?,
        };
        self.take(len).map(Reader)
    }

    /// `Some(None)`: a well-formed ClientHello without SNI; `None`: not one (or cut short).
    fn client_hello_sni(mut self) -> Option<Option<String>> {
        if self.u8()? != CLIENT_HELLO {
            return None;
        }
        let mut hello = self.vec(3)?;
        hello.take(2 + 32)?; // legacy_version, random
        hello.vec(1)?; // legacy_session_id
        hello.vec(2)?; // cipher_suites
        hello.vec(1)?; // legacy_compression_methods
        if hello.0.is_empty() {
            return Some(None);
        }
        let mut extensions = hello.vec(2)?;
        while !extensions.0.is_empty() {
            let kind = extensions.u16()?;
            let mut data = extensions.vec(2)?;
            if kind != SERVER_NAME_EXTENSION {
                continue;
            }
            let mut names = data.vec(2)?;
            while !names.0.is_empty() {
                let name_type = names.u8()?;
                let name = names.vec(2)?;
                if name_type == 0 {
                    return Some(
                        std::str::from_utf8(name.0)
                            .ok()
                            .map(str::to_ascii_lowercase),
                    );
                }
            }
        }
        Some(None)
    }
}

/// Waits up to `timeout` for the client's ClientHello and reads it without consuming any
/// byte. A client that sends something else, or nothing in time, is [`Hello::NotTls`].
pub async fn peek(stream: &TcpStream, timeout: Duration) -> Hello {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 1024];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Hello::NotTls,
        };
        match parse(&buf[..n]) {
            Hello::Incomplete(need) if need <= MAX_RECORD => {
                if need > buf.len() {
                    buf.resize(need, 0);
                } else if n == seen {
                    // Nothing new since the last peek: wait for more bytes to arrive.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen = n;
                if Instant::now() >= deadline {
                    return Hello::NotTls;
                }
            }
            Hello::Incomplete(_) => return Hello::ClientHello(None),
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record as rustls writes it for `name`.
    fn client_hello(name: Option<&str>) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut config = config;
        config.enable_sni = name.is_some();
        let server = rustls::pki_types::ServerName::try_from(name.unwrap_or("ignored.example"))
            .unwrap()
            .to_owned();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_sni_of_a_client_hello() {
        let hello = client_hello(Some("Shop.Example.com"));
        assert_eq!(
            parse(&hello),
            Hello::ClientHello(Some("shop.example.com".into()))
        );
        assert_eq!(parse(&client_hello(None)), Hello::ClientHello(None));
    }

    #[test]
    fn asks_for_more_bytes_and_tells_other_protocols_apart() {
        let hello = client_hello(Some("a.example.com"));
        assert_eq!(parse(&hello[..3]), Hello::Incomplete(5));
        assert_eq!(parse(&hello[..10]), Hello::Incomplete(hello.len()));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        // A handshake record that is not a ClientHello.
        assert_eq!(parse(&[HANDSHAKE, 3, 3, 0, 2, 2, 0]), Hello::NotTls);
        // A truncated ClientHello inside a complete record is one without SNI.
        let mut cut = hello[..60].to_vec();
        cut[3..5].copy_from_slice(&55u16.to_be_bytes());
        assert_eq!(parse(&cut), Hello::ClientHello(None));
    }
}
