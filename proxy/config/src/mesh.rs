//! Mesh-wide settings, resolved by the operator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{PeerAuthMode, Retry};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// SPIFFE trust domain: identities are `spiffe://<trustDomain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
    /// DNS suffix of Services: `<name>.<ns>.svc.<clusterDomain>`.
    pub cluster_domain: String,
    /// What happens to a host no service here knows.
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Retries for routes that set none (Istio's default policy unless the mesh changes it).
    pub default_retry: Retry,
    /// Mutual TLS mode where no PeerAuthentication applies (Istio: PERMISSIVE).
    pub default_mtls: PeerAuthMode,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            default_retry: Retry::istio_default(),
            default_mtls: PeerAuthMode::Permissive,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Unknown hosts pass through to their original destination.
    #[default]
    AllowAny,
    /// Unknown hosts get 502 with response flag NR.
    RegistryOnly,
}

/// What one Sidecar resource lets the workloads it applies to see, in a namespace where some
/// Sidecar has a `workloadSelector` (configs of other namespaces carry none). The config then
/// holds the services any of them sees; each proxy keeps those of its own scope (see
/// [`crate::ProxyConfig::for_workload`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarScope {
    /// `namespace/name` of the Sidecar; empty for a default scope without one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The labels of the workloads it applies to; `None`: the namespace's default (its
    /// namespace-wide Sidecar, else the root namespace's, else none), for the workloads no
    /// selecting Sidecar applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// The hosts of the services its workloads see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// What happens to a host they do not see.
    pub outbound_traffic_policy: OutboundTrafficPolicy,
}
