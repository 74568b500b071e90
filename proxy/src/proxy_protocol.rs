//! The PROXY protocol header an upstream connection opens with (DestinationRule
//! `proxyProtocol`, Envoy's upstream `proxy_protocol` transport socket): the caller's
//! connection as this proxy received it — its source, and the address it was made to (the
//! original destination of a captured connection, the gateway's listener) — so that the
//! destination sees the client, not the proxy. The header goes first on the connection, before
//! any TLS of the hop. Pure; the `ppp` crate writes the bytes.

use std::{net::SocketAddr, sync::Arc};

use mizzen_proxy_config::ProxyProtocol;
use ppp::v2::{Builder, Command, Protocol, Version};

/// The caller's connection, for the header (a request extension on the HTTP path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downstream {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// The header for `downstream` in `version`. Without a caller's connection (a mirror's copy of
/// a request), or with addresses of two families, which one header cannot tell: v1 says
/// `UNKNOWN`, v2 sends a `LOCAL` header (the destination then uses the connection's own
/// addresses), as the protocol's specification says.
pub fn header(version: ProxyProtocol, downstream: Option<Downstream>) -> Arc<[u8]> {
    let addresses = downstream.map(|d| (d.source, d.destination));
    match version {
        ProxyProtocol::V1 => addresses
            .map_or(ppp::v1::Addresses::Unknown, ppp::v1::Addresses::from)
            .to_string()
            .into_bytes()
            .into(),
        ProxyProtocol::V2 => {
            let addresses =
                addresses.map_or(ppp::v2::Addresses::Unspecified, ppp::v2::Addresses::from);
            let (command, protocol) = match addresses {
                ppp::v2::Addresses::Unspecified => (Command::Local, Protocol::Unspecified),
                _ => (Command::Proxy, Protocol::Stream),
            };
            Builder::with_addresses(Version::Two | command, protocol, addresses)
                .build()
                .expect("a header in memory is always written")
                .into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downstream(source: &str, destination: &str) -> Downstream {
        Downstream {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn v1_is_the_text_line() {
        let d = downstream("10.1.2.3:51000", "10.96.0.10:8080");
        assert_eq!(
            &*header(ProxyProtocol::V1, Some(d)),
            b"PROXY TCP4 10.1.2.3 10.96.0.10 51000 8080\r\n"
        );
        let d = downstream("[2001:db8::1]:51000", "[2001:db8::2]:443");
        assert_eq!(
            &*header(ProxyProtocol::V1, Some(d)),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 51000 443\r\n"
        );
        let mixed = downstream("10.1.2.3:51000", "[2001:db8::2]:443");
        assert_eq!(
            &*header(ProxyProtocol::V1, Some(mixed)),
            b"PROXY UNKNOWN\r\n"
        );
    }

    #[test]
    fn v2_is_the_binary_header_that_parses_back() {
        let d = downstream("10.1.2.3:51000", "10.96.0.10:8080");
        let bytes = header(ProxyProtocol::V2, Some(d));
        // Signature, version 2 / PROXY, TCP over IPv4, 12 bytes of addresses.
        assert_eq!(&bytes[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(&bytes[12..16], &[0x21, 0x11, 0, 12]);
        let parsed = ppp::v2::Header::try_from(&bytes[..]).unwrap();
        assert_eq!(
            parsed.addresses,
            ppp::v2::Addresses::from((d.source, d.destination))
        );
        let mixed = header(ProxyProtocol::V2, Some(downstream("10.1.2.3:1", "[::1]:2")));
        assert_eq!(&mixed[12..16], &[0x20, 0x00, 0, 0], "LOCAL, unspecified");
        assert_eq!(header(ProxyProtocol::V2, None), mixed);
        assert_eq!(&*header(ProxyProtocol::V1, None), b"PROXY UNKNOWN\r\n");
    }
}
