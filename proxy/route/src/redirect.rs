//! The `Location` of an HTTP redirect, from the route's [`Redirect`] and the request.

use mizzen_proxy_config::Redirect;

use crate::host::{authority_host, authority_port};
use crate::request::{RequestInfo, split_path};

/// The status of a redirect: the configured code, 301 when unset (0).
pub fn redirect_code(redirect: &Redirect) -> u16 {
    if redirect.code == 0 {
        301
    } else {
        redirect.code
    }
}

/// Builds the absolute `Location` for a redirect, as Istio (Envoy) does:
/// - scheme: `redirect.scheme`, else the request's;
/// - host: `redirect.authority`, else the request's authority (with its port);
/// - port: `redirect.port` replaces the port, and so does the port the request came in on
///   (`derivePort: FROM_REQUEST_PORT`); otherwise (`FROM_PROTOCOL_DEFAULT`, Envoy's default),
///   when the scheme changes, the old scheme's default port is dropped (`http://a:80` →
///   `https://a`); a port that is the default of the final scheme is never written;
/// - path: `redirect.uri` replaces the whole path (whatever kind of match selected the route);
///   the request's query string is kept unless `redirect.uri` carries its own.
pub fn redirect_location(redirect: &Redirect, req: &RequestInfo<'_>) -> String {
    let old_scheme = if req.scheme.is_empty() {
        "http"
    } else {
        req.scheme
    };
    let scheme = redirect.scheme.as_deref().unwrap_or(old_scheme);
    let authority = redirect.authority.as_deref().unwrap_or(req.authority);
    let host = authority_host(authority);
    let port = match redirect.port {
        Some(p) => Some(p),
        None if redirect.port_from_request => Some(req.port),
        None => authority_port(authority).filter(|&p| {
            scheme.eq_ignore_ascii_case(old_scheme) || Some(p) != default_port(old_scheme)
        }),
    }
    .filter(|&p| Some(p) != default_port(scheme));

    let (path, query) = match redirect.uri.as_deref() {
        Some(uri) if uri.contains('?') => (uri, ""),
        Some(uri) => (uri, split_path(req.path_and_query).1),
        None => split_path(req.path_and_query),
    };

    let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + query.len() + 16);
    out.push_str(scheme);
    out.push_str("://");
    if host.contains(':') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    if !path.starts_with('/') {
        out.push('/');
    }
    out.push_str(path);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn location(r: &Redirect, authority: &str, scheme: &str, pq: &str) -> String {
        let headers = http::HeaderMap::new();
        let labels = BTreeMap::new();
        let req = RequestInfo {
            authority,
            port: 80,
            method: &http::Method::GET,
            scheme,
            path_and_query: pq,
            headers: &headers,
            source_labels: &labels,
            source_namespace: "default",
            gateway: "mesh",
        };
        redirect_location(r, &req)
    }

    #[test]
    fn uri_replaces_the_path_and_keeps_the_query() {
        let r = Redirect {
            uri: Some("/v1/bookRatings".into()),
            ..Redirect::default()
        };
        assert_eq!(
            location(&r, "ratings:9080", "http", "/v1/getProductRatings?id=1"),
            "http://ratings:9080/v1/bookRatings?id=1"
        );
        let r = Redirect {
            uri: Some("/new?b=2".into()),
            ..Redirect::default()
        };
        assert_eq!(location(&r, "a", "http", "/old?a=1"), "http://a/new?b=2");
        assert_eq!(redirect_code(&r), 301);
    }

    #[test]
    fn authority_port_scheme_and_code() {
        let r = Redirect {
            authority: Some("newratings.default.svc.cluster.local".into()),
            code: 308,
            ..Redirect::default()
        };
        assert_eq!(
            location(&r, "ratings:9080", "http", "/x"),
            "http://newratings.default.svc.cluster.local/x"
        );
        assert_eq!(redirect_code(&r), 308);

        let r = Redirect {
            port: Some(8443),
            ..Redirect::default()
        };
        assert_eq!(location(&r, "shop:80", "http", "/"), "http://shop:8443/");

        let r = Redirect {
            scheme: Some("https".into()),
            ..Redirect::default()
        };
        // http's default port is dropped when moving to https; other ports stay.
        assert_eq!(location(&r, "shop:80", "http", "/a?b"), "https://shop/a?b");
        assert_eq!(
            location(&r, "shop:8080", "http", "/a"),
            "https://shop:8080/a"
        );
        assert_eq!(location(&r, "shop", "http", "/a"), "https://shop/a");

        let r = Redirect {
            scheme: Some("https".into()),
            port: Some(443),
            ..Redirect::default()
        };
        assert_eq!(location(&r, "shop:8080", "http", "/"), "https://shop/");
    }

    #[test]
    fn derive_port_from_the_request_uses_the_port_it_came_in_on() {
        // The request came in on port 80 (see `location`), its Host names another.
        let r = Redirect {
            authority: Some("www.example.com".into()),
            scheme: Some("https".into()),
            port_from_request: true,
            ..Redirect::default()
        };
        assert_eq!(
            location(&r, "shop:8080", "http", "/a"),
            "https://www.example.com:80/a"
        );
        // The final scheme's default is not written; without the flag the Host's port stays.
        let r = Redirect {
            port_from_request: true,
            ..Redirect::default()
        };
        assert_eq!(location(&r, "shop:8080", "http", "/a"), "http://shop/a");
        assert_eq!(
            location(&Redirect::default(), "shop:8080", "http", "/a"),
            "http://shop:8080/a"
        );
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let r = Redirect {
            port: Some(8080),
            ..Redirect::default()
        };
        assert_eq!(
            location(&r, "[fd00::1]:80", "http", "/p"),
            "http://[fd00::1]:8080/p"
        );
    }
}
