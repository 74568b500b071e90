//! JSON Web Key Sets: parsed once into verifying keys ([`KeySet`]), and for `jwksUri` kept in a
//! [`JwksCache`] that refreshes on an interval and keeps the last good set when a fetch fails.
//!
//! The cache does no I/O itself: the proxy's shell calls [`JwksCache::refresh`] with a
//! [`JwksSource`] (its HTTP client) whenever [`JwksCache::next_due`] comes, so the refresh
//! logic is tested here with a fake source and explicit instants.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};

/// Why a key set could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not a JSON object with a \"keys\" list: {0}")]
    Json(String),
    #[error("JWKS has no key Mizzen can verify with ({0} keys skipped)")]
    NoUsableKeys(usize),
    #[error("fetching JWKS from {uri} failed: {reason}")]
    Fetch { uri: String, reason: String },
}

/// One verifying key.
struct Key {
    kid: Option<String>,
    /// The `alg` the JWK pins, if any: a token signed with another algorithm is not tried
    /// against it.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The usable keys of one JWKS.
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref()).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys that are not usable (unknown type, bad encoding, marked for
    /// encryption) are skipped, so one odd key does not take the issuer's others down; a set
    /// with none left is an error.
    pub fn parse(json: &str) -> Result<Self, JwksError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_str(json).map_err(|e| JwksError::Json(e.to_string()))?;
        let total = doc.keys.len();
        let keys: Vec<Key> = doc
            .keys
            .into_iter()
            .filter_map(|v| {
                let jwk: Jwk = serde_json::from_value(v).ok()?;
                if matches!(
                    jwk.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                ) {
                    return None;
                }
                let alg = match jwk.common.key_algorithm {
                    Some(a) => Some(Algorithm::try_from(a).ok()?),
                    None => None,
                };
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key: DecodingKey::from_jwk(&jwk).ok()?,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys(total));
        }
        Ok(Self { keys })
    }

    /// The keys a token with header `kid` and `alg` may have been signed with: same key
    /// family (so an RSA public key is never used as an HMAC secret), same pinned `alg`, and
    /// the same `kid` when the token names one.
    pub(crate) fn candidates<'s>(
        &'s self,
        kid: Option<&'s str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'s DecodingKey> + 's {
        self.keys
            .iter()
            .filter(move |k| {
                k.key.family() == alg.family()
                    && k.alg.is_none_or(|a| a == alg)
                    && (kid.is_none() || k.kid.as_deref() == kid)
            })
            .map(|k| &k.key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Fetches a JWKS document: the proxy's HTTP client, a fake in tests.
pub trait JwksSource {
    /// The body of `uri`, or why it could not be had within `timeout`.
    fn fetch(
        &self,
        uri: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// Istio's default JWKS fetch timeout (`JwtRule.timeout`).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Entry {
    keys: Option<Arc<KeySet>>,
    next_fetch: Instant,
    timeout: Duration,
    last_error: Option<JwksError>,
}

/// Remote key sets by URI, shared by the authenticators of a proxy (and across config reloads,
/// so a reload neither refetches nor loses keys).
#[derive(Debug)]
pub struct JwksCache {
    refresh_interval: Duration,
    retry_interval: Duration,
    entries: RwLock<HashMap<String, Entry>>,
}

impl JwksCache {
    /// Refreshes every `refresh_interval` (istiod's default is 20 minutes); a failed fetch is
    /// retried after `retry_interval`, serving the last good set meanwhile.
    pub fn new(refresh_interval: Duration, retry_interval: Duration) -> Self {
        Self {
            refresh_interval,
            retry_interval,
            entries: RwLock::default(),
        }
    }

    /// The current keys of `uri`: `None` until a fetch has succeeded once.
    pub fn keys(&self, uri: &str) -> Option<Arc<KeySet>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(uri).and_then(|e| e.keys.clone())
    }

    /// Makes `uri` known, due at once if new. Called when an authenticator is built.
    pub fn register(&self, uri: &str, timeout: Duration, now: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries
            .entry(uri.to_string())
            .and_modify(|e| e.timeout = timeout)
            .or_insert(Entry {
                keys: None,
                next_fetch: now,
                timeout,
                last_error: None,
            });
    }

    /// Forgets the URIs no rule uses any more.
    pub fn retain(&self, mut used: impl FnMut(&str) -> bool) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.retain(|uri, _| used(uri));
    }

    /// When the next fetch is due, so the shell knows how long to sleep; `None` when no URI is
    /// registered.
    pub fn next_due(&self) -> Option<Instant> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.values().map(|e| e.next_fetch).min()
    }

    /// Records the outcome of fetching `uri` at `now`. A failure (or a document without usable
    /// keys) keeps the previous keys and is retried sooner.
    pub fn record(
        &self,
        uri: &str,
        fetched: Result<String, String>,
        now: Instant,
    ) -> Result<(), JwksError> {
        let parsed = fetched
            .map_err(|reason| JwksError::Fetch {
                uri: uri.to_string(),
                reason,
            })
            .and_then(|body| KeySet::parse(&body));
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get_mut(uri) else {
            // Unregistered meanwhile (a config reload dropped it): nothing to keep.
            return parsed.map(drop);
        };
        match parsed {
            Ok(keys) => {
                entry.keys = Some(Arc::new(keys));
                entry.next_fetch = now + self.refresh_interval;
                entry.last_error = None;
                Ok(())
            }
            Err(e) => {
                entry.next_fetch = now + self.retry_interval;
                entry.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The last error of `uri`, cleared by a good fetch.
    pub fn last_error(&self, uri: &str) -> Option<JwksError> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(uri).and_then(|e| e.last_error.clone())
    }

    /// Fetches every URI due at `now` through `source`, one after another, and returns the
    /// errors (each also kept as [`last_error`](Self::last_error)).
    pub async fn refresh<S: JwksSource>(&self, source: &S, now: Instant) -> Vec<JwksError> {
        let due: Vec<(String, Duration)> = {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            entries
                .iter()
                .filter(|(_, e)| e.next_fetch <= now)
                .map(|(uri, e)| (uri.clone(), e.timeout))
                .collect()
        };
        let mut errors = Vec::new();
        for (uri, timeout) in due {
            let fetched = source.fetch(&uri, timeout).await;
            if let Err(e) = self.record(&uri, fetched, now) {
                errors.push(e);
            }
        }
        errors
    }
}

impl Default for JwksCache {
    /// istiod's refresh interval (20 minutes), retrying a failed fetch after 10 seconds.
    fn default() -> Self {
        Self::new(Duration::from_secs(20 * 60), Duration::from_secs(10))
    }
}
