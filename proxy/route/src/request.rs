//! What the engine needs to know about a request.

use std::collections::BTreeMap;

use http::{HeaderMap, Method};

/// The facts about one request that routing reads. Borrowed, so the proxy builds it per request
/// without copying anything.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    /// `Host` header (HTTP/1.1) or `:authority` (HTTP/2), as sent, possibly with a port. For a
    /// request without either, the proxy passes the original destination address (`10.96.0.5`):
    /// services are also found by their virtual addresses.
    pub authority: &'a str,
    /// Destination port: the service port the caller connected to (sidecar), or the gateway's
    /// listening port.
    pub port: u16,
    pub method: &'a Method,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Path with the query string, as on the request line (`/api/v1?x=1`).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    /// Labels of the calling workload (sidecar: its own pod's labels).
    pub source_labels: &'a BTreeMap<String, String>,
    /// Namespace of the calling workload.
    pub source_namespace: &'a str,
    /// `mesh` for a sidecar, `<namespace>/<name>` for a gateway.
    pub gateway: &'a str,
}

/// The gateway name sidecars route as.
pub const MESH_GATEWAY: &str = "mesh";

impl<'a> RequestInfo<'a> {
    /// The path without query string or fragment (what `uri` matches are compared with).
    pub fn path(&self) -> &'a str {
        split_path(self.path_and_query).0
    }

    /// The query string without `?` (empty when there is none).
    pub fn query(&self) -> &'a str {
        split_path(self.path_and_query).1
    }
}

/// Splits `/p?q#f` into (`/p`, `q`).
pub(crate) fn split_path(path_and_query: &str) -> (&str, &str) {
    let pq = path_and_query;
    // One scan for the first `?` or `#`; the query, when there is one, ends at a `#`.
    match pq.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) if pq.as_bytes()[i] == b'?' => {
            let query = &pq[i + 1..];
            let end = query.bytes().position(|b| b == b'#').unwrap_or(query.len());
            (&pq[..i], &query[..end])
        }
        Some(i) => (&pq[..i], ""),
        None => (pq, ""),
    }
}

/// The value of the first query parameter called `name`: `Some("")` for `?name` or `?name=`,
/// `None` when absent. Names and values are compared as sent (not percent-decoded), like Envoy.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .find_map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if pair == name => Some(""),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_path_query_and_fragment() {
        assert_eq!(split_path("/a/b?x=1&y#frag"), ("/a/b", "x=1&y"));
        assert_eq!(split_path("/a#f?x"), ("/a", ""));
        assert_eq!(split_path("/"), ("/", ""));
        assert_eq!(split_path("?x"), ("", "x"));
    }

    #[test]
    fn finds_the_first_query_parameter() {
        let q = "a=1&b&c=&a=2&d=x=y";
        assert_eq!(query_param(q, "a"), Some("1"));
        assert_eq!(query_param(q, "b"), Some(""));
        assert_eq!(query_param(q, "c"), Some(""));
        assert_eq!(query_param(q, "d"), Some("x=y"));
        assert_eq!(query_param(q, "e"), None);
        assert_eq!(query_param("", "a"), None);
        assert_eq!(query_param("ab=1", "a"), None);
    }
}
