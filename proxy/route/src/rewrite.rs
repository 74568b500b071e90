//! Request rewrites (`rewrite.uri`, `rewrite.uriRegexRewrite`, `rewrite.authority`) as pure
//! functions over [`http::request::Parts`].

use http::header::HOST;
use http::request::Parts;
use http::{HeaderValue, Uri};
use mizzen_proxy_config::{Rewrite, StringMatcher};
use regex::Regex;

use crate::request::split_path;

/// A [`Rewrite`] with its regex compiled once. The route table keeps one per route that has a
/// rewrite ([`Decision::Forward`](crate::Decision::Forward)'s `rewrite`).
#[derive(Clone, Debug)]
pub struct UriRewrite {
    uri: Option<String>,
    authority: Option<String>,
    /// The pattern and the substitution in the regex crate's syntax (`\1` → `${1}`).
    regex: Option<(Regex, String)>,
}

impl UriRewrite {
    /// Compiles `uriRegexRewrite.pattern` (searched anywhere in the path, every match replaced,
    /// as Envoy's `regex_rewrite` does; it is not anchored like match regexes).
    pub fn new(rewrite: &Rewrite) -> Result<Self, regex::Error> {
        let regex = match &rewrite.uri_regex {
            Some(rr) => Some((
                regex::RegexBuilder::new(&rr.pattern)
                    .size_limit(1 << 20)
                    .build()?,
                substitution(&rr.substitution),
            )),
            None => None,
        };
        Ok(Self {
            uri: rewrite.uri.clone(),
            authority: rewrite.authority.clone(),
            regex,
        })
    }

    /// The new path-and-query for `path_and_query`, or `None` when the path is not rewritten.
    /// The query string is kept as it was.
    ///
    /// - `uriRegexRewrite` (wins when both are set): every match of the pattern in the path is
    ///   replaced by the substitution.
    /// - `uri` after a `prefix` match: only the matched prefix is replaced (`/api` → `/v2` turns
    ///   `/api/users` into `/v2/users`). When the rewrite ends in `/` and the rest of the path
    ///   starts with one, a single slash is kept (`/api` → `/` gives `/users`, not `//users`).
    /// - `uri` after an `exact` or `regex` match: the whole path is replaced.
    /// - `uri` when the match had no `uri` condition: as a prefix match on `/` (Envoy's default
    ///   route match), so `/v2/` turns `/users` into `/v2/users`.
    pub fn rewrite_path(
        &self,
        matched_uri: Option<&StringMatcher>,
        path_and_query: &str,
    ) -> Option<String> {
        let (path, query) = split_path(path_and_query);
        let new_path = if let Some((re, sub)) = &self.regex {
            re.replace_all(path, sub.as_str()).into_owned()
        } else {
            let uri = self.uri.as_deref()?;
            match matched_uri {
                Some(StringMatcher::Exact(_) | StringMatcher::Regex(_)) => uri.to_string(),
                Some(StringMatcher::Prefix(p)) => replace_prefix(path, p, uri),
                None => replace_prefix(path, "/", uri),
            }
        };
        Some(if query.is_empty() {
            new_path
        } else {
            format!("{new_path}?{query}")
        })
    }

    /// Applies the rewrite to a request: the path (keeping the query), and the authority (the
    /// `Host` header, and the URI's authority when the URI has one, as HTTP/2 requests do).
    /// Returns warnings for what could not be applied (a rewrite that produces an invalid URI or
    /// header value); the request is left as it was for that part.
    pub fn apply(&self, matched_uri: Option<&StringMatcher>, parts: &mut Parts) -> Vec<String> {
        let mut warnings = Vec::new();
        let current = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let Some(pq) = self.rewrite_path(matched_uri, current) {
            let mut uri_parts = parts.uri.clone().into_parts();
            match pq.parse() {
                Ok(pq) => {
                    uri_parts.path_and_query = Some(pq);
                    match Uri::from_parts(uri_parts) {
                        Ok(uri) => parts.uri = uri,
                        Err(e) => warnings.push(format!("rewritten uri {current:?}: {e}")),
                    }
                }
                Err(e) => warnings.push(format!("rewritten path {pq:?} is not a valid path: {e}")),
            }
        }
        if let Some(authority) = &self.authority {
            match HeaderValue::from_str(authority) {
                Ok(v) => {
                    parts.headers.insert(HOST, v);
                }
                Err(e) => warnings.push(format!(
                    "rewrite authority {authority:?} is not a valid Host: {e}"
                )),
            }
            if parts.uri.authority().is_some() {
                let mut uri_parts = parts.uri.clone().into_parts();
                match authority.parse() {
                    Ok(a) => {
                        uri_parts.authority = Some(a);
                        match Uri::from_parts(uri_parts) {
                            Ok(uri) => parts.uri = uri,
                            Err(e) => {
                                warnings.push(format!("rewrite authority {authority:?}: {e}"))
                            }
                        }
                    }
                    Err(e) => warnings.push(format!(
                        "rewrite authority {authority:?} is not a valid authority: {e}"
                    )),
                }
            }
        }
        warnings
    }
}

/// Applies `rewrite` to a request; see [`UriRewrite::rewrite_path`] and [`UriRewrite::apply`]
/// for the rules. `matched_uri` is the `uri` condition of the match that selected the route
/// ([`Decision::matched_uri`](crate::Decision::matched_uri)). Compiles the regex on every call:
/// the proxy uses the route table's precompiled [`UriRewrite`] instead. Returns warnings, never
/// panics.
pub fn apply_rewrite(
    rewrite: &Rewrite,
    matched_uri: Option<&StringMatcher>,
    parts: &mut Parts,
) -> Vec<String> {
    match UriRewrite::new(rewrite) {
        Ok(rw) => rw.apply(matched_uri, parts),
        Err(e) => vec![format!("uriRegexRewrite: invalid regex: {e}")],
    }
}

fn replace_prefix(path: &str, prefix: &str, with: &str) -> String {
    // The prefix matched (perhaps case-insensitively); replace that many bytes.
    let matched = path.len() >= prefix.len()
        && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        && path.is_char_boundary(prefix.len());
    if !matched {
        return path.to_string();
    }
    let rest = &path[prefix.len()..];
    if with.ends_with('/') && rest.starts_with('/') {
        format!("{with}{}", &rest[1..])
    } else {
        format!("{with}{rest}")
    }
}

/// Istio's substitution syntax (`\1` for group 1) in the regex crate's (`${1}`); a literal `$`
/// is escaped, `\\` is a backslash.
fn substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        n.push(*d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_proxy_config::RegexRewrite;

    fn uri(u: &str) -> Rewrite {
        Rewrite {
            uri: Some(u.into()),
            ..Rewrite::default()
        }
    }

    fn regex(p: &str, s: &str) -> Rewrite {
        Rewrite {
            uri_regex: Some(RegexRewrite {
                pattern: p.into(),
                substitution: s.into(),
            }),
            ..Rewrite::default()
        }
    }

    fn parts(uri: &str) -> Parts {
        http::Request::get(uri)
            .header("host", "reviews:9080")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn prefix_rewrite_replaces_only_the_matched_prefix() {
        let rw = UriRewrite::new(&uri("/v2")).unwrap();
        let prefix = StringMatcher::Prefix("/api".into());
        assert_eq!(
            rw.rewrite_path(Some(&prefix), "/api/users?x=1").as_deref(),
            Some("/v2/users?x=1")
        );
        assert_eq!(
            rw.rewrite_path(Some(&prefix), "/api").as_deref(),
            Some("/v2")
        );
        // Case-insensitive prefix matches are replaced too.
        assert_eq!(
            rw.rewrite_path(Some(&prefix), "/API/users").as_deref(),
            Some("/v2/users")
        );
        // No double slash when rewriting to "/".
        let root = UriRewrite::new(&uri("/")).unwrap();
        assert_eq!(
            root.rewrite_path(Some(&prefix), "/api/users").as_deref(),
            Some("/users")
        );
        assert_eq!(
            root.rewrite_path(Some(&prefix), "/api").as_deref(),
            Some("/")
        );
    }

    #[test]
    fn exact_and_regex_matches_replace_the_whole_path() {
        let rw = UriRewrite::new(&uri("/new")).unwrap();
        let exact = StringMatcher::Exact("/old/page".into());
        assert_eq!(
            rw.rewrite_path(Some(&exact), "/old/page?q").as_deref(),
            Some("/new?q")
        );
        let re = StringMatcher::Regex("/old/.*".into());
        assert_eq!(
            rw.rewrite_path(Some(&re), "/old/x/y").as_deref(),
            Some("/new")
        );
        // Without a uri condition the route matched the prefix "/".
        let rw = UriRewrite::new(&uri("/v2/")).unwrap();
        assert_eq!(
            rw.rewrite_path(None, "/users").as_deref(),
            Some("/v2/users")
        );
    }

    #[test]
    fn regex_rewrite_uses_groups() {
        let rw = UriRewrite::new(&regex("^/service/([^/]+)(/.*)$", "\\2/instance/\\1")).unwrap();
        assert_eq!(
            rw.rewrite_path(None, "/service/foo/v1/api?x=1").as_deref(),
            Some("/v1/api/instance/foo?x=1")
        );
        // Not anchored: every occurrence is replaced; `$` is literal.
        let rw = UriRewrite::new(&regex("o", "0$")).unwrap();
        assert_eq!(rw.rewrite_path(None, "/foo").as_deref(), Some("/f0$0$"));
        assert_eq!(substitution("\\10-\\\\-x"), "${10}-\\-x");
        assert!(UriRewrite::new(&regex("(", "x")).is_err());
    }

    #[test]
    fn no_uri_rewrite_leaves_the_path() {
        let rw = UriRewrite::new(&Rewrite {
            authority: Some("x".into()),
            ..Rewrite::default()
        })
        .unwrap();
        assert_eq!(rw.rewrite_path(None, "/a"), None);
    }

    #[test]
    fn apply_rewrites_path_and_authority() {
        let mut p = parts("/api/users?x=1");
        let rw = Rewrite {
            uri: Some("/v2".into()),
            authority: Some("ratings.default.svc.cluster.local".into()),
            uri_regex: None,
        };
        let warnings = apply_rewrite(&rw, Some(&StringMatcher::Prefix("/api".into())), &mut p);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(p.uri, "/v2/users?x=1");
        assert_eq!(p.headers["host"], "ratings.default.svc.cluster.local");

        // An absolute URI (HTTP/2 style) gets its authority rewritten as well.
        let mut p = parts("http://reviews:9080/a");
        let warnings = apply_rewrite(&rw, None, &mut p);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(p.uri, "http://ratings.default.svc.cluster.local/v2a");
    }

    #[test]
    fn bad_rewrites_warn_and_leave_the_request() {
        let mut p = parts("/a");
        let w = apply_rewrite(&uri("/has space"), None, &mut p);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(p.uri, "/a");
        let w = apply_rewrite(&regex("(", "x"), None, &mut p);
        assert_eq!(w.len(), 1, "{w:?}");
        let w = apply_rewrite(
            &Rewrite {
                authority: Some("bad\nhost".into()),
                ..Rewrite::default()
            },
            None,
            &mut p,
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(p.headers["host"], "reviews:9080");
    }
}
