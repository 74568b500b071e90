//! `DestinationRule`: what happens to traffic for a host after routing — subsets, load
//! balancing, connection limits, outlier detection and upstream TLS.
//!
//! [`TrafficPolicy`], [`ConnectionPoolSettings`], [`OutlierDetection`] and
//! [`ClientTlsSettings`] are shared with `Sidecar` and the proxy-config renderer.

use std::{
    collections::{BTreeMap, BTreeSet},
    time,
};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::virtual_service::PortSelector;
use crate::{
    Normalize,
    duration::Duration,
    selector::{WorkloadSelector, is_dns_label},
    validate::{Checker, Code, Validate},
};

/// Policies for one service host and its named subsets.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    plural = "destinationrules",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "dr",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// The service the rule applies to: a registry name, short names resolved in the rule's
    /// namespace. May start with a `*.` wildcard.
    pub host: String,
    /// Policy for all traffic to `host`; subsets and ports may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of endpoints (usually versions) that routes can target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Namespaces that see this rule: `.` (own), `*` (all) or namespace names. All when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Apply the rule only to the selected workloads of the rule's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// A named set of endpoints of the host, selected by labels, with an optional policy override.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Subset name as routes refer to it (a DNS label, e.g. `v1`).
    pub name: String,
    /// Endpoint labels that select the subset's members.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides the rule-level policy field by field for this subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load balancing, connection limits, outlier detection and TLS towards a destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides; a port-level policy replaces the rule-level one for that port
    /// (unset fields take defaults, not the rule-level values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel TCP to the destination over HTTP CONNECT or POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header on upstream connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Caps concurrent retries relative to active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// A traffic policy for one port of the destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The destination port the policy applies to (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// Tunnel settings: TCP carried over HTTP `CONNECT` (default) or `POST` to a target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// FQDN or IP that the tunnel reaches.
    pub target_host: String,
    /// Port the tunnel reaches on `targetHost`.
    pub target_port: u32,
}

/// PROXY protocol towards the upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProxyProtocolVersion {
    /// Human-readable header.
    #[default]
    V1,
    /// Binary header.
    V2,
}

/// Limits retries in flight to a share of the active requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Concurrent retries as a percentage of active plus pending requests (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed regardless of the percentage (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
}

/// How requests are spread over endpoints. `simple` and `consistentHash` exclude each other.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware distribution and failover; replaces the mesh-wide setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Deprecated spelling of `warmup.duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Ramp traffic up to new endpoints instead of sending them a full share at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// Load-balancing algorithms that need no tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Let the mesh choose (least request).
    #[default]
    Unspecified,
    /// Deprecated spelling of `LEAST_REQUEST`.
    LeastConn,
    Random,
    /// Forward to the original destination address without balancing.
    Passthrough,
    RoundRobin,
    LeastRequest,
}

impl SimpleLb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "UNSPECIFIED",
            Self::LeastConn => "LEAST_CONN",
            Self::Random => "RANDOM",
            Self::Passthrough => "PASSTHROUGH",
            Self::RoundRobin => "ROUND_ROBIN",
            Self::LeastRequest => "LEAST_REQUEST",
        }
    }
}

/// Session affinity by hashing one request property (exactly one of the four keys), with a
/// ring-hash or Maglev table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash on this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie, generating it when `ttl` is set and the cookie is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the client's IP address (HTTP and TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ring-hash table (the default algorithm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Maglev table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated spelling of `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

impl ConsistentHashLb {
    /// The names of the hash keys that are set (valid when exactly one).
    pub fn hash_keys(&self) -> Vec<&'static str> {
        [
            (self.http_header_name.is_some(), "httpHeaderName"),
            (self.http_cookie.is_some(), "httpCookie"),
            (self.use_source_ip.is_some(), "useSourceIp"),
            (
                self.http_query_parameter_name.is_some(),
                "httpQueryParameterName",
            ),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }
}

/// The cookie a consistent hash keys on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie; `0s` makes a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra attributes (e.g. `SameSite`) of a generated cookie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

/// One `name[=value]` attribute of a generated cookie.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum number of virtual nodes on the ring (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Lookup table size: a prime below 5000011 (default 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Locality-weighted distribution, failover between regions, or label-ordered failover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Ordered labels (`key` or `key=value`) that rank endpoints for failover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Turns locality load balancing on or off for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Traffic from locality `from` goes to the `to` localities with these weights (sum 100).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// `region/zone/subzone`, with a trailing `*` wildcard allowed.
    #[serde(default)]
    pub from: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// When region `from` has no healthy endpoints, fail over to region `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// Slow start for new endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// How long a new endpoint stays in warmup.
    pub duration: Duration,
    /// Share of its full traffic an endpoint gets at the start, 0-100 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// Shape of the ramp: 1 is linear, higher values ramp more slowly at first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Connection and request limits per upstream host (circuit breaking).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// Limits that apply to TCP and HTTP connections alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Maximum HTTP/1.1 or TCP connections to one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// Connect timeout, at least 1ms (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Enable TCP keepalive (`SO_KEEPALIVE`) with these settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Close connections this long after they were opened (at least 1ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// Close connections idle this long (default 1h; `0s` disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is declared dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Limits for HTTP/1.1, HTTP/2 and gRPC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Requests queued while waiting for a connection (HTTP/1.1 and HTTP/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// Active requests to a host (HTTP/1.1 and HTTP/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// Requests per connection; 1 disables keep-alive, 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// Retries outstanding to all hosts of the destination at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Close pool connections with no active request for this long (at least 1ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Whether HTTP/1.1 connections are upgraded to HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the client's protocol upstream (no HTTP/2 upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Concurrent streams per HTTP/2 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Follow the mesh-wide default.
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// Eject hosts that keep failing from the load-balancing pool for a while.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: Mizzen reads it as `consecutive5xxErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// Count locally originated failures (connect errors, timeouts) separately from responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection (needs `splitExternalLocalOriginErrors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504 responses (or connect failures) in a row before ejection; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx responses (or connect failures) in a row before ejection (default 5; 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Time between ejection sweeps (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Minimum ejection time, multiplied by the number of ejections (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Most hosts that may be ejected at once, 0-100% (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Outlier detection pauses while fewer than this share of hosts is healthy, 0-100%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
}

/// TLS that the proxy originates towards the upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// `DISABLE` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    /// Client certificate file (`MUTUAL` without `credentialName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Client private key file (`MUTUAL` without `credentialName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle that verifies the server; the system roots when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Secret holding the client key, certificate and CA (instead of the file paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Names accepted in the server certificate's subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SNI sent in the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Skip verifying the server certificate's CA signature and SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file used to check the server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain text.
    #[default]
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// Mutual TLS with the configured client certificate.
    Mutual,
    /// Mutual TLS with the workload's mesh certificate.
    IstioMutual,
}

impl ClientTlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "DISABLE",
            Self::Simple => "SIMPLE",
            Self::Mutual => "MUTUAL",
            Self::IstioMutual => "ISTIO_MUTUAL",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation

impl Normalize for DestinationRuleSpec {
    fn normalize(&mut self) {
        if let Some(p) = &mut self.traffic_policy {
            p.normalize();
        }
        for s in &mut self.subsets {
            if let Some(p) = &mut s.traffic_policy {
                p.normalize();
            }
        }
    }
}

impl Normalize for TrafficPolicy {
    fn normalize(&mut self) {
        if let Some(lb) = &mut self.load_balancer {
            lb.normalize();
        }
        if let Some(od) = &mut self.outlier_detection {
            od.normalize();
        }
        for p in &mut self.port_level_settings {
            if let Some(lb) = &mut p.load_balancer {
                lb.normalize();
            }
            if let Some(od) = &mut p.outlier_detection {
                od.normalize();
            }
        }
    }
}

impl Normalize for LoadBalancerSettings {
    /// `LEAST_CONN` → `LEAST_REQUEST`, `warmupDurationSecs` → `warmup.duration`,
    /// `consistentHash.minimumRingSize` → `consistentHash.ringHash.minimumRingSize`.
    fn normalize(&mut self) {
        if self.simple == Some(SimpleLb::LeastConn) {
            self.simple = Some(SimpleLb::LeastRequest);
        }
        if let Some(d) = self.warmup_duration_secs.take()
            && self.warmup.is_none()
        {
            self.warmup = Some(WarmupConfiguration {
                duration: d,
                ..Default::default()
            });
        }
        if let Some(ch) = &mut self.consistent_hash
            && let Some(size) = ch.minimum_ring_size.take()
            && ch.ring_hash.is_none()
            && ch.maglev.is_none()
        {
            // With an explicit algorithm the old field had no effect, so it is simply dropped.
            ch.ring_hash = Some(RingHash {
                minimum_ring_size: Some(size),
            });
        }
    }
}

impl Normalize for OutlierDetection {
    /// `consecutiveErrors` → `consecutive5xxErrors` (Mizzen's documented reading; Istio itself
    /// counted it as gateway errors). A negative value is left for validation to report.
    fn normalize(&mut self) {
        if let Some(n) = self.consecutive_errors
            && let Ok(n) = u32::try_from(n)
        {
            self.consecutive_errors = None;
            if self.consecutive_5xx_errors.is_none() {
                self.consecutive_5xx_errors = Some(n);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

impl Validate for DestinationRuleSpec {
    fn validate(&self, c: &mut Checker) {
        if self.host.is_empty() {
            c.require("host", false);
        } else {
            c.field("host", |c| c.host(&self.host));
        }
        c.opt("trafficPolicy", self.traffic_policy.as_ref(), |c, p| {
            p.validate(c)
        });

        c.field("subsets", |c| {
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, subset) in self.subsets.iter().enumerate() {
                c.index(i, |c| {
                    subset.validate(c);
                    if subset.name.is_empty() {
                        return;
                    }
                    if let Some(first) = seen.get(subset.name.as_str()) {
                        c.field("name", |c| {
                            c.error(
                                Code::DuplicateSubset,
                                format!(
                                    "subset name {:?} is already used by subsets[{first}]",
                                    subset.name
                                ),
                            )
                        });
                    } else {
                        seen.insert(&subset.name, i);
                    }
                });
            }
        });

        c.export_to(&self.export_to, false);
        if let Some(sel) = &self.workload_selector {
            c.field("workloadSelector", |c| {
                c.selector(sel);
                if sel.match_labels.is_empty() {
                    c.warn(
                        Code::InvalidSelector,
                        "has no matchLabels: Istio would apply the rule to every workload in the namespace",
                    );
                }
            });
            if self.export_to.iter().any(|e| e == "*") {
                c.field("exportTo", |c| {
                    c.error(
                        Code::ConflictingFields,
                        "a rule with a workloadSelector applies only in its own namespace and cannot be exported to \"*\"",
                    )
                });
            }
        }
    }
}

impl Validate for Subset {
    fn validate(&self, c: &mut Checker) {
        if self.name.is_empty() {
            c.require("name", false);
        } else if !is_dns_label(&self.name) {
            c.field("name", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "subset name {:?} must be a DNS label: at most 63 lowercase letters, digits or '-'",
                        self.name
                    ),
                )
            });
        }
        c.field("labels", |c| c.labels(&self.labels));
        c.opt("trafficPolicy", self.traffic_policy.as_ref(), |c, p| {
            p.validate(c)
        });
    }
}

impl Validate for TrafficPolicy {
    fn validate(&self, c: &mut Checker) {
        if *self == TrafficPolicy::default() {
            c.error(
                Code::MissingField,
                "a traffic policy must set at least one field",
            );
            return;
        }
        if self.tunnel.is_some() && self.proxy_protocol.is_some() {
            c.error(
                Code::ConflictingFields,
                "tunnel and proxyProtocol cannot be set together",
            );
        }
        validate_policy_parts(
            c,
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
        );

        c.field("portLevelSettings", |c| {
            let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
            for (i, p) in self.port_level_settings.iter().enumerate() {
                c.index(i, |c| {
                    p.validate(c);
                    let Some(port) = p.port else { return };
                    if let Some(first) = seen.get(&port.number) {
                        c.field("port", |c| {
                            c.field("number", |c| {
                                c.error(
                                    Code::InvalidPort,
                                    format!(
                                        "port {} already has a policy at portLevelSettings[{first}]",
                                        port.number
                                    ),
                                )
                            })
                        });
                    } else {
                        seen.insert(port.number, i);
                    }
                });
            }
        });

        c.opt("tunnel", self.tunnel.as_ref(), |c, t| {
            t.validate(c);
            if t.protocol.as_deref() == Some("POST") {
                c.field("protocol", |c| {
                    c.warn(
                        Code::NotSupported,
                        "Mizzen's proxy tunnels with CONNECT only; a POST tunnel is not made, and connections go to the destination directly",
                    )
                });
            }
        });
        c.opt("retryBudget", self.retry_budget.as_ref(), |c, b| {
            if let Some(p) = b.percent {
                c.field("percent", |c| check_percent_f64(c, p));
            }
        });
        let max_retries = self.connection_pool.as_ref().and_then(|p| p.http.as_ref());
        if self.retry_budget.is_some() && max_retries.is_some_and(|h| h.max_retries.is_some()) {
            c.field("connectionPool", |c| {
                c.field("http", |c| {
                    c.field("maxRetries", |c| {
                        c.warn(
                            Code::ConflictingFields,
                            "maxRetries is ignored because retryBudget is set (as in Envoy, the budget replaces it)",
                        )
                    })
                })
            });
        }
    }
}

impl Validate for PortTrafficPolicy {
    fn validate(&self, c: &mut Checker) {
        match self.port {
            None => c.require("port", false),
            Some(p) => c.field("port", |c| {
                c.field("number", |c| c.port(i64::from(p.number)))
            }),
        }
        if self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
        {
            c.error(
                Code::MissingField,
                "a port traffic policy must set loadBalancer, connectionPool, outlierDetection or tls",
            );
        }
        validate_policy_parts(
            c,
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
        );
    }
}

fn validate_policy_parts(
    c: &mut Checker,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    c.opt("loadBalancer", lb, |c, lb| lb.validate(c));
    c.opt("connectionPool", pool, |c, p| p.validate(c));
    c.opt("outlierDetection", outlier, |c, o| o.validate(c));
    c.opt("tls", tls, |c, t| t.validate(c));
}

impl Validate for TunnelSettings {
    fn validate(&self, c: &mut Checker) {
        if let Some(p) = &self.protocol
            && p != "CONNECT"
            && p != "POST"
        {
            c.field("protocol", |c| {
                c.error(
                    Code::UnknownEnumValue,
                    format!("tunnel protocol must be CONNECT or POST (got {p:?})"),
                )
            });
        }
        if self.target_host.is_empty() {
            c.require("targetHost", false);
        } else if self.target_host.contains('*') {
            c.field("targetHost", |c| {
                c.error(
                    Code::InvalidHost,
                    format!(
                        "targetHost must be an FQDN or an IP address, not a wildcard (got {:?})",
                        self.target_host
                    ),
                )
            });
        } else {
            c.field("targetHost", |c| c.host(&self.target_host));
        }
        c.field("targetPort", |c| c.port(i64::from(self.target_port)));
    }
}

impl Validate for LoadBalancerSettings {
    fn validate(&self, c: &mut Checker) {
        if self.simple.is_some() && self.consistent_hash.is_some() {
            c.error(
                Code::ConflictingFields,
                "only one of simple or consistentHash may be set",
            );
        }
        if self.simple == Some(SimpleLb::LeastConn) {
            c.field("simple", |c| {
                c.warn(
                    Code::Deprecated,
                    "LEAST_CONN is deprecated: use LEAST_REQUEST",
                )
            });
        }
        c.opt("consistentHash", self.consistent_hash.as_ref(), |c, ch| {
            ch.validate(c)
        });
        c.opt(
            "localityLbSetting",
            self.locality_lb_setting.as_ref(),
            |c, l| l.validate(c),
        );
        if self.warmup_duration_secs.is_some() {
            c.field("warmupDurationSecs", |c| {
                let msg = if self.warmup.is_some() {
                    "warmupDurationSecs is deprecated and ignored because warmup is set: use warmup.duration"
                } else {
                    "warmupDurationSecs is deprecated: use warmup.duration"
                };
                c.warn(Code::Deprecated, msg);
            });
        }
        check_duration_ms(c, "warmupDurationSecs", self.warmup_duration_secs.as_ref());
        c.opt("warmup", self.warmup.as_ref(), |c, w| {
            check_duration_ms(c, "duration", Some(&w.duration));
            if let Some(p) = w.minimum_percent {
                c.field("minimumPercent", |c| check_percent_f64(c, p));
            }
            if let Some(a) = w.aggression
                && !(a.is_finite() && a > 0.0)
            {
                c.field("aggression", |c| {
                    c.error(
                        Code::InvalidValue,
                        format!("aggression must be a positive number (got {a})"),
                    )
                });
            }
        });
        if let (Some(simple), Some(_)) = (self.simple, &self.warmup)
            && !matches!(
                simple,
                SimpleLb::RoundRobin | SimpleLb::LeastRequest | SimpleLb::LeastConn
            )
            && simple != SimpleLb::Unspecified
        {
            c.field("warmup", |c| {
                c.warn(
                    Code::InvalidValue,
                    format!(
                        "warmup only applies to ROUND_ROBIN and LEAST_REQUEST (simple is {})",
                        simple.as_str()
                    ),
                )
            });
        }
    }
}

impl Validate for ConsistentHashLb {
    fn validate(&self, c: &mut Checker) {
        let keys = self.hash_keys();
        match keys.len() {
            0 => c.error(
                Code::MissingField,
                "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required",
            ),
            1 => {}
            _ => c.error(
                Code::ConflictingFields,
                format!(
                    "only one hash key may be set (got {})",
                    keys.join(" and ")
                ),
            ),
        }
        if self.http_header_name.as_deref() == Some("") {
            c.field("httpHeaderName", |c| {
                c.error(Code::MissingField, "header name must not be empty")
            });
        }
        if self.http_query_parameter_name.as_deref() == Some("") {
            c.field("httpQueryParameterName", |c| {
                c.error(Code::MissingField, "query parameter name must not be empty")
            });
        }
        c.opt("httpCookie", self.http_cookie.as_ref(), |c, cookie| {
            // The proxy writes these into the Set-Cookie of a cookie it makes (with a ttl).
            c.require("name", !cookie.name.is_empty());
            if !cookie.name.is_empty() && !is_cookie_token(&cookie.name) {
                c.field("name", |c| {
                    c.error(
                        Code::InvalidValue,
                        format!(
                            "{:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)",
                            cookie.name
                        ),
                    )
                });
            }
            if let Some(path) = cookie.path.as_deref().filter(|p| !is_cookie_av(p)) {
                c.field("path", |c| {
                    c.error(
                        Code::InvalidValue,
                        format!("{path:?} may not hold ';' or control characters"),
                    )
                });
            }
            c.each("attributes", &cookie.attributes, |c, a| {
                c.require("name", !a.name.is_empty());
                // As the proxy writes it: `name` or `name=value`.
                let text = match a.value.as_deref().filter(|v| !v.is_empty()) {
                    Some(v) => format!("{}={v}", a.name),
                    None => a.name.clone(),
                };
                if !is_cookie_av(&text) {
                    c.error(
                        Code::InvalidValue,
                        format!("{text:?} may not hold ';' or control characters"),
                    );
                }
            });
        });

        if self.ring_hash.is_some() && self.maglev.is_some() {
            c.error(
                Code::ConflictingFields,
                "only one of ringHash or maglev may be set",
            );
        }
        if self.minimum_ring_size.is_some() {
            c.field("minimumRingSize", |c| {
                if self.ring_hash.is_some() || self.maglev.is_some() {
                    c.error(
                        Code::ConflictingFields,
                        "minimumRingSize cannot be combined with ringHash or maglev: use ringHash.minimumRingSize",
                    );
                } else {
                    c.warn(
                        Code::Deprecated,
                        "minimumRingSize is deprecated: use ringHash.minimumRingSize",
                    );
                }
            });
        }
        c.opt("maglev", self.maglev.as_ref(), |c, m| {
            c.field("tableSize", |c| match m.table_size {
                None | Some(0) => c.error(Code::MissingField, "maglev needs a tableSize"),
                Some(n) if n >= 5_000_011 || !is_prime(n) => c.error(
                    Code::InvalidValue,
                    format!("tableSize must be a prime number below 5000011 (got {n})"),
                ),
                Some(_) => {}
            });
        });
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

impl Validate for LocalityLoadBalancerSetting {
    fn validate(&self, c: &mut Checker) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            c.error(
                Code::ConflictingFields,
                "only one of distribute or failover may be set",
            );
        }
        if !self.distribute.is_empty() && !self.failover_priority.is_empty() {
            c.error(
                Code::ConflictingFields,
                "only one of distribute or failoverPriority may be set",
            );
        }
        if !self.failover.is_empty() {
            c.each("failoverPriority", &self.failover_priority, |c, label| {
                if matches!(
                    label.as_str(),
                    "topology.kubernetes.io/region"
                        | "topology.kubernetes.io/zone"
                        | "topology.istio.io/subzone"
                ) {
                    c.error(
                        Code::ConflictingFields,
                        format!("failover already orders by region; {label:?} cannot also be in failoverPriority"),
                    );
                }
            });
        }
        c.each("failoverPriority", &self.failover_priority, |c, label| {
            let (key, value) = label.split_once('=').unwrap_or((label, ""));
            let errs = [
                crate::selector::label_key_error(key),
                crate::selector::label_value_error(value),
            ];
            for msg in errs.into_iter().flatten() {
                c.error(Code::InvalidSelector, msg);
            }
        });

        c.field("distribute", |c| {
            let mut froms = BTreeSet::new();
            for (i, d) in self.distribute.iter().enumerate() {
                c.index(i, |c| {
                    c.field("from", |c| {
                        check_locality(c, &d.from);
                        if !froms.insert(d.from.as_str()) {
                            c.error(
                                Code::InvalidValue,
                                format!("locality {:?} is distributed twice", d.from),
                            );
                        }
                    });
                    c.field("to", |c| {
                        let mut total: u64 = 0;
                        for (loc, w) in &d.to {
                            c.key(loc, |c| {
                                check_locality(c, loc);
                                if !(1..=100).contains(w) {
                                    c.error(
                                        Code::InvalidWeight,
                                        format!(
                                            "locality weight must be between 1 and 100 (got {w})"
                                        ),
                                    );
                                }
                            });
                            total += u64::from(*w);
                        }
                        if total != 100 {
                            c.error(
                                Code::InvalidWeight,
                                format!("locality weights must add up to 100 (got {total})"),
                            );
                        }
                    });
                });
            }
        });

        c.each("failover", &self.failover, |c, f| {
            for (name, region) in [("from", &f.from), ("to", &f.to)] {
                c.field(name, |c| {
                    if region.is_empty() {
                        c.error(Code::MissingField, "a failover region is required");
                    } else if region.contains('/') || region.contains('*') {
                        c.error(
                            Code::InvalidValue,
                            format!(
                                "failover names a region only, without '/' or '*' (got {region:?})"
                            ),
                        );
                    }
                });
            }
            if !f.from.is_empty() && f.from == f.to {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "failover from and to must be different regions (both are {:?})",
                        f.from
                    ),
                );
            }
        });
    }
}

/// A locality `region[/zone[/subzone]]`; `*` is allowed only as the whole last segment.
fn check_locality(c: &mut Checker, loc: &str) {
    let segments: Vec<&str> = loc.split('/').collect();
    let bad = loc.is_empty()
        || segments.len() > 3
        || segments.iter().any(|s| s.is_empty())
        || segments
            .iter()
            .enumerate()
            .any(|(i, s)| s.contains('*') && (*s != "*" || i + 1 != segments.len()));
    if bad {
        c.error(
            Code::InvalidValue,
            format!(
                "locality {loc:?} must be region[/zone[/subzone]], with '*' only as the whole last part"
            ),
        );
    }
}

impl Validate for ConnectionPoolSettings {
    fn validate(&self, c: &mut Checker) {
        if self.tcp.is_none() && self.http.is_none() {
            c.error(Code::MissingField, "a connection pool must set tcp or http");
        }
        c.opt("tcp", self.tcp.as_ref(), |c, t| t.validate(c));
        c.opt("http", self.http.as_ref(), |c, h| h.validate(c));
    }
}

impl Validate for TcpSettings {
    fn validate(&self, c: &mut Checker) {
        check_non_negative(c, "maxConnections", self.max_connections);
        check_duration_ms(c, "connectTimeout", self.connect_timeout.as_ref());
        check_duration_ms(
            c,
            "maxConnectionDuration",
            self.max_connection_duration.as_ref(),
        );
        // 0s turns the TCP idle timeout off.
        if self
            .idle_timeout
            .is_some_and(|d| d.get() != time::Duration::ZERO)
        {
            check_duration_ms(c, "idleTimeout", self.idle_timeout.as_ref());
        }
        c.opt("tcpKeepalive", self.tcp_keepalive.as_ref(), |c, k| {
            check_duration_ms(c, "time", k.time.as_ref());
            check_duration_ms(c, "interval", k.interval.as_ref());
        });
    }
}

impl Validate for HttpSettings {
    fn validate(&self, c: &mut Checker) {
        check_non_negative(
            c,
            "http1MaxPendingRequests",
            self.http1_max_pending_requests,
        );
        check_non_negative(c, "http2MaxRequests", self.http2_max_requests);
        check_non_negative(
            c,
            "maxRequestsPerConnection",
            self.max_requests_per_connection,
        );
        check_non_negative(c, "maxRetries", self.max_retries);
        check_non_negative(c, "maxConcurrentStreams", self.max_concurrent_streams);
        check_duration_ms(c, "idleTimeout", self.idle_timeout.as_ref());
        if self.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && self.use_client_protocol == Some(true)
        {
            c.field("useClientProtocol", |c| {
                c.error(
                    Code::ConflictingFields,
                    "useClientProtocol cannot be true when h2UpgradePolicy is UPGRADE",
                )
            });
        }
    }
}

impl Validate for OutlierDetection {
    fn validate(&self, c: &mut Checker) {
        if let Some(n) = self.consecutive_errors {
            c.field("consecutiveErrors", |c| {
                if n < 0 {
                    c.error(
                        Code::InvalidValue,
                        format!("must not be negative (got {n})"),
                    );
                }
                let msg = if self.consecutive_5xx_errors.is_some() {
                    "consecutiveErrors is deprecated and ignored because consecutive5xxErrors is set: use consecutive5xxErrors"
                } else {
                    "consecutiveErrors is deprecated: use consecutive5xxErrors"
                };
                c.warn(Code::Deprecated, msg);
            });
        }
        if self.split_external_local_origin_errors != Some(true)
            && self
                .consecutive_local_origin_failures
                .is_some_and(|n| n > 0)
        {
            c.field("consecutiveLocalOriginFailures", |c| {
                c.error(
                    Code::ConflictingFields,
                    "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true",
                )
            });
        }
        check_duration_ms(c, "interval", self.interval.as_ref());
        check_duration_ms(c, "baseEjectionTime", self.base_ejection_time.as_ref());
        for (name, v) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            if let Some(v) = v
                && !(0..=100).contains(&v)
            {
                c.field(name, |c| {
                    c.error(
                        Code::InvalidPercentage,
                        format!("must be between 0 and 100 (got {v})"),
                    )
                });
            }
        }
    }
}

impl Validate for ClientTlsSettings {
    fn validate(&self, c: &mut Checker) {
        let mode = self.mode.unwrap_or_default();
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let files = [
            (set(&self.client_certificate), "clientCertificate"),
            (set(&self.private_key), "privateKey"),
            (set(&self.ca_certificates), "caCertificates"),
            (set(&self.ca_crl), "caCrl"),
        ];
        match mode {
            ClientTlsMode::IstioMutual => {
                for (present, name) in files
                    .into_iter()
                    .chain([(set(&self.credential_name), "credentialName")])
                {
                    if present {
                        c.field(name, |c| {
                            c.error(
                                Code::ConflictingFields,
                                "ISTIO_MUTUAL uses the workload's mesh certificate; leave certificate fields empty",
                            )
                        });
                    }
                }
                if self.insecure_skip_verify == Some(true) {
                    c.field("insecureSkipVerify", |c| {
                        c.error(
                            Code::ConflictingFields,
                            "insecureSkipVerify cannot be used with ISTIO_MUTUAL",
                        )
                    });
                }
            }
            ClientTlsMode::Simple | ClientTlsMode::Mutual if set(&self.credential_name) => {
                for (present, name) in files {
                    if present {
                        c.field(name, |c| {
                            c.error(
                                Code::ConflictingFields,
                                format!("{name} cannot be combined with credentialName, which supplies the certificates"),
                            )
                        });
                    }
                }
            }
            ClientTlsMode::Mutual => {
                if !set(&self.client_certificate) {
                    c.field("clientCertificate", |c| {
                        c.error(
                            Code::MissingField,
                            "mode MUTUAL needs clientCertificate and privateKey, or credentialName",
                        )
                    });
                }
                if !set(&self.private_key) {
                    c.field("privateKey", |c| {
                        c.error(
                            Code::MissingField,
                            "mode MUTUAL needs clientCertificate and privateKey, or credentialName",
                        )
                    });
                }
            }
            ClientTlsMode::Simple | ClientTlsMode::Disable => {}
        }
        if self.insecure_skip_verify == Some(true) && mode != ClientTlsMode::IstioMutual {
            for (present, name) in [
                (set(&self.ca_certificates), "caCertificates"),
                (set(&self.ca_crl), "caCrl"),
                (!self.subject_alt_names.is_empty(), "subjectAltNames"),
            ] {
                if present {
                    c.field(name, |c| {
                        c.warn(
                            Code::ConflictingFields,
                            format!("{name} is ignored because insecureSkipVerify is true"),
                        )
                    });
                }
            }
        }
    }
}

/// Istio's rule for most durations: at least 1ms, in whole milliseconds.
pub(crate) fn check_duration_ms(c: &mut Checker, name: &str, d: Option<&Duration>) {
    c.opt(name, d, |c, d| {
        let v = d.get();
        if v < time::Duration::from_millis(1) {
            c.error(
                Code::InvalidDuration,
                format!("must be at least 1ms (got {d})"),
            );
        } else if v.subsec_nanos() % 1_000_000 != 0 {
            c.error(
                Code::InvalidDuration,
                format!("must be a whole number of milliseconds (got {d})"),
            );
        }
    });
}

fn check_non_negative(c: &mut Checker, name: &str, v: Option<i32>) {
    if let Some(v) = v
        && v < 0
    {
        c.field(name, |c| {
            c.error(
                Code::InvalidValue,
                format!("must not be negative (got {v})"),
            )
        });
    }
}

fn check_percent_f64(c: &mut Checker, p: f64) {
    if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
        c.error(
            Code::InvalidPercentage,
            format!("must be between 0 and 100 (got {p})"),
        );
    }
}

/// RFC 6265's `cookie-name`: an HTTP token.
fn is_cookie_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 6265's `path-value` and extension attributes: any text but `;` and control characters.
fn is_cookie_av(s: &str) -> bool {
    !s.chars().any(|ch| ch == ';' || ch.is_control())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    const CIRCUIT_BREAKER: &str =
        include_str!("../../../../shared/fixtures/istio/dr-circuit-breaker.yaml");
    const OUTLIER: &str =
        include_str!("../../../../shared/fixtures/istio/dr-outlier-detection.yaml");
    const SUBSETS: &str =
        include_str!("../../../../shared/fixtures/istio/dr-serviceb-subsets.yaml");

    fn spec(yaml: &str) -> DestinationRuleSpec {
        crate::testing::parse(yaml)
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        validate_spec(&spec(yaml))
    }

    fn codes(p: &[Problem]) -> Vec<(&str, Code)> {
        crate::testing::codes(p)
    }

    fn round_trip(dr: &DestinationRule) {
        crate::testing::assert_round_trip(dr);
    }

    #[test]
    fn fixtures_parse_round_trip_and_validate() {
        for fixture in [CIRCUIT_BREAKER, OUTLIER, SUBSETS] {
            let dr: DestinationRule = serde_saphyr::from_str(fixture).unwrap();
            round_trip(&dr);
            let p = validate_spec(&dr.spec);
            assert!(p.iter().all(|p| !p.is_error()), "{p:?}");
        }
        let cb: DestinationRule = serde_saphyr::from_str(CIRCUIT_BREAKER).unwrap();
        assert!(validate_spec(&cb.spec).is_empty());
        let pool = cb.spec.traffic_policy.unwrap().connection_pool.unwrap();
        assert_eq!(pool.tcp.unwrap().max_connections, Some(1));
        let http = pool.http.unwrap();
        assert_eq!(http.http1_max_pending_requests, Some(10));
        assert_eq!(http.max_requests_per_connection, Some(1));

        let subsets: DestinationRule = serde_saphyr::from_str(SUBSETS).unwrap();
        assert_eq!(subsets.spec.subsets[1].labels["version"], "v2");
        assert!(validate_spec(&subsets.spec).is_empty());
    }

    #[test]
    fn outlier_fixture_warns_once_and_normalises() {
        let mut dr: DestinationRule = serde_saphyr::from_str(OUTLIER).unwrap();
        let p = validate_spec(&dr.spec);
        assert_eq!(
            codes(&p),
            [(
                "spec.trafficPolicy.outlierDetection.consecutiveErrors",
                Code::Deprecated
            )]
        );
        assert_eq!(p[0].severity, Severity::Warn);
        assert!(p[0].message.contains("consecutive5xxErrors"));

        dr.spec.normalize();
        let od = dr
            .spec
            .traffic_policy
            .as_ref()
            .unwrap()
            .outlier_detection
            .as_ref()
            .unwrap();
        assert_eq!(od.consecutive_5xx_errors, Some(3));
        assert_eq!(od.consecutive_errors, None);
        assert_eq!(od.interval, Some(Duration::from_secs(10)));
        assert_eq!(od.base_ejection_time, Some(Duration::from_secs(20)));
        assert_eq!(od.max_ejection_percent, Some(100));
        assert!(validate_spec(&dr.spec).is_empty());
        let json = serde_json::to_value(&dr.spec).unwrap();
        assert_eq!(
            json["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"],
            3
        );
    }

    #[test]
    fn normalise_keeps_an_explicit_current_field() {
        let mut s = spec(
            "host: a\ntrafficPolicy:\n  outlierDetection:\n    consecutiveErrors: 3\n    consecutive5xxErrors: 7",
        );
        let p = validate_spec(&s);
        assert!(p[0].message.contains("ignored"), "{}", p[0].message);
        s.normalize();
        let od = s.traffic_policy.unwrap().outlier_detection.unwrap();
        assert_eq!(
            (od.consecutive_errors, od.consecutive_5xx_errors),
            (None, Some(7))
        );
    }

    const EVERYTHING: &str = r#"
host: reviews.prod.svc.cluster.local
exportTo: [".", "istio-system"]
workloadSelector:
  matchLabels:
    app: ratings
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie:
        name: user
        path: /
        ttl: 0s
        attributes:
        - name: SameSite
          value: Strict
        - name: Secure
      ringHash:
        minimumRingSize: 2048
    localityLbSetting:
      failover:
      - from: us-east
        to: eu-west
      failoverPriority:
      - topology.istio.io/network
      enabled: true
    warmup:
      duration: 60s
      minimumPercent: 10
      aggression: 1.5
  connectionPool:
    tcp:
      maxConnections: 100
      connectTimeout: 30ms
      tcpKeepalive:
        probes: 5
        time: 7200s
        interval: 75s
      maxConnectionDuration: 1h
      idleTimeout: 0s
    http:
      http1MaxPendingRequests: 10
      http2MaxRequests: 1000
      maxRequestsPerConnection: 10
      maxRetries: 3
      idleTimeout: 30s
      h2UpgradePolicy: DO_NOT_UPGRADE
      useClientProtocol: true
      maxConcurrentStreams: 100
  outlierDetection:
    splitExternalLocalOriginErrors: true
    consecutiveLocalOriginFailures: 4
    consecutiveGatewayErrors: 3
    consecutive5xxErrors: 7
    interval: 5m
    baseEjectionTime: 15m
    maxEjectionPercent: 50
    minHealthPercent: 20
  tls:
    mode: MUTUAL
    clientCertificate: /etc/certs/cert.pem
    privateKey: /etc/certs/key.pem
    caCertificates: /etc/certs/ca.pem
    subjectAltNames: [reviews.example.com]
    sni: reviews.example.com
    insecureSkipVerify: false
    caCrl: /etc/certs/crl.pem
  portLevelSettings:
  - port:
      number: 9080
    loadBalancer:
      simple: ROUND_ROBIN
    tls:
      mode: ISTIO_MUTUAL
      sni: reviews
  tunnel:
    protocol: CONNECT
    targetHost: 10.0.0.1
    targetPort: 8443
  retryBudget:
    percent: 25
    minRetryConcurrency: 5
subsets:
- name: v1
  labels:
    version: v1
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to:
            "us-west/zone1/*": 80
            "us-west/zone2/*": 20
    proxyProtocol:
      version: V2
- name: v2
  labels:
    version: v2
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpQueryParameterName: session
        maglev:
          tableSize: 65537
"#;

    #[test]
    fn every_field_parses_round_trips_and_reports_only_what_mizzen_ignores() {
        let s = spec(EVERYTHING);
        let tp = s.traffic_policy.as_ref().unwrap();
        let ch = tp
            .load_balancer
            .as_ref()
            .unwrap()
            .consistent_hash
            .as_ref()
            .unwrap();
        assert_eq!(ch.http_cookie.as_ref().unwrap().attributes.len(), 2);
        assert_eq!(ch.hash_keys(), ["httpCookie"]);
        assert_eq!(
            tp.connection_pool
                .as_ref()
                .unwrap()
                .http
                .as_ref()
                .unwrap()
                .h2_upgrade_policy,
            Some(H2UpgradePolicy::DoNotUpgrade)
        );
        assert_eq!(tp.tls.as_ref().unwrap().mode, Some(ClientTlsMode::Mutual));
        assert_eq!(
            s.subsets[0]
                .traffic_policy
                .as_ref()
                .unwrap()
                .proxy_protocol
                .unwrap()
                .version,
            Some(ProxyProtocolVersion::V2)
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["trafficPolicy"]["connectionPool"]["tcp"]["idleTimeout"],
            "0s"
        );
        assert_eq!(
            json["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"],
            7
        );
        let back: DestinationRuleSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        // Every problem is a field Mizzen does not implement (see `unsupported_fields_are_reported`),
        // except maxRetries, which the retryBudget set beside it replaces.
        let p = validate_spec(&s);
        assert!(!p.is_empty());
        let (conflicts, rest): (Vec<_>, Vec<_>) =
            p.iter().partition(|p| p.code == Code::ConflictingFields);
        assert!(rest.iter().all(|p| p.code == Code::NotSupported), "{p:#?}");
        let conflicts: Vec<_> = conflicts.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            conflicts,
            ["spec.trafficPolicy.connectionPool.http.maxRetries"]
        );
    }

    #[test]
    fn unknown_fields_and_enum_values_are_refused() {
        assert!(serde_saphyr::from_str::<DestinationRuleSpec>("host: a\nsubset: []").is_err());
        assert!(
            serde_saphyr::from_str::<DestinationRuleSpec>(
                "host: a\ntrafficPolicy:\n  loadBalancer:\n    simple: FASTEST"
            )
            .is_err()
        );
        assert!(
            serde_saphyr::from_str::<DestinationRuleSpec>(
                "host: a\ntrafficPolicy:\n  tls:\n    mode: mutual"
            )
            .is_err()
        );
    }

    #[test]
    fn host_is_required_and_valid() {
        assert_eq!(
            codes(&problems("host: ''")),
            [("spec.host", Code::MissingField)]
        );
        let p = problems("host: 'a.*.com'");
        assert_eq!(codes(&p), [("spec.host", Code::InvalidHost)]);
        assert!(p[0].message.contains("a.*.com"));
    }

    #[test]
    fn subset_names_are_required_dns_labels_and_unique() {
        let p = problems(
            "host: a\nsubsets:\n- name: v1\n- name: v1\n- name: ''\n- name: V_3\n  labels:\n    version: 'v 3'",
        );
        assert_eq!(
            codes(&p),
            [
                ("spec.subsets[1].name", Code::DuplicateSubset),
                ("spec.subsets[2].name", Code::MissingField),
                ("spec.subsets[3].name", Code::InvalidValue),
                ("spec.subsets[3].labels[version]", Code::InvalidSelector),
            ]
        );
        assert_eq!(
            p[0].message,
            "subset name \"v1\" is already used by subsets[0]"
        );
    }

    #[test]
    fn durations_must_be_at_least_one_millisecond() {
        let p = problems(
            "host: a\ntrafficPolicy:\n  connectionPool:\n    tcp:\n      connectTimeout: 0s\n      idleTimeout: 0s\n    http:\n      idleTimeout: 500us\n  outlierDetection:\n    interval: 0s\n    baseEjectionTime: 1500us",
        );
        assert_eq!(
            codes(&p),
            [
                (
                    "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
                    Code::InvalidDuration
                ),
                (
                    "spec.trafficPolicy.connectionPool.http.idleTimeout",
                    Code::InvalidDuration
                ),
                (
                    "spec.trafficPolicy.outlierDetection.interval",
                    Code::InvalidDuration
                ),
                (
                    "spec.trafficPolicy.outlierDetection.baseEjectionTime",
                    Code::InvalidDuration
                ),
            ]
        );
        assert_eq!(p[0].message, "must be at least 1ms (got 0s)");
        assert!(p[3].message.contains("whole number of milliseconds"));
    }

    #[test]
    fn percentages_and_counts_are_in_range() {
        let p = problems(
            "host: a\ntrafficPolicy:\n  outlierDetection:\n    maxEjectionPercent: 110\n    minHealthPercent: -1\n  connectionPool:\n    http:\n      maxRetries: -2\n  retryBudget:\n    percent: 150",
        );
        assert_eq!(
            codes(&p),
            [
                (
                    "spec.trafficPolicy.connectionPool.http.maxRetries",
                    Code::InvalidValue
                ),
                (
                    "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                    Code::InvalidPercentage
                ),
                (
                    "spec.trafficPolicy.outlierDetection.minHealthPercent",
                    Code::InvalidPercentage
                ),
                (
                    "spec.trafficPolicy.retryBudget.percent",
                    Code::InvalidPercentage
                ),
                (
                    "spec.trafficPolicy.connectionPool.http.maxRetries",
                    Code::ConflictingFields
                ),
            ]
        );
        assert_eq!(p[1].message, "must be between 0 and 100 (got 110)");
        // Counts that Istio declares unsigned cannot be negative at all.
        assert!(serde_saphyr::from_str::<OutlierDetection>("consecutive5xxErrors: -1").is_err());
    }

    #[test]
    fn consistent_hash_needs_exactly_one_key_and_one_algorithm() {
        let lb = "host: a\ntrafficPolicy:\n  loadBalancer:\n";
        let p = problems(&format!("{lb}    consistentHash:\n      ringHash: {{}}"));
        assert_eq!(
            codes(&p),
            [(
                "spec.trafficPolicy.loadBalancer.consistentHash",
                Code::MissingField
            )]
        );
        let p = problems(&format!(
            "{lb}    consistentHash:\n      httpHeaderName: x-user\n      useSourceIp: true\n      ringHash: {{}}\n      maglev:\n        tableSize: 65537"
        ));
        assert_eq!(
            codes(&p),
            [
                (
                    "spec.trafficPolicy.loadBalancer.consistentHash",
                    Code::ConflictingFields
                ),
                (
                    "spec.trafficPolicy.loadBalancer.consistentHash",
                    Code::ConflictingFields
                ),
            ]
        );
        assert!(p[0].message.contains("httpHeaderName and useSourceIp"));
        assert!(p[1].message.contains("ringHash or maglev"));
        let p = problems(&format!(
            "{lb}    simple: RANDOM\n    consistentHash:\n      useSourceIp: true"
        ));
        assert_eq!(
            codes(&p),
            [("spec.trafficPolicy.loadBalancer", Code::ConflictingFields)]
        );
        let p = problems(&format!(
            "{lb}    consistentHash:\n      useSourceIp: true\n      maglev:\n        tableSize: 65536"
        ));
        assert_eq!(
            codes(&p),
            [(
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                Code::InvalidValue
            )]
        );
    }

    #[test]
    fn deprecated_load_balancer_spellings_warn_and_normalise() {
        let mut s = spec(
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    simple: LEAST_CONN\n    warmupDurationSecs: 30s\n  portLevelSettings:\n  - port:\n      number: 80\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n        minimumRingSize: 4096",
        );
        let p = validate_spec(&s);
        assert_eq!(
            codes(&p),
            [
                ("spec.trafficPolicy.loadBalancer.simple", Code::Deprecated),
                (
                    "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
                    Code::Deprecated
                ),
                (
                    "spec.trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash.minimumRingSize",
                    Code::Deprecated
                ),
            ]
        );
        assert!(p.iter().all(|p| !p.is_error()));
        assert_eq!(
            p[1].message,
            "warmupDurationSecs is deprecated: use warmup.duration"
        );
        assert!(p[2].message.contains("ringHash.minimumRingSize"));
        s.normalize();
        let tp = s.traffic_policy.as_ref().unwrap();
        let lb = tp.load_balancer.as_ref().unwrap();
        assert_eq!(lb.simple, Some(SimpleLb::LeastRequest));
        assert_eq!(lb.warmup_duration_secs, None);
        assert_eq!(lb.warmup.unwrap().duration, Duration::from_secs(30));
        let ch = tp.port_level_settings[0]
            .load_balancer
            .as_ref()
            .unwrap()
            .consistent_hash
            .as_ref()
            .unwrap();
        assert_eq!(ch.minimum_ring_size, None);
        assert_eq!(ch.ring_hash.unwrap().minimum_ring_size, Some(4096));
        assert_eq!(codes(&validate_spec(&s)), []);
    }

    #[test]
    fn deprecated_ring_size_beside_an_algorithm_is_an_error() {
        let p = problems(
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      useSourceIp: true\n      minimumRingSize: 10\n      ringHash:\n        minimumRingSize: 20",
        );
        assert_eq!(
            codes(&p),
            [(
                "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
                Code::ConflictingFields
            )]
        );
    }

    #[test]
    fn port_level_settings_need_a_unique_valid_port() {
        let p = problems(
            "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port:\n      number: 80\n    tls:\n      mode: SIMPLE\n  - port:\n      number: 80\n    tls:\n      mode: SIMPLE\n  - tls:\n      mode: SIMPLE\n  - port:\n      number: 70000\n    tls:\n      mode: SIMPLE\n  - port:\n      number: 81",
        );
        assert_eq!(
            codes(&p),
            [
                (
                    "spec.trafficPolicy.portLevelSettings[1].port.number",
                    Code::InvalidPort
                ),
                (
                    "spec.trafficPolicy.portLevelSettings[2].port",
                    Code::MissingField
                ),
                (
                    "spec.trafficPolicy.portLevelSettings[3].port.number",
                    Code::InvalidPort
                ),
                (
                    "spec.trafficPolicy.portLevelSettings[4]",
                    Code::MissingField
                ),
            ]
        );
        assert!(p[0].message.contains("portLevelSettings[0]"));
        assert!(p[2].message.contains("70000"));
    }

    #[test]
    fn mutual_tls_needs_a_certificate_source() {
        let tls = "host: a\ntrafficPolicy:\n  tls:\n";
        let p = problems(&format!(
            "{tls}    mode: MUTUAL\n    caCertificates: /ca.pem"
        ));
        assert_eq!(
            codes(&p),
            [
                (
                    "spec.trafficPolicy.tls.clientCertificate",
                    Code::MissingField
                ),
                ("spec.trafficPolicy.tls.privateKey", Code::MissingField),
            ]
        );
        assert!(
            problems(&format!(
                "{tls}    mode: MUTUAL\n    credentialName: client-cred"
            ))
            .is_empty()
        );
        let p = problems(&format!(
            "{tls}    mode: MUTUAL\n    credentialName: c\n    privateKey: /k.pem"
        ));
        assert_eq!(
            codes(&p),
            [("spec.trafficPolicy.tls.privateKey", Code::ConflictingFields)]
        );
        let p = problems(&format!(
            "{tls}    mode: ISTIO_MUTUAL\n    clientCertificate: /c.pem\n    sni: x"
        ));
        assert_eq!(
            codes(&p),
            [(
                "spec.trafficPolicy.tls.clientCertificate",
                Code::ConflictingFields
            )]
        );
    }

    #[test]
    fn export_to_entries() {
        assert!(problems("host: a\nexportTo: ['.', 'team-a']").is_empty());
        let p = problems("host: a\nexportTo: ['~', 'Bad_NS', '.', '.']");
        assert_eq!(
            codes(&p),
            [
                ("spec.exportTo[0]", Code::InvalidValue),
                ("spec.exportTo[1]", Code::InvalidValue),
                ("spec.exportTo[3]", Code::InvalidValue),
            ]
        );
        assert!(p[1].message.contains("Bad_NS"));
        let p = problems("host: a\nexportTo: ['*', 'team-a']");
        assert_eq!(codes(&p), [("spec.exportTo", Code::ConflictingFields)]);
        let p = problems("host: a\nexportTo: ['*']\nworkloadSelector:\n  matchLabels:\n    app: x");
        assert_eq!(codes(&p), [("spec.exportTo", Code::ConflictingFields)]);
    }

    #[test]
    fn outlier_and_pool_cross_field_rules() {
        let p = problems(
            "host: a\ntrafficPolicy:\n  outlierDetection:\n    consecutiveLocalOriginFailures: 3\n  connectionPool:\n    http:\n      h2UpgradePolicy: UPGRADE\n      useClientProtocol: true",
        );
        assert_eq!(
            codes(&p),
            [
                (
                    "spec.trafficPolicy.connectionPool.http.useClientProtocol",
                    Code::ConflictingFields
                ),
                (
                    "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
                    Code::ConflictingFields
                ),
            ]
        );
        let p = problems("host: a\ntrafficPolicy:\n  connectionPool: {}");
        assert_eq!(
            codes(&p),
            [("spec.trafficPolicy.connectionPool", Code::MissingField)]
        );
        let p = problems("host: a\nsubsets:\n- name: v1\n  trafficPolicy: {}");
        assert_eq!(
            codes(&p),
            [("spec.subsets[0].trafficPolicy", Code::MissingField)]
        );
    }

    #[test]
    fn tunnel_and_proxy_protocol() {
        let p = problems(
            "host: a\ntrafficPolicy:\n  tunnel:\n    protocol: GET\n    targetHost: '*.x'\n    targetPort: 0\n  proxyProtocol: {}",
        );
        assert_eq!(
            codes(&p),
            [
                ("spec.trafficPolicy", Code::ConflictingFields),
                ("spec.trafficPolicy.tunnel.protocol", Code::UnknownEnumValue),
                ("spec.trafficPolicy.tunnel.targetHost", Code::InvalidHost),
                ("spec.trafficPolicy.tunnel.targetPort", Code::InvalidPort),
            ]
        );
        let post = problems(
            "host: a
trafficPolicy:
  tunnel:
    protocol: POST
    targetHost: example.com
    targetPort: 443",
        );
        assert_eq!(
            codes(&post),
            [("spec.trafficPolicy.tunnel.protocol", Code::NotSupported)]
        );
    }

    #[test]
    fn locality_settings() {
        let lb = "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n";
        let p = problems(&format!(
            "{lb}      distribute:\n      - from: us-west/*/zone\n        to:\n          us-east: 70\n          eu-west: 20\n      failover:\n      - from: us-east\n        to: us-east"
        ));
        assert_eq!(
            codes(&p),
            [
                (
                    "spec.trafficPolicy.loadBalancer.localityLbSetting",
                    Code::ConflictingFields
                ),
                (
                    "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from",
                    Code::InvalidValue
                ),
                (
                    "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                    Code::InvalidWeight
                ),
                (
                    "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
                    Code::InvalidValue
                ),
            ]
        );
        assert_eq!(p[2].message, "locality weights must add up to 100 (got 90)");
    }
    #[test]
    fn a_hash_cookie_that_cannot_be_written_in_set_cookie_is_an_error() {
        let p = problems(
            r#"
host: a
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie:
        name: "user id"
        path: "/a;Domain=evil.example"
        ttl: 60s
        attributes:
        - name: SameSite
          value: Strict
        - name: "x; Secure"
"#,
        );
        let c = "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie";
        assert_eq!(
            codes(&p),
            [
                (&*format!("{c}.name"), Code::InvalidValue),
                (&*format!("{c}.path"), Code::InvalidValue),
                (&*format!("{c}.attributes[1]"), Code::InvalidValue),
            ]
        );
        assert!(p.iter().all(|p| p.is_error()), "{p:?}");
        assert_eq!(
            p[0].message,
            "\"user id\" is not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"
        );
    }

    #[test]
    fn unsupported_fields_are_reported_wherever_a_policy_sits() {
        let p = problems(
            r#"
host: a
workloadSelector:
  matchLabels:
    app: x
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie:
        name: user
        ttl: 60s
        attributes:
        - name: SameSite
          value: Strict
    localityLbSetting:
      enabled: true
    warmup:
      duration: 10s
  connectionPool:
    tcp:
      tcpKeepalive:
        probes: 3
      maxConnectionDuration: 1h
    http:
      useClientProtocol: true
      maxConcurrentStreams: 10
  outlierDetection:
    splitExternalLocalOriginErrors: true
    consecutiveLocalOriginFailures: 2
  tls:
    mode: SIMPLE
    caCrl: /etc/crl.pem
  portLevelSettings:
  - port:
      number: 80
    connectionPool:
      tcp:
        tcpKeepalive: {}
  tunnel:
    targetHost: proxy.example.com
    targetPort: 3128
  retryBudget:
    percent: 10
subsets:
- name: v1
  trafficPolicy:
    proxyProtocol:
      version: V2
    tls:
      mode: MUTUAL
      credentialName: client
    loadBalancer:
      warmupDurationSecs: 30s
"#,
        );
        use Severity::Warn;
        let expected: Vec<(String, Severity, Code)> = [(
            "spec.subsets[0].trafficPolicy.loadBalancer.warmupDurationSecs",
            Code::Deprecated,
        )]
        .into_iter()
        .map(|(path, code)| (path.to_string(), Warn, code))
        .collect();
        let got: Vec<(String, Severity, Code)> = p
            .iter()
            .map(|p| (p.path.clone(), p.severity, p.code))
            .collect();
        assert_eq!(got, expected);
        let message = |path: &str| {
            let found = p.iter().find(|p| p.path.ends_with(path));
            found.map_or("", |p| p.message.as_str())
        };
        assert!(message("warmupDurationSecs").ends_with("use warmup.duration"));

        // The same policy without those fields (and with the defaults they would restore) is
        // clean.
        let p = problems(
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      httpCookie:\n        name: user\n    localityLbSetting:\n      enabled: false\n  connectionPool:\n    tcp:\n      maxConnections: 10\n    http:\n      useClientProtocol: false\n  outlierDetection:\n    splitExternalLocalOriginErrors: false\n  tls:\n    mode: DISABLE\n    caCrl: /etc/crl.pem\nsubsets:\n- name: v1\n  trafficPolicy:\n    tls:\n      mode: SIMPLE",
        );
        assert!(p.is_empty(), "{p:#?}");
    }
}
