//! Owned requests and outcomes for traffic simulations (the operator's tests play requests
//! against a rendered config) and for the proxy's own tests. Everything goes through
//! [`RouteTable::select`]: this module only owns the data, it decides nothing itself.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::host::authority_port;
use crate::request::{MESH_GATEWAY, RequestInfo};
use crate::table::{Decision, RouteTable};

/// An owned request: build it with [`SimRequest::new`] and the builder methods, lend it to the
/// engine with [`SimRequest::info`].
#[derive(Clone, Debug)]
pub struct SimRequest {
    pub authority: String,
    pub port: u16,
    pub method: Method,
    pub scheme: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: String,
    pub gateway: String,
}

impl SimRequest {
    /// `GET http://<authority><path_and_query>` from a sidecar (`mesh`) in namespace
    /// `default`; the destination port is the authority's, else 80.
    pub fn new(authority: &str, path_and_query: &str) -> Self {
        Self {
            authority: authority.into(),
            port: authority_port(authority).unwrap_or(80),
            method: Method::GET,
            scheme: "http".into(),
            path_and_query: path_and_query.into(),
            headers: HeaderMap::new(),
            source_labels: BTreeMap::new(),
            source_namespace: "default".into(),
            gateway: MESH_GATEWAY.into(),
        }
    }

    /// Appends a header. Panics on a name or value that is not valid HTTP: a simulation's
    /// requests are written by hand.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("simulated header name {name:?}: {e}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|e| panic!("simulated header value {value:?}: {e}"));
        self.headers.append(name, value);
        self
    }

    /// Replaces the authority (the destination port stays).
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.into();
        self
    }

    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn scheme(mut self, scheme: &str) -> Self {
        self.scheme = scheme.into();
        self
    }

    /// A label of the calling workload.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.source_labels.insert(key.into(), value.into());
        self
    }

    pub fn source_namespace(mut self, namespace: &str) -> Self {
        self.source_namespace = namespace.into();
        self
    }

    /// Sends the request through a gateway (`<namespace>/<name>`) instead of a sidecar.
    pub fn gateway(mut self, gateway: &str) -> Self {
        self.gateway = gateway.into();
        self
    }

    pub fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            authority: &self.authority,
            port: self.port,
            method: &self.method,
            scheme: &self.scheme,
            path_and_query: &self.path_and_query,
            headers: &self.headers,
            source_labels: &self.source_labels,
            source_namespace: &self.source_namespace,
            gateway: &self.gateway,
        }
    }
}

/// Where a request went, owned and comparable, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Forward {
        /// The route's name ([`DEFAULT_ROUTE_NAME`](crate::DEFAULT_ROUTE_NAME) for the default).
        route: String,
        host: String,
        subset: Option<String>,
        port: Option<u16>,
    },
    Redirect {
        code: u16,
        location: String,
    },
    DirectResponse {
        status: u16,
        body: Option<String>,
    },
    /// The service (by host) is known, no route matched: 404 NR.
    NoRoute {
        service: String,
    },
    UnknownHost,
}

impl From<Decision<'_>> for Outcome {
    fn from(d: Decision<'_>) -> Self {
        match d {
            Decision::Forward {
                route, destination, ..
            } => Self::Forward {
                route: route.name.clone(),
                host: destination.destination.host.clone(),
                subset: destination.destination.subset.clone(),
                port: destination.destination.port,
            },
            Decision::Redirect { code, location, .. } => Self::Redirect { code, location },
            Decision::DirectResponse { status, body, .. } => Self::DirectResponse {
                status,
                body: body.map(str::to_string),
            },
            Decision::NoRoute { service } => Self::NoRoute {
                service: service.host.clone(),
            },
            Decision::UnknownHost => Self::UnknownHost,
        }
    }
}

impl RouteTable {
    /// Where `req` goes with the draw `random` (see [`RouteTable::select`]).
    pub fn simulate(&self, req: &SimRequest, random: u32) -> Outcome {
        self.select(&req.info(), random).into()
    }

    /// The share of `req` each outcome gets: the request played with every draw in
    /// `0..draws`. With weights adding up to 100 and `draws` a multiple of 100, the counts are
    /// exactly proportional to the weights.
    pub fn distribution(&self, req: &SimRequest, draws: u32) -> Vec<(Outcome, u32)> {
        let info = req.info();
        let mut counts: Vec<(Outcome, u32)> = Vec::new();
        for random in 0..draws {
            let outcome = Outcome::from(self.select(&info, random));
            match counts.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => counts.push((outcome, 1)),
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_proxy_config::*;

    fn table() -> RouteTable {
        let host = "reviews.default.svc.cluster.local";
        let to = |subset: &str, weight| WeightedDestination {
            destination: Destination {
                host: host.into(),
                subset: Some(subset.into()),
                port: Some(9080),
            },
            weight,
            headers: HeaderOps::default(),
        };
        let mut cfg = ProxyConfig::new("default");
        cfg.services.push(Service {
            host: host.into(),
            aliases: vec!["reviews".into()],
            namespace: "default".into(),
            http_routes: vec![
                HttpRoute {
                    name: "jason".into(),
                    matches: vec![HttpMatch {
                        headers: vec![HeaderMatch {
                            name: "end-user".into(),
                            value: Some(StringMatcher::Exact("jason".into())),
                            invert: false,
                        }],
                        ..HttpMatch::default()
                    }],
                    action: HttpAction::Route(vec![to("v2", 100)]),
                    ..HttpRoute::default()
                },
                HttpRoute {
                    name: "split".into(),
                    action: HttpAction::Route(vec![to("v1", 75), to("v3", 25)]),
                    ..HttpRoute::default()
                },
            ],
            ..Service::default()
        });
        RouteTable::new(&cfg).unwrap()
    }

    fn forward(route: &str, subset: &str) -> Outcome {
        Outcome::Forward {
            route: route.into(),
            host: "reviews.default.svc.cluster.local".into(),
            subset: Some(subset.into()),
            port: Some(9080),
        }
    }

    #[test]
    fn simulated_requests_are_routed_by_the_engine() {
        let t = table();
        let jason = SimRequest::new("reviews:9080", "/").header("end-user", "jason");
        assert_eq!(jason.port, 9080);
        assert_eq!(t.simulate(&jason, 0), forward("jason", "v2"));
        assert_eq!(
            t.simulate(&SimRequest::new("ratings", "/"), 0),
            Outcome::UnknownHost
        );
        assert_eq!(
            t.distribution(&SimRequest::new("reviews", "/"), 1_000),
            vec![(forward("split", "v1"), 750), (forward("split", "v3"), 250)]
        );
    }

    #[test]
    fn builders_fill_the_request_info() {
        let r = SimRequest::new("a", "/p?q=1")
            .method(Method::POST)
            .port(8080)
            .scheme("https")
            .label("app", "x")
            .source_namespace("ns")
            .gateway("ns/gw")
            .header("Cookie", "a=1");
        let info = r.info();
        assert_eq!(info.port, 8080);
        assert_eq!(info.method, Method::POST);
        assert_eq!(info.scheme, "https");
        assert_eq!(info.path(), "/p");
        assert_eq!(info.query(), "q=1");
        assert_eq!(info.source_labels["app"], "x");
        assert_eq!(info.source_namespace, "ns");
        assert_eq!(info.gateway, "ns/gw");
        assert_eq!(info.headers["cookie"], "a=1");
        assert_eq!(SimRequest::new("a", "/").port, 80);
    }
}
