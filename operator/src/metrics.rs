//! The operator's Prometheus metrics, in one registry passed down from `main`.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

type Labels = Vec<(String, String)>;

#[derive(Clone)]
pub struct Metrics {
    /// Reconcile passes (render, and write when leading).
    pub reconciles: Counter,
    /// Failures by reason (`apply_configmap`, `patch_status`, `watch`, ...).
    pub errors: Family<Labels, Counter>,
    /// Seconds per render.
    pub render_duration: Histogram,
    /// Stored size of each namespace's proxy config (compressed when large), as counted
    /// against the ConfigMap limit.
    pub configmap_bytes: Family<Labels, Gauge>,
    /// Size of each namespace's proxy config as JSON, however it is stored.
    pub config_json_bytes: Family<Labels, Gauge>,
    /// Objects by verdict (`Accepted` / `Invalid`).
    pub objects: Family<Labels, Gauge>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// The canary controller's `mizzen_canary_*` series.
    pub canary: crate::canary::metrics::CanaryMetrics,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Counter::default(),
            errors: Family::default(),
            render_duration: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            configmap_bytes: Family::default(),
            config_json_bytes: Family::default(),
            objects: Family::default(),
            leader: Gauge::default(),
            canary: crate::canary::metrics::CanaryMetrics::new(registry),
        };
        let r = registry.sub_registry_with_prefix("mizzen_operator");
        r.register("reconciles", "Reconcile passes", m.reconciles.clone());
        r.register("errors", "Errors by reason", m.errors.clone());
        r.register(
            "render_duration_seconds",
            "Time to render the proxy configs",
            m.render_duration.clone(),
        );
        r.register(
            "configmap_bytes",
            "Stored size of the proxy config per namespace (gzip counted as base64), against the 1 MiB ConfigMap limit",
            m.configmap_bytes.clone(),
        );
        r.register(
            "config_json_bytes",
            "Size of the proxy config per namespace as JSON, before any compression",
            m.config_json_bytes.clone(),
        );
        r.register("objects", "Mesh objects by verdict", m.objects.clone());
        r.register(
            "leader",
            "1 while this replica holds the Lease",
            m.leader.clone(),
        );
        m
    }

    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }
}
