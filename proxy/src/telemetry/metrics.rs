//! Istio's standard metrics, with Istio's names and labels, so existing dashboards work.

use mizzen_resilience::ResponseFlags;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use super::label::{Flags, Label, PeerLabels, ServiceLabels};

/// Istio's labels of the request metrics: those of a connection and the response's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub common: TcpLabels,
    pub response_code: u16,
    pub grpc_response_status: Label,
}

/// Istio's labels of the TCP metrics, which the request metrics share.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: Label,
    pub source_workload: Label,
    pub source_workload_namespace: Label,
    pub source_principal: Label,
    pub source_app: Label,
    pub source_version: Label,
    pub destination_workload: Label,
    pub destination_workload_namespace: Label,
    pub destination_principal: Label,
    pub destination_app: Label,
    pub destination_version: Label,
    pub destination_service: Label,
    pub destination_service_name: Label,
    pub destination_service_namespace: Label,
    pub request_protocol: Label,
    pub response_flags: Flags,
    pub connection_security_policy: Label,
}

/// What a request's labels are made of: each part computed once where it comes from (the
/// workload, the endpoint, the service) and shared.
#[derive(Clone, Debug, Default)]
pub struct LabelParts {
    pub source: PeerLabels,
    pub destination: PeerLabels,
    pub service: ServiceLabels,
    /// `mutual_tls`, `none`, or `unknown` (the source side cannot tell).
    pub security_policy: Label,
}

impl LabelParts {
    pub fn labels(
        &self,
        reporter: &'static str,
        protocol: &'static str,
        flags: ResponseFlags,
    ) -> TcpLabels {
        let (s, d, svc) = (&self.source, &self.destination, &self.service);
        TcpLabels {
            reporter: Label::Static(reporter),
            source_workload: s.workload.clone(),
            source_workload_namespace: s.namespace.clone(),
            source_principal: s.principal.clone(),
            source_app: s.app.clone(),
            source_version: s.version.clone(),
            destination_workload: d.workload.clone(),
            destination_workload_namespace: d.namespace.clone(),
            destination_principal: d.principal.clone(),
            destination_app: d.app.clone(),
            destination_version: d.version.clone(),
            destination_service: svc.service.clone(),
            destination_service_name: svc.name.clone(),
            destination_service_namespace: svc.namespace.clone(),
            request_protocol: Label::Static(protocol),
            response_flags: Flags(flags),
            connection_security_policy: self.security_policy.clone(),
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
