//! RequestAuthentication: the JWT rules that select one workload, compiled into a
//! [`JwtAuthenticator`] that finds a request's token, validates it and yields the
//! [`Principal`] AuthorizationPolicy reads.
//!
//! As in Istio (Envoy's `jwt_authn` with `allow_missing`): a request without a token passes
//! (an AuthorizationPolicy asking for `requestPrincipals` is what turns it away, with 403); a
//! request with a token that fails validation gets 401 with Envoy's message as the body. A
//! token is validated by the rule whose `issuer` its `iss` claim names, among the rules whose
//! locations it was found in; a token no such rule claims is rejected ("Jwt issuer is not
//! configured"). Istio leaves several tokens in one request undefined; here every token found
//! must be valid and the first (in rule order) gives the principal.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use jsonwebtoken::{Validation, decode, decode_header};
use mizzen_proxy_config::{InboundConfig, JwtRule, selects};
use serde_json::Value;

use crate::jwks::{DEFAULT_FETCH_TIMEOUT, JwksCache, KeySet};

/// Status of a request whose token fails validation.
pub const UNAUTHORIZED_STATUS: u16 = 401;

/// Clock skew allowed on `exp` and `nbf`, as Envoy allows.
pub const CLOCK_SKEW: u64 = 60;

/// Why a token was refused. The messages are Envoy's, so clients and tests written against
/// Istio see the same 401 bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    #[error("Jwt verification fails")]
    VerificationFails,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwks remote fetch is failed")]
    JwksUnavailable,
}

impl JwtError {
    /// Always [`UNAUTHORIZED_STATUS`].
    pub fn status(&self) -> u16 {
        UNAUTHORIZED_STATUS
    }

    /// The response body, Envoy's message.
    pub fn body(&self) -> String {
        self.to_string()
    }

    /// The `www-authenticate` value Envoy sends with the 401.
    pub fn www_authenticate(&self, host: &str, path: &str) -> String {
        let path = path.find('?').map_or(path, |i| &path[..i]);
        format!("Bearer realm=\"http://{host}{path}\", error=\"invalid_token\"")
    }
}

/// The identity a valid token carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    pub issuer: String,
    /// `sub`, empty when the token has none.
    pub subject: String,
    /// `<iss>/<sub>`: Istio's `request.auth.principal`.
    pub principal: String,
    /// `aud`, whether a string or a list.
    pub audiences: Vec<String>,
    /// `azp`: Istio's `request.auth.presenter`.
    pub presenter: Option<String>,
    /// The whole payload, for `request.auth.claims[...]`.
    pub claims: Value,
}

/// Where a rule looks for its token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    /// A header, the token after `prefix` (compared without regard to ASCII case, so
    /// `bearer x` works as `Bearer x` does).
    Header {
        name: HeaderName,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

impl Location {
    fn extract<'r>(&self, headers: &'r HeaderMap, query: Option<&'r str>) -> Option<&'r str> {
        match self {
            Location::Header { name, prefix } => headers.get_all(name).iter().find_map(|v| {
                let v = v.to_str().ok()?.trim();
                let p = prefix.as_bytes();
                (v.len() > p.len() && v.as_bytes()[..p.len()].eq_ignore_ascii_case(p))
                    .then(|| v[p.len()..].trim())
            }),
            Location::Param(name) => query?.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name && !v.is_empty()).then_some(v)
            }),
            Location::Cookie(name) => headers.get_all(header::COOKIE).iter().find_map(|v| {
                v.to_str().ok()?.split(';').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name && !v.is_empty()).then_some(v.trim_matches('"'))
                })
            }),
        }
    }
}

/// Where a rule's keys come from.
#[derive(Debug)]
enum Keys {
    Inline(Option<Arc<KeySet>>),
    Remote(String),
}

/// One compiled JWT rule.
#[derive(Debug)]
struct Rule {
    issuer: String,
    /// Sanitised as Envoy compares them (see [`sanitize_audience`]).
    audiences: Vec<String>,
    keys: Keys,
    locations: Vec<Location>,
    forward_original_token: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(Vec<String>, HeaderName)>,
    /// Top-level claims whose text is a space-separated list (see [`principal`]).
    split_claims: Vec<String>,
    verified: Verified,
}

/// Claims Istio always treats as space-separated lists.
const SPACE_DELIMITED: [&str; 2] = ["scope", "permission"];

/// Envoy compares audiences without an `http://` or `https://` scheme and a trailing `/`.
fn sanitize_audience(a: &str) -> &str {
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

impl Rule {
    fn compile(
        policy: &str,
        r: &JwtRule,
        cache: &JwksCache,
        now: Instant,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut warn = |what: String| {
            warnings.push(format!(
                "RequestAuthentication {policy}: issuer {}: {what}",
                r.issuer
            ))
        };
        let keys = match (&r.jwks, &r.jwks_uri) {
            (Some(inline), _) => Keys::Inline(match KeySet::parse(inline) {
                Ok(k) => Some(Arc::new(k)),
                Err(e) => {
                    warn(format!("{e}; every token of this issuer is refused"));
                    None
                }
            }),
            (None, Some(uri)) => {
                let timeout = r
                    .jwks_fetch_timeout_ms
                    .map_or(DEFAULT_FETCH_TIMEOUT, Duration::from_millis);
                cache.register(uri, timeout, now);
                Keys::Remote(uri.clone())
            }
            (None, None) => {
                warn("neither jwks nor jwksUri; every token of this issuer is refused".into());
                Keys::Inline(None)
            }
        };
        let mut locations = Vec::new();
        for h in &r.from_headers {
            match HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => locations.push(Location::Header {
                    name,
                    prefix: h.prefix.clone().unwrap_or_default(),
                }),
                Err(_) => warn(format!("fromHeaders: {:?} is not a header name", h.name)),
            }
        }
        locations.extend(r.from_params.iter().cloned().map(Location::Param));
        locations.extend(r.from_cookies.iter().cloned().map(Location::Cookie));
        if r.from_headers.is_empty() && r.from_params.is_empty() && r.from_cookies.is_empty() {
            locations.push(Location::Header {
                name: header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            });
            locations.push(Location::Param("access_token".into()));
        }
        let header = |name: &str, what: &str, warn: &mut dyn FnMut(String)| {
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| warn(format!("{what}: {name:?} is not a header name")))
                .ok()
        };
        let payload_header = r
            .output_payload_to_header
            .as_deref()
            .and_then(|h| header(h, "outputPayloadToHeader", &mut warn));
        let claim_headers = r
            .output_claim_to_headers
            .iter()
            .filter_map(|(claim, h)| {
                let name = header(h, "outputClaimToHeaders", &mut warn)?;
                Some((claim.split('.').map(String::from).collect(), name))
            })
            .collect();
        Self {
            issuer: r.issuer.clone(),
            audiences: r
                .audiences
                .iter()
                .map(|a| sanitize_audience(a).to_string())
                .collect(),
            keys,
            locations,
            forward_original_token: r.forward_original_token,
            payload_header,
            claim_headers,
            split_claims: SPACE_DELIMITED
                .iter()
                .map(|c| c.to_string())
                .chain(r.space_delimited_claims.iter().cloned())
                .collect(),
            verified: Verified::default(),
        }
    }

    /// Verifies the signature and the claims of `token`, whose payload `claims` says it is
    /// this rule's issuer.
    fn validate(
        &self,
        token: &str,
        claims: &Value,
        cache: &JwksCache,
        now: u64,
    ) -> Result<(), JwtError> {
        // Envoy's order: times, audiences, then keys and signature.
        let time = |name: &str| {
            claims
                .get(name)
                .map(|v| v.as_f64().ok_or(JwtError::VerificationFails))
        };
        if let Some(exp) = time("exp").transpose()?
            && (now as f64) > exp + CLOCK_SKEW as f64
        {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = time("nbf").transpose()?
            && (now as f64) + (CLOCK_SKEW as f64) < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        if !self.audiences.is_empty()
            && !audiences(claims).iter().any(|a| {
                self.audiences
                    .iter()
                    .any(|want| want == sanitize_audience(a))
            })
        {
            return Err(JwtError::AudienceNotAllowed);
        }
        let keys = match &self.keys {
            Keys::Inline(k) => k.clone().ok_or(JwtError::NoMatchingKey)?,
            Keys::Remote(uri) => cache.keys(uri).ok_or(JwtError::JwksUnavailable)?,
        };
        self.verified
            .check(token, &keys, || verify_signature(token, &keys))
    }

    /// Edits the request after this rule validated `token` found at `at`.
    fn rewrite(&self, headers: &mut HeaderMap, at: &Location, token: &str, claims: &Value) {
        if !self.forward_original_token
            && let Location::Header { name, .. } = at
        {
            headers.remove(name);
        }
        if let Some(h) = &self.payload_header
            && let Some(payload) = token.split('.').nth(1)
            && let Ok(v) = HeaderValue::from_str(payload)
        {
            headers.insert(h.clone(), v);
        }
        for (path, h) in &self.claim_headers {
            let value = path.iter().try_fold(claims, |v, k| v.get(k));
            let text = match value {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => continue,
            };
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.insert(h.clone(), v);
            }
        }
    }
}

/// Checks `token`'s signature against the keys that may have made it.
fn verify_signature(token: &str, keys: &KeySet) -> Result<(), JwtError> {
    let header = decode_header(token).map_err(|_| JwtError::BadFormat)?;
    let mut validation = Validation::new(header.alg);
    // Times and audiences are checked by `Rule::validate`, against the caller's clock and
    // with Envoy's rules; the crate checks the signature only.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let mut tried = false;
    for key in keys.candidates(header.kid.as_deref(), header.alg) {
        tried = true;
        if decode::<serde::de::IgnoredAny>(token, key, &validation).is_ok() {
            return Ok(());
        }
    }
    Err(if tried {
        JwtError::VerificationFails
    } else {
        JwtError::NoMatchingKey
    })
}

/// How many verified tokens a rule remembers (Envoy's JWT cache holds 100 by default).
const VERIFIED_CAPACITY: usize = 100;

/// Tokens whose signature verified against one key set. Clients repeat their token on every
/// request, and an RSA or ECDSA verification costs hundreds of microseconds where this lookup
/// costs well under one. Emptied when the key set changes (a JWKS refresh), so a key taken
/// out of the set stops validating at once; times and audiences are still checked on every
/// request.
#[derive(Debug, Default)]
struct Verified(Mutex<VerifiedTokens>);

#[derive(Debug, Default)]
struct VerifiedTokens {
    keys: Option<Arc<KeySet>>,
    tokens: HashSet<Arc<str>>,
    /// Oldest first, for eviction.
    order: VecDeque<Arc<str>>,
}

impl Verified {
    fn check(
        &self,
        token: &str,
        keys: &Arc<KeySet>,
        verify: impl FnOnce() -> Result<(), JwtError>,
    ) -> Result<(), JwtError> {
        {
            let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if !v.keys.as_ref().is_some_and(|k| Arc::ptr_eq(k, keys)) {
                *v = VerifiedTokens {
                    keys: Some(keys.clone()),
                    ..Default::default()
                };
            } else if v.tokens.contains(token) {
                return Ok(());
            }
        }
        // Verified outside the lock: other requests need not wait for it.
        verify()?;
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.keys.as_ref().is_some_and(|k| Arc::ptr_eq(k, keys)) && !v.tokens.contains(token) {
            if v.order.len() >= VERIFIED_CAPACITY
                && let Some(old) = v.order.pop_front()
            {
                v.tokens.remove(&old);
            }
            let t: Arc<str> = token.into();
            v.tokens.insert(t.clone());
            v.order.push_back(t);
        }
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().tokens.len()
    }
}

/// The principal of a validated token's `claims`. A top-level claim named in `split` whose
/// value is text becomes the list of its space-separated words, as Envoy's JWT filter
/// normalises it for Istio: a condition on `request.auth.claims[scope]` then matches one scope
/// of `"read write"` (and no longer the whole text).
fn principal(mut claims: Value, split: &[String]) -> Principal {
    if let Value::Object(map) = &mut claims {
        for name in split {
            if let Some(v) = map.get_mut(name)
                && let Value::String(text) = v
            {
                *v = Value::Array(
                    text.split(' ')
                        .filter(|w| !w.is_empty())
                        .map(|w| Value::String(w.to_string()))
                        .collect(),
                );
            }
        }
    }
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(String::from);
    let issuer = text("iss").unwrap_or_default();
    let subject = text("sub").unwrap_or_default();
    Principal {
        principal: format!("{issuer}/{subject}"),
        audiences: audiences(&claims),
        presenter: text("azp"),
        issuer,
        subject,
        claims,
    }
}

fn audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// The payload of a token, unverified: only to pick the rule by `iss`.
fn peek_claims(token: &str) -> Result<Value, JwtError> {
    let mut parts = token.split('.');
    let (Some(_), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token)
        .ok()
        .filter(Value::is_object)
        .ok_or(JwtError::BadFormat)
}

/// The RequestAuthentication rules that select one workload.
#[derive(Debug)]
pub struct JwtAuthenticator {
    rules: Vec<Rule>,
    cache: Arc<JwksCache>,
    warnings: Vec<String>,
}

impl JwtAuthenticator {
    /// Compiles the rules of every RequestAuthentication in `inbound` that selects a workload
    /// with `labels`, registering their `jwksUri`s with `cache` (due for a fetch at once if
    /// new). Never fails: a rule that cannot verify anything refuses its issuer's tokens and
    /// says so in [`warnings`](Self::warnings).
    pub fn new(
        inbound: &InboundConfig,
        labels: &BTreeMap<String, String>,
        cache: Arc<JwksCache>,
    ) -> Self {
        let now = Instant::now();
        let mut warnings = Vec::new();
        let rules = inbound
            .request_authentication
            .iter()
            .filter(|p| selects(&p.selector, labels))
            .flat_map(|p| p.jwt_rules.iter().map(move |r| (p, r)))
            .map(|(p, r)| Rule::compile(&p.name, r, &cache, now, &mut warnings))
            .collect();
        Self {
            rules,
            cache,
            warnings,
        }
    }

    /// True when no rule selects the workload: requests pass untouched.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What could not be compiled, for the config-load log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The `jwksUri`s this authenticator reads from the cache.
    pub fn jwks_uris(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter_map(|r| match &r.keys {
            Keys::Remote(uri) => Some(uri.as_str()),
            Keys::Inline(_) => None,
        })
    }

    /// [`authenticate_at`](Self::authenticate_at) with the system clock.
    pub fn authenticate(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Principal>, JwtError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.authenticate_at(headers, query, now)
    }

    /// Finds and validates the request's token at `now` (seconds since the Unix epoch).
    /// `Ok(None)`: no token (the request passes unauthenticated). `Ok(Some)`: valid; the
    /// token's header is removed unless `forwardOriginalToken`, and the `outputPayloadToHeader`
    /// and `outputClaimToHeaders` headers are set. `Err`: answer 401 with the error's body;
    /// the headers are left as they were.
    pub fn authenticate_at(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Option<Principal>, JwtError> {
        if self.rules.is_empty() {
            return Ok(None);
        }
        // Each distinct token, owned (the headers are edited below), with the rules and
        // locations it was found at, as indices.
        let mut found: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            for (li, at) in rule.locations.iter().enumerate() {
                if let Some(token) = at.extract(headers, query) {
                    match found.iter_mut().find(|(t, _)| t == token) {
                        Some((_, at)) => at.push((ri, li)),
                        None => found.push((token.to_string(), vec![(ri, li)])),
                    }
                }
            }
        }
        let mut valid = Vec::with_capacity(found.len());
        for (token, at) in found {
            let claims = peek_claims(&token)?;
            let iss = claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let at: Vec<(usize, usize)> = at
                .into_iter()
                .filter(|(ri, _)| self.rules[*ri].issuer == iss)
                .collect();
            let Some((ri, _)) = at.first() else {
                return Err(JwtError::UnknownIssuer);
            };
            self.rules[*ri].validate(&token, &claims, &self.cache, now)?;
            valid.push((token, claims, at));
        }
        // Every token is valid: only now edit the headers.
        for (token, claims, at) in &valid {
            for (ri, li) in at {
                let rule = &self.rules[*ri];
                rule.rewrite(headers, &rule.locations[*li], token, claims);
            }
        }
        let principal = valid
            .into_iter()
            .next()
            .map(|(_, claims, at)| principal(claims, &self.rules[at[0].0].split_claims));
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};

    use super::*;

    fn key_set() -> Arc<KeySet> {
        let key = EncodingKey::from_ec_pem(include_bytes!("../testdata/ec.pem")).unwrap();
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        let doc = serde_json::json!({ "keys": [jwk] }).to_string();
        Arc::new(KeySet::parse(&doc).unwrap())
    }

    #[test]
    fn verified_tokens_skip_the_signature_until_the_keys_change() {
        let v = Verified::default();
        let calls = Cell::new(0);
        let ok = || {
            calls.set(calls.get() + 1);
            Ok(())
        };
        let (keys, rotated) = (key_set(), key_set());
        v.check("t1", &keys, ok).unwrap();
        v.check("t1", &keys, ok).unwrap();
        assert_eq!(calls.get(), 1, "second use is remembered");
        v.check("t1", &rotated, ok).unwrap();
        assert_eq!(calls.get(), 2, "a new key set verifies again");
        // A failed verification is not remembered.
        let bad = || Err(JwtError::VerificationFails);
        assert_eq!(
            v.check("t2", &rotated, bad),
            Err(JwtError::VerificationFails)
        );
        assert_eq!(
            v.check("t2", &rotated, bad),
            Err(JwtError::VerificationFails)
        );
        // Bounded: the oldest goes first.
        for i in 0..VERIFIED_CAPACITY + 5 {
            v.check(&format!("x{i}"), &rotated, ok).unwrap();
        }
        assert_eq!(v.len(), VERIFIED_CAPACITY);
        let before = calls.get();
        v.check(&format!("x{}", VERIFIED_CAPACITY + 4), &rotated, ok)
            .unwrap();
        v.check("x0", &rotated, ok).unwrap();
        assert_eq!(calls.get(), before + 1, "newest kept, oldest evicted");
    }

    #[test]
    fn audiences_are_compared_as_envoy_does() {
        assert_eq!(
            sanitize_audience("https://api.example.com/"),
            "api.example.com"
        );
        assert_eq!(sanitize_audience("http://api"), "api");
        assert_eq!(sanitize_audience("api"), "api");
    }

    #[test]
    fn token_locations_parse_what_clients_send() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("sid=\"tok\"; b=2"));
        assert_eq!(
            Location::Cookie("sid".into()).extract(&h, None),
            Some("tok")
        );
        assert_eq!(Location::Cookie("none".into()).extract(&h, None), None);
        let p = Location::Param("access_token".into());
        assert_eq!(p.extract(&h, Some("x=1&access_token=t&y")), Some("t"));
        assert_eq!(p.extract(&h, Some("access_token=")), None);
        assert_eq!(p.extract(&h, Some("my_access_token=t")), None);
        let auth = Location::Header {
            name: header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        };
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(auth.extract(&h, None), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(auth.extract(&h, None), None);
    }
}
