//! Traffic simulation, as Istio's `pilot/pkg/simulation`: render YAML with the operator, then
//! play requests through the proxy's own route engine (`mizzen-route`) and assert where each one
//! goes. One engine decides routes; these tests never re-implement matching.

use std::path::Path;

use mizzen_operator::{
    Index, RenderSettings,
    files::{file_settings, load_text},
    render,
};
use mizzen_route::{DEFAULT_ROUTE_NAME, Outcome, RouteTable, SimRequest};

fn table_for(yaml: &str, namespace: &str) -> RouteTable {
    let mut index = Index::new("mizzen-system");
    load_text(&mut index, yaml, "default", Path::new("input.yaml")).unwrap();
    let rendered = render(&index, &file_settings(RenderSettings::default()));
    let config = rendered.configs[namespace].config();
    RouteTable::new(&config).unwrap()
}

fn case(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/render")
        .join(name)
        .join("input.yaml");
    std::fs::read_to_string(path).unwrap()
}

fn forward(route: &str, host: &str, subset: Option<&str>) -> Outcome {
    Outcome::Forward {
        route: route.into(),
        host: host.into(),
        subset: subset.map(str::to_string),
        port: None,
    }
}

const SERVICEB: &str = "serviceb.default.svc.cluster.local";

#[test]
fn canary_splits_ninety_ten_over_every_draw() {
    let table = table_for(&case("vs-canary-90-10"), "default");
    for authority in [
        "serviceb",
        "serviceb.default",
        "serviceb.default.svc.cluster.local:8080",
    ] {
        let mut dist = table.distribution(&SimRequest::new(authority, "/"), 1000);
        dist.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        assert_eq!(
            dist,
            vec![
                (forward("default/serviceb/0", SERVICEB, Some("v1")), 900),
                (forward("default/serviceb/0", SERVICEB, Some("v2")), 100),
            ],
            "{authority}"
        );
    }
}

#[test]
fn cookie_match_sends_one_user_to_the_new_version() {
    let yaml = format!(
        "{}---\n{}",
        case("dr-serviceb-subsets"),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: serviceb-cookie}
spec:
  hosts: [serviceb]
  http:
  - match:
    - headers:
        cookie:
          regex: "^(.*;?)?(user=b-nova)(;.*)?"
    route: [{destination: {host: serviceb, subset: v2}}]
  - route: [{destination: {host: serviceb, subset: v1}}]
"#
    );
    let table = table_for(&yaml, "default");
    let with = SimRequest::new("serviceb", "/").header("cookie", "theme=dark; user=b-nova");
    assert_eq!(
        table.simulate(&with, 0),
        forward("default/serviceb-cookie/0", SERVICEB, Some("v2"))
    );
    let other = SimRequest::new("serviceb", "/").header("cookie", "user=someone-else");
    assert_eq!(
        table.simulate(&other, 0),
        forward("default/serviceb-cookie/1", SERVICEB, Some("v1"))
    );
    assert_eq!(
        table.simulate(&SimRequest::new("serviceb", "/"), 7),
        forward("default/serviceb-cookie/1", SERVICEB, Some("v1"))
    );
}

#[test]
fn header_match_from_the_older_virtual_service_comes_first() {
    let table = table_for(&case("two-vs-one-host"), "shop");
    let host = "reviews.shop.svc.cluster.local";
    let jason = SimRequest::new("reviews:9080", "/").header("end-user", "jason");
    assert_eq!(
        table.simulate(&jason, 0),
        forward("shop/reviews-jason/0", host, Some("v2"))
    );
    let anyone = SimRequest::new("reviews:9080", "/");
    assert_eq!(
        table.simulate(&anyone, 0),
        forward("shop/reviews-catchall/0", host, Some("v1"))
    );
}

#[test]
fn a_route_to_an_unknown_subset_is_rejected_at_render_and_the_rest_keeps_working() {
    let table = table_for(&case("invalid-object"), "shop");
    // The VirtualService naming subset v3 was left out: ratings gets its default route.
    assert_eq!(
        table.simulate(&SimRequest::new("ratings:9080", "/"), 0),
        forward(DEFAULT_ROUTE_NAME, "ratings.shop.svc.cluster.local", None)
    );
    // The valid one next to it still routes.
    assert_eq!(
        table.simulate(&SimRequest::new("details:9080", "/"), 0),
        forward("shop/details/0", "details.shop.svc.cluster.local", None)
    );
}

#[test]
fn export_to_and_sidecar_scoping_decide_what_a_namespace_can_reach() {
    let web = table_for(&case("export-to"), "web");
    let ops = table_for(&case("export-to"), "ops");
    let catalog = SimRequest::new("catalog.shop", "/");
    assert_eq!(
        web.simulate(&catalog, 0),
        forward(
            "shop/catalog-for-web/0",
            "catalog.shop.svc.cluster.local",
            None
        )
    );
    // The VirtualService is exported to web only: ops reaches catalog by its default route.
    assert_eq!(
        ops.simulate(&catalog, 0),
        forward(DEFAULT_ROUTE_NAME, "catalog.shop.svc.cluster.local", None)
    );
    // "internal" is exported to its own namespace only.
    assert_eq!(
        web.simulate(&SimRequest::new("internal.shop", "/"), 0),
        Outcome::UnknownHost
    );

    let shop = table_for(&case("sidecar-egress"), "shop");
    assert_eq!(
        shop.simulate(&SimRequest::new("frontend.web", "/"), 0),
        Outcome::UnknownHost
    );
    assert_eq!(
        shop.simulate(&SimRequest::new("cart", "/"), 0),
        forward(DEFAULT_ROUTE_NAME, "cart.shop.svc.cluster.local", None)
    );
}

#[test]
fn redirects_direct_responses_and_delegates_route_as_rendered() {
    let table = table_for(&case("vs-all-fields"), "shop");
    let host = "web.shop.svc.cluster.local";
    assert_eq!(
        table.simulate(&SimRequest::new("web", "/OLD/page"), 0),
        Outcome::Redirect {
            code: 308,
            location: "https://web.example.com:8443/new".into()
        }
    );
    // derivePort FROM_REQUEST_PORT: the port the request came in on, here 8080.
    assert_eq!(
        table.simulate(&SimRequest::new("web:8080", "/secure"), 0),
        Outcome::Redirect {
            code: 301,
            location: "https://web:8080/secure".into()
        }
    );
    assert_eq!(
        table.simulate(&SimRequest::new("web", "/teapot"), 0),
        Outcome::DirectResponse {
            status: 418,
            body: Some("I'm a teapot".into())
        }
    );
    assert_eq!(
        table.simulate(&SimRequest::new("web", "/shop/cart/1"), 0),
        forward("shop/web-shop/0", host, Some("v2"))
    );
    assert_eq!(
        table.simulate(&SimRequest::new("web", "/shop/x"), 0),
        forward("shop/web-shop/1", host, Some("v1"))
    );
    // Gateway-only rules are not in the sidecar config: /public falls through to the last rule.
    assert_eq!(
        table.simulate(&SimRequest::new("web", "/public"), 0),
        forward("shop/web/8", host, Some("v1"))
    );
}
