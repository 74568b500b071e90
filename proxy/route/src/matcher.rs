//! Compiled request matches: one [`HttpMatch`] of the config, with its regexes built once.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use mizzen_proxy_config::{HttpMatch, StringMatcher};
use regex::Regex;

use crate::host::authority_host;
use crate::request::{RequestInfo, query_param};

/// Compiles a regex that must match the whole input (`^(?:pattern)$`), with the same size limit
/// as the validating webhook (`mizzen_crds::validate::compile_full_match`), so a pattern the
/// webhook accepts always compiles here.
pub fn compile_full_match(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

/// A [`StringMatcher`] ready to compare.
#[derive(Clone, Debug)]
pub(crate) enum Matcher {
    Exact(String),
    Prefix(String),
    /// ASCII case-insensitive forms (`ignoreUriCase`).
    ExactNoCase(String),
    PrefixNoCase(String),
    Regex(Regex),
}

impl Matcher {
    /// `ignore_case` applies to exact and prefix only, as in Istio (a regex is compared as
    /// written; use `(?i)` in it for case-insensitivity).
    pub(crate) fn compile(
        m: &StringMatcher,
        ignore_case: bool,
    ) -> Result<Self, (String, regex::Error)> {
        Ok(match m {
            StringMatcher::Exact(s) if ignore_case => Self::ExactNoCase(s.clone()),
            StringMatcher::Prefix(s) if ignore_case => Self::PrefixNoCase(s.clone()),
            StringMatcher::Exact(s) => Self::Exact(s.clone()),
            StringMatcher::Prefix(s) => Self::Prefix(s.clone()),
            StringMatcher::Regex(r) => {
                Self::Regex(compile_full_match(r).map_err(|e| (r.clone(), e))?)
            }
        })
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Self::Exact(e) => s == e,
            Self::Prefix(p) => s.starts_with(p.as_str()),
            Self::ExactNoCase(e) => s.eq_ignore_ascii_case(e),
            Self::PrefixNoCase(p) => {
                s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            Self::Regex(r) => r.is_match(s),
        }
    }
}

/// Where a header condition reads its value. Pseudo-headers (and `host`) read the request's
/// own fields, as Envoy's header matchers do.
#[derive(Clone, Debug)]
enum HeaderKey {
    Authority,
    Method,
    Path,
    Scheme,
    Name(HeaderName),
    /// Not a valid header name: never present.
    Never,
}

#[derive(Clone, Debug)]
struct HeaderCondition {
    key: HeaderKey,
    /// `None`: presence.
    value: Option<Matcher>,
    invert: bool,
}

impl HeaderCondition {
    fn holds(&self, req: &RequestInfo<'_>) -> bool {
        let value = header_value(&self.key, req);
        if self.invert {
            // Istio renders `withoutHeaders` with Envoy's treat_missing_header_as_empty: a
            // missing header is compared as "" and the result inverted.
            return match &self.value {
                None => value.is_none(),
                Some(m) => !m.matches(value.as_deref().unwrap_or("")),
            };
        }
        match (&self.value, value) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(m), Some(v)) => m.matches(&v),
        }
    }
}

/// The value of a header as matched: several values of one header are joined with `,` (Envoy),
/// `cookie` values with `; ` (how HTTP/2 splits and HTTP/1.1 joins cookies).
fn header_value<'r>(key: &HeaderKey, req: &RequestInfo<'r>) -> Option<Cow<'r, str>> {
    let name = match key {
        HeaderKey::Authority => return Some(Cow::Borrowed(req.authority)),
        HeaderKey::Method => return Some(Cow::Borrowed(req.method.as_str())),
        HeaderKey::Path => return Some(Cow::Borrowed(req.path_and_query)),
        HeaderKey::Scheme => return Some(Cow::Borrowed(req.scheme)),
        HeaderKey::Never => return None,
        HeaderKey::Name(n) => n,
    };
    joined_header(req.headers, name)
}

pub(crate) fn joined_header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Cow<'h, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let first = String::from_utf8_lossy(first.as_bytes());
    let Some(second) = values.next() else {
        return Some(first);
    };
    let sep = if name == http::header::COOKIE {
        "; "
    } else {
        ","
    };
    let mut out = first.into_owned();
    for v in std::iter::once(second).chain(values) {
        out.push_str(sep);
        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(Cow::Owned(out))
}

/// One compiled [`HttpMatch`]: every condition must hold.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledMatch {
    uri: Option<Matcher>,
    scheme: Option<Matcher>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    headers: Vec<HeaderCondition>,
    query_params: Vec<(String, Option<Matcher>)>,
    port: Option<u16>,
    source_labels: Vec<(String, String)>,
    source_namespace: Option<String>,
    gateways: Vec<String>,
}

impl CompiledMatch {
    /// `at(field)` names a field for errors (it gets `matches[i].` in front).
    pub(crate) fn compile(
        m: &HttpMatch,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Self, (String, String, regex::Error)> {
        let field = |name: &str, sm: &Option<StringMatcher>, ic: bool| {
            sm.as_ref()
                .map(|sm| Matcher::compile(sm, ic))
                .transpose()
                .map_err(|(p, e)| (at(name), p, e))
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for h in &m.headers {
            let lower = h.name.to_ascii_lowercase();
            let key = match lower.as_str() {
                ":authority" | "host" => HeaderKey::Authority,
                ":method" => HeaderKey::Method,
                ":path" => HeaderKey::Path,
                ":scheme" => HeaderKey::Scheme,
                other => HeaderName::from_bytes(other.as_bytes())
                    .map(HeaderKey::Name)
                    .unwrap_or(HeaderKey::Never),
            };
            let list = if h.invert {
                "withoutHeaders"
            } else {
                "headers"
            };
            let value = field(&format!("{list}[{}]", h.name), &h.value, false)?;
            headers.push(HeaderCondition {
                key,
                value,
                invert: h.invert,
            });
        }
        let mut query_params = Vec::with_capacity(m.query_params.len());
        for q in &m.query_params {
            let value = field(&format!("queryParams[{}]", q.name), &q.value, false)?;
            query_params.push((q.name.clone(), value));
        }
        Ok(Self {
            uri: field("uri", &m.uri, m.ignore_uri_case)?,
            scheme: field("scheme", &m.scheme, false)?,
            method: field("method", &m.method, false)?,
            authority: field("authority", &m.authority, false)?,
            headers,
            query_params,
            port: m.port,
            source_labels: m
                .source_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            source_namespace: m.source_namespace.clone(),
            gateways: m.gateways.clone(),
        })
    }

    /// Whether this match applies to requests through `gateway` (empty: any).
    pub(crate) fn applies_to_gateway(&self, gateway: &str) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == gateway)
    }

    /// `path` and `query` are the request's, split once by the caller.
    pub(crate) fn matches(&self, req: &RequestInfo<'_>, path: &str, query: &str) -> bool {
        // Cheap comparisons first, regexes last.
        if self.port.is_some_and(|p| p != req.port) {
            return false;
        }
        if !self.applies_to_gateway(req.gateway) {
            return false;
        }
        if self
            .source_namespace
            .as_deref()
            .is_some_and(|ns| ns != req.source_namespace)
        {
            return false;
        }
        if !self
            .source_labels
            .iter()
            .all(|(k, v)| req.source_labels.get(k) == Some(v))
        {
            return false;
        }
        if self
            .method
            .as_ref()
            .is_some_and(|m| !m.matches(req.method.as_str()))
        {
            return false;
        }
        if self.scheme.as_ref().is_some_and(|m| !m.matches(req.scheme)) {
            return false;
        }
        if self
            .authority
            .as_ref()
            .is_some_and(|m| !m.matches(authority_host(req.authority)))
        {
            return false;
        }
        if self.uri.as_ref().is_some_and(|m| !m.matches(path)) {
            return false;
        }
        if !self.headers.iter().all(|h| h.holds(req)) {
            return false;
        }
        self.query_params
            .iter()
            .all(|(name, value)| match (query_param(query, name), value) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(v), Some(m)) => m.matches(v),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(sm: StringMatcher, ic: bool) -> Matcher {
        Matcher::compile(&sm, ic).unwrap()
    }

    #[test]
    fn string_matchers() {
        let exact = m(StringMatcher::Exact("/a".into()), false);
        assert!(exact.matches("/a"));
        assert!(!exact.matches("/A"));
        assert!(!exact.matches("/ab"));
        let prefix = m(StringMatcher::Prefix("/api".into()), false);
        assert!(prefix.matches("/api"));
        assert!(prefix.matches("/api/v1"));
        assert!(!prefix.matches("/ap"));
        assert!(!prefix.matches("/API"));
        let regex = m(StringMatcher::Regex("/v[0-9]+".into()), false);
        assert!(regex.matches("/v12"));
        // Full match: no partial hits.
        assert!(!regex.matches("/v12/x"));
        assert!(!regex.matches("x/v12"));
    }

    #[test]
    fn ignore_case_covers_exact_and_prefix_only() {
        let exact = m(StringMatcher::Exact("/Login".into()), true);
        assert!(exact.matches("/LOGIN"));
        assert!(exact.matches("/login"));
        let prefix = m(StringMatcher::Prefix("/API/".into()), true);
        assert!(prefix.matches("/api/v1"));
        assert!(!prefix.matches("/ap"));
        // A prefix boundary inside a multi-byte character must not panic.
        let prefix = m(StringMatcher::Prefix("/é".into()), true);
        assert!(!prefix.matches("/x"));
        assert!(prefix.matches("/é/x"));
        let regex = m(StringMatcher::Regex("/login".into()), true);
        assert!(!regex.matches("/LOGIN"));
    }

    #[test]
    fn full_match_anchors_alternations() {
        let re = compile_full_match("a|b").unwrap();
        assert!(re.is_match("a"));
        assert!(!re.is_match("ab"));
        assert!(compile_full_match("(unclosed").is_err());
    }

    #[test]
    fn multiple_values_are_joined() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.append("cookie", "a=1".parse().unwrap());
        h.append("cookie", "user=b".parse().unwrap());
        h.append("x-one", "only".parse().unwrap());
        let get = |n: &str| joined_header(&h, &HeaderName::from_bytes(n.as_bytes()).unwrap());
        assert_eq!(get("x-a").as_deref(), Some("1,2"));
        assert_eq!(get("cookie").as_deref(), Some("a=1; user=b"));
        assert_eq!(get("x-one").as_deref(), Some("only"));
        assert_eq!(get("x-none"), None);
    }
}
