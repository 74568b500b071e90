//! Inbound policy through the proxy, with real sockets on loopback: AuthorizationPolicy
//! (Envoy's 403 `RBAC: access denied`), RequestAuthentication (Envoy's 401s), dry-run, and
//! JWKS fetched from a `jwksUri`. Configs are the rendered form the operator writes; tokens
//! are signed with the keys under `policy/testdata/`.

mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use mizzen_policy::JwksSource;
use mizzen_proxy::http::policy::{HttpJwksSource, MAX_JWKS_BYTES, refresh_jwks};
use mizzen_proxy_config::*;
use serde_json::{Value, json};
use support::*;

const ISSUER: &str = "https://issuer.example.com";

/// The test workload's config (namespace `default`, labels `app=servicea, version=v1`) with
/// these inbound policies.
fn with_inbound(inbound: Value) -> ProxyConfig {
    let mut c = config(vec![]);
    c.inbound = serde_json::from_value(inbound).expect("test policy is valid");
    c
}

/// An AuthorizationPolicy selecting the test workload.
fn authz(name: &str, action: &str, rules: Value) -> Value {
    json!({"name": format!("default/{name}"), "selector": {"app": "servicea"},
           "action": action, "rules": rules})
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("../policy/testdata/rsa.pem")).unwrap()
}

/// The JWKS of `rsa.pem` (kid `rsa-1`).
fn jwks() -> String {
    let mut jwk = Jwk::from_encoding_key(&rsa_key(), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("rsa-1".into());
    json!({ "keys": [jwk] }).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token for `sub` from `iss`, expiring `ttl` seconds from now (negative: already expired),
/// signed with `key`.
fn token_with(key: &EncodingKey, iss: &str, sub: &str, ttl: i64) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    let claims = json!({"iss": iss, "sub": sub, "aud": "servicea", "group": "admins",
                        "iat": now() - 10, "exp": now() + ttl});
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn token(sub: &str, ttl: i64) -> String {
    token_with(&rsa_key(), ISSUER, sub, ttl)
}

/// A RequestAuthentication for the test workload: `keys` is `{"jwks": ...}` or
/// `{"jwksUri": ...}`.
fn request_authn(keys: Value) -> Value {
    let mut rule = json!({"issuer": ISSUER, "outputPayloadToHeader": "x-jwt-payload"});
    rule.as_object_mut()
        .unwrap()
        .extend(keys.as_object().unwrap().clone());
    json!({"name": "default/jwt", "selector": {"app": "servicea"}, "jwtRules": [rule]})
}

async fn get_bearer(c: &TestClient, proxy: &Proxy, path: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    get_with(c, proxy.inbound[0], path, &[("authorization", &auth)]).await
}

#[tokio::test]
async fn deny_on_a_path_answers_403_and_other_paths_reach_the_app() {
    let app = backend("app").await;
    let cfg = with_inbound(json!({"authorization": [
        authz("deny-admin", "DENY", json!([{"to": [{"paths": ["/admin/*"]}]}]))
    ]}));
    let proxy = start_inbound(&cfg, app.addr).await;
    let c = client();

    let denied = get(&c, proxy.inbound[0], "/admin/users?x=1").await;
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (403, "RBAC: access denied")
    );
    assert_eq!(denied.header("content-type"), "text/plain");
    let ok = get(&c, proxy.inbound[0], "/public").await;
    assert_eq!((ok.status, ok.header("x-backend")), (200, "app"));
    assert_eq!(app.hits(), 1, "the denied request never reached the app");

    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("response_code", "403"),
            ("response_flags", "-"),
        ],
    );
}

#[tokio::test]
async fn allow_by_namespace_refuses_plaintext_and_sources_are_read_from_the_connection() {
    let app = backend("app").await;
    let c = client();
    // Plaintext carries no principal, so no namespace: nothing matches the ALLOW.
    let cfg = with_inbound(json!({"authorization": [
        authz("from-foo", "ALLOW", json!([{"from": [{"namespaces": ["foo"]}]}]))
    ]}));
    let proxy = start_inbound(&cfg, app.addr).await;
    let r = get(&c, proxy.inbound[0], "/").await;
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));

    // The peer address is the connection's; the remote address the last x-forwarded-for hop.
    let cfg = with_inbound(json!({"authorization": [
        authz("loopback", "ALLOW", json!([{"from": [{"ipBlocks": ["127.0.0.0/8"]}]}])),
        authz("no-blocked-clients", "DENY",
              json!([{"from": [{"remoteIpBlocks": ["203.0.113.0/24"]}]}])),
    ]}));
    let proxy = start_inbound(&cfg, app.addr).await;
    let status = |xff: Option<&'static str>| {
        let (c, addr) = (c.clone(), proxy.inbound[0]);
        async move {
            let headers: Vec<(&str, &str)> =
                xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
            get_with(&c, addr, "/", &headers).await.status
        }
    };
    assert_eq!(status(None).await, 200);
    assert_eq!(status(Some("203.0.113.7")).await, 403);
    assert_eq!(status(Some("203.0.113.7, 10.0.0.1")).await, 200);
    assert_eq!(status(Some("10.0.0.1, 203.0.113.7")).await, 403);
}

#[tokio::test]
async fn request_authentication_with_inline_jwks_answers_as_envoy() {
    let app = header_echo().await;
    let cfg = with_inbound(json!({"requestAuthentication": [
        request_authn(json!({"jwks": jwks()}))
    ]}));
    let proxy = start_inbound(&cfg, app.addr).await;
    let c = client();

    let valid = token("alice", 3600);
    let r = get_bearer(&c, &proxy, "/valid", &valid).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.contains("authorization:"),
        "the token is not forwarded: {}",
        r.body
    );
    assert!(r.body.contains("x-jwt-payload: "), "{}", r.body);

    let r = get(&c, proxy.inbound[0], "/missing").await;
    assert_eq!(r.status, 200, "no token passes (Istio's allow_missing)");

    let r = get_bearer(
        &c,
        &proxy,
        "/expired?access_token=no",
        &token("alice", -3600),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt is expired"));
    assert_eq!(
        r.header("www-authenticate"),
        r#"Bearer realm="http://serviceb:8080/expired", error="invalid_token""#
    );

    let other_issuer = token_with(&rsa_key(), "https://other.example.com", "alice", 3600);
    let r = get_bearer(&c, &proxy, "/", &other_issuer).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Jwt issuer is not configured")
    );

    let impostor =
        EncodingKey::from_rsa_pem(include_bytes!("../policy/testdata/rsa-other.pem")).unwrap();
    let r = get_bearer(
        &c,
        &proxy,
        "/",
        &token_with(&impostor, ISSUER, "alice", 3600),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt verification fails"));

    let r = get_bearer(&c, &proxy, "/", "not-a-jwt").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
        )
    );
    assert_eq!(
        app.hits(),
        2,
        "only the valid and the missing token reached the app"
    );
}

#[tokio::test]
async fn request_principals_allow_turns_a_missing_token_away_with_403() {
    let app = backend("app").await;
    let cfg = with_inbound(json!({
        "requestAuthentication": [request_authn(json!({"jwks": jwks()}))],
        "authorization": [
            authz("require-jwt", "ALLOW", json!([{"from": [{"requestPrincipals": ["*"]}]}])),
            authz("admins-only-admin", "DENY", json!([{
                "to": [{"paths": ["/admin"]}],
                "when": [{"key": "request.auth.claims[group]", "notValues": ["admins"]}]
            }])),
        ]
    }));
    let proxy = start_inbound(&cfg, app.addr).await;
    let c = client();

    let r = get(&c, proxy.inbound[0], "/").await;
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    let r = get_bearer(&c, &proxy, "/", &token("alice", 3600)).await;
    assert_eq!((r.status, r.header("x-backend")), (200, "app"));
    // The claims reach `when` conditions: alice is in `admins`.
    let r = get_bearer(&c, &proxy, "/admin", &token("alice", 3600)).await;
    assert_eq!(r.status, 200);
    let r = get_bearer(&c, &proxy, "/", &token("alice", -3600)).await;
    assert_eq!(r.status, 401, "authentication runs before authorization");
}

/// A writer the test reads back: what the proxy logged while the guard was held.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Current-thread runtime: the proxy's tasks run on this thread, under its log subscriber.
#[tokio::test(flavor = "current_thread")]
async fn dry_run_deny_logs_and_passes_and_a_reload_takes_effect() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = backend("app").await;
    let mut dry = authz("deny-all-dry", "DENY", json!([{}]));
    dry["dryRun"] = json!(true);
    let cfg = with_inbound(json!({
        "requestAuthentication": [request_authn(json!({"jwks": jwks()}))],
        "authorization": [dry],
    }));
    let proxy = start_inbound(&cfg, app.addr).await;
    let c = client();
    let secret = token("alice", 3600);
    let r = get_bearer(&c, &proxy, "/dry?q=private-value", &secret).await;
    assert_eq!((r.status, r.header("x-backend")), (200, "app"));
    let text = logs.text();
    assert!(
        text.contains("dry-run AuthorizationPolicy would deny")
            && text.contains("default/deny-all-dry"),
        "{text}"
    );
    assert!(!text.contains(&secret), "the token is never logged: {text}");
    assert!(!text.contains("private-value"), "nor the query: {text}");

    // The same policy enforced, by a config reload: the cache follows the config version.
    let enforced = with_inbound(json!({"authorization": [
        authz("deny-all", "DENY", json!([{}]))
    ]}));
    proxy.write_config(enforced.to_json().as_bytes());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&c, proxy.inbound[0], "/").await;
        if r.status == 403 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logs.text()
            .contains("rbac_access_denied_matched_policy[default/deny-all]")
    );
}

#[tokio::test]
async fn jwks_uri_is_fetched_by_the_refresh_task_and_tokens_then_validate() {
    let issuer_keys = text_server(200, jwks(), Duration::ZERO).await;
    let app = backend("app").await;
    let uri = format!("http://{}/.well-known/jwks.json", issuer_keys.addr);
    let cfg = with_inbound(json!({"requestAuthentication": [
        request_authn(json!({"jwksUri": uri}))
    ]}));
    let proxy = start_inbound(&cfg, app.addr).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(refresh_jwks(
        proxy.app.policy.jwks(),
        HttpJwksSource::new().unwrap(),
        stopped,
    ));
    let c = client();
    let valid = token("alice", 3600);
    // The first request compiles the policy, which registers the URI and wakes the task; the
    // keys arrive within the fetch's round trip.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = get_bearer(&c, &proxy, "/", &valid).await;
        if r.status != 401 || tokio::time::Instant::now() > deadline {
            break r;
        }
        assert_eq!(r.body, "Jwks remote fetch is failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((r.status, r.header("x-backend")), (200, "app"));
    assert_eq!(
        issuer_keys.hits(),
        1,
        "fetched once, then served from the cache"
    );
    let r = get_bearer(&c, &proxy, "/", &token("alice", -3600)).await;
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt is expired"));

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the refresh task stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn jwks_fetch_is_bounded_in_time_and_size_and_needs_a_2xx() {
    let source = HttpJwksSource::new().unwrap();
    let fetch = |addr: std::net::SocketAddr| {
        let source = source.clone();
        async move {
            source
                .fetch(&format!("http://{addr}/jwks"), Duration::from_millis(500))
                .await
        }
    };
    let ok = text_server(200, jwks(), Duration::ZERO).await;
    assert_eq!(fetch(ok.addr).await, Ok(jwks()));

    let slow = text_server(200, jwks(), Duration::from_secs(30)).await;
    let started = std::time::Instant::now();
    let err = fetch(slow.addr).await.unwrap_err();
    assert!(err.contains("within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let huge = text_server(200, "x".repeat(MAX_JWKS_BYTES + 1), Duration::ZERO).await;
    let err = fetch(huge.addr).await.unwrap_err();
    assert!(err.contains("length limit"), "{err}");

    let missing = text_server(404, "no".into(), Duration::ZERO).await;
    let err = fetch(missing.addr).await.unwrap_err();
    assert!(err.contains("404"), "{err}");

    let err = source
        .fetch("ftp://keys.example/jwks", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.contains("scheme"), "{err}");
}

/// A TLS server for `localhost` on loopback answering every request with `body`; returns its
/// address and the certificate a client must trust.
async fn https_server(
    body: String,
) -> (
    std::net::SocketAddr,
    rustls::pki_types::CertificateDer<'static>,
) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = issued.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = bytes::Bytes::from(body);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(body),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, cert)
}

#[tokio::test]
async fn jwks_over_https_is_verified_against_the_trusted_roots() {
    let (addr, cert) = https_server(jwks()).await;
    let uri = format!("https://localhost:{}/jwks", addr.port());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let trusting = HttpJwksSource::with_roots(roots).unwrap();
    assert_eq!(
        trusting.fetch(&uri, Duration::from_secs(5)).await,
        Ok(jwks())
    );
    // Mozilla's roots do not include a self-signed test certificate.
    let public = HttpJwksSource::new().unwrap();
    let err = public
        .fetch(&uri, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.contains("TLS handshake"), "{err}");
}
