//! Per-request cost of the policy engine, measured (never asserted): `cargo bench -p
//! mizzen-policy`. A namespace with 12 AuthorizationPolicies (DENY, ALLOW, AUDIT, dry-run) of
//! 3 rules each, a request that walks all of them, and JWT validation with RSA and EC keys.

use std::{collections::BTreeMap, hint::black_box, net::IpAddr, sync::Arc, time::Instant};

use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use mizzen_policy::{Authorizer, HttpAttrs, JwksCache, JwtAuthenticator, RequestAttrs};
use mizzen_proxy_config::InboundConfig;
use serde_json::{Value, json};

fn time(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per = start.elapsed() / iterations;
    println!("{name:<48} {:>10.2} µs/op", per.as_secs_f64() * 1e6);
}

fn labels() -> BTreeMap<String, String> {
    [("app".to_string(), "httpbin".to_string())].into()
}

fn authz_config() -> InboundConfig {
    let mut policies: Vec<Value> = Vec::new();
    for i in 0..4 {
        policies.push(
            json!({"name": format!("foo/deny-{i}"), "action": "DENY", "rules": [
                {"from": [{"namespaces": [format!("blocked-{i}")]}]},
                {"to": [{"paths": [format!("/admin-{i}*")], "methods": ["DELETE"]}]},
                {"when": [{"key": "request.headers[x-block]", "values": [format!("v{i}")]}]}
            ]}),
        );
        policies.push(json!({"name": format!("foo/allow-{i}"), "selector": {"app": "httpbin"}, "action": "ALLOW", "rules": [
            {"from": [{"principals": [format!("cluster.local/ns/team-{i}/sa/*")]}]},
            {"from": [{"ipBlocks": ["192.168.0.0/16"]}], "to": [{"ports": [9000 + i]}]},
            {"to": [{"hosts": ["*.example.com"], "paths": [format!("/v{i}/{{*}}/items")]}],
             "when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]}
        ]}));
        policies.push(json!({"name": format!("foo/audit-{i}"), "action": "AUDIT", "dryRun": i % 2 == 0, "rules": [
            {"to": [{"paths": ["*.secret"]}]}
        ]}));
    }
    // The one that finally allows the request.
    policies.push(json!({"name": "foo/allow-sleep", "action": "ALLOW", "rules": [
        {"from": [{"principals": ["cluster.local/ns/default/sa/sleep"]}], "to": [{"methods": ["GET"], "paths": ["/api/*"]}]}
    ]}));
    serde_json::from_value(json!({"authorization": policies})).unwrap()
}

fn main() {
    let cfg = authz_config();
    time("Authorizer::new (13 policies)", 2_000, || {
        black_box(Authorizer::new(black_box(&cfg), &labels()));
    });
    let authz = Authorizer::new(&cfg, &labels());
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", HeaderValue::from_static("abc"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("curl/8"));
    let attrs = RequestAttrs {
        source_principal: Some("spiffe://cluster.local/ns/default/sa/sleep"),
        source_ip: Some("10.1.2.3".parse::<IpAddr>().unwrap()),
        remote_ip: None,
        destination_ip: Some("10.9.9.9".parse().unwrap()),
        destination_port: 8080,
        sni: None,
        http: Some(HttpAttrs {
            host: "httpbin.foo.svc.cluster.local",
            method: "GET",
            path: "/api/items?page=2",
            headers: &headers,
            request_principal: None,
        }),
    };
    assert!(authz.authorize(&attrs).allowed);
    time(
        "authorize (walks all 13 policies, allowed)",
        1_000_000,
        || {
            black_box(authz.authorize(black_box(&attrs)));
        },
    );

    let rsa = EncodingKey::from_rsa_pem(include_bytes!("../testdata/rsa.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(include_bytes!("../testdata/ec.pem")).unwrap();
    let jwk = |k: &EncodingKey, alg, kid: &str| {
        let mut j = Jwk::from_encoding_key(k, alg).unwrap();
        j.common.key_id = Some(kid.into());
        serde_json::to_value(j).unwrap()
    };
    let jwks = json!({"keys": [jwk(&rsa, Algorithm::RS256, "r"), jwk(&ec, Algorithm::ES256, "e")]});
    let cfg: InboundConfig = serde_json::from_value(json!({"requestAuthentication": [{"name": "foo/jwt", "jwtRules": [
        {"issuer": "https://issuer.example.com", "audiences": ["httpbin"], "jwks": jwks.to_string(), "forwardOriginalToken": true}
    ]}]}))
    .unwrap();
    let jwt = JwtAuthenticator::new(&cfg, &labels(), Arc::new(JwksCache::default()));
    let now = 1_900_000_000u64;
    let claims = json!({"iss": "https://issuer.example.com", "sub": "alice", "aud": "httpbin", "exp": now + 3600, "groups": ["admin"]});
    for (name, key, alg, kid) in [
        ("RS256", &rsa, Algorithm::RS256, "r"),
        ("ES256", &ec, Algorithm::ES256, "e"),
    ] {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        let token = jsonwebtoken::encode(&h, &claims, key).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        assert!(
            jwt.authenticate_at(&mut headers, None, now)
                .unwrap()
                .is_some()
        );
        time(
            &format!("authenticate ({name}, repeated token)"),
            20_000,
            || {
                black_box(
                    jwt.authenticate_at(black_box(&mut headers), None, now)
                        .unwrap(),
                );
            },
        );
        // More distinct tokens than the verified-token cache holds, cycled: every one is a
        // full signature verification.
        let fresh: Vec<HeaderMap> = (0..300)
            .map(|i| {
                let mut c = claims.clone();
                c["sub"] = json!(format!("user-{i}"));
                let token = jsonwebtoken::encode(&h, &c, key).unwrap();
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
                );
                headers
            })
            .collect();
        let mut i = 0;
        time(&format!("authenticate ({name}, new token)"), 1_000, || {
            let mut h = fresh[i % fresh.len()].clone();
            i += 1;
            black_box(jwt.authenticate_at(black_box(&mut h), None, now).unwrap());
        });
    }
    let mut none = HeaderMap::new();
    time("authenticate (no token)", 1_000_000, || {
        black_box(
            jwt.authenticate_at(black_box(&mut none), None, now)
                .unwrap(),
        );
    });
}
