//! What the proxy reports: Istio's metrics, the access log and trace headers.

pub mod access_log;
pub mod label;
pub mod metrics;
pub mod trace;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::Registry,
};

pub use access_log::AccessLogEntry;
pub use label::{HostLabels, Label, PeerLabels, ServiceLabels};
pub use metrics::{LabelParts, Metrics, RequestLabels, TcpLabels};

use crate::env::Workload;

/// The four request metrics of one label set, looked up once and kept.
struct RequestSeries {
    requests: Counter,
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// The process's registry with the proxy's families, shared by every listener.
pub struct Telemetry {
    pub registry: Registry,
    pub metrics: Metrics,
    pub access_log: bool,
    /// This proxy's workload, as the `source_*` (outbound) or `destination_*` (inbound) labels.
    pub workload: PeerLabels,
    /// Handles into the families by label set: one hash per request instead of four.
    series: RwLock<HashMap<RequestLabels, Arc<RequestSeries>, foldhash::fast::RandomState>>,
}

impl Telemetry {
    pub fn new(access_log: bool, workload: &Workload) -> Arc<Self> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Arc::new(Self {
            registry,
            metrics,
            access_log,
            workload: PeerLabels::of_workload(workload),
            series: RwLock::new(HashMap::default()),
        })
    }

    /// Records one finished request: the four request metrics and an access log line.
    pub fn request_done(
        &self,
        labels: &RequestLabels,
        request_bytes: u64,
        response_bytes: u64,
        duration_ms: f64,
        log: Option<&AccessLogEntry>,
    ) {
        let series = self.series(labels);
        series.requests.inc();
        series.duration_ms.observe(duration_ms);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
        if self.access_log
            && let Some(entry) = log
        {
            entry.write();
        }
    }

    fn series(&self, labels: &RequestLabels) -> Arc<RequestSeries> {
        if let Some(s) = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(labels)
        {
            return s.clone();
        }
        let m = &self.metrics;
        let series = Arc::new(RequestSeries {
            requests: m.requests.get_or_create(labels).clone(),
            duration_ms: m.duration_ms.get_or_create(labels).clone(),
            request_bytes: m.request_bytes.get_or_create(labels).clone(),
            response_bytes: m.response_bytes.get_or_create(labels).clone(),
        });
        self.series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels.clone(), series.clone());
        series
    }

    pub fn encode(&self) -> String {
        metrics::encode(&self.registry)
    }
}
