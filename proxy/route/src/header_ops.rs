//! Header changes (`headers.request` / `headers.response` of a route and of a destination).

use http::{HeaderMap, HeaderName, HeaderValue};
use mizzen_proxy_config::{HeaderOperations, HeaderOps, HttpRoute, WeightedDestination};

/// Applies one set of header operations, in Envoy's order: `remove` first, then `set` (replaces
/// every value of the header), then `add` (appends a value). A name or value that is not valid
/// HTTP is skipped and reported in the returned warnings; it never panics. Values are literal
/// (Envoy's `%VARIABLE%` substitutions are not expanded).
pub fn apply_header_ops(ops: &HeaderOperations, headers: &mut HeaderMap) -> Vec<String> {
    let mut warnings = Vec::new();
    for name in &ops.remove {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => {
                headers.remove(n);
            }
            Err(_) => warnings.push(format!("remove: {name:?} is not a valid header name")),
        }
    }
    for (name, value) in &ops.set {
        if let Some((n, v)) = parse("set", name, value, &mut warnings) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let Some((n, v)) = parse("add", name, value, &mut warnings) {
            headers.append(n, v);
        }
    }
    warnings
}

fn parse(
    op: &str,
    name: &str,
    value: &str,
    warnings: &mut Vec<String>,
) -> Option<(HeaderName, HeaderValue)> {
    let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
        warnings.push(format!("{op}: {name:?} is not a valid header name"));
        return None;
    };
    let Ok(v) = HeaderValue::from_str(value) else {
        warnings.push(format!(
            "{op}: value {value:?} of {name} is not a valid header value"
        ));
        return None;
    };
    Some((n, v))
}

/// Applies the route's operations, then the destination's: the more specific destination
/// level has the last word (a destination `set` overrides a route `set` of the same header).
pub fn apply_layered(
    route: &HeaderOps,
    destination: &HeaderOps,
    side: Side,
    headers: &mut HeaderMap,
) -> Vec<String> {
    fn pick(ops: &HeaderOps, side: Side) -> &HeaderOperations {
        match side {
            Side::Request => &ops.request,
            Side::Response => &ops.response,
        }
    }
    let mut warnings = apply_header_ops(pick(route, side), headers);
    warnings.extend(apply_header_ops(pick(destination, side), headers));
    warnings
}

/// Which half of an exchange header operations apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Request header operations for a forwarded request: route level, then destination level.
pub fn apply_request_header_ops(
    route: &HttpRoute,
    destination: &WeightedDestination,
    headers: &mut HeaderMap,
) -> Vec<String> {
    apply_layered(&route.headers, &destination.headers, Side::Request, headers)
}

/// Response header operations for a forwarded request: route level, then destination level.
pub fn apply_response_header_ops(
    route: &HttpRoute,
    destination: &WeightedDestination,
    headers: &mut HeaderMap,
) -> Vec<String> {
    apply_layered(
        &route.headers,
        &destination.headers,
        Side::Response,
        headers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderOperations {
        HeaderOperations {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            add: add
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn set_replaces_add_appends_remove_removes() {
        let mut h = HeaderMap::new();
        h.append("x-set", "old1".parse().unwrap());
        h.append("x-set", "old2".parse().unwrap());
        h.append("x-add", "old".parse().unwrap());
        h.append("x-gone", "1".parse().unwrap());
        let w = apply_header_ops(
            &ops(
                &[("x-set", "new")],
                &[("x-add", "more"), ("x-fresh", "1")],
                &["x-gone"],
            ),
            &mut h,
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(values(&h, "x-set"), ["new"]);
        assert_eq!(values(&h, "x-add"), ["old", "more"]);
        assert_eq!(values(&h, "x-fresh"), ["1"]);
        assert!(h.get("x-gone").is_none());
    }

    #[test]
    fn remove_runs_before_set_and_add() {
        let mut h = HeaderMap::new();
        h.insert("x-a", "old".parse().unwrap());
        apply_header_ops(
            &ops(&[("x-a", "set")], &[("x-a", "added")], &["x-a"]),
            &mut h,
        );
        assert_eq!(values(&h, "x-a"), ["set", "added"]);
    }

    #[test]
    fn invalid_names_and_values_are_skipped_with_warnings() {
        let mut h = HeaderMap::new();
        let w = apply_header_ops(
            &ops(
                &[("bad name", "v"), ("x-ok", "v")],
                &[("x-bad-value", "a\nb")],
                &["bad name"],
            ),
            &mut h,
        );
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w.iter().any(|m| m.contains("\"bad name\"")), "{w:?}");
        assert_eq!(values(&h, "x-ok"), ["v"]);
        assert!(h.get("x-bad-value").is_none());
    }

    #[test]
    fn destination_ops_run_after_route_ops() {
        let route = HttpRoute {
            headers: HeaderOps {
                request: ops(
                    &[("x-who", "route"), ("x-route", "1")],
                    &[("x-both", "route")],
                    &[],
                ),
                response: ops(&[], &[], &["server"]),
            },
            ..HttpRoute::default()
        };
        let dest = WeightedDestination {
            headers: HeaderOps {
                request: ops(
                    &[("x-who", "destination")],
                    &[("x-both", "destination")],
                    &["x-route"],
                ),
                response: ops(&[("x-dest", "1")], &[], &[]),
            },
            ..WeightedDestination::default()
        };
        let mut req = HeaderMap::new();
        assert!(apply_request_header_ops(&route, &dest, &mut req).is_empty());
        assert_eq!(values(&req, "x-who"), ["destination"]);
        assert_eq!(values(&req, "x-both"), ["route", "destination"]);
        assert!(req.get("x-route").is_none());

        let mut resp = HeaderMap::new();
        resp.insert("server", "app".parse().unwrap());
        assert!(apply_response_header_ops(&route, &dest, &mut resp).is_empty());
        assert!(resp.get("server").is_none());
        assert_eq!(values(&resp, "x-dest"), ["1"]);
    }
}
