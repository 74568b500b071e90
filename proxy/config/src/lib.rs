//! The rendered proxy configuration, format `mizzen.io/proxy-config/v1`.
//!
//! The operator renders one [`ProxyConfig`] per meshed namespace from the Istio resources (into
//! the ConfigMap `mizzen-proxy-config`, key `config.json`); the proxy reads exactly this. It is
//! an intermediate form, not the Istio API: hosts are fully qualified, defaults are resolved,
//! older spellings are gone, durations are milliseconds, and everything a proxy cannot act on is
//! left out. Endpoints of Kubernetes Services are not here: the node agent serves them.
//!
//! Every struct denies unknown fields, so a proxy never half-reads a config from a newer
//! operator; a change that old proxies cannot read gets a new format version.

mod gateway;
mod inbound;
mod mesh;
pub mod payload;
mod policy;
mod route;
mod service;

use serde::{Deserialize, Serialize};

pub use gateway::*;
pub use inbound::*;
pub use mesh::*;
pub use policy::*;
pub use route::*;
pub use service::*;

/// The format this crate reads and writes.
pub const FORMAT: &str = "mizzen.io/proxy-config/v1";

/// The ConfigMap the operator writes in every meshed namespace, and its key: under `data` for
/// a small config, under `binaryData` for a large one (see [`payload`]).
pub const CONFIG_MAP_NAME: &str = "mizzen-proxy-config";
pub const CONFIG_MAP_KEY: &str = "config.json";

/// Everything the proxies of one namespace (or one gateway) need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// The namespace whose proxies read this config.
    pub namespace: String,
    #[serde(default)]
    pub mesh: MeshConfig,
    /// Every service the proxies may call, with its routes and policies, sorted by host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Policies for traffic arriving at workloads of this namespace.
    #[serde(default)]
    pub inbound: InboundConfig,
    /// Ingress gateway configs only (ConfigMap [`GATEWAY_CONFIG_MAP_NAME`]): the Gateway servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayConfig>,
    /// Sidecar resources with a `workloadSelector` in this namespace, oldest first, then the
    /// namespace's default scope; empty when it has none (see [`SidecarScope`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecar_scopes: Vec<SidecarScope>,
}

/// Why a config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid JSON for {FORMAT}: {0}")]
    Json(#[from] serde_json::Error),
    #[error("config format {found:?} is not supported (this proxy reads {FORMAT})")]
    Format { found: String },
    /// The stored form (see [`payload`]) could not be decoded.
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
}

impl ProxyConfig {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            format: FORMAT.to_string(),
            namespace: namespace.into(),
            mesh: MeshConfig::default(),
            services: Vec::new(),
            inbound: InboundConfig::default(),
            gateway: None,
            sidecar_scopes: Vec::new(),
        }
    }

    /// Parses and checks the format version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        // Read the version first, so an unknown format is named as such rather than as an
        // unknown field somewhere inside it.
        #[derive(Deserialize)]
        struct Header {
            format: String,
        }
        let header: Header = serde_json::from_slice(bytes)?;
        if header.format != FORMAT {
            return Err(ConfigError::Format {
                found: header.format,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The config as the workload with `labels` applies it: DestinationRules with a
    /// `workloadSelector` resolved for it (see [`Service::for_workload`]), and with Sidecar
    /// scopes, only the services of the first scope that selects it (else the default
    /// scope's) and that scope's outbound traffic policy, as Istio applies one Sidecar to a
    /// workload and never merges two.
    pub fn for_workload(mut self, labels: &std::collections::BTreeMap<String, String>) -> Self {
        let scopes = std::mem::take(&mut self.sidecar_scopes);
        let scope = scopes
            .iter()
            .find(|s| s.selector.as_ref().is_some_and(|w| has_labels(labels, w)))
            .or_else(|| scopes.iter().find(|s| s.selector.is_none()));
        if let Some(scope) = scope {
            let seen: std::collections::BTreeSet<&str> =
                scope.hosts.iter().map(String::as_str).collect();
            self.services.retain(|s| seen.contains(s.host.as_str()));
            self.mesh.outbound_traffic_policy = scope.outbound_traffic_policy;
        }
        for service in &mut self.services {
            service.for_workload(labels);
        }
        self
    }

    /// Canonical JSON: what the operator writes and hashes.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config always serialises")
    }

    /// The service with this host (fully qualified).
    pub fn service(&self, host: &str) -> Option<&Service> {
        self.services
            .binary_search_by(|s| s.host.as_str().cmp(host))
            .ok()
            .map(|i| &self.services[i])
    }
}

#[cfg(test)]
mod tests;
