//! `AuthorizationPolicy`: which requests a workload accepts, by who sends them, what they ask
//! for and under which conditions.
//!
//! Also home of [`PolicyTargetReference`] and the attachment rule (selector, targetRef or
//! targetRefs, at most one) that the security policies share.

use std::net::IpAddr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Normalize, WorkloadSelector,
    selector::is_dns_label,
    validate::{Checker, Code, Validate},
};

/// Access control for the selected workloads: requests that match a rule are allowed, denied or
/// audited according to `action`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    plural = "authorizationpolicies",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "ap",
    doc = "Access control for workloads (Istio AuthorizationPolicy).",
    category = "istio-io",
    category = "security-istio-io",
    printcolumn(
        name = "Action",
        type_ = "string",
        json_path = ".spec.action",
        description = "What happens to a request that matches the rules."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to; in the root namespace it selects across all
    /// namespaces. With no selector and no target the policy covers the whole namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource (a Gateway API gateway, a Service for a waypoint) to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Several resources to attach to; see `targetRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// A request matches the policy when it matches any rule. No rules never match: an
    /// ALLOW policy without rules denies everything; `rules: [{}]` matches everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub action: Action,
    /// The external authorizer of a CUSTOM policy, named in the mesh config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// What to do with a request that matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Only matching requests get through (once any ALLOW policy applies to a workload).
    #[default]
    Allow,
    /// Matching requests are refused; DENY is evaluated before ALLOW.
    Deny,
    /// Matching requests are marked for audit logging; the decision is not changed.
    Audit,
    /// An external authorizer decides for matching requests.
    Custom,
}

/// Names the external authorizer of a CUSTOM policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A resource a policy attaches to instead of selecting workloads by label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target; empty for the core group (a `Service`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Must be empty or the policy's own namespace: cross-namespace targets are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Sources, operations and conditions that must all match. An empty rule matches any request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Any of these sources; absent means any source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// Any of these operations; absent means any operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// All of these conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// One entry of `from`.
pub struct RuleFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// One entry of `to`.
pub struct RuleTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// Who sent a request. Every field that is set must match; within a field any value may.
/// String values match exactly, by prefix (`abc*`), by suffix (`*abc`) or as presence (`*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities from the client certificate: `<trust-domain>/ns/<ns>/sa/<sa>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// Request identities from a validated JWT: `<iss>/<sub>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Service accounts of the peer identity as `<namespace>/<name>`, exact only. Cannot be
    /// combined with principals or namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// IPs or CIDR blocks of the connection's source address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// IPs or CIDR blocks of the original client (X-Forwarded-For or PROXY protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// What a request asks for. Every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// HTTP hosts (`:authority`), matched case-insensitively. HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports of the connection, as decimal strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (gRPC is always `POST`). HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Normalised request paths; besides the `*` forms, path templates with whole-segment
    /// `{*}` (one segment) and a final `{**}` (the rest) are accepted. HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// A request attribute (see [`ConditionKey`]) that must have one of `values` and none of
/// `notValues`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// The attributes a `when` condition can test, parsed from its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[NAME]`
    RequestHeader(String),
    /// `source.ip`
    SourceIp,
    /// `remote.ip`
    RemoteIp,
    /// `source.namespace`
    SourceNamespace,
    /// `source.principal`
    SourcePrincipal,
    /// `request.auth.principal`
    RequestAuthPrincipal,
    /// `request.auth.audiences`
    RequestAuthAudiences,
    /// `request.auth.presenter`
    RequestAuthPresenter,
    /// `request.auth.claims[a]` or nested `request.auth.claims[a][b]`: the claim path.
    RequestAuthClaim(Vec<String>),
    /// `destination.ip`
    DestinationIp,
    /// `destination.port`
    DestinationPort,
    /// `connection.sni`
    ConnectionSni,
    /// `experimental.envoy.filters.*`: the part after the prefix.
    EnvoyFilter(String),
}

impl ConditionKey {
    /// Parses a condition key, or says why it is not one Istio documents.
    pub fn parse(key: &str) -> Result<Self, String> {
        let simple = match key {
            "source.ip" => Some(Self::SourceIp),
            "remote.ip" => Some(Self::RemoteIp),
            "source.namespace" => Some(Self::SourceNamespace),
            "source.principal" => Some(Self::SourcePrincipal),
            "request.auth.principal" => Some(Self::RequestAuthPrincipal),
            "request.auth.audiences" => Some(Self::RequestAuthAudiences),
            "request.auth.presenter" => Some(Self::RequestAuthPresenter),
            "destination.ip" => Some(Self::DestinationIp),
            "destination.port" => Some(Self::DestinationPort),
            "connection.sni" => Some(Self::ConnectionSni),
            _ => None,
        };
        if let Some(k) = simple {
            return Ok(k);
        }
        if let Some(rest) = key.strip_prefix("request.headers") {
            return match bracketed(rest).as_deref() {
                Some([name]) => Ok(Self::RequestHeader(name.clone())),
                _ => Err(format!(
                    "condition key {key:?} must name one header, as request.headers[NAME]"
                )),
            };
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims") {
            return match bracketed(rest) {
                Some(path) if !path.is_empty() => Ok(Self::RequestAuthClaim(path)),
                _ => Err(format!(
                    "condition key {key:?} must name a claim, as request.auth.claims[NAME] or request.auth.claims[NAME][NESTED]"
                )),
            };
        }
        if let Some(rest) = key.strip_prefix("experimental.envoy.filters.") {
            let name_ok = !rest.is_empty()
                && match rest.find('[') {
                    Some(i) => i > 0 && bracketed(&rest[i..]).is_some_and(|p| !p.is_empty()),
                    None => !rest.contains(']'),
                };
            return if name_ok {
                Ok(Self::EnvoyFilter(rest.to_string()))
            } else {
                Err(format!(
                    "condition key {key:?} must name a filter attribute, as experimental.envoy.filters.FILTER[KEY]"
                ))
            };
        }
        Err(format!(
            "unknown condition key {key:?}: use one of request.headers[NAME], source.ip, remote.ip, \
             source.namespace, source.principal, request.auth.principal, request.auth.audiences, \
             request.auth.presenter, request.auth.claims[NAME], destination.ip, destination.port, \
             connection.sni or experimental.envoy.filters.*"
        ))
    }

    /// What the values of a condition on this key must look like.
    fn value_kind(&self) -> ValueKind {
        match self {
            Self::SourceIp | Self::RemoteIp | Self::DestinationIp => ValueKind::IpBlock,
            Self::DestinationPort => ValueKind::Port,
            _ => ValueKind::Text,
        }
    }
}

/// `[a][b]` → `["a", "b"]`; `None` unless the whole input is non-empty bracket groups.
fn bracketed(mut s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    while !s.is_empty() {
        let inner = s.strip_prefix('[')?;
        let end = inner.find(']')?;
        let part = &inner[..end];
        if part.is_empty() || part.contains('[') {
            return None;
        }
        parts.push(part.to_string());
        s = &inner[end + 1..];
    }
    Some(parts)
}

#[derive(Clone, Copy)]
enum ValueKind {
    IpBlock,
    Port,
    Text,
}

impl Normalize for AuthorizationPolicySpec {}

impl Validate for AuthorizationPolicySpec {
    fn validate(&self, c: &mut Checker) {
        check_attachment(
            c,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );

        match (self.action, &self.provider) {
            (Action::Custom, provider) => {
                c.field("action", |c| {
                    c.error(
                        Code::NotSupported,
                        "CUSTOM authorization (external authorizers) is not supported by Mizzen",
                    )
                });
                match provider {
                    None => c.field("provider", |c| {
                        c.error(Code::MissingField, "is required when action is CUSTOM")
                    }),
                    Some(p) => c.field("provider", |c| c.require("name", !p.name.is_empty())),
                }
            }
            (action, Some(_)) => c.field("provider", |c| {
                c.error(
                    Code::ConflictingFields,
                    format!("provider may only be set when action is CUSTOM (got {action:?})"),
                )
            }),
            (_, None) => {}
        }

        c.each("rules", &self.rules, |c, rule| rule.validate(c));
    }
}

impl Validate for Rule {
    fn validate(&self, c: &mut Checker) {
        c.each("from", &self.from, |c, from| match &from.source {
            None => c.require("source", false),
            Some(source) => c.field("source", |c| source.validate(c)),
        });
        c.each("to", &self.to, |c, to| match &to.operation {
            None => c.require("operation", false),
            Some(op) => c.field("operation", |c| op.validate(c)),
        });
        c.each("when", &self.when, |c, cond| cond.validate(c));
    }
}

impl Validate for Source {
    fn validate(&self, c: &mut Checker) {
        if *self == Source::default() {
            c.error(
                Code::MissingField,
                "a source must set at least one field; leave `from` out to match any source",
            );
            return;
        }
        for (name, values) in [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
        ] {
            each_value(c, name, values, |c, v| {
                if let Some(msg) = wildcard_error(v) {
                    c.error(Code::InvalidValue, msg);
                }
            });
        }

        let accounts = !self.service_accounts.is_empty() || !self.not_service_accounts.is_empty();
        let identities = [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
        ];
        if accounts {
            let clashing: Vec<&str> = identities
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, _)| *n)
                .collect();
            if !clashing.is_empty() {
                let field = if self.service_accounts.is_empty() {
                    "notServiceAccounts"
                } else {
                    "serviceAccounts"
                };
                c.field(field, |c| {
                    c.error(
                        Code::ConflictingFields,
                        format!(
                            "{field} cannot be combined with principals or namespaces (also set: {})",
                            clashing.join(", ")
                        ),
                    )
                });
            }
        }
        for (name, values) in [
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
        ] {
            if values.len() > MAX_SERVICE_ACCOUNTS {
                c.field(name, |c| {
                    c.error(
                        Code::InvalidValue,
                        format!(
                            "at most {MAX_SERVICE_ACCOUNTS} service accounts are allowed (got {})",
                            values.len()
                        ),
                    )
                });
            }
            each_value(c, name, values, |c, v| {
                if let Some(msg) = service_account_error(v) {
                    c.error(Code::InvalidValue, msg);
                }
            });
        }

        for (name, values) in [
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ] {
            each_value(c, name, values, |c, v| {
                if let Some(msg) = ip_block_error(v) {
                    c.error(Code::InvalidValue, msg);
                }
            });
        }
    }
}

impl Validate for Operation {
    fn validate(&self, c: &mut Checker) {
        if *self == Operation::default() {
            c.error(
                Code::MissingField,
                "an operation must set at least one field; leave `to` out to match any operation",
            );
            return;
        }
        for (name, values) in [("hosts", &self.hosts), ("notHosts", &self.not_hosts)] {
            each_value(c, name, values, |c, v| {
                if let Some(msg) = wildcard_error(v) {
                    c.error(Code::InvalidHost, msg);
                }
            });
        }
        for (name, values) in [("ports", &self.ports), ("notPorts", &self.not_ports)] {
            each_value(c, name, values, check_port_value);
        }
        for (name, values) in [
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
        ] {
            each_value(c, name, values, |c, v| {
                if let Some(msg) = wildcard_error(v) {
                    c.error(Code::InvalidValue, msg);
                }
            });
        }
        for (name, values) in [("paths", &self.paths), ("notPaths", &self.not_paths)] {
            each_value(c, name, values, |c, v| {
                if let Some(msg) = path_error(v) {
                    c.error(Code::InvalidValue, msg);
                }
            });
        }
    }
}

impl Validate for Condition {
    fn validate(&self, c: &mut Checker) {
        if self.key.is_empty() {
            c.require("key", false);
            return;
        }
        let kind = match ConditionKey::parse(&self.key) {
            Ok(key) => key.value_kind(),
            Err(msg) => {
                c.field("key", |c| c.error(Code::InvalidValue, msg));
                ValueKind::Text
            }
        };
        if self.values.is_empty() && self.not_values.is_empty() {
            c.error(
                Code::MissingField,
                format!(
                    "a condition needs values or notValues (key {:?} has neither)",
                    self.key
                ),
            );
        }
        for (name, values) in [("values", &self.values), ("notValues", &self.not_values)] {
            each_value(c, name, values, |c, v| match kind {
                ValueKind::IpBlock => {
                    if let Some(msg) = ip_block_error(v) {
                        c.error(Code::InvalidValue, msg);
                    }
                }
                ValueKind::Port => check_port_value(c, v),
                ValueKind::Text => {
                    if let Some(msg) = wildcard_error(v) {
                        c.error(Code::InvalidValue, msg);
                    }
                }
            });
        }
    }
}

/// Istio's limit on `serviceAccounts` and `notServiceAccounts`.
pub const MAX_SERVICE_ACCOUNTS: usize = 16;

/// Checks how a security policy attaches: at most one of `selector`, `targetRef` and
/// `targetRefs`, and well-formed targets.
pub fn check_attachment(
    c: &mut Checker,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set: Vec<&str> = [
        ("selector", selector.is_some()),
        ("targetRef", target_ref.is_some()),
        ("targetRefs", !target_refs.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    if set.len() > 1 {
        c.error(
            Code::ConflictingFields,
            format!(
                "only one of selector, targetRef or targetRefs may be set (got {})",
                set.join(" and ")
            ),
        );
    }

    c.opt("selector", selector, |c, s| c.selector(s));
    c.opt("targetRef", target_ref, |c, t| t.validate(c));
    c.each("targetRefs", target_refs, |c, t| t.validate(c));
    if target_ref.is_some() || !target_refs.is_empty() {
        let field = if target_ref.is_some() {
            "targetRef"
        } else {
            "targetRefs"
        };
        c.not_supported(
            field,
            "Mizzen applies security policies to the sidecars and gateways a selector (or the \
                 namespace) picks; targetRef attaches to Gateway API gateways and waypoints, which \
                 Mizzen does not run, so this policy applies to no workload",
        );
    }
}

impl Validate for PolicyTargetReference {
    fn validate(&self, c: &mut Checker) {
        if !self.group.is_empty() && !is_dns_subdomain(&self.group) {
            c.field("group", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "group {:?} must be empty (the core group) or a DNS subdomain",
                        self.group
                    ),
                )
            });
        }
        c.require("kind", !self.kind.is_empty());
        if !self.kind.is_empty() && !is_kind(&self.kind) {
            c.field("kind", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "kind {:?} must be a Kubernetes kind such as Gateway or Service",
                        self.kind
                    ),
                )
            });
        }
        c.require("name", !self.name.is_empty());
        if self.name.len() > 253 {
            c.field("name", |c| {
                c.error(Code::InvalidValue, "name must be at most 253 characters")
            });
        }
        if let Some(ns) = self.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            c.field("namespace", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "cross-namespace targets are not supported: leave namespace empty (got {ns:?})"
                    ),
                )
            });
        }
    }
}

/// Runs `check` on each non-empty value of the list field `name`; empty strings are errors.
fn each_value(
    c: &mut Checker,
    name: &str,
    values: &[String],
    mut check: impl FnMut(&mut Checker, &str),
) {
    c.each(name, values, |c, v| {
        if v.is_empty() {
            c.error(Code::InvalidValue, "values must not be empty strings");
        } else {
            check(c, v);
        }
    });
}

fn check_port_value(c: &mut Checker, v: &str) {
    match v.parse::<i64>() {
        Ok(n) => c.port(n),
        Err(_) => c.error(
            Code::InvalidPort,
            format!("ports are numbers between 1 and 65535 written as strings (got {v:?})"),
        ),
    }
}

/// Istio's string match forms: exact, `prefix*`, `*suffix` or `*` alone.
pub fn wildcard_error(value: &str) -> Option<String> {
    let stars = value.matches('*').count();
    let ok = stars == 0
        || value == "*"
        || (stars == 1 && (value.starts_with('*') || value.ends_with('*')));
    (!ok).then(|| {
        format!(
            "{value:?} is not a supported match: `*` may only stand alone, start the value (suffix match) or end it (prefix match)"
        )
    })
}

/// A path is a string match or a path template whose `{*}` and `{**}` operators are whole
/// segments, with `{**}` only last.
pub fn path_error(path: &str) -> Option<String> {
    if !path.contains(['{', '}']) {
        return wildcard_error(path);
    }
    let bad = |why: &str| Some(format!("invalid path template {path:?}: {why}"));
    if !path.starts_with('/') {
        return bad("it must start with /");
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "{*}" => {}
            "{**}" if i + 1 == segments.len() => {}
            "{**}" => return bad("{**} may only be the last segment"),
            s if s.contains(['{', '}', '*']) => {
                return bad("{*} and {**} must be whole segments and cannot be mixed with *");
            }
            _ => {}
        }
    }
    None
}

/// A single IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn ip_block_error(value: &str) -> Option<String> {
    let ok = match value.split_once('/') {
        None => value.parse::<IpAddr>().is_ok(),
        Some((addr, len)) => match (addr.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(len)) => len <= 32,
            (Ok(IpAddr::V6(_)), Ok(len)) => len <= 128,
            _ => false,
        },
    };
    (!ok).then(|| format!("{value:?} is not an IP address or CIDR block (such as 10.0.0.0/8)"))
}

/// `<namespace>/<service-account>`, exact (no wildcards), at most 320 characters.
fn service_account_error(value: &str) -> Option<String> {
    if value.len() > 320 {
        return Some(format!(
            "service account {value:?} is longer than 320 characters"
        ));
    }
    match value.split_once('/') {
        Some((ns, sa)) if is_dns_label(ns) && is_dns_subdomain(sa) => None,
        _ => Some(format!(
            "service account {value:?} must be written as <namespace>/<name>, without wildcards"
        )),
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes kind: a letter, then letters, digits or `-`, at most 63 characters.
fn is_kind(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    fn parse(yaml: &str) -> AuthorizationPolicySpec {
        crate::testing::parse(yaml)
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        validate_spec(&parse(yaml))
    }

    fn assert_one(yaml: &str, path: &str, code: Code) -> Problem {
        crate::testing::only(problems(yaml), path, code)
    }

    const HTTPBIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/curl"]
    - source:
        namespaces: ["test"]
        notIpBlocks: ["203.0.113.4", "2001:db8::/32"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*", "/api/{*}/items/{**}"]
        ports: ["8000"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
        hosts: ["*.example.com"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
    - key: request.auth.claims[groups][admin]
      values: ["true"]
    - key: request.headers[User-Agent]
      notValues: ["curl*"]
    - key: source.ip
      values: ["10.1.2.0/24"]
    - key: destination.port
      values: ["8000"]
  - {}
"#;

    #[test]
    fn parses_an_istio_docs_like_policy_and_round_trips() {
        let ap: AuthorizationPolicy = serde_saphyr::from_str(HTTPBIN).unwrap();
        let spec = &ap.spec;
        assert_eq!(spec.action, Action::Allow);
        assert_eq!(spec.rules.len(), 2);
        assert_eq!(spec.rules[1], Rule::default());
        let op = spec.rules[0].to[0].operation.as_ref().unwrap();
        assert_eq!(op.paths, ["/info*", "/api/{*}/items/{**}"]);
        assert_eq!(spec.rules[0].when[2].not_values, ["curl*"]);

        let json = serde_json::to_value(&ap).unwrap();
        assert_eq!(
            json["spec"]["rules"][0]["from"][1]["source"]["notIpBlocks"][1],
            "2001:db8::/32"
        );
        let back: AuthorizationPolicy = serde_json::from_value(json).unwrap();
        assert_eq!(back, ap);
        assert_eq!(validate_spec(spec), vec![]);
    }

    #[test]
    fn crd_names_and_columns() {
        use kube::CustomResourceExt;
        let crd = AuthorizationPolicy::crd();
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["ap".to_string()][..])
        );
        let cats = crd.spec.names.categories.clone().unwrap();
        assert_eq!(cats, ["istio-io", "security-istio-io"]);
        let cols = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap();
        assert_eq!(cols[0].json_path, ".spec.action");
    }

    #[test]
    fn deny_all_allow_all_and_deny_with_jwt_conditions_are_legal() {
        // ALLOW without rules denies everything; an empty rule matches everything.
        assert_eq!(problems("{}"), vec![]);
        assert_eq!(problems("rules:\n- {}\n"), vec![]);
        assert_eq!(
            problems(
                "action: DENY\nrules:\n- when:\n  - key: request.auth.audiences\n    notValues: [\"api\"]\n  - key: request.auth.presenter\n    values: [\"*\"]\n"
            ),
            vec![]
        );
        assert_eq!(
            problems(
                "action: AUDIT\nrules:\n- to:\n  - operation:\n      notPaths: [\"*/health\"]\n"
            ),
            vec![]
        );
    }

    #[test]
    fn schema_refuses_unknown_actions_and_fields() {
        assert!(serde_saphyr::from_str::<AuthorizationPolicySpec>("action: allow\n").is_err());
        assert!(
            serde_saphyr::from_str::<AuthorizationPolicySpec>(
                "rules:\n- from:\n  - source:\n      principal: [a]\n"
            )
            .is_err()
        );
    }

    #[test]
    fn custom_is_not_supported_and_needs_a_provider() {
        let p = problems("action: CUSTOM\nprovider:\n  name: my-ext-authz\nrules:\n- {}\n");
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(
            (p[0].path.as_str(), p[0].code),
            ("spec.action", Code::NotSupported)
        );
        assert_eq!(p[0].severity, Severity::Error);
        assert_eq!(
            p[0].message,
            "CUSTOM authorization (external authorizers) is not supported by Mizzen"
        );

        let p = problems("action: CUSTOM\n");
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!(
            (p[1].path.as_str(), p[1].code),
            ("spec.provider", Code::MissingField)
        );

        let p = problems("action: CUSTOM\nprovider: {}\n");
        assert_eq!(
            (p[1].path.as_str(), p[1].code),
            ("spec.provider.name", Code::MissingField)
        );
    }

    #[test]
    fn provider_only_with_custom() {
        let p = assert_one(
            "action: DENY\nprovider:\n  name: x\n",
            "spec.provider",
            Code::ConflictingFields,
        );
        assert!(p.message.contains("Deny"), "{p}");
    }

    #[test]
    fn selector_and_targets_exclude_each_other() {
        let p = problems(
            "selector:\n  matchLabels:\n    app: a\ntargetRef:\n  group: gateway.networking.k8s.io\n  kind: Gateway\n  name: gw\n",
        );
        assert_eq!(
            (p[0].path.as_str(), p[0].code),
            ("spec", Code::ConflictingFields)
        );
        assert!(p[0].message.contains("selector and targetRef"), "{}", p[0]);
        // Targets are accepted with a warning: Mizzen has nothing to attach them to.
        assert_eq!(
            (p[1].path.as_str(), p[1].code, p[1].severity),
            ("spec.targetRef", Code::NotSupported, Severity::Warn)
        );
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn target_refs_are_checked() {
        let p = problems(
            "targetRefs:\n- group: Bad_Group\n  kind: Gateway\n  name: gw\n- kind: Service\n  name: svc\n  namespace: other\n- group: \"\"\n  kind: \"\"\n  name: x\n",
        );
        let errors: Vec<(&str, Code)> = p
            .iter()
            .filter(|p| p.is_error())
            .map(|p| (p.path.as_str(), p.code))
            .collect();
        assert_eq!(
            errors,
            [
                ("spec.targetRefs[0].group", Code::InvalidValue),
                ("spec.targetRefs[1].namespace", Code::InvalidValue),
                ("spec.targetRefs[2].kind", Code::MissingField),
            ]
        );
    }

    #[test]
    fn ip_blocks_must_be_ips_or_cidrs() {
        let p = assert_one(
            "rules:\n- from:\n  - source:\n      ipBlocks: [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
            "spec.rules[0].from[0].source.ipBlocks[1]",
            Code::InvalidValue,
        );
        assert!(p.message.contains("10.0.0.0/33"), "{p}");
        assert_one(
            "rules:\n- from:\n  - source:\n      notRemoteIpBlocks: [\"example.com\"]\n",
            "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
            Code::InvalidValue,
        );
        for ok in ["1.2.3.4", "0.0.0.0/0", "::1", "fd00::/8"] {
            assert_eq!(ip_block_error(ok), None, "{ok}");
        }
    }

    #[test]
    fn ports_are_numeric_strings_in_range() {
        assert_one(
            "rules:\n- to:\n  - operation:\n      ports: [\"http\"]\n",
            "spec.rules[0].to[0].operation.ports[0]",
            Code::InvalidPort,
        );
        let p = assert_one(
            "rules:\n- to:\n  - operation:\n      notPorts: [\"80\", \"0\"]\n",
            "spec.rules[0].to[0].operation.notPorts[1]",
            Code::InvalidPort,
        );
        assert!(p.message.contains("got 0"), "{p}");
    }

    #[test]
    fn wildcards_only_at_the_ends() {
        assert_one(
            "rules:\n- to:\n  - operation:\n      paths: [\"/api/*/items\"]\n",
            "spec.rules[0].to[0].operation.paths[0]",
            Code::InvalidValue,
        );
        assert_one(
            "rules:\n- to:\n  - operation:\n      hosts: [\"foo.*.com\"]\n",
            "spec.rules[0].to[0].operation.hosts[0]",
            Code::InvalidHost,
        );
        assert_one(
            "rules:\n- from:\n  - source:\n      principals: [\"*/ns/*\"]\n",
            "spec.rules[0].from[0].source.principals[0]",
            Code::InvalidValue,
        );
        for ok in ["*", "/api*", "*.example.com", "exact"] {
            assert_eq!(wildcard_error(ok), None, "{ok}");
        }
    }

    #[test]
    fn path_templates() {
        for ok in ["/a/{*}/b", "/a/{**}", "/{*}", "/a/{*}/{**}"] {
            assert_eq!(path_error(ok), None, "{ok}");
        }
        for bad in ["/a/{**}/b", "/a/x{*}", "a/{*}", "/a/{*}*", "/a/{x}"] {
            assert!(path_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn empty_sources_operations_and_values() {
        assert_one(
            "rules:\n- from:\n  - {}\n",
            "spec.rules[0].from[0].source",
            Code::MissingField,
        );
        assert_one(
            "rules:\n- from:\n  - source: {}\n",
            "spec.rules[0].from[0].source",
            Code::MissingField,
        );
        assert_one(
            "rules:\n- to:\n  - operation: {}\n",
            "spec.rules[0].to[0].operation",
            Code::MissingField,
        );
        assert_one(
            "rules:\n- to:\n  - operation:\n      methods: [\"\"]\n",
            "spec.rules[0].to[0].operation.methods[0]",
            Code::InvalidValue,
        );
    }

    #[test]
    fn service_accounts() {
        assert_eq!(
            problems("rules:\n- from:\n  - source:\n      serviceAccounts: [\"default/curl\"]\n"),
            vec![]
        );
        let p = assert_one(
            "rules:\n- from:\n  - source:\n      serviceAccounts: [\"default/curl\"]\n      namespaces: [prod]\n",
            "spec.rules[0].from[0].source.serviceAccounts",
            Code::ConflictingFields,
        );
        assert!(p.message.contains("namespaces"), "{p}");
        assert_one(
            "rules:\n- from:\n  - source:\n      notServiceAccounts: [\"default/*\"]\n",
            "spec.rules[0].from[0].source.notServiceAccounts[0]",
            Code::InvalidValue,
        );
        let many: Vec<String> = (0..17).map(|i| format!("\"ns/sa{i}\"")).collect();
        assert_one(
            &format!(
                "rules:\n- from:\n  - source:\n      serviceAccounts: [{}]\n",
                many.join(",")
            ),
            "spec.rules[0].from[0].source.serviceAccounts",
            Code::InvalidValue,
        );
    }

    #[test]
    fn condition_keys_are_istios() {
        for (key, parsed) in [
            (
                "request.headers[x-token]",
                ConditionKey::RequestHeader("x-token".into()),
            ),
            ("remote.ip", ConditionKey::RemoteIp),
            ("connection.sni", ConditionKey::ConnectionSni),
            (
                "request.auth.claims[a][b]",
                ConditionKey::RequestAuthClaim(vec!["a".into(), "b".into()]),
            ),
            (
                "experimental.envoy.filters.network.mysql_proxy[db.table]",
                ConditionKey::EnvoyFilter("network.mysql_proxy[db.table]".into()),
            ),
        ] {
            assert_eq!(ConditionKey::parse(key), Ok(parsed), "{key}");
        }
        for bad in [
            "source.user",
            "request.headers",
            "request.headers[]",
            "request.headers[a][b]",
            "request.auth.claims",
            "request.auth.claims[a",
            "experimental.envoy.filters.",
            "request.auth.principals",
        ] {
            assert!(ConditionKey::parse(bad).is_err(), "{bad}");
        }
        let p = assert_one(
            "rules:\n- when:\n  - key: source.user\n    values: [a]\n",
            "spec.rules[0].when[0].key",
            Code::InvalidValue,
        );
        assert!(p.message.contains("source.user"), "{p}");
    }

    #[test]
    fn conditions_need_values_of_the_right_kind() {
        let p = assert_one(
            "rules:\n- when:\n  - key: source.namespace\n",
            "spec.rules[0].when[0]",
            Code::MissingField,
        );
        assert!(p.message.contains("source.namespace"), "{p}");
        assert_one(
            "rules:\n- when:\n  - values: [a]\n",
            "spec.rules[0].when[0].key",
            Code::MissingField,
        );
        assert_one(
            "rules:\n- when:\n  - key: destination.ip\n    notValues: [\"10.0.0.300\"]\n",
            "spec.rules[0].when[0].notValues[0]",
            Code::InvalidValue,
        );
        assert_one(
            "rules:\n- when:\n  - key: destination.port\n    values: [\"eighty\"]\n",
            "spec.rules[0].when[0].values[0]",
            Code::InvalidPort,
        );
        assert_one(
            "rules:\n- when:\n  - key: request.auth.claims[groups]\n    values: [\"a*b\"]\n",
            "spec.rules[0].when[0].values[0]",
            Code::InvalidValue,
        );
    }

    #[test]
    fn selector_labels_are_checked() {
        assert_one(
            "selector:\n  matchLabels:\n    \"a b\": x\n",
            "spec.selector.matchLabels[a b]",
            Code::InvalidSelector,
        );
    }
}
