//! Istio's standard metrics, with Istio's names and labels, so existing dashboards work.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Istio's labels of the request metrics.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub request_protocol: String,
    pub response_code: String,
    pub grpc_response_status: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

/// Istio's labels of the TCP metrics (the request labels without the per-request ones).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub request_protocol: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

impl From<&RequestLabels> for TcpLabels {
    fn from(l: &RequestLabels) -> Self {
        Self {
            reporter: l.reporter.clone(),
            source_workload: l.source_workload.clone(),
            source_workload_namespace: l.source_workload_namespace.clone(),
            source_principal: l.source_principal.clone(),
            source_app: l.source_app.clone(),
            source_version: l.source_version.clone(),
            destination_workload: l.destination_workload.clone(),
            destination_workload_namespace: l.destination_workload_namespace.clone(),
            destination_principal: l.destination_principal.clone(),
            destination_app: l.destination_app.clone(),
            destination_version: l.destination_version.clone(),
            destination_service: l.destination_service.clone(),
            destination_service_name: l.destination_service_name.clone(),
            destination_service_namespace: l.destination_service_namespace.clone(),
            request_protocol: "tcp".to_string(),
            response_flags: l.response_flags.clone(),
            connection_security_policy: l.connection_security_policy.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Istio's duration buckets, in milliseconds.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Istio's size buckets: powers of ten from 1 byte to 1 GB.
fn bytes_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 10.0, 10,
    ))
}

/// The proxy's metric families, registered once in the process's registry.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration_ms: HistogramFamily<RequestLabels>,
    pub request_bytes: HistogramFamily<RequestLabels>,
    pub response_bytes: HistogramFamily<RequestLabels>,
    pub tcp_sent: Family<TcpLabels, Counter>,
    pub tcp_received: Family<TcpLabels, Counter>,
    pub tcp_opened: Family<TcpLabels, Counter>,
    pub tcp_closed: Family<TcpLabels, Counter>,
    pub config_reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration_ms: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(bytes_histogram),
            response_bytes: Family::new_with_constructor(bytes_histogram),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            config_reloads: Family::default(),
        };
        // The registry appends `_total` to counters.
        registry.register("istio_requests", "Requests handled", m.requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            m.duration_ms.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes in bytes",
            m.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes in bytes",
            m.response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the peer on TCP connections",
            m.tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the peer on TCP connections",
            m.tcp_received.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            m.tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            m.tcp_closed.clone(),
        );
        registry.register(
            "mizzen_proxy_config_reloads",
            "Config file reloads by result (failure keeps the last good config)",
            m.config_reloads.clone(),
        );
        m
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&ReloadLabels {
                result: if ok { "success" } else { "failure" }.to_string(),
            })
            .inc();
    }
}

/// Renders the registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
