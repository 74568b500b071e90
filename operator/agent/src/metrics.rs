//! The agent's Prometheus metrics, in one registry passed down from `main`.

use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

#[derive(Clone, Default)]
pub struct Metrics {
    /// First certificates of workload streams, by result (`ok`, or the refusal / error reason).
    pub issued: Family<Labels, Counter>,
    /// Renewals of workload certificates, by result (`ok` / `error`).
    pub renewals: Family<Labels, Counter>,
    /// Node CA requests, by result.
    pub node_ca_requests: Family<Labels, Counter>,
    /// When the current node CA expires, in seconds since the Unix epoch.
    pub node_ca_expiry: Gauge,
    /// Open certificate streams.
    pub streams: Gauge,
}

fn result(value: &str) -> Labels {
    vec![("result".into(), value.into())]
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("mizzen_agent");
        r.register(
            "certificates_issued",
            "Workload certificate requests by result",
            m.issued.clone(),
        );
        r.register(
            "certificate_renewals",
            "Workload certificate renewals by result",
            m.renewals.clone(),
        );
        r.register(
            "node_ca_requests",
            "Node intermediate CA requests by result",
            m.node_ca_requests.clone(),
        );
        r.register(
            "node_ca_expiry_timestamp_seconds",
            "Expiry of the current node CA, seconds since the Unix epoch",
            m.node_ca_expiry.clone(),
        );
        r.register(
            "certificate_streams",
            "Open workload certificate streams",
            m.streams.clone(),
        );
        m
    }

    pub fn issued(&self, outcome: &str) {
        self.issued.get_or_create(&result(outcome)).inc();
    }

    pub fn renewed(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.renewals.get_or_create(&result(outcome)).inc();
    }

    pub fn node_ca_renewed(&self, not_after: SystemTime) {
        self.node_ca_requests.get_or_create(&result("ok")).inc();
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.node_ca_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    pub fn node_ca_failed(&self) {
        self.node_ca_requests.get_or_create(&result("error")).inc();
    }
}
