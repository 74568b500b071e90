//! The webhook's Prometheus metrics, in one registry per process (served at `/metrics`).

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of one admission: which webhook, the operation under review, how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `inject` or `validate`.
    pub webhook: &'static str,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`, or `unknown` for a body that was not a review.
    pub operation: &'static str,
    /// `injected`, `skipped`, `allowed`, `denied`, `error`, or `malformed` (HTTP 4xx).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric the webhook exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub latency: Family<WebhookLabel, Histogram>,
    pub certificate_reloads: Family<ReloadLabel, Counter>,
    /// Expiry of the certificate being served, in seconds since the Unix epoch.
    pub certificate_expiry: Gauge,
}

/// Latency buckets from 100 µs to about 1.6 s.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 15,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mizzen_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by webhook, operation and result",
            admissions.clone(),
        );
        let latency = Family::<WebhookLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "admission_duration_seconds",
            "Time from receiving a review's body to having its answer",
            latency.clone(),
        );
        let certificate_reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate changes seen on disk, by result",
            certificate_reloads.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time)",
            certificate_expiry.clone(),
        );
        Self {
            registry,
            admissions,
            latency,
            certificate_reloads,
            certificate_expiry,
        }
    }
}

impl Metrics {
    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn admission(&self, labels: AdmissionLabels, seconds: Option<f64>) {
        let webhook = labels.webhook;
        self.admissions.get_or_create(&labels).inc();
        if let Some(s) = seconds {
            self.latency
                .get_or_create(&WebhookLabel { webhook })
                .observe(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.admission(
            AdmissionLabels {
                webhook: "inject",
                operation: "CREATE",
                result: "injected",
            },
            Some(0.0004),
        );
        m.certificate_reloads
            .get_or_create(&ReloadLabel { result: "ok" })
            .inc();
        m.certificate_expiry.set(1_900_000_000);
        let text = m.render();
        assert!(
            text.contains(
                "mizzen_webhook_admissions_total{webhook=\"inject\",operation=\"CREATE\",result=\"injected\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("mizzen_webhook_admission_duration_seconds_bucket{le=\"0.0004\",webhook=\"inject\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mizzen_webhook_admission_duration_seconds_count{webhook=\"inject\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mizzen_webhook_certificate_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mizzen_webhook_certificate_expiry_timestamp_seconds 1900000000"),
            "{text}"
        );
    }
}
