//! AuthorizationPolicy for one workload: the policies that select it, compiled once per config
//! into an [`Authorizer`] that decides each request without parsing or allocating.
//!
//! Istio's evaluation order: CUSTOM (never here: the operator does not render CUSTOM policies,
//! and validation says "not supported"), then DENY (any match denies), then ALLOW (when any
//! ALLOW policy selects the workload, the request must match one; when none does, it is
//! allowed). AUDIT policies only mark the request. Policies annotated `istio.io/dry-run` are
//! evaluated apart, as Istio's shadow rules are, and reported; they never change the verdict.

mod rule;

use std::{collections::BTreeMap, net::IpAddr};

use http::HeaderMap;
use mizzen_proxy_config::{AuthzAction, InboundConfig, selects};

use rule::Rule;
pub use rule::RuleError;

use crate::jwt::Principal;

/// Status of a denied request, as Envoy's RBAC filter answers.
pub const DENIED_STATUS: u16 = 403;
/// Body of a denied request, as Envoy's RBAC filter answers.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What a request (or a TCP connection) offers to be authorized on. Everything is borrowed from
/// the request, so building one allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestAttrs<'a> {
    /// The peer's identity from its mTLS certificate (`spiffe://` prefix optional, e.g.
    /// `cluster.local/ns/default/sa/sleep`); `None` for plaintext. `principals`,
    /// `namespaces`, `source.principal`, `source.namespace` and `source.serviceAccount` read it.
    pub source_principal: Option<&'a str>,
    /// The address of the connection's peer (`ipBlocks`, `source.ip`).
    pub source_ip: Option<IpAddr>,
    /// The original client, from `x-forwarded-for` under the trusted-hop count or the PROXY
    /// protocol (`remoteIpBlocks`, `remote.ip`); `None` means the same as `source_ip`.
    pub remote_ip: Option<IpAddr>,
    /// The workload address the connection arrived on (`destination.ip`).
    pub destination_ip: Option<IpAddr>,
    /// The workload port (`ports`, `destination.port`).
    pub destination_port: u16,
    /// The TLS server name the peer asked for (`connection.sni`).
    pub sni: Option<&'a str>,
    /// The HTTP request; `None` for TCP traffic.
    pub http: Option<HttpAttrs<'a>>,
}

/// The HTTP part of [`RequestAttrs`].
#[derive(Clone, Copy, Debug)]
pub struct HttpAttrs<'a> {
    /// `:authority` / `Host`, as sent (`hosts` compares without regard to case, and with the
    /// port if the client sent one, as Istio does).
    pub host: &'a str,
    pub method: &'a str,
    /// The path as normalised by the proxy; a query string is ignored by matching.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The JWT principal RequestAuthentication validated, if any.
    pub request_principal: Option<&'a Principal>,
}

impl<'a> RequestAttrs<'a> {
    /// The source principal without `spiffe://`.
    fn principal(&self) -> Option<&'a str> {
        self.source_principal
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p))
    }

    /// The namespace in the source principal: Istio derives `source.namespace` from the
    /// peer certificate, never from anything the client can set.
    pub fn source_namespace(&self) -> Option<&'a str> {
        self.principal().and_then(rule::principal_namespace)
    }

    fn source_service_account(&self) -> Option<(&'a str, &'a str)> {
        self.principal().and_then(rule::principal_service_account)
    }

    fn remote_ip(&self) -> Option<IpAddr> {
        self.remote_ip.or(self.source_ip)
    }
}

/// The decision on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// Whether the request may proceed; if not, answer [`DENIED_STATUS`] with
    /// [`DENIED_BODY`].
    pub allowed: bool,
    /// The enforced policy that decided (`<namespace>/<name>`): the DENY that matched, or the
    /// ALLOW that matched. `None` when no policy matched (allowed because no ALLOW policy
    /// applies, or denied because none of the ALLOW policies matched).
    pub policy: Option<&'a str>,
    /// Whether the dry-run policies would have denied the request, judged as Istio's shadow
    /// rules are: a dry-run DENY matches, or there are dry-run ALLOW policies and none matches.
    pub dry_run_would_deny: bool,
    /// The dry-run policy that decided `dry_run_would_deny`, as `policy` for enforced ones.
    pub dry_run_policy: Option<&'a str>,
    /// Whether an AUDIT policy matched: the access log marks the request.
    pub audit: bool,
}

/// A compiled policy.
#[derive(Clone, Debug)]
struct Policy {
    name: Box<str>,
    rules: Vec<Rule>,
}

impl Policy {
    fn matches(&self, a: &RequestAttrs<'_>, action: AuthzAction) -> bool {
        self.rules.iter().any(|r| r.matches(a, action))
    }
}

/// Policies of one action, enforced or dry-run.
#[derive(Clone, Debug, Default)]
struct Set {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
}

impl Set {
    /// `(allowed, deciding policy)` under Istio's order.
    fn decide(&self, a: &RequestAttrs<'_>) -> (bool, Option<&str>) {
        if let Some(p) = self.deny.iter().find(|p| p.matches(a, AuthzAction::Deny)) {
            return (false, Some(&p.name));
        }
        if self.allow.is_empty() {
            return (true, None);
        }
        match self.allow.iter().find(|p| p.matches(a, AuthzAction::Allow)) {
            Some(p) => (true, Some(&p.name)),
            None => (false, None),
        }
    }

    fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty()
    }
}

/// The AuthorizationPolicies that select one workload, compiled.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    enforced: Set,
    dry_run: Set,
    audit: Vec<Policy>,
    warnings: Vec<String>,
}

impl Authorizer {
    /// Compiles the policies of `inbound` that select a workload with `labels`. What cannot be
    /// compiled is handled as Istio does (see [`warnings`](Self::warnings)); this never fails,
    /// so a config with one bad value still enforces everything else.
    pub fn new(inbound: &InboundConfig, labels: &BTreeMap<String, String>) -> Self {
        let mut out = Self::default();
        for p in &inbound.authorization {
            if !selects(&p.selector, labels) {
                continue;
            }
            let effect = match p.action {
                AuthzAction::Allow => "the rule allows nothing",
                AuthzAction::Deny | AuthzAction::Audit => "left out, so the rule matches more",
            };
            let mut rules = Vec::with_capacity(p.rules.len());
            for (i, r) in p.rules.iter().enumerate() {
                let mut errors = Vec::new();
                rules.push(Rule::compile(&p.name, p.action, r, &mut errors));
                out.warnings.extend(
                    errors.iter().map(|e| {
                        format!("AuthorizationPolicy {}: rules[{i}]: {e}; {effect}", p.name)
                    }),
                );
            }
            let policy = Policy {
                name: p.name.as_str().into(),
                rules,
            };
            let set = if p.dry_run {
                &mut out.dry_run
            } else {
                &mut out.enforced
            };
            match p.action {
                AuthzAction::Allow => set.allow.push(policy),
                AuthzAction::Deny => set.deny.push(policy),
                // Istio has no dry-run for AUDIT: it never enforces anyway.
                AuthzAction::Audit => out.audit.push(policy),
            }
        }
        out
    }

    /// Decides on a request or TCP connection.
    pub fn authorize<'s>(&'s self, a: &RequestAttrs<'_>) -> Verdict<'s> {
        let (allowed, policy) = self.enforced.decide(a);
        let (dry_run_would_deny, dry_run_policy) = if self.dry_run.is_empty() {
            (false, None)
        } else {
            let (ok, p) = self.dry_run.decide(a);
            (!ok, p)
        };
        Verdict {
            allowed,
            policy,
            dry_run_would_deny,
            dry_run_policy,
            audit: self.audit.iter().any(|p| p.matches(a, AuthzAction::Audit)),
        }
    }

    /// True when no policy selects the workload: every request is allowed, and the proxy may
    /// skip building [`RequestAttrs`].
    pub fn is_empty(&self) -> bool {
        self.enforced.is_empty() && self.dry_run.is_empty() && self.audit.is_empty()
    }

    /// What could not be compiled, one line per problem naming the policy, for the config-load
    /// log. Istio's rule is kept: in an ALLOW policy the rule with the problem allows nothing;
    /// in a DENY or AUDIT policy the bad value or condition is left out, so the rule matches
    /// more. Unsupported `when` keys (`experimental.envoy.filters.*`) are handled the same way.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}
