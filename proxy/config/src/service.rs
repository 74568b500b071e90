//! Services a proxy can call: hosts, ports, subsets and their routes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{HttpRoute, TcpRoute, TlsRoute, TrafficPolicy};

/// A Kubernetes Service or a ServiceEntry host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Fully qualified host (`reviews.default.svc.cluster.local`, `api.example.com`,
    /// `*.example.com` for a wildcard ServiceEntry).
    pub host: String,
    /// Other names a request may use for it from this namespace (`reviews`, `reviews.default`,
    /// `reviews.default.svc`), matched against Host/:authority without the port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Namespace the service is defined in.
    pub namespace: String,
    /// Virtual IPs (ClusterIPs, ServiceEntry addresses), for TCP traffic that has no Host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Location::is_default")]
    pub location: Location,
    #[serde(default, skip_serializing_if = "Resolution::is_default")]
    pub resolution: Resolution,
    /// The DestinationRule's subsets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// The DestinationRule's service-wide policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<TrafficPolicy>,
    /// HTTP routes, in evaluation order (first match wins). Empty: one default route to this
    /// service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
    /// Endpoints fixed in config (ServiceEntry `STATIC`/`DNS` endpoints, WorkloadEntries in local
    /// mode). Endpoints of Kubernetes Services come from the node agent instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// The Kubernetes Service's `trafficDistribution` (or Istio's
    /// `networking.istio.io/traffic-distribution` annotation): prefer endpoints near the client
    /// where no DestinationRule sets `localityLbSetting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<TrafficDistribution>,
    /// A ServiceEntry's `subjectAltNames`: identities its endpoints may present over mesh mTLS,
    /// besides each endpoint's own (a DestinationRule's `subjectAltNames` replace both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// DestinationRules of the client's namespace with a `workloadSelector`, in Istio's order
    /// (the most specific host, then the oldest): a proxy whose labels the first of them
    /// selects takes its subsets and policy in place of `subsets` and `policy`
    /// ([`crate::ProxyConfig::for_workload`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload_rules: Vec<WorkloadRule>,
}

/// How a Kubernetes Service asks for its traffic to stay close (the values Istio honours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficDistribution {
    /// `PreferClose` or `PreferSameZone`: endpoints in the client's zone, then its region.
    PreferSameZone,
    /// `PreferSameNode`: endpoints on the client's node, then its zone, then its region.
    PreferSameNode,
}

impl TrafficDistribution {
    /// The Service's `spec.trafficDistribution` value, else the annotation's (Istio's names,
    /// compared without case as Istio does); `None` for anything else (`Any`).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "preferclose" | "prefersamezone" => Some(Self::PreferSameZone),
            "prefersamenode" => Some(Self::PreferSameNode),
            _ => None,
        }
    }
}

impl Service {
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }

    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub number: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: Protocol,
    /// Port on the endpoints, when it differs from `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
}

/// The protocol of a port, as Istio selects it (port name prefix, then `appProtocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
    /// Not declared: the proxy detects HTTP and falls back to TCP.
    #[default]
    Unknown,
}

impl Location {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Resolution {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Protocol {
    /// Whether the proxy handles the port as HTTP (routes, retries, metrics per request).
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Http2 | Self::Grpc)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Part of the mesh: mutual TLS by default.
    #[default]
    MeshInternal,
    /// Outside the mesh: plaintext unless a DestinationRule says otherwise.
    MeshExternal,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Endpoints from the node agent (Kubernetes Services) or from `endpoints`.
    #[default]
    Endpoints,
    /// Resolve the host (or each endpoint's address) with DNS.
    Dns,
    /// Forward to the original destination address of the connection.
    Passthrough,
}

/// A DestinationRule that applies only to the workloads its selector selects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRule {
    /// `namespace/name` of the DestinationRule.
    pub name: String,
    /// The labels a workload must carry (all of them).
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<TrafficPolicy>,
}

impl WorkloadRule {
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        crate::has_labels(labels, &self.selector)
    }
}

impl Service {
    /// The service as a workload with `labels` sees it: the first of its workload rules that
    /// selects the workload replaces the namespace's rule (Istio does not merge the two); the
    /// others are dropped.
    pub fn for_workload(&mut self, labels: &BTreeMap<String, String>) {
        let rules = std::mem::take(&mut self.workload_rules);
        if let Some(rule) = rules.into_iter().find(|r| r.selects(labels)) {
            self.subsets = rule.subsets;
            self.policy = rule.policy;
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    /// Endpoints whose labels include all of these belong to the subset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides of the service policy for this subset, already merged with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<TrafficPolicy>,
}

/// One address to send traffic to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub address: String,
    /// Port names (as in the service's ports) to endpoint port numbers, when they differ.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// SPIFFE identity expected of the endpoint, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Where the endpoint runs, `region/zone/subzone` (WorkloadEntry `locality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}
