//! Inbound policy in the request path: PeerAuthentication, RequestAuthentication and
//! AuthorizationPolicy for this workload, compiled by `mizzen-policy` once per config snapshot
//! and asked per connection ([`InboundPolicy::mtls_mode`]) and per request
//! ([`InboundPolicy::check`]).
//!
//! Remote key sets (`jwksUri`) are fetched by [`refresh_jwks`] over [`HttpJwksSource`] into a
//! [`JwksCache`] that outlives config reloads, so a reload neither refetches nor loses keys.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use mizzen_policy::{
    Authorizer, HttpAttrs, JwksCache, JwksSource, JwtAuthenticator, JwtError, MtlsMode, PeerPolicy,
    Principal, RequestAttrs, Verdict,
    authz::{DENIED_BODY, DENIED_STATUS},
};
use mizzen_resilience::{ResponseFlags, reply::local_reply};
use tokio::{
    net::TcpStream,
    sync::{Notify, watch},
};

use crate::{
    config::Snapshot,
    env::Workload,
    http::body::{self, Body},
    listener::{ConnMeta, Identity},
};

/// Everything the inbound path needs from one config snapshot for this workload.
#[derive(Debug)]
pub struct InboundPolicy {
    /// The [`Snapshot::version`] it was compiled from.
    version: u64,
    peer: PeerPolicy,
    authz: Authorizer,
    jwt: JwtAuthenticator,
}

impl InboundPolicy {
    /// Compiles the policies of `snap` that select a workload with `labels`, registering the
    /// `jwksUri`s they read with `jwks`. What cannot be compiled is logged here, once per
    /// config, and handled as `mizzen-policy` documents (never a crash, never an open door).
    pub fn new(
        snap: &Snapshot,
        labels: &std::collections::BTreeMap<String, String>,
        jwks: Arc<JwksCache>,
    ) -> Self {
        let config = snap.config();
        let inbound = &config.inbound;
        let policy = Self {
            version: snap.version,
            peer: PeerPolicy::new(inbound, config.mesh.default_mtls, labels),
            authz: Authorizer::new(inbound, labels),
            jwt: JwtAuthenticator::new(inbound, labels, jwks),
        };
        tracing::info!(
            config_version = snap.version,
            mtls = policy.peer.default_mode().as_str(),
            peer_authentication = ?policy.peer.sources(),
            authorization = !policy.authz.is_empty(),
            request_authentication = !policy.jwt.is_empty(),
            "inbound policy compiled"
        );
        for w in policy.authz.warnings().iter().chain(policy.jwt.warnings()) {
            tracing::warn!(config_version = snap.version, problem = %w, "inbound policy");
        }
        policy
    }

    /// The mutual-TLS mode of the workload's `port` (STRICT, PERMISSIVE or DISABLE).
    pub fn mtls_mode(&self, port: u16) -> MtlsMode {
        self.peer.mode(port)
    }

    /// Whether any RequestAuthentication or AuthorizationPolicy applies: when not, requests
    /// pass without a look.
    pub fn is_inert(&self) -> bool {
        self.jwt.is_empty() && self.authz.is_empty()
    }

    /// Authenticates the request's JWT, then authorizes the request, in Envoy's filter order.
    /// `Err` is the reply to send instead of forwarding: 401 with Envoy's message and
    /// `www-authenticate` for an invalid token, 403 `RBAC: access denied` for a denial. A
    /// valid token's header is removed (unless `forwardOriginalToken`) and the output headers
    /// are set on `parts`. Dry-run denials and AUDIT matches are logged and never block.
    #[allow(
        clippy::result_large_err,
        reason = "the reply is the rare path, and the caller sends it as is"
    )]
    pub fn check(&self, parts: &mut Parts, conn: &ConnMeta) -> Result<(), Response<Body>> {
        if self.is_inert() {
            return Ok(());
        }
        let principal = match self.jwt.authenticate(&mut parts.headers, parts.uri.query()) {
            Ok(p) => p,
            Err(e) => return Err(unauthorized(&e, parts)),
        };
        if self.authz.is_empty() {
            return Ok(());
        }
        let parts = &*parts;
        let attrs = request_attrs(parts, conn, principal.as_ref());
        let verdict = self.authz.authorize(&attrs);
        report(&verdict, &attrs);
        if verdict.allowed {
            Ok(())
        } else {
            Err(local_reply(
                StatusCode::from_u16(DENIED_STATUS).unwrap_or(StatusCode::FORBIDDEN),
                DENIED_BODY,
                // Envoy sets no response flag for an RBAC denial; the reason is in the log.
                ResponseFlags::EMPTY,
            ))
        }
    }
}

/// What authorization sees of a request arriving on `conn`.
fn request_attrs<'a>(
    parts: &'a Parts,
    conn: &'a ConnMeta,
    principal: Option<&'a Principal>,
) -> RequestAttrs<'a> {
    RequestAttrs {
        source_principal: match &conn.identity {
            Identity::Spiffe(id) => Some(id.as_str()),
            Identity::None => None,
        },
        source_ip: Some(conn.peer.ip()),
        remote_ip: forwarded_client(&parts.headers),
        // The inbound path forwards to the app on loopback and does not keep the pod address
        // the connection was sent to; `destination.ip` conditions see none.
        destination_ip: None,
        destination_port: conn.port,
        sni: None,
        http: Some(HttpAttrs {
            host: authority(parts),
            method: parts.method.as_str(),
            path: parts.uri.path(),
            headers: &parts.headers,
            request_principal: principal,
        }),
    }
}

/// The client address `remoteIpBlocks` and `remote.ip` read: the rightmost
/// `x-forwarded-for` entry, the hop that called this workload's caller. This is what Envoy
/// takes on a sidecar's inbound listener (no `use_remote_address`, no trusted hops): the
/// entries to its left are whatever earlier hops or the client claimed. `None` (the
/// connection's peer) when the header is absent or its last entry is not an address.
fn forwarded_client(headers: &http::HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    let hop = last.to_str().ok()?.rsplit(',').next()?.trim();
    hop.parse().ok()
}

/// `:authority`, or `Host` for HTTP/1.1 in origin form.
fn authority(parts: &Parts) -> &str {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or_default()
}

/// The 401 Envoy's `jwt_authn` filter answers for an invalid token.
fn unauthorized(e: &JwtError, parts: &Parts) -> Response<Body> {
    let realm = e.www_authenticate(authority(parts), parts.uri.path());
    tracing::info!(
        method = %parts.method,
        path = parts.uri.path(),
        response_code_details = %format_args!("jwt_authn_access_denied{{{}}}", e.body().replace(' ', "_")),
        "request refused: invalid JWT"
    );
    let text = e.body();
    let mut resp = Response::new(body::full(text.clone()));
    *resp.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    if let Ok(v) = HeaderValue::from_str(&realm) {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Logs what the access log cannot say: why a request was denied (Envoy's
/// `response_code_details`), which dry-run policy would have denied it, and AUDIT matches.
/// Never the token: paths are logged without their query, which may carry one.
fn report(v: &Verdict<'_>, a: &RequestAttrs<'_>) {
    if !(v.dry_run_would_deny || v.audit || !v.allowed) {
        return;
    }
    let (method, path) = a.http.map_or(("", ""), |h| (h.method, h.path));
    let source = a.source_principal.unwrap_or("");
    if !v.allowed {
        tracing::info!(
            method,
            path,
            source,
            policy = v.policy.unwrap_or("none"),
            response_code_details = %format_args!(
                "rbac_access_denied_matched_policy[{}]",
                v.policy.unwrap_or("none")
            ),
            "request denied by AuthorizationPolicy"
        );
    }
    if v.dry_run_would_deny {
        tracing::info!(
            method,
            path,
            source,
            policy = v.dry_run_policy.unwrap_or("none"),
            shadow_effective_policy_id = v.dry_run_policy.unwrap_or("none"),
            "dry-run AuthorizationPolicy would deny this request (not enforced)"
        );
    }
    if v.audit {
        tracing::info!(
            method,
            path,
            source,
            "request matched an AUDIT AuthorizationPolicy"
        );
    }
}

/// The compiled [`InboundPolicy`] of the current config, rebuilt when the config changes.
/// One per proxy, in [`Shared`](crate::app::Shared).
pub struct PolicyCache {
    current: ArcSwapOption<InboundPolicy>,
    /// Held while compiling, so concurrent first requests after a reload compile once.
    building: Mutex<()>,
    jwks: JwksHandle,
}

impl Default for PolicyCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyCache {
    /// With istiod's JWKS refresh schedule ([`JwksCache::default`]).
    pub fn new() -> Self {
        Self::with_jwks(Arc::new(JwksCache::default()))
    }

    /// With a given key-set cache (tests use short refresh intervals).
    pub fn with_jwks(cache: Arc<JwksCache>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            building: Mutex::new(()),
            jwks: JwksHandle {
                cache,
                registered: Arc::new(Notify::new()),
            },
        }
    }

    /// The policy for `snap`, compiled on first use of each config version. `workload` is the
    /// proxy's own and never changes, so the version alone keys the cache. A request still
    /// holding an older snapshot gets the newer policy: policy is enforced as of now.
    pub fn get(&self, snap: &Snapshot, workload: &Workload) -> Arc<InboundPolicy> {
        if let Some(p) = self.compiled_since(snap.version) {
            return p;
        }
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.compiled_since(snap.version) {
            return p;
        }
        let policy = Arc::new(InboundPolicy::new(
            snap,
            &workload.labels,
            self.jwks.cache.clone(),
        ));
        let uris: Vec<&str> = policy.jwt.jwks_uris().collect();
        self.jwks.cache.retain(|u| uris.contains(&u));
        if !uris.is_empty() {
            self.jwks.registered.notify_one();
        }
        self.current.store(Some(policy.clone()));
        policy
    }

    /// The cached policy if it was compiled from config `version` or a later one.
    fn compiled_since(&self, version: u64) -> Option<Arc<InboundPolicy>> {
        self.current.load_full().filter(|p| p.version >= version)
    }

    /// What [`refresh_jwks`] needs: the key-set cache and the wake-up for newly registered
    /// URIs.
    pub fn jwks(&self) -> JwksHandle {
        self.jwks.clone()
    }
}

/// The JWKS cache shared by every compiled policy, with a wake-up that a policy with new
/// `jwksUri`s sends so the refresh task fetches them at once rather than at its next tick.
#[derive(Clone, Debug)]
pub struct JwksHandle {
    pub cache: Arc<JwksCache>,
    registered: Arc<Notify>,
}

/// How long the refresh task sleeps when no `jwksUri` is registered (a registration wakes it
/// sooner).
const IDLE_RECHECK: Duration = Duration::from_secs(60);

/// Keeps the remote key sets fresh until `shutdown` turns true: fetches each `jwksUri` when
/// the cache says it is due (at once when new, then every refresh interval, sooner after a
/// failure), logging failures; the last good keys keep serving meanwhile.
pub async fn refresh_jwks<S: JwksSource>(
    jwks: JwksHandle,
    source: S,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = std::time::Instant::now();
        for e in jwks.cache.refresh(&source, now).await {
            tracing::warn!(error = %e, "JWKS refresh failed; the last good keys stay in use");
        }
        let due = jwks
            .cache
            .next_due()
            .unwrap_or(now + IDLE_RECHECK)
            .min(std::time::Instant::now() + IDLE_RECHECK);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = jwks.registered.notified() => {}
            changed = shutdown.changed() => if changed.is_err() { return },
        }
    }
}

/// A JWKS document larger than this is refused (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Fetches key sets over HTTP/1.1: `http://` in plaintext, `https://` over TLS verified
/// against Mozilla's root set (`webpki-roots`, so it works in an image without a CA bundle).
/// One connection per fetch, no redirects (as Envoy's JWKS fetcher), the whole exchange
/// bounded by the rule's timeout and the body by [`MAX_JWKS_BYTES`].
#[derive(Clone)]
pub struct HttpJwksSource {
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for HttpJwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJwksSource").finish_non_exhaustive()
    }
}

impl HttpJwksSource {
    /// Trusting Mozilla's root set.
    pub fn new() -> Result<Self, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(roots)
    }

    /// Trusting `roots` only (a private issuer, or tests).
    pub fn with_roots(roots: rustls::RootCertStore) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    async fn get(&self, uri: &str) -> Result<String, String> {
        let uri: http::Uri = uri.parse().map_err(|e| format!("not a URI: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        let host = uri.host().ok_or("no host in the URI")?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare_host, port))
            .await
            .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, uri.authority().map_or(host, |a| a.as_str()))
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        if tls {
            let name = rustls::pki_types::ServerName::try_from(bare_host.to_string())
                .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
            exchange(stream, req).await
        } else {
            exchange(tcp, req).await
        }
    }
}

/// One HTTP/1.1 request on `io`; the body of a 2xx answer, at most [`MAX_JWKS_BYTES`].
async fn exchange<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<String, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let result = if !status.is_success() {
        Err(format!("HTTP status {status}"))
    } else {
        match Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
        {
            Ok(body) => String::from_utf8(body.to_bytes().to_vec())
                .map_err(|_| "body is not UTF-8".to_string()),
            Err(e) => Err(format!("body: {e}")),
        }
    };
    conn.abort();
    result
}

impl JwksSource for HttpJwksSource {
    fn fetch(
        &self,
        uri: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, String>> + Send {
        let (this, uri) = (self.clone(), uri.to_string());
        async move {
            tokio::time::timeout(timeout, this.get(&uri))
                .await
                .unwrap_or_else(|_| Err(format!("no complete answer within {timeout:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn remote_ip_is_the_rightmost_forwarded_hop() {
        assert_eq!(forwarded_client(&xff(&[])), None);
        assert_eq!(
            forwarded_client(&xff(&["1.1.1.1, 2.2.2.2"])),
            Some("2.2.2.2".parse().unwrap())
        );
        assert_eq!(
            forwarded_client(&xff(&["1.1.1.1", "3.3.3.3 , 2001:db8::1"])),
            Some("2001:db8::1".parse().unwrap())
        );
        // Not an address: fall back to the peer.
        assert_eq!(forwarded_client(&xff(&["1.1.1.1, unknown"])), None);
    }

    fn policy_for(inbound: serde_json::Value) -> InboundPolicy {
        let snap = snapshot(7, inbound);
        let labels = [("app".to_string(), "servicea".to_string())].into();
        InboundPolicy::new(&snap, &labels, Arc::new(JwksCache::default()))
    }

    fn conn(identity: Identity) -> ConnMeta {
        ConnMeta {
            peer: "10.0.0.9:40000".parse().unwrap(),
            orig_dst: "127.0.0.1:8080".parse().unwrap(),
            port: 8080,
            service_host: None,
            sni: None,
            identity,
            client_cert: None,
            mtls_peer: None,
        }
    }

    fn request() -> Parts {
        Request::get("/orders")
            .header("host", "servicea:8080")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn the_mtls_peer_identity_is_the_source_principal_and_namespace() {
        let policy = policy_for(serde_json::json!({
            "peerAuthentication": [{"name": "default/strict", "mode": "STRICT",
                                    "selector": {"app": "servicea"}, "ports": {"9090": "DISABLE"}}],
            "authorization": [{"name": "default/from-foo", "action": "ALLOW",
                               "rules": [{"from": [{"namespaces": ["foo"]}]}]}]
        }));
        assert_eq!(policy.mtls_mode(8080), MtlsMode::Strict);
        assert_eq!(policy.mtls_mode(9090), MtlsMode::Disable);
        let from_foo = conn(Identity::Spiffe(
            "spiffe://cluster.local/ns/foo/sa/client".into(),
        ));
        assert!(policy.check(&mut request(), &from_foo).is_ok());
        let from_bar = conn(Identity::Spiffe(
            "spiffe://cluster.local/ns/bar/sa/client".into(),
        ));
        let denied = policy.check(&mut request(), &from_bar).unwrap_err();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        assert_eq!(ResponseFlags::from(&denied), ResponseFlags::EMPTY);
        let plaintext = conn(Identity::None);
        assert!(policy.check(&mut request(), &plaintext).is_err());
    }

    #[test]
    fn without_policies_every_request_passes_untouched() {
        let policy = policy_for(serde_json::json!({}));
        assert!(policy.is_inert());
        assert_eq!(policy.mtls_mode(8080), MtlsMode::Permissive);
        let mut parts = request();
        parts
            .headers
            .insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(policy.check(&mut parts, &conn(Identity::None)).is_ok());
        assert!(parts.headers.contains_key(header::AUTHORIZATION));
    }

    fn snapshot(version: u64, inbound: serde_json::Value) -> Snapshot {
        let mut config = mizzen_proxy_config::ProxyConfig::new("default");
        config.inbound = serde_json::from_value(inbound).unwrap();
        Snapshot::from_bytes(
            std::path::Path::new("config.json"),
            config.to_json().as_bytes(),
            version,
            &std::collections::BTreeMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn the_cache_compiles_once_per_config_version_and_forgets_unused_jwks_uris() {
        let cache = PolicyCache::new();
        let workload = Workload::from_strings(
            &std::collections::BTreeMap::new(),
            &crate::env::WorkloadFlags {
                app: Some("servicea".into()),
                ..Default::default()
            },
        );
        let remote = serde_json::json!({"requestAuthentication": [{"name": "default/jwt",
            "jwtRules": [{"issuer": "i", "jwksUri": "http://keys.example/jwks"}]}]});
        let (v1, v2) = (
            snapshot(1, remote.clone()),
            snapshot(2, serde_json::json!({})),
        );
        let first = cache.get(&v1, &workload);
        assert!(Arc::ptr_eq(&first, &cache.get(&v1, &workload)));
        assert!(
            cache.jwks().cache.next_due().is_some(),
            "jwksUri registered"
        );
        let second = cache.get(&v2, &workload);
        assert!(!Arc::ptr_eq(&first, &second) && second.is_inert());
        assert!(
            Arc::ptr_eq(&second, &cache.get(&v1, &workload)),
            "an older snapshot gets the current policy"
        );
        assert_eq!(cache.jwks().cache.next_due(), None, "unused URI forgotten");
    }

    #[test]
    fn authority_prefers_the_uri_then_host() {
        let (parts, ()) = Request::get("http://a.example:81/x?q")
            .header("host", "b.example")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(authority(&parts), "a.example:81");
        let (parts, ()) = Request::get("/x")
            .header("host", "b.example")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(authority(&parts), "b.example");
    }
}
