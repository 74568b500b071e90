//! CORS, as Envoy's CORS filter applies a route's policy: answering preflights and adding the
//! `access-control-*` headers to responses for allowed origins.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use mizzen_proxy_config::{Cors, StringMatcher};

use crate::matcher::Matcher;

/// A route's [`Cors`] with its origin regexes compiled. The route table keeps one per route
/// that has a CORS policy (the `cors` field of a [`Decision`](crate::Decision)).
#[derive(Clone, Debug)]
pub struct CorsPolicy {
    /// `None`: any origin (`exact: "*"` in the list).
    origins: Option<Vec<Matcher>>,
    cors: Cors,
}

/// What to do with a request under a CORS policy, before routing it upstream.
#[derive(Debug)]
pub enum Preflight {
    /// Not a preflight (not `OPTIONS` with `Origin` and `Access-Control-Request-Method`):
    /// forward it, then decorate the response with [`CorsPolicy::response_headers`].
    NotPreflight,
    /// A preflight the proxy answers itself with this response head (status 200, empty body).
    Respond(http::response::Parts),
    /// A preflight from an origin the policy does not allow, with `forward_unmatched_preflights`:
    /// forward it upstream untouched.
    Forward,
}

impl CorsPolicy {
    pub fn new(cors: &Cors) -> Result<Self, regex::Error> {
        let any = cors
            .allow_origins
            .iter()
            .any(|o| matches!(o, StringMatcher::Exact(e) if e == "*"));
        let origins = if any {
            None
        } else {
            Some(
                cors.allow_origins
                    .iter()
                    .map(|o| Matcher::compile(o, false).map_err(|(_, e)| e))
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(Self {
            origins,
            cors: cors.clone(),
        })
    }

    /// The policy as configured.
    pub fn config(&self) -> &Cors {
        &self.cors
    }

    /// Whether `origin` is allowed (compared as sent, case-sensitively).
    pub fn allows_origin(&self, origin: &str) -> bool {
        match &self.origins {
            None => true,
            Some(list) => list.iter().any(|m| m.matches(origin)),
        }
    }

    /// Classifies a request and builds the preflight answer. An allowed preflight gets 200 with
    /// `access-control-allow-origin` (the request's origin, echoed), `-allow-methods`,
    /// `-allow-headers`, `-max-age` and `-allow-credentials` as configured. A preflight from an
    /// origin not allowed is forwarded (`forward_unmatched_preflights`) or answered with a bare 200
    /// that carries no CORS headers, so the browser refuses it.
    pub fn preflight(&self, method: &Method, request_headers: &HeaderMap) -> Preflight {
        let origin = request_headers.get(ORIGIN).and_then(|v| v.to_str().ok());
        let Some(origin) = origin.filter(|o| !o.is_empty()) else {
            return Preflight::NotPreflight;
        };
        if method != Method::OPTIONS || !request_headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Preflight::NotPreflight;
        }
        let mut builder = http::Response::builder().status(StatusCode::OK);
        if self.allows_origin(origin) {
            let headers = builder.headers_mut().expect("builder has no error yet");
            set(headers, ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if self.cors.allow_credentials == Some(true) {
                set(headers, ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
            }
            if !self.cors.allow_methods.is_empty() {
                set(
                    headers,
                    ACCESS_CONTROL_ALLOW_METHODS,
                    &self.cors.allow_methods.join(","),
                );
            }
            if !self.cors.allow_headers.is_empty() {
                set(
                    headers,
                    ACCESS_CONTROL_ALLOW_HEADERS,
                    &self.cors.allow_headers.join(","),
                );
            }
            if let Some(age) = self.cors.max_age_s {
                set(headers, ACCESS_CONTROL_MAX_AGE, &age.to_string());
            }
        } else if self.cors.forward_unmatched_preflights {
            return Preflight::Forward;
        }
        let (parts, ()) = builder
            .body(())
            .expect("status and headers are valid")
            .into_parts();
        Preflight::Respond(parts)
    }

    /// Adds CORS headers to a (non-preflight) response when the request's `origin` is allowed:
    /// `access-control-allow-origin` (echoed), `-allow-credentials`, `-expose-headers`.
    pub fn response_headers(&self, origin: Option<&str>, response_headers: &mut HeaderMap) {
        let Some(origin) = origin.filter(|o| !o.is_empty() && self.allows_origin(o)) else {
            return;
        };
        set(response_headers, ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.cors.allow_credentials == Some(true) {
            set(response_headers, ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        }
        if !self.cors.expose_headers.is_empty() {
            set(
                response_headers,
                ACCESS_CONTROL_EXPOSE_HEADERS,
                &self.cors.expose_headers.join(","),
            );
        }
    }
}

/// Sets a header when the value is valid HTTP (configured values always are after the
/// operator's validation; a request's origin came in as a header value).
fn set(headers: &mut HeaderMap, name: http::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The answer to a preflight, when the proxy gives one: see [`CorsPolicy::preflight`]. `None`
/// when the request is not a preflight or is forwarded upstream. Compiles the policy on each
/// call; the proxy uses the route table's precompiled [`CorsPolicy`].
pub fn preflight_response(
    cors: &Cors,
    method: &Method,
    request_headers: &HeaderMap,
) -> Option<http::response::Parts> {
    match CorsPolicy::new(cors)
        .ok()?
        .preflight(method, request_headers)
    {
        Preflight::Respond(parts) => Some(parts),
        Preflight::NotPreflight | Preflight::Forward => None,
    }
}

/// Adds the CORS headers for `origin` to a response; see [`CorsPolicy::response_headers`].
pub fn response_headers(cors: &Cors, origin: Option<&str>, response_headers: &mut HeaderMap) {
    if let Ok(policy) = CorsPolicy::new(cors) {
        policy.response_headers(origin, response_headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors {
            allow_origins: vec![
                StringMatcher::Exact("https://shop.example.com".into()),
                StringMatcher::Regex(r"https://.*\.dev\.example\.com".into()),
            ],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-token".into()],
            expose_headers: vec!["x-trace".into()],
            max_age_s: Some(86_400),
            allow_credentials: Some(true),
            forward_unmatched_preflights: false,
        }
    }

    fn preflight_headers(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, origin.parse().unwrap());
        h.insert(ACCESS_CONTROL_REQUEST_METHOD, "POST".parse().unwrap());
        h
    }

    #[test]
    fn allowed_preflights_are_answered() {
        let parts = preflight_response(
            &cors(),
            &Method::OPTIONS,
            &preflight_headers("https://a.dev.example.com"),
        )
        .unwrap();
        assert_eq!(parts.status, 200);
        let h = &parts.headers;
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.dev.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET,POST");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-token");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "86400");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn unmatched_preflights_are_ignored_or_forwarded() {
        let parts = preflight_response(
            &cors(),
            &Method::OPTIONS,
            &preflight_headers("https://evil.com"),
        )
        .unwrap();
        assert_eq!(parts.status, 200);
        assert!(parts.headers.is_empty());
        let forward = Cors {
            forward_unmatched_preflights: true,
            ..cors()
        };
        let policy = CorsPolicy::new(&forward).unwrap();
        assert!(matches!(
            policy.preflight(&Method::OPTIONS, &preflight_headers("https://evil.com")),
            Preflight::Forward
        ));
        assert!(
            preflight_response(
                &forward,
                &Method::OPTIONS,
                &preflight_headers("https://evil.com")
            )
            .is_none()
        );
    }

    #[test]
    fn non_preflights_are_not_answered() {
        let policy = CorsPolicy::new(&cors()).unwrap();
        let h = preflight_headers("https://shop.example.com");
        assert!(matches!(
            policy.preflight(&Method::GET, &h),
            Preflight::NotPreflight
        ));
        let mut only_origin = HeaderMap::new();
        only_origin.insert(ORIGIN, "https://shop.example.com".parse().unwrap());
        assert!(matches!(
            policy.preflight(&Method::OPTIONS, &only_origin),
            Preflight::NotPreflight
        ));
        assert!(matches!(
            policy.preflight(&Method::OPTIONS, &HeaderMap::new()),
            Preflight::NotPreflight
        ));
    }

    #[test]
    fn responses_get_headers_for_allowed_origins_only() {
        let mut h = HeaderMap::new();
        response_headers(&cors(), Some("https://shop.example.com"), &mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.example.com");
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], "x-trace");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let mut h = HeaderMap::new();
        response_headers(&cors(), Some("https://shop.example.com.evil.com"), &mut h);
        assert!(h.is_empty());
        response_headers(&cors(), None, &mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn star_allows_any_origin() {
        let policy = CorsPolicy::new(&Cors {
            allow_origins: vec![StringMatcher::Exact("*".into())],
            ..Cors::default()
        })
        .unwrap();
        assert!(policy.allows_origin("https://anything.org"));
        assert!(
            !CorsPolicy::new(&Cors::default())
                .unwrap()
                .allows_origin("https://a")
        );
        assert!(
            CorsPolicy::new(&Cors {
                allow_origins: vec![StringMatcher::Regex("(".into())],
                ..Cors::default()
            })
            .is_err()
        );
    }
}
