//! One AuthorizationPolicy rule, compiled: every field and `when` condition becomes a [`Term`]
//! (a typed check over a list of values, possibly negated), so a request is matched without
//! parsing or allocating.
//!
//! Istio's handling of what cannot be compiled is kept, because it decides which way a policy
//! fails: a value or key that cannot be understood makes an ALLOW rule match nothing (the
//! policy allows less), and is dropped from a DENY or AUDIT rule (the policy matches more).
//! The same goes for HTTP-only attributes on TCP traffic: an ALLOW rule that uses any of them
//! never matches a TCP connection, a DENY rule ignores them.

use http::HeaderName;
use mizzen_proxy_config::{AuthzAction, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource};
use serde_json::Value;

use super::{HttpAttrs, RequestAttrs};
use crate::jwt::Principal;
use crate::matcher::{Cidr, HeaderMatch, PathMatch, StrMatch, ValueError};

/// Why part of a rule was left out; reported by [`Authorizer::warnings`](super::Authorizer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("unknown condition key {0:?}")]
    UnknownKey(String),
    #[error("condition key {0:?} is not supported by Mizzen (Envoy filter metadata)")]
    Unsupported(String),
    #[error("condition key {0:?} needs a name in brackets, e.g. request.headers[x-user]")]
    BadBrackets(String),
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
}

/// `request.auth.principal` / `requestPrincipals` value: `<iss>/<sub>` split at the last `/`
/// (an issuer is often a URL), each side compared with Istio's forms.
#[derive(Clone, Debug)]
pub struct RequestPrincipalMatch {
    iss: StrMatch,
    sub: StrMatch,
}

impl RequestPrincipalMatch {
    fn new(v: &str) -> Self {
        let split = v.rfind('/').map(|i| (&v[..i], &v[i + 1..]));
        let (iss, sub) = if v == "*" {
            (StrMatch::NonEmpty, StrMatch::NonEmpty)
        } else if v.starts_with('*') {
            match split {
                // `*/sub` or `*suffix-of-iss/sub`.
                Some((iss, sub)) => (StrMatch::new(iss), StrMatch::Exact(sub.into())),
                None => (StrMatch::NonEmpty, StrMatch::new(v)),
            }
        } else if v.ends_with('*') {
            match split {
                // `iss/*` or `iss/prefix-of-sub*`.
                Some((iss, sub)) => (StrMatch::Exact(iss.into()), StrMatch::new(sub)),
                None => (StrMatch::new(v), StrMatch::NonEmpty),
            }
        } else {
            match split {
                Some((iss, sub)) => (StrMatch::Exact(iss.into()), StrMatch::Exact(sub.into())),
                None => (StrMatch::Exact(v.into()), StrMatch::Exact("".into())),
            }
        };
        Self { iss, sub }
    }

    fn matches(&self, p: &Principal) -> bool {
        self.iss.matches(&p.issuer) && self.sub.matches(&p.subject)
    }
}

/// What a term looks at, with its compiled values.
#[derive(Clone, Debug)]
pub enum Check {
    SourcePrincipal(Vec<StrMatch>),
    SourceNamespace(Vec<StrMatch>),
    /// `source.serviceAccount`: `(namespace, name)`.
    ServiceAccount(Vec<(Box<str>, Box<str>)>),
    SourceIp(Vec<Cidr>),
    RemoteIp(Vec<Cidr>),
    DestinationIp(Vec<Cidr>),
    DestinationPort(Vec<u16>),
    Sni(Vec<StrMatch>),
    RequestPrincipal(Vec<RequestPrincipalMatch>),
    Audiences(Vec<StrMatch>),
    Presenter(Vec<StrMatch>),
    Claim {
        path: Box<[Box<str>]>,
        values: Vec<StrMatch>,
    },
    Header {
        name: HeaderName,
        values: Vec<HeaderMatch>,
    },
    Host(Vec<StrMatch>),
    Method(Vec<StrMatch>),
    Path(Vec<PathMatch>),
}

impl Check {
    fn is_empty(&self) -> bool {
        match self {
            Check::SourcePrincipal(v)
            | Check::SourceNamespace(v)
            | Check::Sni(v)
            | Check::Audiences(v)
            | Check::Presenter(v)
            | Check::Host(v)
            | Check::Method(v)
            | Check::Claim { values: v, .. } => v.is_empty(),
            Check::ServiceAccount(v) => v.is_empty(),
            Check::SourceIp(v) | Check::RemoteIp(v) | Check::DestinationIp(v) => v.is_empty(),
            Check::DestinationPort(v) => v.is_empty(),
            Check::RequestPrincipal(v) => v.is_empty(),
            Check::Header { values, .. } => values.is_empty(),
            Check::Path(v) => v.is_empty(),
        }
    }

    /// Attributes only an HTTP request has.
    fn http_only(&self) -> bool {
        matches!(
            self,
            Check::RequestPrincipal(_)
                | Check::Audiences(_)
                | Check::Presenter(_)
                | Check::Claim { .. }
                | Check::Header { .. }
                | Check::Host(_)
                | Check::Method(_)
                | Check::Path(_)
        )
    }

    /// Whether any value matches; `None` when the attribute does not exist for this traffic
    /// (an HTTP attribute on a TCP connection).
    fn any_matches(&self, a: &RequestAttrs<'_>) -> Option<bool> {
        let http = a.http.as_ref();
        Some(match self {
            Check::SourcePrincipal(v) => a
                .principal()
                .is_some_and(|p| v.iter().any(|m| m.matches(p))),
            Check::SourceNamespace(v) => a
                .source_namespace()
                .is_some_and(|ns| v.iter().any(|m| m.matches(ns))),
            Check::ServiceAccount(v) => a
                .source_service_account()
                .is_some_and(|(ns, sa)| v.iter().any(|(n, s)| **n == *ns && **s == *sa)),
            Check::SourceIp(v) => a
                .source_ip
                .is_some_and(|ip| v.iter().any(|c| c.contains(ip))),
            Check::RemoteIp(v) => a
                .remote_ip()
                .is_some_and(|ip| v.iter().any(|c| c.contains(ip))),
            Check::DestinationIp(v) => a
                .destination_ip
                .is_some_and(|ip| v.iter().any(|c| c.contains(ip))),
            Check::DestinationPort(v) => v.contains(&a.destination_port),
            Check::Sni(v) => a.sni.is_some_and(|s| v.iter().any(|m| m.matches(s))),
            Check::RequestPrincipal(v) => {
                jwt(http?).is_some_and(|p| v.iter().any(|m| m.matches(p)))
            }
            Check::Audiences(v) => jwt(http?).is_some_and(|p| {
                p.audiences
                    .iter()
                    .any(|aud| v.iter().any(|m| m.matches(aud)))
            }),
            Check::Presenter(v) => jwt(http?)
                .and_then(|p| p.presenter.as_deref())
                .is_some_and(|azp| v.iter().any(|m| m.matches(azp))),
            Check::Claim { path, values } => jwt(http?)
                .and_then(|p| claim(&p.claims, path))
                .is_some_and(|c| claim_matches(c, values)),
            Check::Header { name, values } => header_matches(http?, name, values),
            Check::Host(v) => {
                let host = http?.host;
                v.iter().any(|m| m.matches_ignore_case(host))
            }
            Check::Method(v) => {
                let method = http?.method;
                v.iter().any(|m| m.matches(method))
            }
            Check::Path(v) => {
                let path = path_only(http?.path);
                v.iter().any(|m| m.matches(path))
            }
        })
    }
}

fn jwt<'a>(http: &HttpAttrs<'a>) -> Option<&'a Principal> {
    http.request_principal
}

/// The path without query string or fragment: what Istio's path matching sees.
fn path_only(path: &str) -> &str {
    path.find(['?', '#']).map_or(path, |i| &path[..i])
}

/// A (nested) claim: `path` names one level per element.
fn claim<'v>(claims: &'v Value, path: &[Box<str>]) -> Option<&'v Value> {
    path.iter().try_fold(claims, |v, key| v.get(&**key))
}

/// Strings match directly, lists of strings when any element does; other JSON types never
/// match (Envoy compares claims as strings).
fn claim_matches(c: &Value, values: &[StrMatch]) -> bool {
    let one = |s: &str| values.iter().any(|m| m.matches(s));
    match c {
        Value::String(s) => one(s),
        Value::Array(items) => items.iter().any(|i| i.as_str().is_some_and(one)),
        _ => false,
    }
}

fn header_matches(http: &HttpAttrs<'_>, name: &HeaderName, values: &[HeaderMatch]) -> bool {
    let mut all = http.headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return values.iter().any(|m| m.matches(None));
    };
    let first = first.to_str().unwrap_or("");
    match all.next() {
        None => values.iter().any(|m| m.matches(Some(first))),
        // Several values: compared joined, as Envoy does. Rare, so the join may allocate.
        Some(second) => {
            let mut joined = String::from(first);
            for v in std::iter::once(second).chain(all) {
                joined.push(',');
                joined.push_str(v.to_str().unwrap_or(""));
            }
            values.iter().any(|m| m.matches(Some(&joined)))
        }
    }
}

/// A check that must hold (or, negated, must not).
#[derive(Clone, Debug)]
struct Term {
    check: Check,
    negate: bool,
}

impl Term {
    fn holds(&self, a: &RequestAttrs<'_>, action: AuthzAction) -> bool {
        match self.check.any_matches(a) {
            Some(m) => m != self.negate,
            // Not applicable to this traffic: ignored by DENY/AUDIT (see the module doc); an
            // ALLOW rule with HTTP-only terms is already excluded for TCP by `Rule::matches`.
            None => action != AuthzAction::Allow,
        }
    }
}

/// All terms must hold.
#[derive(Clone, Debug, Default)]
struct Clause(Vec<Term>);

impl Clause {
    fn holds(&self, a: &RequestAttrs<'_>, action: AuthzAction) -> bool {
        self.0.iter().all(|t| t.holds(a, action))
    }
}

/// A compiled rule: any `from` clause, any `to` clause, and the `when` clause.
#[derive(Clone, Debug)]
pub struct Rule {
    from: Vec<Clause>,
    to: Vec<Clause>,
    when: Clause,
    /// Some term reads an HTTP-only attribute.
    http_only: bool,
    /// An ALLOW rule with a part that could not be compiled: it matches nothing.
    broken: bool,
}

impl Rule {
    pub fn matches(&self, a: &RequestAttrs<'_>, action: AuthzAction) -> bool {
        if self.broken || (self.http_only && a.http.is_none() && action == AuthzAction::Allow) {
            return false;
        }
        let any =
            |clauses: &[Clause]| clauses.is_empty() || clauses.iter().any(|c| c.holds(a, action));
        any(&self.from) && any(&self.to) && self.when.holds(a, action)
    }

    /// Compiles `rule` of the policy `policy` (`<namespace>/<name>`); what could not be
    /// compiled is pushed to `errors`.
    pub fn compile(
        policy: &str,
        action: AuthzAction,
        rule: &AuthzRule,
        errors: &mut Vec<RuleError>,
    ) -> Self {
        let mut b = Builder {
            namespace: policy.split_once('/').map_or("", |(ns, _)| ns),
            errors: Vec::new(),
            http_only: false,
        };
        let from = rule.from.iter().map(|s| b.source(s)).collect();
        let to = rule.to.iter().map(|o| b.operation(o)).collect();
        let mut when = Clause::default();
        for c in &rule.when {
            b.condition(c, &mut when);
        }
        let broken = action == AuthzAction::Allow && !b.errors.is_empty();
        let http_only = b.http_only;
        errors.append(&mut b.errors);
        Self {
            from,
            to,
            when,
            http_only,
            broken,
        }
    }
}

/// An attribute a rule can test, parsed from a field name or a `when` key.
#[derive(Clone, Debug)]
enum Key {
    SourcePrincipal,
    SourceNamespace,
    ServiceAccount,
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    Sni,
    RequestPrincipal,
    Audiences,
    Presenter,
    Claim(Box<[Box<str>]>),
    Header(HeaderName),
    Host,
    Method,
    Path,
}

impl Key {
    /// A `when` key, as Istio names them.
    fn parse(key: &str) -> Result<Key, RuleError> {
        Ok(match key {
            "source.ip" => Key::SourceIp,
            "remote.ip" => Key::RemoteIp,
            "destination.ip" => Key::DestinationIp,
            "destination.port" => Key::DestinationPort,
            "source.namespace" => Key::SourceNamespace,
            "source.principal" => Key::SourcePrincipal,
            "source.serviceAccount" => Key::ServiceAccount,
            "connection.sni" => Key::Sni,
            "request.auth.principal" => Key::RequestPrincipal,
            "request.auth.audiences" => Key::Audiences,
            "request.auth.presenter" => Key::Presenter,
            _ => {
                if let Some(rest) = key.strip_prefix("request.auth.claims") {
                    Key::Claim(brackets(key, rest)?.into_iter().map(Box::from).collect())
                } else if let Some(rest) = key.strip_prefix("request.headers") {
                    match brackets(key, rest)?.as_slice() {
                        [name] => Key::Header(
                            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                                .map_err(|_| RuleError::HeaderName((*name).to_string()))?,
                        ),
                        _ => return Err(RuleError::BadBrackets(key.to_string())),
                    }
                } else if key.starts_with("experimental.envoy.filters.") {
                    return Err(RuleError::Unsupported(key.to_string()));
                } else {
                    return Err(RuleError::UnknownKey(key.to_string()));
                }
            }
        })
    }
}

/// Compiles values into terms, keeping the errors.
struct Builder<'p> {
    /// The policy's namespace: `source.serviceAccount` values without one are in it.
    namespace: &'p str,
    errors: Vec<RuleError>,
    http_only: bool,
}

impl Builder<'_> {
    /// Compiles each value with `f`, keeping the ones that compile.
    fn values<T>(
        &mut self,
        values: &[String],
        f: impl Fn(&str) -> Result<T, ValueError>,
    ) -> Vec<T> {
        values
            .iter()
            .filter_map(|v| f(v).map_err(|e| self.errors.push(e.into())).ok())
            .collect()
    }

    fn check(&mut self, key: &Key, list: &[String]) -> Check {
        let strs = || list.iter().map(|v| StrMatch::new(v)).collect();
        match key {
            Key::SourcePrincipal => Check::SourcePrincipal(strs()),
            Key::SourceNamespace => Check::SourceNamespace(strs()),
            Key::ServiceAccount => Check::ServiceAccount(
                list.iter()
                    .map(|v| match v.split_once('/') {
                        Some((n, s)) => (n.into(), s.into()),
                        None => (self.namespace.into(), v.as_str().into()),
                    })
                    .collect(),
            ),
            Key::SourceIp => Check::SourceIp(self.values(list, Cidr::new)),
            Key::RemoteIp => Check::RemoteIp(self.values(list, Cidr::new)),
            Key::DestinationIp => Check::DestinationIp(self.values(list, Cidr::new)),
            Key::DestinationPort => Check::DestinationPort(self.values(list, port)),
            Key::Sni => Check::Sni(strs()),
            Key::RequestPrincipal => Check::RequestPrincipal(
                list.iter().map(|v| RequestPrincipalMatch::new(v)).collect(),
            ),
            Key::Audiences => Check::Audiences(strs()),
            Key::Presenter => Check::Presenter(strs()),
            Key::Claim(path) => Check::Claim {
                path: path.clone(),
                values: strs(),
            },
            Key::Header(name) => Check::Header {
                name: name.clone(),
                values: list.iter().map(|v| HeaderMatch::new(v)).collect(),
            },
            Key::Host => Check::Host(list.iter().map(|v| StrMatch::new_ignore_case(v)).collect()),
            Key::Method => Check::Method(strs()),
            Key::Path => Check::Path(self.values(list, PathMatch::new)),
        }
    }

    /// Pushes `values` and `not_values` of `key` as two terms. A list left empty (nothing
    /// given, or nothing compiled) adds no term.
    fn push(&mut self, clause: &mut Clause, key: Key, values: &[String], not_values: &[String]) {
        for (list, negate) in [(values, false), (not_values, true)] {
            if list.is_empty() {
                continue;
            }
            let check = self.check(&key, list);
            if check.is_empty() {
                continue;
            }
            self.http_only |= check.http_only();
            clause.0.push(Term { check, negate });
        }
    }

    fn source(&mut self, s: &AuthzSource) -> Clause {
        let mut c = Clause::default();
        self.push(
            &mut c,
            Key::SourcePrincipal,
            &s.principals,
            &s.not_principals,
        );
        self.push(
            &mut c,
            Key::RequestPrincipal,
            &s.request_principals,
            &s.not_request_principals,
        );
        self.push(
            &mut c,
            Key::SourceNamespace,
            &s.namespaces,
            &s.not_namespaces,
        );
        self.push(&mut c, Key::SourceIp, &s.ip_blocks, &s.not_ip_blocks);
        self.push(
            &mut c,
            Key::RemoteIp,
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
        );
        c
    }

    fn operation(&mut self, o: &AuthzOperation) -> Clause {
        let mut c = Clause::default();
        self.push(&mut c, Key::Host, &o.hosts, &o.not_hosts);
        let ports = |l: &[u16]| l.iter().map(u16::to_string).collect::<Vec<_>>();
        self.push(
            &mut c,
            Key::DestinationPort,
            &ports(&o.ports),
            &ports(&o.not_ports),
        );
        self.push(&mut c, Key::Method, &o.methods, &o.not_methods);
        self.push(&mut c, Key::Path, &o.paths, &o.not_paths);
        c
    }

    fn condition(&mut self, cond: &AuthzCondition, clause: &mut Clause) {
        match Key::parse(&cond.key) {
            Ok(key) => self.push(clause, key, &cond.values, &cond.not_values),
            // No term: an ALLOW rule is marked broken by the error, a DENY or AUDIT rule
            // goes without this condition.
            Err(e) => self.errors.push(e),
        }
    }
}

fn port(v: &str) -> Result<u16, ValueError> {
    v.trim()
        .parse()
        .map_err(|_| ValueError::Port(v.to_string()))
}

/// `[a]` or `[a][b]...` after the key's prefix.
fn brackets<'k>(key: &str, rest: &'k str) -> Result<Vec<&'k str>, RuleError> {
    let inner = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| RuleError::BadBrackets(key.to_string()))?;
    let parts: Vec<&str> = inner.split("][").collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains('[') || p.contains(']'))
    {
        return Err(RuleError::BadBrackets(key.to_string()));
    }
    Ok(parts)
}

/// The namespace in a principal `<td>/ns/<ns>/sa/<sa>`.
pub fn principal_namespace(p: &str) -> Option<&str> {
    let (_, rest) = p.split_once("/ns/")?;
    Some(rest.split_once('/').map_or(rest, |(ns, _)| ns))
}

/// The `(namespace, service account)` of a principal `<td>/ns/<ns>/sa/<sa>`.
pub fn principal_service_account(p: &str) -> Option<(&str, &str)> {
    let ns = principal_namespace(p)?;
    let (_, rest) = p.split_once("/sa/")?;
    Some((ns, rest.split_once('/').map_or(rest, |(sa, _)| sa)))
}
