//! RequestAuthentication matrices: tokens × rules → the status the proxy answers (200, 401
//! with Envoy's body, or 403 from the AuthorizationPolicy that reads the principal), and the
//! header rewrites, JWKS from `jwksUri` through the cache with a fake source.

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue, header};
use mizzen_policy::{
    Authorizer, JwksCache, JwksSource, JwtAuthenticator, JwtError, Principal, RequestAttrs,
    jwks::JwksError,
};
use serde_json::{Value, json};
use support::{ISSUER, NOW, Req, Signer, claims, inbound, jwks, labels, policy};

fn rule(extra: Value) -> Value {
    let mut r = json!({"issuer": ISSUER, "audiences": ["httpbin"], "jwks": jwks()});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

fn authenticator(rules: Vec<Value>) -> JwtAuthenticator {
    let cfg = inbound(json!({"requestAuthentication": [
        {"name": "foo/jwt", "selector": {"app": "httpbin"}, "jwtRules": rules}
    ]}));
    let a = JwtAuthenticator::new(&cfg, &labels(), Arc::new(JwksCache::default()));
    assert!(a.warnings().is_empty(), "{:?}", a.warnings());
    a
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// Runs a request through RequestAuthentication, then AuthorizationPolicy, as the inbound path
/// will: the status and body the client would get.
fn serve(
    jwt: &JwtAuthenticator,
    authz: &Authorizer,
    headers: &mut HeaderMap,
    query: Option<&str>,
) -> (u16, String) {
    let principal = match jwt.authenticate_at(headers, query, NOW) {
        Ok(p) => p,
        Err(e) => return (e.status(), e.body()),
    };
    let mut req = Req::get("/");
    req.headers = headers.clone();
    req.jwt = principal;
    let attrs: RequestAttrs<'_> = req.attrs();
    if authz.authorize(&attrs).allowed {
        (200, String::new())
    } else {
        (403, mizzen_policy::authz::DENIED_BODY.to_string())
    }
}

fn no_authz() -> Authorizer {
    Authorizer::new(&inbound(json!({})), &labels())
}

/// Istio's "require a token" pattern: ALLOW only requests with a request principal.
fn require_token() -> Authorizer {
    let cfg = json!({"authorization": [policy("require-jwt", "ALLOW", json!([{"from": [{"requestPrincipals": ["*"]}]}]))]});
    Authorizer::new(&inbound(cfg), &labels())
}

#[test]
fn token_matrix_with_exact_status_codes() {
    let jwt = authenticator(vec![rule(json!({}))]);
    let rsa = Signer::rsa();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("alice");
        f(&mut c);
        rsa.sign(&c)
    };
    let rows: Vec<(&str, Option<String>, u16, u16, &str)> = vec![
        // name, token, status without authz, status with "require a token", body
        ("valid", Some(with(&|_| {})), 200, 200, ""),
        (
            "valid EC key",
            Some(Signer::ec().sign(&claims("alice"))),
            200,
            200,
            "",
        ),
        (
            "expired",
            Some(with(&|c| c["exp"] = json!(NOW - 120))),
            401,
            401,
            "Jwt is expired",
        ),
        (
            "expired within the 60 s skew",
            Some(with(&|c| c["exp"] = json!(NOW - 30))),
            200,
            200,
            "",
        ),
        (
            "not yet valid",
            Some(with(&|c| c["nbf"] = json!(NOW + 600))),
            401,
            401,
            "Jwt not yet valid",
        ),
        (
            "wrong issuer",
            Some(with(&|c| c["iss"] = json!("https://evil.example.com"))),
            401,
            401,
            "Jwt issuer is not configured",
        ),
        (
            "no issuer",
            Some(with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            })),
            401,
            401,
            "Jwt issuer is not configured",
        ),
        (
            "wrong audience",
            Some(with(&|c| c["aud"] = json!("other"))),
            401,
            401,
            "Audiences in Jwt are not allowed",
        ),
        (
            "no audience",
            Some(with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            401,
            401,
            "Audiences in Jwt are not allowed",
        ),
        (
            "one of the audiences",
            Some(with(&|c| c["aud"] = json!(["x", "httpbin"]))),
            200,
            200,
            "",
        ),
        (
            "audience with scheme and slash",
            Some(with(&|c| c["aud"] = json!("https://httpbin/"))),
            200,
            200,
            "",
        ),
        (
            "bad signature",
            Some(Signer::rsa_impostor().sign(&claims("alice"))),
            401,
            401,
            "Jwt verification fails",
        ),
        (
            "not a JWT",
            Some("abc.def".into()),
            401,
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        ("missing", None, 200, 403, ""),
    ];
    let authz = require_token();
    for (name, token, plain, required, body) in rows {
        let mut h = token.as_deref().map(bearer).unwrap_or_default();
        let (status, got_body) = serve(&jwt, &no_authz(), &mut h.clone(), None);
        assert_eq!(status, plain, "{name}: without authz");
        if status == 401 {
            assert_eq!(got_body, body, "{name}");
        }
        let (status, _) = serve(&jwt, &authz, &mut h, None);
        assert_eq!(status, required, "{name}: with requestPrincipals [*]");
    }
}

#[test]
fn tampered_payload_fails_verification() {
    let jwt = authenticator(vec![rule(json!({}))]);
    let token = Signer::rsa().sign(&claims("alice"));
    let forged = Signer::rsa().sign(&claims("admin"));
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = forged.split('.').nth(1).unwrap();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(
        jwt.authenticate_at(&mut bearer(&tampered), None, NOW),
        Err(JwtError::VerificationFails)
    );
}

#[test]
fn principal_feeds_authorization() {
    let jwt = authenticator(vec![rule(json!({}))]);
    let mut h = bearer(&Signer::rsa().sign(&json!({
        "iss": ISSUER, "sub": "alice", "aud": ["httpbin"], "azp": "web", "exp": NOW + 60,
        "groups": ["admin"], "org": {"team": "core"}
    })));
    let p: Principal = jwt.authenticate_at(&mut h, None, NOW).unwrap().unwrap();
    assert_eq!(p.principal, format!("{ISSUER}/alice"));
    assert_eq!((p.issuer.as_str(), p.subject.as_str()), (ISSUER, "alice"));
    assert_eq!(p.audiences, ["httpbin"]);
    assert_eq!(p.presenter.as_deref(), Some("web"));
    let cfg = json!({"authorization": [policy("admins", "ALLOW", json!([{
        "from": [{"requestPrincipals": [format!("{ISSUER}/alice")]}],
        "when": [{"key": "request.auth.claims[groups]", "values": ["admin"]},
                 {"key": "request.auth.claims[org][team]", "values": ["core"]}]
    }]))]});
    let authz = Authorizer::new(&inbound(cfg), &labels());
    let mut req = Req::get("/");
    req.jwt = Some(p);
    assert_eq!(req.status(&authz), 200);
    req.jwt.as_mut().unwrap().claims["org"]["team"] = json!("edge");
    assert_eq!(req.status(&authz), 403);
}

/// Istio splits `scope` and `permission` (and the rule's `spaceDelimitedClaims`) on spaces, so
/// a condition matches one entry of `"read write"`: an ALLOW for `read` lets it in, a DENY for
/// `admin` keeps out a token whose scopes include it. The whole text no longer matches.
#[test]
fn space_delimited_claims_match_word_by_word() {
    let jwt = authenticator(vec![rule(json!({"spaceDelimitedClaims": ["roles"]}))]);
    let token = Signer::rsa().sign(&json!({
        "iss": ISSUER, "sub": "alice", "aud": ["httpbin"], "exp": NOW + 60,
        "scope": "read  write", "permission": "pay", "roles": "ops dev", "groups": "a b"
    }));
    let mut h = bearer(&token);
    let p = jwt.authenticate_at(&mut h, None, NOW).unwrap().unwrap();
    assert_eq!(p.claims["scope"], json!(["read", "write"]));
    assert_eq!(p.claims["permission"], json!(["pay"]));
    assert_eq!(p.claims["roles"], json!(["ops", "dev"]));
    // Not named: left as text.
    assert_eq!(p.claims["groups"], json!("a b"));
    let when = |action: &str, claim: &str, value: &str| {
        let cfg = json!({"authorization": [policy("p", action, json!([{
            "when": [{"key": format!("request.auth.claims[{claim}]"), "values": [value]}]
        }]))]});
        let authz = Authorizer::new(&inbound(cfg), &labels());
        let mut req = Req::get("/");
        req.jwt = Some(p.clone());
        req.status(&authz)
    };
    assert_eq!(when("ALLOW", "scope", "read"), 200);
    assert_eq!(when("ALLOW", "scope", "read  write"), 403);
    assert_eq!(when("DENY", "scope", "write"), 403);
    assert_eq!(when("DENY", "scope", "admin"), 200);
    assert_eq!(when("ALLOW", "roles", "dev"), 200);
    assert_eq!(when("ALLOW", "groups", "a"), 403);
    // Without the rule's list, only the defaults are split.
    let plain = authenticator(vec![rule(json!({}))]);
    let p = plain
        .authenticate_at(&mut bearer(&token), None, NOW)
        .unwrap()
        .unwrap();
    assert_eq!(p.claims["roles"], json!("ops dev"));
    assert_eq!(p.claims["scope"], json!(["read", "write"]));
}

#[test]
fn token_locations() {
    let token = Signer::rsa().sign(&claims("alice"));
    let defaults = authenticator(vec![rule(json!({}))]);
    // Default locations: Authorization: Bearer (any case of the scheme) and ?access_token=.
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer {token}")).unwrap(),
    );
    assert!(
        defaults
            .authenticate_at(&mut h, None, NOW)
            .unwrap()
            .is_some()
    );
    let query = format!("a=1&access_token={token}&b=2");
    assert!(
        defaults
            .authenticate_at(&mut HeaderMap::new(), Some(&query), NOW)
            .unwrap()
            .is_some()
    );
    // Another header is not looked at by default.
    let mut h = HeaderMap::new();
    h.insert("x-jwt", HeaderValue::from_str(&token).unwrap());
    assert_eq!(defaults.authenticate_at(&mut h, None, NOW), Ok(None));

    let custom = authenticator(vec![rule(json!({
        "fromHeaders": [{"name": "X-Jwt-Assertion"}, {"name": "x-auth", "prefix": "Token "}],
        "fromParams": ["jwt"],
        "fromCookies": ["session"]
    }))]);
    let mut h = HeaderMap::new();
    h.insert("x-jwt-assertion", HeaderValue::from_str(&token).unwrap());
    assert!(
        custom.authenticate_at(&mut h, None, NOW).unwrap().is_some(),
        "header without prefix"
    );
    let mut h = HeaderMap::new();
    h.insert(
        "x-auth",
        HeaderValue::from_str(&format!("Token {token}")).unwrap(),
    );
    assert!(
        custom.authenticate_at(&mut h, None, NOW).unwrap().is_some(),
        "header with prefix"
    );
    assert!(
        custom
            .authenticate_at(&mut HeaderMap::new(), Some(&format!("jwt={token}")), NOW)
            .unwrap()
            .is_some(),
        "param"
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("theme=dark; session={token}")).unwrap(),
    );
    assert!(
        custom.authenticate_at(&mut h, None, NOW).unwrap().is_some(),
        "cookie"
    );
    // With explicit locations, the defaults are off: a bearer token is not seen (passes).
    assert_eq!(
        custom.authenticate_at(&mut bearer(&token), None, NOW),
        Ok(None)
    );
}

#[test]
fn rules_are_chosen_by_issuer() {
    let other = Signer::ec();
    let jwt = authenticator(vec![
        rule(json!({})),
        json!({"issuer": "https://other.example.com", "jwks": jwks()}),
    ]);
    // The second rule has no audiences: any (or no) audience passes.
    let token =
        other.sign(&json!({"iss": "https://other.example.com", "sub": "svc", "exp": NOW + 60}));
    let p = jwt
        .authenticate_at(&mut bearer(&token), None, NOW)
        .unwrap()
        .unwrap();
    assert_eq!(p.principal, "https://other.example.com/svc");
    let unknown = other.sign(&json!({"iss": "https://third.example.com", "sub": "svc"}));
    assert_eq!(
        jwt.authenticate_at(&mut bearer(&unknown), None, NOW),
        Err(JwtError::UnknownIssuer)
    );
}

#[test]
fn key_must_match_kid() {
    let mut c = claims("alice");
    c["exp"] = json!(NOW + 60);
    let mut signer = Signer::rsa();
    signer.kid = "rotated-away";
    let jwt = authenticator(vec![rule(json!({}))]);
    assert_eq!(
        jwt.authenticate_at(&mut bearer(&signer.sign(&c)), None, NOW),
        Err(JwtError::NoMatchingKey)
    );
}

#[test]
fn an_rsa_public_key_is_never_an_hmac_secret() {
    // A token that claims HS256 under the RSA key's kid: no key of the HMAC family exists, so
    // nothing is tried (the classic algorithm-confusion attack).
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let key = jsonwebtoken::EncodingKey::from_secret(b"anything the attacker knows");
    let token = jsonwebtoken::encode(&h, &claims("alice"), &key).unwrap();
    let jwt = authenticator(vec![rule(json!({}))]);
    assert_eq!(
        jwt.authenticate_at(&mut bearer(&token), None, NOW),
        Err(JwtError::NoMatchingKey)
    );
}

#[test]
fn header_rewrites() {
    let token = Signer::rsa().sign(&json!({
        "iss": ISSUER, "sub": "alice", "aud": "httpbin", "exp": NOW + 60,
        "email": "alice@example.com", "level": 3, "org": {"team": "core"}
    }));
    let jwt = authenticator(vec![rule(json!({
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": {"email": "x-email", "level": "x-level", "org.team": "x-team", "absent": "x-absent"}
    }))]);
    let mut h = bearer(&token);
    h.insert("x-email", HeaderValue::from_static("spoofed@example.com"));
    jwt.authenticate_at(&mut h, None, NOW).unwrap().unwrap();
    assert!(
        h.get(header::AUTHORIZATION).is_none(),
        "token is stripped by default"
    );
    assert_eq!(
        h["x-jwt-payload"],
        token.split('.').nth(1).unwrap(),
        "base64url payload"
    );
    assert_eq!(h["x-email"], "alice@example.com", "client value replaced");
    assert_eq!(h["x-level"], "3");
    assert_eq!(h["x-team"], "core");
    assert!(h.get("x-absent").is_none());

    let forward = authenticator(vec![rule(json!({"forwardOriginalToken": true}))]);
    let mut h = bearer(&token);
    forward.authenticate_at(&mut h, None, NOW).unwrap().unwrap();
    assert!(
        h.get(header::AUTHORIZATION).is_some(),
        "forwardOriginalToken keeps it"
    );

    // A refused token leaves the headers alone.
    let mut h = bearer("a.b.c");
    assert!(jwt.authenticate_at(&mut h, None, NOW).is_err());
    assert!(h.get(header::AUTHORIZATION).is_some());
}

#[test]
fn rules_for_other_workloads_do_not_apply() {
    let cfg = inbound(json!({"requestAuthentication": [
        {"name": "foo/jwt", "selector": {"app": "reviews"}, "jwtRules": [rule(json!({}))]}
    ]}));
    let jwt = JwtAuthenticator::new(&cfg, &labels(), Arc::new(JwksCache::default()));
    assert!(jwt.is_empty());
    // Even an invalid token passes: no RequestAuthentication applies to this workload.
    assert_eq!(
        jwt.authenticate_at(&mut bearer("garbage"), None, NOW),
        Ok(None)
    );
}

#[test]
fn bad_inline_jwks_refuses_the_issuer_and_warns() {
    let cfg = inbound(json!({"requestAuthentication": [
        {"name": "foo/jwt", "jwtRules": [{"issuer": ISSUER, "jwks": "{\"keys\": []}"}]}
    ]}));
    let jwt = JwtAuthenticator::new(&cfg, &labels(), Arc::new(JwksCache::default()));
    assert_eq!(jwt.warnings().len(), 1);
    assert!(
        jwt.warnings()[0].contains("JWKS has no key"),
        "{:?}",
        jwt.warnings()
    );
    let token = Signer::rsa().sign(&claims("alice"));
    assert_eq!(
        jwt.authenticate_at(&mut bearer(&token), None, NOW),
        Err(JwtError::NoMatchingKey)
    );
}

/// Serves JWKS documents from a map; a missing entry is a fetch failure. Counts fetches.
#[derive(Default)]
struct FakeSource {
    docs: Mutex<HashMap<String, Result<String, String>>>,
    fetches: Mutex<Vec<(String, Duration)>>,
}

impl FakeSource {
    fn set(&self, uri: &str, doc: Result<String, String>) {
        self.docs.lock().unwrap().insert(uri.to_string(), doc);
    }
}

impl JwksSource for FakeSource {
    fn fetch(
        &self,
        uri: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, String>> + Send {
        self.fetches
            .lock()
            .unwrap()
            .push((uri.to_string(), timeout));
        let doc = self
            .docs
            .lock()
            .unwrap()
            .get(uri)
            .cloned()
            .unwrap_or(Err("connection refused".into()));
        std::future::ready(doc)
    }
}

#[test]
fn jwks_uri_through_the_cache() {
    const URI: &str = "https://issuer.example.com/.well-known/jwks.json";
    let cache = Arc::new(JwksCache::new(
        Duration::from_secs(1200),
        Duration::from_secs(10),
    ));
    let cfg = inbound(
        json!({"requestAuthentication": [{"name": "foo/jwt", "jwtRules": [
            {"issuer": ISSUER, "jwksUri": URI, "jwksFetchTimeoutMs": 2500}
        ]}]}),
    );
    let jwt = JwtAuthenticator::new(&cfg, &labels(), cache.clone());
    assert_eq!(jwt.jwks_uris().collect::<Vec<_>>(), [URI]);
    let token = Signer::rsa().sign(&claims("alice"));
    let ec_token = Signer::ec().sign(&claims("alice"));
    let source = FakeSource::default();
    let t0 = Instant::now();

    // Nothing fetched yet: tokens are refused as Envoy refuses them when the fetch failed.
    assert_eq!(
        jwt.authenticate_at(&mut bearer(&token), None, NOW),
        Err(JwtError::JwksUnavailable)
    );
    assert!(cache.next_due().unwrap() <= t0);

    // A failed first fetch: still refused, retried after the retry interval.
    let errors = futures::executor::block_on(cache.refresh(&source, t0));
    assert!(
        matches!(&errors[..], [JwksError::Fetch { reason, .. }] if reason == "connection refused"),
        "{errors:?}"
    );
    assert_eq!(
        source.fetches.lock().unwrap()[0],
        (URI.to_string(), Duration::from_millis(2500))
    );
    assert_eq!(cache.next_due(), Some(t0 + Duration::from_secs(10)));

    // The RSA key only at first.
    source.set(URI, Ok(json!({"keys": [Signer::rsa().jwk()]}).to_string()));
    assert!(
        futures::executor::block_on(cache.refresh(&source, t0 + Duration::from_secs(5))).is_empty()
    );
    assert_eq!(source.fetches.lock().unwrap().len(), 1, "not due yet");
    let t1 = t0 + Duration::from_secs(10);
    assert!(futures::executor::block_on(cache.refresh(&source, t1)).is_empty());
    assert!(cache.last_error(URI).is_none());
    assert!(
        jwt.authenticate_at(&mut bearer(&token), None, NOW)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        jwt.authenticate_at(&mut bearer(&ec_token), None, NOW),
        Err(JwtError::NoMatchingKey)
    );

    // The issuer goes down: the last good keys keep serving.
    source.set(URI, Err("503".into()));
    let t2 = t1 + Duration::from_secs(1200);
    assert_eq!(cache.next_due(), Some(t2));
    assert_eq!(
        futures::executor::block_on(cache.refresh(&source, t2)).len(),
        1
    );
    assert!(cache.last_error(URI).is_some());
    assert!(
        jwt.authenticate_at(&mut bearer(&token), None, NOW)
            .unwrap()
            .is_some()
    );

    // A document without usable keys is a failure too, not a wipe.
    source.set(URI, Ok("{\"keys\": [{\"kty\": \"weird\"}]}".into()));
    let t3 = t2 + Duration::from_secs(10);
    let errors = futures::executor::block_on(cache.refresh(&source, t3));
    assert_eq!(errors, [JwksError::NoUsableKeys(1)]);
    assert!(
        jwt.authenticate_at(&mut bearer(&token), None, NOW)
            .unwrap()
            .is_some()
    );

    // The issuer rotates to the EC key.
    source.set(URI, Ok(json!({"keys": [Signer::ec().jwk()]}).to_string()));
    assert!(
        futures::executor::block_on(cache.refresh(&source, t3 + Duration::from_secs(10)))
            .is_empty()
    );
    assert!(
        jwt.authenticate_at(&mut bearer(&ec_token), None, NOW)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        jwt.authenticate_at(&mut bearer(&token), None, NOW),
        Err(JwtError::NoMatchingKey)
    );

    // A config without the rule lets the shell forget the URI.
    let uris: Vec<String> = Vec::new();
    cache.retain(|u| uris.iter().any(|x| x == u));
    assert!(cache.next_due().is_none());
}

#[test]
fn unauthorized_response_is_envoys() {
    let e = JwtError::Expired;
    assert_eq!((e.status(), e.body()), (401, "Jwt is expired".to_string()));
    assert_eq!(
        e.www_authenticate("httpbin.foo:8000", "/headers?x=1"),
        "Bearer realm=\"http://httpbin.foo:8000/headers\", error=\"invalid_token\""
    );
}
