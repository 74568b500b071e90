//! AuthorizationPolicy matrices: requests × policies → the status the proxy answers (200 or
//! 403), with Istio's semantics for each field, wildcard, action and the dry-run annotation.

mod support;

use mizzen_policy::{Authorizer, authz};
use serde_json::{Value, json};
use support::{Req, inbound, labels, policy};

const SLEEP: &str = "cluster.local/ns/default/sa/sleep";
const OTHER: &str = "cluster.local/ns/prod/sa/other";

fn authorizer(policies: Vec<Value>) -> Authorizer {
    let a = Authorizer::new(&inbound(json!({ "authorization": policies })), &labels());
    assert!(
        a.warnings().is_empty(),
        "unexpected warnings: {:?}",
        a.warnings()
    );
    a
}

/// Runs every row against the policies; names the failing row.
fn check(policies: Vec<Value>, rows: &[(&str, Req, u16)]) {
    let a = authorizer(policies);
    for (name, req, want) in rows {
        assert_eq!(req.status(&a), *want, "{name}: {req:?}");
    }
}

#[test]
fn no_policy_allows_everything() {
    let a = authorizer(vec![]);
    assert!(a.is_empty());
    let v = a.authorize(&Req::get("/anything").attrs());
    assert!(v.allowed && v.policy.is_none() && !v.audit && !v.dry_run_would_deny);
}

#[test]
fn allow_by_principal() {
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"from": [{"principals": [SLEEP]}]}]),
        )],
        &[
            ("listed principal", Req::get("/").from(SLEEP), 200),
            (
                "spiffe:// form",
                Req::get("/").from("spiffe://cluster.local/ns/default/sa/sleep"),
                200,
            ),
            ("other principal", Req::get("/").from(OTHER), 403),
            ("plaintext has no principal", Req::get("/"), 403),
        ],
    );
}

#[test]
fn principal_wildcards() {
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"from": [{"principals": ["cluster.local/ns/default/*", "*/sa/other"]}]}]),
        )],
        &[
            ("prefix", Req::get("/").from(SLEEP), 200),
            ("suffix", Req::get("/").from(OTHER), 200),
            (
                "neither",
                Req::get("/").from("cluster.local/ns/prod/sa/x"),
                403,
            ),
        ],
    );
    check(
        vec![policy(
            "any",
            "ALLOW",
            json!([{"from": [{"principals": ["*"]}]}]),
        )],
        &[
            ("any mTLS peer", Req::get("/").from(OTHER), 200),
            ("plaintext", Req::get("/"), 403),
        ],
    );
}

#[test]
fn allow_by_namespace_and_not_namespace() {
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"from": [{"namespaces": ["default", "team-*"], "notNamespaces": ["team-b"]}]}]),
        )],
        &[
            ("listed", Req::get("/").from(SLEEP), 200),
            (
                "prefix",
                Req::get("/").from("cluster.local/ns/team-a/sa/x"),
                200,
            ),
            (
                "excluded",
                Req::get("/").from("cluster.local/ns/team-b/sa/x"),
                403,
            ),
            ("other", Req::get("/").from(OTHER), 403),
            ("plaintext has no namespace", Req::get("/"), 403),
        ],
    );
}

#[test]
fn allow_by_ip_blocks() {
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"from": [{"ipBlocks": ["10.0.0.0/8", "192.168.1.7"], "notIpBlocks": ["10.66.0.0/16"]}]}]),
        )],
        &[
            ("in block", Req::get("/").ip("10.1.2.3"), 200),
            ("single address", Req::get("/").ip("192.168.1.7"), 200),
            ("ipv4-mapped", Req::get("/").ip("::ffff:10.3.3.3"), 200),
            ("excluded block", Req::get("/").ip("10.66.1.1"), 403),
            ("outside", Req::get("/").ip("172.16.0.1"), 403),
        ],
    );
    // remoteIpBlocks read the original client, falling back to the peer.
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"from": [{"remoteIpBlocks": ["203.0.113.0/24"]}]}]),
        )],
        &[
            (
                "client behind a proxy",
                Req::get("/").ip("10.1.1.1").remote("203.0.113.9"),
                200,
            ),
            (
                "other client",
                Req::get("/").ip("203.0.113.9").remote("198.51.100.1"),
                403,
            ),
            ("direct client", Req::get("/").ip("203.0.113.5"), 200),
        ],
    );
}

#[test]
fn paths_with_wildcards_and_not_paths() {
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"to": [{"paths": ["/api/*", "*.js", "/exact"]}]}]),
        )],
        &[
            ("prefix", Req::get("/api/users"), 200),
            ("prefix needs its slash", Req::get("/api"), 403),
            ("suffix", Req::get("/static/app.js"), 200),
            ("exact", Req::get("/exact"), 200),
            ("exact ignores the query", Req::get("/exact?x=1"), 200),
            ("suffix ignores the query", Req::get("/a.js?v=2"), 200),
            ("exact is exact", Req::get("/exact/more"), 403),
            ("other", Req::get("/admin"), 403),
        ],
    );
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"to": [{"notPaths": ["/admin*"]}]}]),
        )],
        &[
            ("outside notPaths", Req::get("/public"), 200),
            ("inside notPaths", Req::get("/admin/users"), 403),
            (
                "query is not part of the path",
                Req::get("/public?next=/admin"),
                200,
            ),
        ],
    );
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"to": [{"paths": ["/users/{*}/orders", "/static/{**}"]}]}]),
        )],
        &[
            ("{*} one segment", Req::get("/users/42/orders"), 200),
            ("{*} not two", Req::get("/users/4/2/orders"), 403),
            ("{**} many segments", Req::get("/static/css/a.css"), 200),
            ("{**} needs one", Req::get("/static/"), 403),
        ],
    );
}

#[test]
fn methods_hosts_and_ports() {
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"to": [{
                "methods": ["GET", "HEAD"],
                "hosts": ["httpbin.foo.svc.cluster.local", "*.example.com"],
                "ports": [8080]
            }]}]),
        )],
        &[
            ("all match", Req::get("/"), 200),
            (
                "host case",
                Req::get("/").host("HTTPBIN.foo.svc.cluster.local"),
                200,
            ),
            ("host suffix", Req::get("/").host("api.example.com"), 200),
            (
                "host with a port is another host (as Istio)",
                Req::get("/").host("httpbin.foo.svc.cluster.local:8080"),
                403,
            ),
            ("method", Req::get("/").method("POST"), 403),
            ("port", Req::get("/").port(9090), 403),
        ],
    );
}

#[test]
fn rules_are_or_and_fields_are_and() {
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([
                {"from": [{"principals": [SLEEP]}], "to": [{"methods": ["GET"]}]},
                {"from": [{"namespaces": ["prod"]}], "to": [{"methods": ["POST"], "paths": ["/data"]}]}
            ]),
        )],
        &[
            ("rule 1", Req::get("/x").from(SLEEP), 200),
            (
                "rule 1 wrong method",
                Req::get("/x").from(SLEEP).method("POST"),
                403,
            ),
            ("rule 2", Req::get("/data").from(OTHER).method("POST"), 200),
            (
                "rule 2 wrong path",
                Req::get("/other").from(OTHER).method("POST"),
                403,
            ),
        ],
    );
}

#[test]
fn deny_wins_over_allow() {
    let a = authorizer(vec![
        policy("allow-all", "ALLOW", json!([{}])),
        policy(
            "deny-admin",
            "DENY",
            json!([{"to": [{"paths": ["/admin*"]}]}]),
        ),
    ]);
    let v = a.authorize(&Req::get("/admin/x").from(SLEEP).attrs());
    assert_eq!((v.allowed, v.policy), (false, Some("foo/deny-admin")));
    let v = a.authorize(&Req::get("/home").attrs());
    assert_eq!((v.allowed, v.policy), (true, Some("foo/allow-all")));
}

#[test]
fn deny_only_allows_what_it_does_not_match() {
    check(
        vec![policy(
            "deny",
            "DENY",
            json!([{"from": [{"notNamespaces": ["default"]}]}]),
        )],
        &[
            ("same namespace", Req::get("/").from(SLEEP), 200),
            ("other namespace", Req::get("/").from(OTHER), 403),
            ("plaintext is not in default", Req::get("/"), 403),
        ],
    );
}

#[test]
fn allow_without_rules_denies_all_and_empty_rule_allows_all() {
    let a = authorizer(vec![json!({"name": "foo/deny-all", "action": "ALLOW"})]);
    let v = a.authorize(&Req::get("/").from(SLEEP).attrs());
    assert_eq!((v.allowed, v.policy), (false, None));
    check(
        vec![policy("allow-all", "ALLOW", json!([{}]))],
        &[("anything", Req::get("/whatever").method("DELETE"), 200)],
    );
    // A DENY policy without rules matches nothing.
    check(
        vec![json!({"name": "foo/empty-deny", "action": "DENY"})],
        &[("anything", Req::get("/"), 200)],
    );
    // A DENY policy with an empty rule matches everything.
    check(
        vec![policy("deny-all", "DENY", json!([{}]))],
        &[("anything", Req::get("/"), 403)],
    );
}

#[test]
fn policies_for_other_workloads_do_not_apply() {
    let other = json!({"name": "foo/other", "selector": {"app": "reviews"}, "action": "ALLOW", "rules": [{"from": [{"principals": [OTHER]}]}]});
    check(vec![other.clone()], &[("not selected", Req::get("/"), 200)]);
    // A namespace-wide policy (no selector) applies.
    let mut ns_wide = other;
    ns_wide.as_object_mut().unwrap().remove("selector");
    check(vec![ns_wide], &[("selected", Req::get("/"), 403)]);
}

#[test]
fn dry_run_reports_without_enforcing() {
    let dry = |mut p: Value| {
        p["dryRun"] = json!(true);
        p
    };
    let a = authorizer(vec![dry(policy(
        "dry-deny",
        "DENY",
        json!([{"to": [{"methods": ["DELETE"]}]}]),
    ))]);
    let v = a.authorize(&Req::get("/").method("DELETE").attrs());
    assert!(v.allowed);
    assert_eq!(
        (v.dry_run_would_deny, v.dry_run_policy),
        (true, Some("foo/dry-deny"))
    );
    let v = a.authorize(&Req::get("/").attrs());
    assert_eq!((v.allowed, v.dry_run_would_deny), (true, false));

    // A dry-run ALLOW that matches nothing would deny, while the enforced ALLOW decides.
    let a = authorizer(vec![
        policy(
            "allow-sleep",
            "ALLOW",
            json!([{"from": [{"principals": [SLEEP]}]}]),
        ),
        dry(policy(
            "dry-allow",
            "ALLOW",
            json!([{"to": [{"paths": ["/health"]}]}]),
        )),
    ]);
    let v = a.authorize(&Req::get("/data").from(SLEEP).attrs());
    assert_eq!((v.allowed, v.policy), (true, Some("foo/allow-sleep")));
    assert_eq!((v.dry_run_would_deny, v.dry_run_policy), (true, None));
    let v = a.authorize(&Req::get("/health").from(OTHER).attrs());
    assert_eq!(
        (v.allowed, v.dry_run_would_deny, v.dry_run_policy),
        (false, false, Some("foo/dry-allow"))
    );
}

#[test]
fn audit_marks_only() {
    let a = authorizer(vec![policy(
        "audit",
        "AUDIT",
        json!([{"to": [{"paths": ["/secret*"]}]}]),
    )]);
    let v = a.authorize(&Req::get("/secret/1").attrs());
    assert!(v.allowed && v.audit && v.policy.is_none());
    let v = a.authorize(&Req::get("/public").attrs());
    assert!(v.allowed && !v.audit);
    // AUDIT does not count as an ALLOW policy, and does not stop a DENY.
    let a = authorizer(vec![
        policy("audit", "AUDIT", json!([{}])),
        policy("deny", "DENY", json!([{"to": [{"methods": ["PUT"]}]}])),
    ]);
    assert_eq!(Req::get("/").status(&a), 200);
    let v = a.authorize(&Req::get("/").method("PUT").attrs());
    assert!(!v.allowed && v.audit);
}

#[test]
fn when_conditions_on_connection_and_headers() {
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"when": [
                {"key": "request.headers[X-User]", "values": ["alice", "team-*"], "notValues": ["team-x"]},
                {"key": "source.ip", "values": ["10.0.0.0/8"]},
                {"key": "destination.port", "values": ["8080"]},
                {"key": "destination.ip", "values": ["10.9.0.0/16"]}
            ]}]),
        )],
        &[
            ("all hold", Req::get("/").header("x-user", "alice"), 200),
            (
                "header prefix",
                Req::get("/").header("x-user", "team-a"),
                200,
            ),
            (
                "header notValues",
                Req::get("/").header("x-user", "team-x"),
                403,
            ),
            ("header missing", Req::get("/"), 403),
            (
                "source.ip",
                Req::get("/").header("x-user", "alice").ip("172.16.0.1"),
                403,
            ),
            (
                "destination.port",
                Req::get("/").header("x-user", "alice").port(9090),
                403,
            ),
        ],
    );
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"when": [
                {"key": "source.namespace", "values": ["default"]},
                {"key": "source.principal", "notValues": ["*/sa/blocked"]},
                {"key": "source.serviceAccount", "values": ["default/sleep", "prod/other"]},
                {"key": "connection.sni", "values": ["*.svc.cluster.local"]},
                {"key": "remote.ip", "notValues": ["198.51.100.0/24"]}
            ]}]),
        )],
        &[
            (
                "all hold",
                Req::get("/")
                    .from(SLEEP)
                    .sni("outbound_.8080_._.httpbin.foo.svc.cluster.local"),
                200,
            ),
            (
                "wrong namespace",
                Req::get("/").from(OTHER).sni("x.svc.cluster.local"),
                403,
            ),
            (
                "blocked sa",
                Req::get("/")
                    .from("cluster.local/ns/default/sa/blocked")
                    .sni("x.svc.cluster.local"),
                403,
            ),
            ("no sni", Req::get("/").from(SLEEP), 403),
            (
                "remote.ip excluded",
                Req::get("/")
                    .from(SLEEP)
                    .sni("a.svc.cluster.local")
                    .remote("198.51.100.7"),
                403,
            ),
        ],
    );
    // A service account without namespace is in the policy's namespace (`foo`).
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"when": [{"key": "source.serviceAccount", "values": ["reader"]}]}]),
        )],
        &[
            (
                "same namespace",
                Req::get("/").from("cluster.local/ns/foo/sa/reader"),
                200,
            ),
            (
                "other namespace",
                Req::get("/").from("cluster.local/ns/bar/sa/reader"),
                403,
            ),
            (
                "longer name",
                Req::get("/").from("cluster.local/ns/foo/sa/reader2"),
                403,
            ),
        ],
    );
    // `*` in a header condition only asks for presence.
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"when": [{"key": "request.headers[x-token]", "values": ["*"]}]}]),
        )],
        &[
            ("present, empty", Req::get("/").header("x-token", ""), 200),
            ("absent", Req::get("/"), 403),
        ],
    );
}

#[test]
fn jwt_conditions_nested_and_list_claims() {
    let token = json!({
        "iss": "https://issuer.example.com", "sub": "alice", "azp": "web-app",
        "aud": ["httpbin", "other"],
        "groups": ["dev", "admin"],
        "realm_access": {"roles": ["reader"], "tier": "gold"},
        "email_verified": true
    });
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"from": [{"requestPrincipals": ["https://issuer.example.com/*"]}],
                    "when": [
                {"key": "request.auth.claims[groups]", "values": ["admin"]},
                {"key": "request.auth.claims[realm_access][roles]", "values": ["read*"]},
                {"key": "request.auth.claims[realm_access][tier]", "values": ["gold"]},
                {"key": "request.auth.audiences", "values": ["httpbin"]},
                {"key": "request.auth.presenter", "values": ["web-*"]},
                {"key": "request.auth.principal", "values": ["https://issuer.example.com/alice"]}
            ]}]),
        )],
        &[
            ("all claims", Req::get("/").jwt(token.clone()), 200),
            ("no token", Req::get("/"), 403),
            ("not in the group", Req::get("/").jwt(json!({"iss": "https://issuer.example.com", "sub": "alice", "azp": "web-app", "aud": "httpbin", "groups": ["dev"], "realm_access": {"roles": ["reader"], "tier": "gold"}})), 403),
            ("string claim instead of list", Req::get("/").jwt(json!({"iss": "https://issuer.example.com", "sub": "alice", "azp": "web-app", "aud": "httpbin", "groups": "admin", "realm_access": {"roles": "reader", "tier": "gold"}})), 200),
            ("other subject", Req::get("/").jwt(json!({"iss": "https://issuer.example.com", "sub": "bob", "azp": "web-app", "aud": "httpbin", "groups": ["admin"], "realm_access": {"roles": ["reader"], "tier": "gold"}})), 403),
        ],
    );
    // Claims that are not strings never match (Envoy compares strings).
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"when": [{"key": "request.auth.claims[email_verified]", "values": ["true"]}]}]),
        )],
        &[("bool claim", Req::get("/").jwt(token), 403)],
    );
}

#[test]
fn request_principal_forms() {
    let jwt = |iss: &str, sub: &str| Req::get("/").jwt(json!({"iss": iss, "sub": sub}));
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"from": [{"requestPrincipals": ["*"]}]}]),
        )],
        &[
            ("any token", jwt("https://a.example.com", "x"), 200),
            ("no token", Req::get("/"), 403),
        ],
    );
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([{"from": [{"requestPrincipals": ["*/admin", "https://b.example.com/svc-*"]}]}]),
        )],
        &[
            (
                "any issuer, exact sub",
                jwt("https://a.example.com", "admin"),
                200,
            ),
            (
                "exact issuer, sub prefix",
                jwt("https://b.example.com", "svc-1"),
                200,
            ),
            (
                "issuer is exact",
                jwt("https://b.example.com.evil", "svc-1"),
                403,
            ),
            ("sub is exact", jwt("https://a.example.com", "admin2"), 403),
        ],
    );
    check(
        vec![policy(
            "p",
            "DENY",
            json!([{"from": [{"notRequestPrincipals": ["*"]}]}]),
        )],
        &[
            ("deny requests without a token", Req::get("/"), 403),
            ("token passes", jwt("https://a.example.com", "x"), 200),
        ],
    );
}

#[test]
fn tcp_traffic_and_http_only_fields() {
    // An ALLOW rule that needs HTTP attributes never matches TCP; one without them does.
    check(
        vec![policy(
            "p",
            "ALLOW",
            json!([
                {"from": [{"principals": [SLEEP]}], "to": [{"paths": ["/x"]}]},
                {"from": [{"namespaces": ["prod"]}], "to": [{"ports": [5432]}]}
            ]),
        )],
        &[
            ("http-only rule skipped", Req::tcp(5432).from(SLEEP), 403),
            ("tcp rule", Req::tcp(5432).from(OTHER), 200),
            ("tcp rule, other port", Req::tcp(6379).from(OTHER), 403),
            (
                "http request still matches rule 1",
                Req::get("/x").from(SLEEP),
                200,
            ),
        ],
    );
    // A DENY rule ignores its HTTP-only parts on TCP: it denies more, as in Istio.
    check(
        vec![policy(
            "p",
            "DENY",
            json!([{"from": [{"namespaces": ["prod"]}], "to": [{"methods": ["POST"]}]}]),
        )],
        &[
            ("tcp from prod denied", Req::tcp(5432).from(OTHER), 403),
            ("tcp from default", Req::tcp(5432).from(SLEEP), 200),
            ("http GET from prod", Req::get("/").from(OTHER), 200),
            (
                "http POST from prod",
                Req::get("/").from(OTHER).method("POST"),
                403,
            ),
        ],
    );
}

#[test]
fn what_cannot_compile_fails_closed() {
    let policies = vec![
        policy(
            "allow",
            "ALLOW",
            json!([
                {"from": [{"ipBlocks": ["10.0.0.0/8", "not-a-cidr"]}]},
                {"when": [{"key": "experimental.envoy.filters.network.mysql_proxy[db.table]", "values": ["[update]"]}]},
                {"to": [{"paths": ["/ok"]}]}
            ]),
        ),
        policy(
            "deny",
            "DENY",
            json!([{"from": [{"ipBlocks": ["bogus"]}], "when": [{"key": "no.such.key", "values": ["x"]}], "to": [{"paths": ["/deny*"]}]}]),
        ),
    ];
    let a = Authorizer::new(&inbound(json!({ "authorization": policies })), &labels());
    let w = a.warnings().join("\n");
    assert_eq!(a.warnings().len(), 4, "{w}");
    assert!(
        w.contains("foo/allow: rules[0]: \"not-a-cidr\" is not an IP address"),
        "{w}"
    );
    assert!(w.contains("rules[1]: condition key \"experimental.envoy.filters.network.mysql_proxy[db.table]\" is not supported"), "{w}");
    assert!(
        w.contains("foo/deny: rules[0]: unknown condition key \"no.such.key\"; left out"),
        "{w}"
    );
    let rows = [
        // ALLOW rule 0 is broken: 10.x is not allowed by it; rule 1 (unsupported key) neither.
        ("broken allow rule", Req::get("/x").ip("10.1.1.1"), 403),
        ("sound allow rule", Req::get("/ok").ip("10.1.1.1"), 200),
        // DENY drops the bad values and the unknown key: it denies /deny* from anywhere.
        ("deny widened", Req::get("/deny-me").ip("172.16.0.1"), 403),
    ];
    for (name, req, want) in rows {
        assert_eq!(req.status(&a), want, "{name}");
    }
}

#[test]
fn denial_response_is_envoys() {
    assert_eq!(authz::DENIED_STATUS, 403);
    assert_eq!(authz::DENIED_BODY, "RBAC: access denied");
}
