//! What the proxy reports: Istio's metrics, the access log and trace headers.

pub mod access_log;
pub mod label;
pub mod metrics;
pub mod trace;

use std::sync::{Arc, RwLock};

use mizzen_resilience::ResponseFlags;

use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::Registry,
};

pub use access_log::AccessLogEntry;
pub use label::{HostLabels, Label, MtlsPeer, PeerLabels, ServiceLabels};
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
    /// Handles into the families by label set: one hash per request instead of four, and
    /// of the labels' addresses, not their text (see [`Fingerprint`]).
    series: RwLock<SeriesCache>,
}

type SeriesCache = hashbrown::HashMap<Fingerprint, Series, foldhash::fast::RandomState>;

/// At most this many label sets are kept by address; past it the cache starts again (the
/// series themselves stay in the registry).
const MAX_CACHED_SERIES: usize = 4096;

/// A cached label set and its metrics. Holding the labels keeps their shared text alive, so
/// no other label can take its address while the entry exists.
struct Series {
    _labels: RequestLabels,
    metrics: Arc<RequestSeries>,
}

/// Where a label's text lives: its address and length.
type Addr = (usize, usize);

fn addr(label: &Label) -> Addr {
    let s = label.as_str();
    (s.as_ptr() as usize, s.len())
}

/// A request's label set by the addresses of its values: hashed and compared without reading
/// any text. Two sets with the same addresses have the same values; two with the same values
/// at other addresses (a config reload made new copies) are cached apart and land in the
/// same series of the registry, which is keyed by text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Fingerprint {
    labels: [Addr; 17],
    flags: ResponseFlags,
    code: u16,
}

/// What a finished request's metric labels are made of, borrowed from its report.
pub struct RequestKey<'a> {
    pub parts: &'a LabelParts,
    pub reporter: &'static str,
    pub protocol: &'static str,
    pub flags: ResponseFlags,
    pub response_code: u16,
    pub grpc_status: &'a Label,
}

impl RequestKey<'_> {
    /// Every label value but the reporter and protocol (static text, see [`Self::fingerprint`]).
    fn values(&self) -> [&Label; 15] {
        let (s, d, svc) = (
            &self.parts.source,
            &self.parts.destination,
            &self.parts.service,
        );
        [
            &s.workload,
            &s.namespace,
            &s.principal,
            &s.app,
            &s.version,
            &d.workload,
            &d.namespace,
            &d.principal,
            &d.app,
            &d.version,
            &svc.service,
            &svc.name,
            &svc.namespace,
            &self.parts.security_policy,
            self.grpc_status,
        ]
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut labels = [(0, 0); 17];
        labels[0] = (self.reporter.as_ptr() as usize, self.reporter.len());
        labels[1] = (self.protocol.as_ptr() as usize, self.protocol.len());
        for (slot, label) in labels[2..].iter_mut().zip(self.values()) {
            *slot = addr(label);
        }
        Fingerprint {
            labels,
            flags: self.flags,
            code: self.response_code,
        }
    }

    fn labels(&self) -> RequestLabels {
        RequestLabels {
            common: self.parts.labels(self.reporter, self.protocol, self.flags),
            response_code: self.response_code,
            grpc_response_status: self.grpc_status.clone(),
        }
    }
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
            series: RwLock::new(SeriesCache::default()),
        })
    }

    /// Records one finished request: the four request metrics and an access log line.
    pub fn request_done(
        &self,
        key: &RequestKey<'_>,
        request_bytes: u64,
        response_bytes: u64,
        duration_ms: f64,
        log: Option<&AccessLogEntry>,
    ) {
        let series = self.series(key);
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

    fn series(&self, key: &RequestKey<'_>) -> Arc<RequestSeries> {
        let fingerprint = key.fingerprint();
        if let Some(s) = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fingerprint)
        {
            return s.metrics.clone();
        }
        let labels = key.labels();
        let m = &self.metrics;
        let metrics = Arc::new(RequestSeries {
            requests: m.requests.get_or_create(&labels).clone(),
            duration_ms: m.duration_ms.get_or_create(&labels).clone(),
            request_bytes: m.request_bytes.get_or_create(&labels).clone(),
            response_bytes: m.response_bytes.get_or_create(&labels).clone(),
        });
        let mut cache = self.series.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_SERIES {
            cache.clear();
        }
        cache.insert(
            fingerprint,
            Series {
                _labels: labels,
                metrics: metrics.clone(),
            },
        );
        metrics
    }

    /// How many label sets are cached by address.
    #[cfg(test)]
    fn cached_series(&self) -> usize {
        self.series.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn encode(&self) -> String {
        metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(parts: &'a LabelParts, grpc: &'a Label, code: u16) -> RequestKey<'a> {
        RequestKey {
            parts,
            reporter: "source",
            protocol: "http",
            flags: ResponseFlags::EMPTY,
            response_code: code,
            grpc_status: grpc,
        }
    }

    fn requests_total(t: &Telemetry) -> Vec<String> {
        t.encode()
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_label_value_tells_series_apart_and_equal_text_shares_one() {
        let t = Telemetry::new(false, &Workload::default());
        let base = LabelParts {
            source: PeerLabels::default(),
            destination: PeerLabels::default(),
            service: ServiceLabels::of("a.shop.svc.cluster.local", "shop"),
            security_policy: Label::UNKNOWN,
        };
        let grpc = Label::EMPTY;
        t.request_done(&key(&base, &grpc, 200), 0, 0, 1.0, None);
        // The same text at other addresses (a config reload): the same series.
        let copy = LabelParts {
            service: ServiceLabels::of("a.shop.svc.cluster.local", "shop"),
            ..base.clone()
        };
        t.request_done(&key(&copy, &grpc, 200), 0, 0, 1.0, None);
        assert_eq!(t.cached_series(), 2);
        let lines = requests_total(&t);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].ends_with(" 2"), "{lines:?}");
        // The fingerprint covers every label the series has (its labels, the flags, the code):
        // a label added to the metrics but not to the fingerprint fails here.
        let exported = lines[0].matches("=\"").count();
        let covered = key(&base, &grpc, 200).fingerprint().labels.len() + 2;
        assert_eq!(exported, covered, "{}", lines[0]);
        // Each label value on its own makes another series.
        let mut expected = 1;
        for i in 0..15 {
            let mut parts = base.clone();
            let mut grpc = Label::EMPTY;
            let other = Label::from(format!("other-{i}"));
            let values = [
                &mut parts.source.workload,
                &mut parts.source.namespace,
                &mut parts.source.principal,
                &mut parts.source.app,
                &mut parts.source.version,
                &mut parts.destination.workload,
                &mut parts.destination.namespace,
                &mut parts.destination.principal,
                &mut parts.destination.app,
                &mut parts.destination.version,
                &mut parts.service.service,
                &mut parts.service.name,
                &mut parts.service.namespace,
                &mut parts.security_policy,
                &mut grpc,
            ];
            *values[i] = other;
            t.request_done(&key(&parts, &grpc, 200), 0, 0, 1.0, None);
            expected += 1;
            assert_eq!(requests_total(&t).len(), expected, "label {i}");
        }
        // And the response code, and the flags.
        t.request_done(&key(&base, &Label::EMPTY, 503), 0, 0, 1.0, None);
        assert_eq!(requests_total(&t).len(), expected + 1);
        let flagged = RequestKey {
            flags: ResponseFlags::UO,
            ..key(&base, &grpc, 200)
        };
        t.request_done(&flagged, 0, 0, 1.0, None);
        assert_eq!(requests_total(&t).len(), expected + 2);
    }

    /// The labels of an mTLS peer are made once per connection, so its requests find their
    /// series by address (made per request, every request missed the cache and hashed its
    /// labels four times in the registry).
    #[test]
    fn the_requests_of_one_mtls_connection_share_a_cached_series() {
        let t = Telemetry::new(false, &Workload::default());
        let peer = MtlsPeer::new(
            "spiffe://cluster.local/ns/web/sa/front",
            &t.workload.served_identity,
        );
        for _ in 0..3 {
            let mut parts = LabelParts {
                destination: t.workload.clone(),
                ..Default::default()
            };
            parts.mtls_source(&peer);
            t.request_done(&key(&parts, &Label::EMPTY, 200), 0, 0, 1.0, None);
        }
        assert_eq!(t.cached_series(), 1);
        assert_eq!(requests_total(&t).len(), 1);
    }

    #[test]
    fn the_cache_of_label_sets_is_bounded() {
        let t = Telemetry::new(false, &Workload::default());
        let parts = LabelParts::default();
        for code in 0..(MAX_CACHED_SERIES as u16 + 10) {
            t.request_done(&key(&parts, &Label::EMPTY, code), 0, 0, 1.0, None);
        }
        assert!(t.cached_series() <= MAX_CACHED_SERIES);
        assert_eq!(requests_total(&t).len(), MAX_CACHED_SERIES + 10);
    }
}
