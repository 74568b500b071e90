//! Security policies into the proxy's inbound config: PeerAuthentication, AuthorizationPolicy
//! and RequestAuthentication. Policies of the root namespace apply to the whole mesh.

use mizzen_crds::{
    WorkloadSelector,
    security::{
        authorization_policy as ap, peer_authentication as pa, request_authentication as ra,
    },
};
use mizzen_proxy_config as pc;

use crate::index::DRY_RUN;

fn selector(s: Option<&WorkloadSelector>) -> pc::Selector {
    s.filter(|s| !s.match_labels.is_empty())
        .map(|s| s.match_labels.clone())
}

pub fn mtls_mode(m: Option<&pa::MutualTls>) -> pc::PeerAuthMode {
    match m.map(|m| m.mode).unwrap_or_default() {
        pa::MtlsMode::Unset => pc::PeerAuthMode::Unset,
        pa::MtlsMode::Disable => pc::PeerAuthMode::Disable,
        pa::MtlsMode::Permissive => pc::PeerAuthMode::Permissive,
        pa::MtlsMode::Strict => pc::PeerAuthMode::Strict,
    }
}

pub fn peer_authentication(
    ns: &str,
    name: &str,
    spec: &pa::PeerAuthenticationSpec,
) -> pc::PeerAuthentication {
    pc::PeerAuthentication {
        name: format!("{ns}/{name}"),
        selector: selector(spec.selector.as_ref()),
        mode: mtls_mode(spec.mtls.as_ref()),
        ports: spec
            .port_level_mtls
            .iter()
            .filter_map(|(port, m)| Some((port.parse::<u16>().ok()?, mtls_mode(Some(m)))))
            .collect(),
    }
}

/// `None` for CUSTOM policies (an external authorizer Mizzen does not call) and for policies
/// attached with `targetRef` (gateways and waypoints, not sidecars).
pub fn authorization_policy(
    ns: &str,
    name: &str,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    spec: &ap::AuthorizationPolicySpec,
    trust_domain: &str,
) -> Option<pc::AuthorizationPolicy> {
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        return None;
    }
    let action = match spec.action {
        ap::Action::Allow => pc::AuthzAction::Allow,
        ap::Action::Deny => pc::AuthzAction::Deny,
        ap::Action::Audit => pc::AuthzAction::Audit,
        ap::Action::Custom => return None,
    };
    let dry_run = annotations
        .and_then(|a| a.get(DRY_RUN))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    // `serviceAccounts: [ns/sa]` is shorthand for the principal `<td>/ns/<ns>/sa/<sa>`.
    let principal = |sa: &String| match sa.split_once('/') {
        Some((n, s)) => format!("{trust_domain}/ns/{n}/sa/{s}"),
        None => format!("{trust_domain}/ns/{ns}/sa/{sa}"),
    };
    let ports = |v: &[String]| v.iter().filter_map(|p| p.parse::<u16>().ok()).collect();
    let rules = spec
        .rules
        .iter()
        .map(|r| pc::AuthzRule {
            from: r
                .from
                .iter()
                .filter_map(|f| f.source.as_ref())
                .map(|s| pc::AuthzSource {
                    principals: s
                        .principals
                        .iter()
                        .cloned()
                        .chain(s.service_accounts.iter().map(principal))
                        .collect(),
                    not_principals: s
                        .not_principals
                        .iter()
                        .cloned()
                        .chain(s.not_service_accounts.iter().map(principal))
                        .collect(),
                    request_principals: s.request_principals.clone(),
                    not_request_principals: s.not_request_principals.clone(),
                    namespaces: s.namespaces.clone(),
                    not_namespaces: s.not_namespaces.clone(),
                    ip_blocks: s.ip_blocks.clone(),
                    not_ip_blocks: s.not_ip_blocks.clone(),
                    remote_ip_blocks: s.remote_ip_blocks.clone(),
                    not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
                })
                .collect(),
            to: r
                .to
                .iter()
                .filter_map(|t| t.operation.as_ref())
                .map(|o| pc::AuthzOperation {
                    hosts: o.hosts.clone(),
                    not_hosts: o.not_hosts.clone(),
                    ports: ports(&o.ports),
                    not_ports: ports(&o.not_ports),
                    methods: o.methods.clone(),
                    not_methods: o.not_methods.clone(),
                    paths: o.paths.clone(),
                    not_paths: o.not_paths.clone(),
                })
                .collect(),
            when: r
                .when
                .iter()
                .map(|c| pc::AuthzCondition {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    not_values: c.not_values.clone(),
                })
                .collect(),
        })
        .collect();
    Some(pc::AuthorizationPolicy {
        name: format!("{ns}/{name}"),
        selector: selector(spec.selector.as_ref()),
        action,
        dry_run,
        rules,
    })
}

/// `None` for policies attached with `targetRef` (gateways, not sidecars).
pub fn request_authentication(
    ns: &str,
    name: &str,
    spec: &ra::RequestAuthenticationSpec,
) -> Option<pc::RequestAuthentication> {
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        return None;
    }
    Some(pc::RequestAuthentication {
        name: format!("{ns}/{name}"),
        selector: selector(spec.selector.as_ref()),
        jwt_rules: spec
            .jwt_rules
            .iter()
            .map(|j| pc::JwtRule {
                issuer: j.issuer.clone(),
                audiences: j.audiences.clone(),
                jwks: j.jwks.clone(),
                jwks_uri: j.jwks_uri.clone().or_else(|| j.jwks_uri_legacy.clone()),
                from_headers: j
                    .from_headers
                    .iter()
                    .map(|h| pc::JwtHeader {
                        name: h.name.clone(),
                        prefix: h.prefix.clone(),
                    })
                    .collect(),
                from_params: j.from_params.clone(),
                from_cookies: j.from_cookies.clone(),
                forward_original_token: j.forward_original_token.unwrap_or(false),
                output_payload_to_header: j.output_payload_to_header.clone(),
                output_claim_to_headers: j
                    .output_claim_to_headers
                    .iter()
                    .map(|c| (c.claim.clone(), c.header.clone()))
                    .collect(),
                jwks_fetch_timeout_ms: j
                    .timeout
                    .as_ref()
                    .map(|d| u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX)),
                space_delimited_claims: j.space_delimited_claims.clone(),
            })
            .collect(),
    })
}
