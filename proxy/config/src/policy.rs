//! Traffic policy towards a service or subset: what a DestinationRule becomes.

use serde::{Deserialize, Serialize};

/// Policies for calls to a service, a subset, or one of their ports. A subset's policy is
/// already merged over its service's by the operator; `ports` entries override the rest for
/// one port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// `loadBalancer.localityLbSetting`; `None`: Istio's mesh default (on, nothing else set).
    /// It belongs to the same `loadBalancer` as `load_balancer`: a subset or port that sets
    /// either replaces both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb: Option<LocalityLb>,
    /// `loadBalancer.warmup`: new endpoints' share ramps up (ROUND_ROBIN and LEAST_REQUEST).
    /// Replaced with `load_balancer`, as `locality_lb` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// `retryBudget`: retries in flight are capped relative to the requests in flight, in
    /// place of `connectionPool`'s `maxRetries`. Not per port, as in Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// `tunnel`: TCP connections to the destination's endpoints (an HTTP proxy) are tunnelled
    /// to this target with `CONNECT`. Not per port, as in Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    /// `proxyProtocol`: every upstream connection opens with a PROXY protocol header naming
    /// the caller's connection (its source, and the address it was made to). Not per port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortPolicy>,
}

impl TrafficPolicy {
    /// The effective policy for `port`: the port's entries where set, the rest from `self`.
    pub fn for_port(&self, port: u16) -> TrafficPolicy {
        let mut out = TrafficPolicy {
            ports: Vec::new(),
            ..self.clone()
        };
        if let Some(p) = self.ports.iter().find(|p| p.port == port) {
            if p.sets_load_balancer() {
                out.load_balancer = p.load_balancer.clone();
                out.locality_lb = p.locality_lb.clone();
                out.warmup = p.warmup;
            }
            if p.connection_pool.is_some() {
                out.connection_pool = p.connection_pool.clone();
            }
            if p.outlier_detection.is_some() {
                out.outlier_detection = p.outlier_detection.clone();
            }
            if p.tls.is_some() {
                out.tls = p.tls.clone();
            }
        }
        out
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortPolicy {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb: Option<LocalityLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

impl PortPolicy {
    /// Whether it sets any part of a `loadBalancer`, which then replaces the whole one.
    pub fn sets_load_balancer(&self) -> bool {
        self.load_balancer.is_some() || self.locality_lb.is_some() || self.warmup.is_some()
    }
}

/// Slow start (Envoy's `slow_start_config`): for `duration_ms` after the proxy first sees an
/// endpoint, its weight is scaled by `max(minimum_percent / 100, t^(1 / aggression))`, `t`
/// being the time since (at least 1 s) over the duration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Warmup {
    pub duration_ms: u64,
    pub minimum_percent: f64,
    pub aggression: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum LoadBalancer {
    RoundRobin,
    /// Power of two random choices, fewer active requests wins (Istio's default).
    #[default]
    LeastRequest,
    Random,
    /// Forward to the connection's original destination address.
    Passthrough,
    ConsistentHash(ConsistentHash),
}

/// Locality load balancing, as Istio's `localityLbSetting`. Localities are
/// `region/zone/subzone`; patterns may end a part with `*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLb {
    /// `enabled: false`: balance over every endpoint wherever it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Shares of traffic by locality for clients in `from` (the first entry that matches the
    /// proxy's locality applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// The region clients in region `from` fail over to before any other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Labels (`key` or `key=value`) that rank endpoints by how many of them, in order, match
    /// the proxy's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    pub from: String,
    /// Locality pattern to its share in percent.
    pub to: std::collections::BTreeMap<String, u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    pub key: HashKey,
    pub algorithm: HashAlgorithm,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum HashKey {
    Header(String),
    /// A cookie, hashed when the request carries it. With `ttl_ms` set, a request without it
    /// is hashed on a value made from its connection's addresses, and the response sets the
    /// cookie to that value (as Envoy): `Max-Age` from the ttl (none for `0`: a session
    /// cookie), then `path` and `attributes`, then `HttpOnly`. Without a ttl such a request is
    /// balanced at random.
    Cookie {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attributes: Vec<CookieAttribute>,
    },
    SourceIp,
    QueryParameter(String),
}

/// One `name[=value]` attribute of a generated hash cookie (e.g. `SameSite=Strict`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum HashAlgorithm {
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

impl Default for HashAlgorithm {
    fn default() -> Self {
        Self::RingHash {
            minimum_ring_size: 1024,
        }
    }
}

/// Limits per upstream service (circuit breaking). Unset fields are unlimited, as in Istio.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Requests waiting for a connection; beyond it requests fail at once with 503 UO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// Requests in flight to the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Retries in flight to the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Speak HTTP/2 to the upstream even when the caller spoke HTTP/1.1.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h2_upgrade: bool,
    /// `maxConcurrentStreams`: streams one HTTP/2 connection to an endpoint carries at a
    /// time; more open another connection. Unset: one connection per endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// `useClientProtocol`: speak to the upstream the HTTP version the caller spoke, whatever
    /// the port declares or `h2_upgrade` says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_client_protocol: bool,
    /// TCP keepalive on upstream connections (`tcp.tcpKeepalive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// HTTP connections to the upstream are retired this long after they were opened
    /// (`tcp.maxConnectionDuration`): they take no new request, and close once their last ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration_ms: Option<u64>,
}

/// The PROXY protocol version of [`TrafficPolicy::proxy_protocol`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

/// Where a tunnel through an HTTP proxy leads: the `CONNECT` request's authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tunnel {
    pub target_host: String,
    pub target_port: u16,
}

/// Envoy's retry budget: at most `max(min_retry_concurrency, percent% of the requests in
/// flight and waiting)` retries in flight to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    pub percent: f64,
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    /// Istio's documented defaults for what a `retryBudget` leaves unset.
    fn default() -> Self {
        Self {
            percent: 20.0,
            min_retry_concurrency: 3,
        }
    }
}

/// SO_KEEPALIVE on, with the probes' timing where set (the system's defaults elsewhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
}

/// Ejecting endpoints that keep failing. Counters are off when unset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// 502, 503, 504 and connection failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    pub interval_ms: u64,
    /// Ejection lasts this times the number of times the endpoint was ejected.
    pub base_ejection_time_ms: u64,
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, nothing is ejected.
    pub min_health_percent: u32,
    /// Set (`splitExternalLocalOriginErrors`): the proxy's own failures to reach an endpoint
    /// (connect failure, reset, timeout) are counted apart from the endpoint's responses, and
    /// this many in a row eject it (`0`: they never do); the 5xx and gateway-error counters
    /// then count responses only. Unset: such failures count as 503 (504 for a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
}

impl Default for OutlierDetection {
    /// Istio's defaults for the fields a DestinationRule leaves unset.
    fn default() -> Self {
        Self {
            consecutive_5xx_errors: Some(5),
            consecutive_gateway_errors: None,
            interval_ms: 10_000,
            base_ejection_time_ms: 30_000,
            max_ejection_percent: 10,
            min_health_percent: 0,
            consecutive_local_origin_failures: None,
        }
    }
}

/// TLS towards the upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Accepted server identities (SANs); empty: the destination's own identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Files (as mounted in the proxy) for SIMPLE and MUTUAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// PEM certificate revocation lists the server's chain is checked against (`caCrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// A Secret for the client credentials: gateway-only in Istio. Carried so that a sidecar
    /// can refuse it by name instead of silently sending without a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Mutual TLS when the destination runs a Mizzen proxy, plaintext otherwise (auto mTLS).
    #[default]
    Auto,
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}
