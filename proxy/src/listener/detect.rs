//! Telling HTTP from other TCP traffic on ports whose protocol is not declared, by the first
//! bytes the client sends (peeked, so nothing is consumed).

use std::time::Duration;

use tokio::{net::TcpStream, time::Instant};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http,
    Tcp,
}

/// `None` while the bytes so far could still become either.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    let could_be = |prefix: &[u8]| prefix.starts_with(buf) || buf.starts_with(prefix);
    if buf.starts_with(H2_PREFACE) || METHODS.iter().any(|m| buf.starts_with(m)) {
        return Some(Detected::Http);
    }
    if could_be(H2_PREFACE) || METHODS.iter().any(|m| could_be(m)) {
        return None;
    }
    Some(Detected::Tcp)
}

/// Waits up to `timeout` for enough bytes; a client that says nothing (server-first protocols)
/// is TCP.
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 32];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return Detected::Tcp,
        };
        if n == 0 {
            return Detected::Tcp;
        }
        if let Some(d) = classify(&buf[..n]) {
            return d;
        }
        if Instant::now() >= deadline {
            return Detected::Tcp;
        }
        if n == seen {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Detected::Http)
        );
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(b"\x16\x03\x01"), Some(Detected::Tcp));
        assert_eq!(classify(b"GETX"), Some(Detected::Tcp));
        assert_eq!(classify(b"SSH-2.0"), Some(Detected::Tcp));
    }
}
