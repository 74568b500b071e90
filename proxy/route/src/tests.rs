//! Route selection over hand-built configs, as the operator would render them.

use std::{collections::BTreeMap, sync::Arc};

use http::Method;
use mizzen_proxy_config::*;

use crate::*;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn dest(host: &str, subset: Option<&str>, weight: u32) -> WeightedDestination {
    WeightedDestination {
        destination: Destination {
            host: host.into(),
            subset: subset.map(Into::into),
            port: None,
        },
        weight,
        headers: HeaderOps::default(),
    }
}

fn to_subset(subset: &str) -> HttpAction {
    HttpAction::Route(vec![dest(REVIEWS, Some(subset), 100)])
}

fn route(name: &str, matches: Vec<HttpMatch>, action: HttpAction) -> HttpRoute {
    HttpRoute {
        name: name.into(),
        matches,
        action,
        ..HttpRoute::default()
    }
}

fn service(host: &str, aliases: &[&str], routes: Vec<HttpRoute>) -> Service {
    Service {
        host: host.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        namespace: "default".into(),
        ports: vec![ServicePort {
            number: 9080,
            name: "http".into(),
            protocol: Protocol::Http,
            target_port: None,
        }],
        http_routes: routes,
        ..Service::default()
    }
}

fn table(services: Vec<Service>) -> RouteTable {
    let mut cfg = ProxyConfig::new("default");
    cfg.services = services;
    RouteTable::new(&cfg).unwrap()
}

/// A table with one service, `reviews`, holding `routes`.
fn reviews(routes: Vec<HttpRoute>) -> RouteTable {
    table(vec![service(
        REVIEWS,
        &["reviews", "reviews.default", "reviews.default.svc"],
        routes,
    )])
}

fn uri(m: StringMatcher) -> HttpMatch {
    HttpMatch {
        uri: Some(m),
        ..HttpMatch::default()
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher::Exact(s.into())
}
fn prefix(s: &str) -> StringMatcher {
    StringMatcher::Prefix(s.into())
}
fn regex(s: &str) -> StringMatcher {
    StringMatcher::Regex(s.into())
}

fn header(name: &str, value: Option<StringMatcher>) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        value,
        invert: false,
    }
}

type Req = SimRequest;

/// `GET http://reviews:9080<path>` from a sidecar.
fn req(path: &str) -> Req {
    SimRequest::new("reviews:9080", path)
}

/// A short description of where a request went: `route->subset`, `redirect 301 <location>`,
/// `direct 503`, `no route`, `unknown host`.
fn outcome(t: &RouteTable, r: &Req) -> String {
    match t.select(&r.info(), 0) {
        Decision::Forward {
            route, destination, ..
        } => format!(
            "{}->{}",
            route.name,
            destination
                .destination
                .subset
                .as_deref()
                .unwrap_or(&destination.destination.host)
        ),
        Decision::Redirect { code, location, .. } => format!("redirect {code} {location}"),
        Decision::DirectResponse { status, body, .. } => {
            format!("direct {status} {}", body.unwrap_or(""))
        }
        Decision::NoRoute { .. } => "no route".into(),
        Decision::UnknownHost => "unknown host".into(),
    }
}

#[test]
fn uri_exact_prefix_and_regex() {
    let t = reviews(vec![
        route("exact", vec![uri(exact("/login"))], to_subset("v1")),
        route("prefix", vec![uri(prefix("/api/"))], to_subset("v2")),
        route("regex", vec![uri(regex("/item/[0-9]+"))], to_subset("v3")),
    ]);
    assert_eq!(outcome(&t, &req("/login")), "exact->v1");
    assert_eq!(outcome(&t, &req("/login/x")), "no route");
    assert_eq!(outcome(&t, &req("/api/users")), "prefix->v2");
    assert_eq!(outcome(&t, &req("/api")), "no route");
    assert_eq!(outcome(&t, &req("/item/42")), "regex->v3");
    assert_eq!(outcome(&t, &req("/item/42/x")), "no route");
    // The query string and fragment are not part of the path.
    assert_eq!(outcome(&t, &req("/login?next=/api/")), "exact->v1");
    assert_eq!(outcome(&t, &req("/item/7?x=1#top")), "regex->v3");
}

#[test]
fn matches_are_or_and_conditions_inside_one_are_and() {
    let t = reviews(vec![route(
        "r",
        vec![
            HttpMatch {
                uri: Some(prefix("/a")),
                method: Some(exact("POST")),
                ..HttpMatch::default()
            },
            uri(exact("/b")),
        ],
        to_subset("v1"),
    )]);
    // First match: both conditions needed.
    assert_eq!(outcome(&t, &req("/a").method(Method::POST)), "r->v1");
    assert_eq!(outcome(&t, &req("/a").method(Method::GET)), "no route");
    // Second match alone is enough.
    assert_eq!(outcome(&t, &req("/b").method(Method::DELETE)), "r->v1");
    // The decision names the match that held.
    let r = req("/b");
    assert_eq!(t.select(&r.info(), 0).matched_uri(), Some(&exact("/b")));
}

#[test]
fn the_first_matching_route_wins() {
    let t = reviews(vec![
        route(
            "jason",
            vec![HttpMatch {
                headers: vec![header("end-user", Some(exact("jason")))],
                ..HttpMatch::default()
            }],
            to_subset("v2"),
        ),
        route("catch-all", vec![], to_subset("v1")),
        route("never", vec![uri(prefix("/"))], to_subset("v3")),
    ]);
    assert_eq!(
        outcome(&t, &req("/").header("end-user", "jason")),
        "jason->v2"
    );
    assert_eq!(
        outcome(&t, &req("/").header("end-user", "other")),
        "catch-all->v1"
    );
    assert_eq!(outcome(&t, &req("/")), "catch-all->v1");
    match t.select(&req("/").info(), 0) {
        Decision::Forward {
            route_index,
            matched,
            ..
        } => {
            assert_eq!(route_index, Some(1));
            assert!(matched.is_none());
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn ignore_uri_case_applies_to_the_uri_only() {
    let t = reviews(vec![
        route(
            "login",
            vec![HttpMatch {
                uri: Some(exact("/Login")),
                ignore_uri_case: true,
                ..HttpMatch::default()
            }],
            to_subset("v1"),
        ),
        route(
            "api",
            vec![HttpMatch {
                uri: Some(prefix("/api")),
                ignore_uri_case: true,
                headers: vec![header("x-env", Some(exact("prod")))],
                ..HttpMatch::default()
            }],
            to_subset("v2"),
        ),
        route("strict", vec![uri(exact("/Strict"))], to_subset("v3")),
    ]);
    assert_eq!(outcome(&t, &req("/LOGIN")), "login->v1");
    assert_eq!(outcome(&t, &req("/login")), "login->v1");
    assert_eq!(
        outcome(&t, &req("/API/x").header("x-env", "prod")),
        "api->v2"
    );
    // Header values stay case-sensitive.
    assert_eq!(
        outcome(&t, &req("/API/x").header("x-env", "PROD")),
        "no route"
    );
    assert_eq!(outcome(&t, &req("/strict")), "no route");
    assert_eq!(outcome(&t, &req("/Strict")), "strict->v3");
}

#[test]
fn method_authority_and_scheme() {
    let t = reviews(vec![
        route(
            "method",
            vec![HttpMatch {
                method: Some(regex("PUT|PATCH")),
                ..HttpMatch::default()
            }],
            to_subset("v1"),
        ),
        route(
            "authority",
            vec![HttpMatch {
                authority: Some(exact("reviews.default")),
                ..HttpMatch::default()
            }],
            to_subset("v2"),
        ),
        route(
            "scheme",
            vec![HttpMatch {
                scheme: Some(exact("https")),
                ..HttpMatch::default()
            }],
            to_subset("v3"),
        ),
    ]);
    assert_eq!(outcome(&t, &req("/").method(Method::PATCH)), "method->v1");
    // The authority is compared without its port.
    assert_eq!(
        outcome(&t, &req("/").authority("reviews.default:9080")),
        "authority->v2"
    );
    assert_eq!(
        outcome(&t, &req("/").authority("reviews.default")),
        "authority->v2"
    );
    assert_eq!(outcome(&t, &req("/").authority("reviews")), "no route");
    let mut https = req("/");
    https.scheme = "https".into();
    assert_eq!(outcome(&t, &https), "scheme->v3");
}

#[test]
fn header_exact_prefix_regex_and_presence() {
    let t = reviews(vec![
        route(
            "exact",
            vec![HttpMatch {
                headers: vec![header("x-user", Some(exact("alice")))],
                ..HttpMatch::default()
            }],
            to_subset("v1"),
        ),
        route(
            "prefix",
            vec![HttpMatch {
                headers: vec![header("user-agent", Some(prefix("Mozilla/")))],
                ..HttpMatch::default()
            }],
            to_subset("v2"),
        ),
        route(
            "regex",
            vec![HttpMatch {
                headers: vec![header("x-version", Some(regex("v[0-9]+")))],
                ..HttpMatch::default()
            }],
            to_subset("v3"),
        ),
        route(
            "present",
            vec![HttpMatch {
                headers: vec![header("x-debug", None)],
                ..HttpMatch::default()
            }],
            to_subset("v4"),
        ),
        // Several conditions in one match: all must hold.
        route(
            "both",
            vec![HttpMatch {
                headers: vec![
                    header("x-a", Some(exact("1"))),
                    header("x-b", Some(exact("2"))),
                ],
                ..HttpMatch::default()
            }],
            to_subset("v5"),
        ),
    ]);
    assert_eq!(
        outcome(&t, &req("/").header("x-user", "alice")),
        "exact->v1"
    );
    assert_eq!(
        outcome(&t, &req("/").header("x-user", "alicex")),
        "no route"
    );
    assert_eq!(
        outcome(&t, &req("/").header("user-agent", "Mozilla/5.0")),
        "prefix->v2"
    );
    assert_eq!(
        outcome(&t, &req("/").header("x-version", "v12")),
        "regex->v3"
    );
    assert_eq!(
        outcome(&t, &req("/").header("x-version", "v12-beta")),
        "no route"
    );
    assert_eq!(outcome(&t, &req("/").header("x-debug", "")), "present->v4");
    assert_eq!(
        outcome(&t, &req("/").header("X-Debug", "anything")),
        "present->v4"
    );
    assert_eq!(outcome(&t, &req("/").header("x-a", "1")), "no route");
    assert_eq!(
        outcome(&t, &req("/").header("x-a", "1").header("x-b", "2")),
        "both->v5"
    );
    // Several values of one header are matched joined with ",".
    assert_eq!(
        outcome(
            &t,
            &req("/").header("x-version", "v1").header("x-version", "v2")
        ),
        "no route"
    );
}

#[test]
fn header_names_are_case_insensitive_and_pseudo_headers_read_the_request() {
    let t = reviews(vec![
        route(
            "upper",
            vec![HttpMatch {
                headers: vec![header("X-Tenant", Some(exact("a")))],
                ..HttpMatch::default()
            }],
            to_subset("v1"),
        ),
        route(
            "path",
            vec![HttpMatch {
                headers: vec![header(":path", Some(prefix("/p?")))],
                ..HttpMatch::default()
            }],
            to_subset("v2"),
        ),
        route(
            "authority",
            vec![HttpMatch {
                headers: vec![header(":authority", Some(exact("reviews:9081")))],
                ..HttpMatch::default()
            }],
            to_subset("v3"),
        ),
    ]);
    assert_eq!(outcome(&t, &req("/").header("x-tenant", "a")), "upper->v1");
    assert_eq!(outcome(&t, &req("/p?x=1")), "path->v2");
    assert_eq!(
        outcome(&t, &req("/").authority("reviews:9081")),
        "authority->v3"
    );
}

#[test]
fn without_headers_inverts_and_treats_missing_as_empty() {
    let t = reviews(vec![
        route(
            "not-canary",
            vec![HttpMatch {
                headers: vec![HeaderMatch {
                    name: "x-canary".into(),
                    value: Some(exact("true")),
                    invert: true,
                }],
                ..HttpMatch::default()
            }],
            to_subset("stable"),
        ),
        route(
            "no-debug",
            vec![HttpMatch {
                uri: Some(prefix("/d")),
                headers: vec![HeaderMatch {
                    name: "x-debug".into(),
                    value: None,
                    invert: true,
                }],
                ..HttpMatch::default()
            }],
            to_subset("nodebug"),
        ),
        route("rest", vec![], to_subset("canary")),
    ]);
    assert_eq!(
        outcome(&t, &req("/").header("x-canary", "true")),
        "rest->canary"
    );
    assert_eq!(
        outcome(&t, &req("/").header("x-canary", "false")),
        "not-canary->stable"
    );
    // A missing header compares as "" and "" is not "true": the inverted match holds.
    assert_eq!(outcome(&t, &req("/")), "not-canary->stable");

    let t = reviews(vec![
        route(
            "no-debug",
            vec![HttpMatch {
                headers: vec![HeaderMatch {
                    name: "x-debug".into(),
                    value: None,
                    invert: true,
                }],
                ..HttpMatch::default()
            }],
            to_subset("nodebug"),
        ),
        route(
            "any-value",
            vec![HttpMatch {
                headers: vec![HeaderMatch {
                    name: "x-other".into(),
                    value: Some(regex(".*")),
                    invert: true,
                }],
                ..HttpMatch::default()
            }],
            to_subset("never"),
        ),
    ]);
    assert_eq!(outcome(&t, &req("/")), "no-debug->nodebug");
    // Present: the inverted presence fails; `.*` matches "" for a missing header, so the
    // inverted regex fails too.
    assert_eq!(outcome(&t, &req("/").header("x-debug", "1")), "no route");
}

#[test]
fn query_params() {
    let t = reviews(vec![
        route(
            "exact",
            vec![HttpMatch {
                query_params: vec![QueryParamMatch {
                    name: "version".into(),
                    value: Some(exact("2")),
                }],
                ..HttpMatch::default()
            }],
            to_subset("v2"),
        ),
        route(
            "regex",
            vec![HttpMatch {
                query_params: vec![QueryParamMatch {
                    name: "id".into(),
                    value: Some(regex("[0-9]+")),
                }],
                ..HttpMatch::default()
            }],
            to_subset("v3"),
        ),
        route(
            "present",
            vec![HttpMatch {
                query_params: vec![QueryParamMatch {
                    name: "debug".into(),
                    value: None,
                }],
                ..HttpMatch::default()
            }],
            to_subset("v4"),
        ),
    ]);
    assert_eq!(outcome(&t, &req("/x?version=2")), "exact->v2");
    assert_eq!(outcome(&t, &req("/x?a=b&version=2&c")), "exact->v2");
    assert_eq!(outcome(&t, &req("/x?version=20")), "no route");
    assert_eq!(outcome(&t, &req("/x?id=123")), "regex->v3");
    assert_eq!(outcome(&t, &req("/x?id=12a")), "no route");
    assert_eq!(outcome(&t, &req("/x?debug")), "present->v4");
    assert_eq!(outcome(&t, &req("/x?debug=0")), "present->v4");
    assert_eq!(outcome(&t, &req("/x")), "no route");
    // The name must match exactly.
    assert_eq!(outcome(&t, &req("/x?debugging=1")), "no route");
}

#[test]
fn ports_source_labels_and_source_namespace() {
    let t = reviews(vec![
        route(
            "port",
            vec![HttpMatch {
                port: Some(9081),
                ..HttpMatch::default()
            }],
            to_subset("v1"),
        ),
        route(
            "labels",
            vec![HttpMatch {
                source_labels: [
                    ("app".to_string(), "productpage".to_string()),
                    ("version".to_string(), "v2".to_string()),
                ]
                .into(),
                ..HttpMatch::default()
            }],
            to_subset("v2"),
        ),
        route(
            "namespace",
            vec![HttpMatch {
                source_namespace: Some("test".into()),
                ..HttpMatch::default()
            }],
            to_subset("v3"),
        ),
    ]);
    let mut on_9081 = req("/");
    on_9081.port = 9081;
    assert_eq!(outcome(&t, &on_9081), "port->v1");
    assert_eq!(outcome(&t, &req("/")), "no route");
    assert_eq!(
        outcome(
            &t,
            &req("/")
                .label("app", "productpage")
                .label("version", "v2")
                .label("extra", "x")
        ),
        "labels->v2"
    );
    assert_eq!(
        outcome(&t, &req("/").label("app", "productpage")),
        "no route"
    );
    let mut from_test = req("/");
    from_test.source_namespace = "test".into();
    assert_eq!(outcome(&t, &from_test), "namespace->v3");
}

#[test]
fn gateway_scoping() {
    let gw = "istio-system/bookinfo-gateway";
    let t = reviews(vec![
        route(
            "edge",
            vec![HttpMatch {
                uri: Some(prefix("/edge")),
                gateways: vec![gw.into()],
                ..HttpMatch::default()
            }],
            to_subset("edge"),
        ),
        route(
            "mesh",
            vec![HttpMatch {
                gateways: vec![MESH_GATEWAY.into()],
                ..HttpMatch::default()
            }],
            to_subset("mesh"),
        ),
        route("any", vec![HttpMatch::default()], to_subset("any")),
    ]);
    assert_eq!(outcome(&t, &req("/edge")), "mesh->mesh");
    assert_eq!(outcome(&t, &req("/edge").gateway(gw)), "edge->edge");
    assert_eq!(outcome(&t, &req("/other").gateway(gw)), "any->any");
    assert_eq!(outcome(&t, &req("/edge").gateway("other/gw")), "any->any");

    // A VirtualService bound only to a gateway does not touch sidecar traffic: sidecars route
    // to the service by default, the gateway finds no route for other paths.
    let t = reviews(vec![route(
        "edge-only",
        vec![HttpMatch {
            uri: Some(prefix("/edge")),
            gateways: vec![gw.into()],
            ..HttpMatch::default()
        }],
        to_subset("edge"),
    )]);
    assert_eq!(
        outcome(&t, &req("/anything")),
        format!("default->{REVIEWS}")
    );
    assert_eq!(outcome(&t, &req("/edge").gateway(gw)), "edge-only->edge");
    assert_eq!(outcome(&t, &req("/other").gateway(gw)), "no route");
}

#[test]
fn hosts_aliases_wildcards_and_case() {
    let wildcard = |host: &str, subset: &str| {
        service(
            host,
            &[],
            vec![route(
                host,
                vec![],
                HttpAction::Route(vec![dest(host, Some(subset), 100)]),
            )],
        )
    };
    let t = table(vec![
        service(
            REVIEWS,
            &["reviews", "reviews.default", "reviews.default.svc"],
            vec![],
        ),
        wildcard("*.example.com", "example"),
        wildcard("*.api.example.com", "api"),
        service("www.api.example.com", &[], vec![]),
    ]);
    for host in [
        "reviews",
        "reviews:9080",
        "Reviews.Default",
        "reviews.default.svc:9080",
        "reviews.default.svc.cluster.local",
        "REVIEWS.DEFAULT.SVC.CLUSTER.LOCAL.:9080",
    ] {
        assert_eq!(
            outcome(&t, &req("/").authority(host)),
            format!("default->{REVIEWS}"),
            "{host}"
        );
    }
    assert_eq!(
        outcome(&t, &req("/").authority("www.api.example.com")),
        "default->www.api.example.com"
    );
    assert_eq!(
        outcome(&t, &req("/").authority("v1.api.example.com:443")),
        "*.api.example.com->api"
    );
    assert_eq!(
        outcome(&t, &req("/").authority("shop.example.com")),
        "*.example.com->example"
    );
    assert_eq!(
        outcome(&t, &req("/").authority("example.com")),
        "unknown host"
    );
    assert_eq!(outcome(&t, &req("/").authority("ratings")), "unknown host");
    assert_eq!(outcome(&t, &req("/").authority("")), "unknown host");
    assert_eq!(
        t.service_for_host("Reviews:80").map(|s| s.host.as_str()),
        Some(REVIEWS)
    );
}

#[test]
fn virtual_addresses_route_traffic_without_a_host() {
    let mut reviews_svc = service(REVIEWS, &["reviews"], vec![]);
    reviews_svc.addresses = vec!["10.96.0.20".into(), "fd00::20".into()];
    let mut external = service("db.example.com", &[], vec![]);
    external.addresses = vec!["240.240.0.0/16".into()];
    external.ports.clear();
    let t = table(vec![reviews_svc, external]);
    assert_eq!(
        outcome(&t, &req("/").authority("10.96.0.20:9080")),
        format!("default->{REVIEWS}")
    );
    assert_eq!(
        outcome(&t, &req("/").authority("10.96.0.20")),
        format!("default->{REVIEWS}")
    );
    assert_eq!(
        outcome(&t, &req("/").authority("[fd00::20]:9080")),
        format!("default->{REVIEWS}")
    );
    // The service does not serve this port.
    let mut other_port = req("/").authority("10.96.0.20");
    other_port.port = 8080;
    assert_eq!(outcome(&t, &other_port), "unknown host");
    assert_eq!(
        outcome(&t, &req("/").authority("240.240.1.2")),
        "default->db.example.com"
    );
    assert_eq!(
        outcome(&t, &req("/").authority("10.96.0.21")),
        "unknown host"
    );
    let ip = "10.96.0.20".parse().unwrap();
    assert_eq!(
        t.service_for_address(ip, 9080).map(|s| s.host.as_str()),
        Some(REVIEWS)
    );
    assert!(t.service_for_address(ip, 1).is_none());
}

#[test]
fn unknown_host_versus_no_route_and_the_outbound_policy() {
    let t = reviews(vec![route(
        "only-api",
        vec![uri(prefix("/api"))],
        to_subset("v1"),
    )]);
    let d = t.select(&req("/web").info(), 0);
    assert!(
        matches!(d, Decision::NoRoute { service } if service.host == REVIEWS),
        "{d:?}"
    );
    assert!(matches!(
        t.select(&req("/").authority("nope").info(), 0),
        Decision::UnknownHost
    ));
    assert_eq!(t.unknown_host_action(), UnknownHostAction::Passthrough);

    let mut cfg = t.config().clone();
    cfg.mesh.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
    assert_eq!(
        RouteTable::new(&cfg).unwrap().unknown_host_action(),
        UnknownHostAction::Reject
    );
}

#[test]
fn a_service_without_routes_gets_a_stable_default_route() {
    let t = reviews(vec![]);
    let r = req("/x");
    let d1 = t.select(&r.info(), 0);
    let d2 = t.select(&r.info(), 7);
    match (&d1, &d2) {
        (
            Decision::Forward {
                route,
                route_index,
                destination,
                matched,
                rewrite,
                cors,
                ..
            },
            Decision::Forward { route: route2, .. },
        ) => {
            assert_eq!(route.name, DEFAULT_ROUTE_NAME);
            assert!(std::ptr::eq(*route, *route2));
            assert_eq!(*route_index, None);
            assert_eq!(destination.destination.host, REVIEWS);
            assert_eq!(destination.destination.subset, None);
            assert!(route.retry.is_none() && route.timeout_ms.is_none() && route.fault.is_none());
            assert!(matched.is_none() && rewrite.is_none() && cors.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn redirects_and_direct_responses() {
    let t = reviews(vec![
        route(
            "moved",
            vec![uri(prefix("/old"))],
            HttpAction::Redirect(Redirect {
                uri: Some("/new".into()),
                authority: Some("reviews.example.com".into()),
                port: None,
                port_from_request: false,
                scheme: Some("https".into()),
                code: 0,
            }),
        ),
        route(
            "temp",
            vec![uri(exact("/tmp"))],
            HttpAction::Redirect(Redirect {
                port: Some(8080),
                code: 307,
                ..Redirect::default()
            }),
        ),
        route(
            "down",
            vec![uri(prefix("/down"))],
            HttpAction::DirectResponse(DirectResponse {
                status: 503,
                body: Some("maintenance".into()),
            }),
        ),
        route(
            "teapot",
            vec![uri(prefix("/tea"))],
            HttpAction::DirectResponse(DirectResponse {
                status: 418,
                body: None,
            }),
        ),
    ]);
    assert_eq!(
        outcome(&t, &req("/old/page?x=1")),
        "redirect 301 https://reviews.example.com/new?x=1"
    );
    assert_eq!(
        outcome(&t, &req("/tmp")),
        "redirect 307 http://reviews:8080/tmp"
    );
    assert_eq!(outcome(&t, &req("/down")), "direct 503 maintenance");
    assert_eq!(outcome(&t, &req("/tea")), "direct 418 ");
    let d = t.select(&req("/down").info(), 0);
    assert_eq!(d.route().map(|r| r.name.as_str()), Some("down"));
    assert_eq!(d.service().map(|s| s.host.as_str()), Some(REVIEWS));
}

#[test]
fn rewrites_use_the_match_that_selected_the_route() {
    let mut rw = route(
        "rw",
        vec![uri(prefix("/reviews-api")), uri(exact("/health"))],
        to_subset("v1"),
    );
    rw.rewrite = Some(Rewrite {
        uri: Some("/api".into()),
        authority: Some("reviews-v2".into()),
        uri_regex: None,
    });
    let t = reviews(vec![rw]);
    let apply = |path: &str| {
        let r = req(path);
        let d = t.select(&r.info(), 0);
        let Decision::Forward {
            rewrite: Some(rewrite),
            ..
        } = &d
        else {
            panic!("{d:?}")
        };
        let mut parts = http::Request::get(path).body(()).unwrap().into_parts().0;
        assert!(rewrite.apply(d.matched_uri(), &mut parts).is_empty());
        (
            parts.uri.to_string(),
            parts.headers["host"].to_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        apply("/reviews-api/1?x=y"),
        ("/api/1?x=y".into(), "reviews-v2".into())
    );
    assert_eq!(apply("/health"), ("/api".into(), "reviews-v2".into()));
}

#[test]
fn weighted_routes_split_exactly_over_a_sweep() {
    let t = reviews(vec![route(
        "split",
        vec![],
        HttpAction::Route(vec![
            dest(REVIEWS, Some("v1"), 90),
            dest(REVIEWS, Some("v2"), 10),
        ]),
    )]);
    let r = req("/");
    let info = r.info();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for random in 0..10_000 {
        let d = t.select(&info, random);
        let subset = d.destination().unwrap().destination.subset.clone().unwrap();
        *counts.entry(subset).or_default() += 1;
    }
    assert_eq!(
        counts,
        [("v1".to_string(), 9_000), ("v2".to_string(), 1_000)].into()
    );

    // Zero-weight destinations are never picked.
    let t = reviews(vec![route(
        "shifted",
        vec![],
        HttpAction::Route(vec![
            dest(REVIEWS, Some("v1"), 0),
            dest(REVIEWS, Some("v2"), 100),
        ]),
    )]);
    assert!((0..1_000).all(|random| {
        t.select(&info, random)
            .destination()
            .unwrap()
            .destination
            .subset
            .as_deref()
            == Some("v2")
    }));
}

/// `../shared/fixtures/istio/gateway-and-cookie-match.yaml`, as the operator renders it for
/// the ingress gateway.
#[test]
fn the_cookie_fixture_routes_only_b_nova_users() {
    const PRODUCTPAGE: &str = "productpage.default.svc.cluster.local";
    const GW: &str = "default/bookinfo-gateway";
    let mut forward = dest(PRODUCTPAGE, None, 100);
    forward.destination.port = Some(9080);
    let t = table(vec![service(
        "test.techup.xy",
        &[],
        vec![route(
            "default/bookinfo/0",
            vec![HttpMatch {
                headers: vec![header("cookie", Some(regex("^(.*;?)?(user=b-nova)(;.*)?")))],
                gateways: vec![GW.into()],
                ..HttpMatch::default()
            }],
            HttpAction::Route(vec![forward]),
        )],
    )]);
    let through_gateway = |cookies: &[&str]| {
        let mut r = req("/productpage").authority("test.techup.xy").gateway(GW);
        r.port = 80;
        for c in cookies {
            r = r.header("cookie", c);
        }
        outcome(&t, &r)
    };
    let routed = format!("default/bookinfo/0->{PRODUCTPAGE}");
    assert_eq!(through_gateway(&["user=b-nova"]), routed);
    assert_eq!(through_gateway(&["a=1; user=b-nova"]), routed);
    assert_eq!(through_gateway(&["user=b-nova; theme=dark"]), routed);
    // HTTP/2 sends cookies as separate headers; they are joined with "; ".
    assert_eq!(through_gateway(&["a=1", "user=b-nova"]), routed);
    assert_eq!(through_gateway(&["user=alice"]), "no route");
    assert_eq!(through_gateway(&[]), "no route");
    assert_eq!(
        outcome(&t, &req("/").authority("other.xy").gateway(GW)),
        "unknown host"
    );
}

#[test]
fn compile_errors_name_service_route_and_field() {
    let mut cfg = ProxyConfig::new("default");
    cfg.services = vec![service(
        REVIEWS,
        &[],
        vec![route(
            "default/reviews/0",
            vec![
                uri(prefix("/")),
                HttpMatch {
                    headers: vec![header("cookie", Some(regex("(user=")))],
                    ..HttpMatch::default()
                },
            ],
            to_subset("v1"),
        )],
    )];
    let err = RouteTable::new(&cfg).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "service {REVIEWS} route default/reviews/0 matches[1].headers[cookie]: invalid regex \"(user=\": "
        )),
        "{msg}"
    );
    assert_eq!(err.field, "matches[1].headers[cookie]");
    assert_eq!(err.route.as_deref(), Some("default/reviews/0"));

    let mut bad = cfg.clone();
    bad.services[0].http_routes[0].matches = vec![HttpMatch {
        headers: vec![HeaderMatch {
            name: "x-a".into(),
            value: Some(regex("[")),
            invert: true,
        }],
        query_params: vec![],
        ..HttpMatch::default()
    }];
    assert_eq!(
        RouteTable::new(&bad).unwrap_err().field,
        "matches[0].withoutHeaders[x-a]"
    );

    let mut bad = cfg.clone();
    bad.services[0].http_routes[0].matches = vec![HttpMatch {
        query_params: vec![QueryParamMatch {
            name: "q".into(),
            value: Some(regex("(")),
        }],
        ..HttpMatch::default()
    }];
    assert_eq!(
        RouteTable::new(&bad).unwrap_err().field,
        "matches[0].queryParams[q]"
    );

    let mut bad = cfg.clone();
    bad.services[0].http_routes[0].matches = vec![uri(regex("*"))];
    assert_eq!(RouteTable::new(&bad).unwrap_err().field, "matches[0].uri");

    let mut bad = cfg.clone();
    bad.services[0].http_routes[0].matches = vec![];
    bad.services[0].http_routes[0].rewrite = Some(Rewrite {
        uri_regex: Some(RegexRewrite {
            pattern: "(".into(),
            substitution: "x".into(),
        }),
        ..Rewrite::default()
    });
    let err = RouteTable::new(&bad).unwrap_err();
    assert_eq!(err.field, "rewrite.uriRegex.pattern", "{err}");

    let mut bad = cfg.clone();
    bad.services[0].http_routes[0].matches = vec![];
    bad.services[0].http_routes[0].action = HttpAction::Route(vec![]);
    let err = RouteTable::new(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "service {REVIEWS} route default/reviews/0 action.route: the route forwards to no destination"
        )
    );

    let mut bad = cfg.clone();
    bad.services[0].http_routes.clear();
    bad.services[0].addresses = vec!["10.0.0.300".into()];
    let err = RouteTable::new(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "service {REVIEWS} addresses[0]: \"10.0.0.300\" is neither an IP address nor a CIDR block"
        )
    );

    let mut bad = cfg;
    bad.services[0].http_routes[0].matches = vec![];
    bad.services[0].http_routes[0].cors = Some(Cors {
        allow_origins: vec![regex("(")],
        ..Cors::default()
    });
    assert_eq!(
        RouteTable::new(&bad).unwrap_err().field,
        "cors.allowOrigins"
    );
}

#[test]
fn decisions_carry_the_compiled_cors_policy() {
    let mut r = route("cors", vec![], to_subset("v1"));
    r.cors = Some(Cors {
        allow_origins: vec![exact("https://shop.example.com")],
        ..Cors::default()
    });
    let t = reviews(vec![r]);
    let d = t.select(&req("/").info(), 0);
    let policy = d.cors().unwrap();
    assert!(policy.allows_origin("https://shop.example.com"));
    assert!(!policy.allows_origin("https://evil.example.com"));
}

#[test]
fn a_config_from_json_routes_like_a_built_one() {
    let json = format!(
        r#"{{
  "format": "mizzen.io/proxy-config/v1",
  "namespace": "default",
  "services": [{{
    "host": "{REVIEWS}",
    "aliases": ["reviews"],
    "namespace": "default",
    "httpRoutes": [{{
      "name": "default/reviews/0",
      "matches": [{{"headers": [{{"name": "end-user", "value": {{"exact": "jason"}}}}]}}],
      "action": {{"route": [{{"destination": {{"host": "{REVIEWS}", "subset": "v2"}}, "weight": 100}}]}}
    }}, {{
      "name": "default/reviews/1",
      "action": {{"route": [{{"destination": {{"host": "{REVIEWS}", "subset": "v1"}}, "weight": 100}}]}}
    }}]
  }}]
}}"#
    );
    let cfg = ProxyConfig::from_json(json.as_bytes()).unwrap();
    let t = RouteTable::new(&cfg).unwrap();
    assert_eq!(
        outcome(&t, &req("/").header("end-user", "jason")),
        "default/reviews/0->v2"
    );
    assert_eq!(outcome(&t, &req("/")), "default/reviews/1->v1");
}

#[test]
fn tables_and_decisions_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RouteTable>();
    send_sync::<Decision<'static>>();
    send_sync::<L4Decision<'static>>();
}

#[test]
fn unnamed_routes_are_named_by_position_in_errors() {
    let mut cfg = ProxyConfig::new("default");
    cfg.services = vec![service(
        REVIEWS,
        &[],
        vec![
            route("first", vec![], to_subset("v1")),
            route("", vec![uri(regex("a{2,1}"))], to_subset("v1")),
        ],
    )];
    let err = RouteTable::new(&cfg).unwrap_err();
    assert_eq!(err.route.as_deref(), Some("http[1]"));
    assert!(
        err.to_string().starts_with(&format!(
            "service {REVIEWS} route http[1] matches[0].uri: invalid regex \"a{{2,1}}\""
        )),
        "{err}"
    );
}

#[test]
fn a_routes_retries_fault_and_mirrors_are_compiled_once_and_shared() {
    let mut r = route("flaky", vec![], to_subset("v1"));
    r.retry = Some(Retry {
        attempts: 3,
        retry_on: vec!["5xx".into(), "connect-failure".into()],
        ..Retry::istio_default()
    });
    r.fault = Some(Fault {
        delay: Some(FaultDelay {
            fixed_delay_ms: 5,
            percentage: 50.0,
        }),
        abort: None,
    });
    r.mirrors = vec![Mirror {
        destination: dest(REVIEWS, Some("v2"), 100).destination,
        percentage: 10.0,
    }];
    let t = reviews(vec![r]);
    let layers = |d: Decision<'_>| match d {
        Decision::Forward {
            retry,
            fault,
            mirrors,
            ..
        } => (retry.cloned(), fault.cloned(), mirrors.cloned()),
        other => panic!("{other:?}"),
    };
    let (retry, fault, mirrors) = layers(t.select(&req("/").info(), 0));
    let (retry2, fault2, mirrors2) = layers(t.select(&req("/").info(), 0));
    let (retry, fault, mirrors) = (retry.unwrap(), fault.unwrap(), mirrors.unwrap());
    assert_eq!(retry.attempts, 3);
    assert_eq!(fault.delay.as_ref().unwrap().fixed_delay_ms, 5);
    assert_eq!(mirrors[0].destination.subset.as_deref(), Some("v2"));
    // The same compiled values for every request, not a copy each.
    assert!(Arc::ptr_eq(&retry, &retry2.unwrap()));
    assert!(Arc::ptr_eq(&fault, &fault2.unwrap()));
    assert!(Arc::ptr_eq(&mirrors, &mirrors2.unwrap()));
    // A route without them, and a service's default route, carry none.
    let plain = reviews(vec![route("plain", vec![], to_subset("v1"))]);
    assert_eq!(layers(plain.select(&req("/").info(), 0)).0, None);
    let none = reviews(vec![]);
    let (retry, fault, mirrors) = layers(none.select(&req("/").info(), 0));
    assert!(retry.is_none() && fault.is_none() && mirrors.is_none());
}
