//! Header hygiene at the proxy boundary.

use http::{
    HeaderMap, HeaderName, HeaderValue, header,
    request::Parts,
    uri::{Authority, PathAndQuery},
};

/// Named once: a lookup by `&str` parses the name every time.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Hop-by-hop headers: they describe one connection and are never forwarded (RFC 9110 §7.6.1).
/// `te: trailers` survives, since gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none, and most responses just `Connection: keep-alive`: one pass
    // over the names is cheaper than a lookup per name.
    let (mut hop, mut only_connection) = (false, true);
    for name in headers.keys().filter(|n| is_hop_by_hop(n)) {
        hop = true;
        only_connection &= name == header::CONNECTION;
    }
    if !hop {
        return;
    }
    if only_connection && lists_only_keep_alive_or_close(headers) {
        headers.remove(header::CONNECTION);
        return;
    }
    // Names `Connection` lists are hop-by-hop too (but `te`, handled below).
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    // Only what is there is removed: a removal hashes its name, the scan above does not.
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| **k != header::TE && (is_hop_by_hop(k) || listed.contains(k)))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
    if !headers.contains_key(header::TE) {
        return;
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
}

/// Whether every `Connection` token is `keep-alive` or `close`: then it names no header.
fn lists_only_keep_alive_or_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().all(|v| {
        v.as_bytes().split(|b| *b == b',').all(|t| {
            let t = t.trim_ascii();
            t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
        })
    })
}

/// The hop-by-hop names. Compared as `HeaderName`s, a standard name (most of what a request
/// carries) is told apart by its index alone, without looking up its text.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The request target's path and query, `/` when it has none: a copy that shares the URI's
/// bytes rather than a new string.
pub fn path_and_query(parts: &Parts) -> PathAndQuery {
    parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// Whether a request asks to switch protocols (WebSocket and the like) over HTTP/1.1.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// `http` or `grpc`, as Istio's `request_protocol` label says.
pub fn request_protocol(headers: &HeaderMap) -> &'static str {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc { "grpc" } else { "http" }
}

/// The request's authority: the URI's (HTTP/2, absolute-form HTTP/1.1), else the `Host`
/// header. It shares the request's bytes rather than copying them, and stays valid while the
/// request's headers change.
#[derive(Clone, Debug)]
pub enum RequestAuthority {
    Uri(Authority),
    /// A `Host` header that is text.
    Host(HeaderValue),
}

impl RequestAuthority {
    /// `None` when the request names no authority, or a `Host` that is not text.
    pub fn of(parts: &Parts) -> Option<Self> {
        if let Some(a) = parts.uri.authority() {
            return Some(Self::Uri(a.clone()));
        }
        // The parser has already refused control characters; what is left to check is that
        // it is text.
        let host = parts.headers.get(header::HOST)?;
        host_text(host)?;
        Some(Self::Host(host.clone()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Uri(a) => a.as_str(),
            // Checked to be text when made.
            Self::Host(v) => host_text(v).unwrap_or_default(),
        }
    }
}

/// A `Host` value as text: ASCII (all but a few) by the header's own check, a byte at a time
/// and several times cheaper than `from_utf8` on a short value; other UTF-8 by `from_utf8`.
fn host_text(v: &HeaderValue) -> Option<&str> {
    v.to_str()
        .ok()
        .or_else(|| std::str::from_utf8(v.as_bytes()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_but_keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("te", "trailers, deflate".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-private").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert!(h.get("x-keep").is_some());
        assert!(h.get("connection").is_none());
    }

    #[test]
    fn every_hop_by_hop_name_is_removed_however_it_was_parsed() {
        let hop = [
            "connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
            "trailer",
            "keep-alive",
            "proxy-connection",
        ];
        let mut h = HeaderMap::new();
        // Parsed from the wire's bytes, mixed case included, as hyper does.
        for name in hop
            .iter()
            .chain(&["x-upgrade", "keep-alivex", "trailers", "accept"])
        {
            let upper = name.to_ascii_uppercase();
            h.insert(
                HeaderName::from_bytes(upper.as_bytes()).unwrap(),
                "x".parse().unwrap(),
            );
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "keep-alivex", "trailers", "x-upgrade"]);
    }

    #[test]
    fn a_lone_keep_alive_or_close_is_one_removal_and_a_named_header_is_not_missed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Keep-Alive".parse().unwrap());
        h.insert("content-length", "2".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["content-length"]
        );
        let mut h = HeaderMap::new();
        h.append("connection", "close".parse().unwrap());
        h.append("connection", "x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn the_authority_is_the_uris_else_the_host_headers_and_outlives_header_changes() {
        let (mut parts, ()) = http::Request::get("http://api.example.com:8080/x")
            .header(header::HOST, "other.example.com")
            .body(())
            .unwrap()
            .into_parts();
        let a = RequestAuthority::of(&parts).unwrap();
        assert_eq!(a.as_str(), "api.example.com:8080");

        parts.uri = "/x".parse().unwrap();
        let a = RequestAuthority::of(&parts).unwrap();
        parts.headers.clear();
        assert_eq!(a.as_str(), "other.example.com");
        assert!(RequestAuthority::of(&parts).is_none());

        // Not text: no authority (as a Host the parser lets through could be).
        let latin1 = HeaderValue::from_bytes(b"caf\xe9.example").unwrap();
        parts.headers.insert(header::HOST, latin1);
        assert!(RequestAuthority::of(&parts).is_none());
        let utf8 = HeaderValue::from_bytes("café.example".as_bytes()).unwrap();
        parts.headers.insert(header::HOST, utf8);
        assert_eq!(
            RequestAuthority::of(&parts).unwrap().as_str(),
            "café.example"
        );
    }

    #[test]
    fn detects_upgrades() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        h.remove("upgrade");
        assert!(!is_upgrade(&h));
    }
}
