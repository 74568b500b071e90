//! Reporting one request: its metric labels, access-log entry, and the hook that records both
//! when the response body ends (so durations and sizes cover the whole exchange).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime},
};

use http::Response;
use mizzen_resilience::ResponseFlags;

use crate::{
    env::Workload,
    http::body::{Body, BodyEnd, Counted, OnEnd},
    telemetry::{AccessLogEntry, RequestLabels, Telemetry, access_log::rfc3339},
    upstream::UpstreamHost,
};

const UNKNOWN: &str = "unknown";

/// What a request is known to be before it is answered.
pub struct Exchange {
    pub telemetry: Arc<Telemetry>,
    pub labels: RequestLabels,
    pub entry: AccessLogEntry,
    pub start: Instant,
    pub request_bytes: Arc<AtomicU64>,
}

/// Stores the request body's size where the response's end can read it.
pub struct RequestBytes(pub Arc<AtomicU64>);

impl OnEnd for RequestBytes {
    fn on_end(self: Box<Self>, end: BodyEnd) {
        self.0.store(end.bytes, Ordering::Relaxed);
    }
}

/// `reviews` of `reviews.default.svc.cluster.local`; other hosts as they are.
pub fn service_name(host: &str) -> String {
    match host.split_once(".svc.") {
        Some((prefix, _)) => prefix.split('.').next().unwrap_or(host).to_string(),
        None => host.to_string(),
    }
}

/// The facts of a request the report starts from.
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `http` or `grpc`.
    pub protocol: &'a str,
    pub authority: &'a str,
    pub request_id: &'a str,
    pub peer: std::net::SocketAddr,
}

impl Exchange {
    pub fn new(telemetry: Arc<Telemetry>, reporter: &'static str, head: Head<'_>) -> Self {
        let Head {
            method,
            path,
            protocol,
            authority,
            request_id,
            peer,
        } = head;
        let labels = RequestLabels {
            reporter: reporter.to_string(),
            request_protocol: protocol.to_string(),
            connection_security_policy: if reporter == "destination" {
                "none"
            } else {
                UNKNOWN
            }
            .to_string(),
            ..Default::default()
        };
        let entry = AccessLogEntry {
            start_time: if telemetry.access_log {
                rfc3339(SystemTime::now())
            } else {
                String::new()
            },
            method: method.to_string(),
            path: path.to_string(),
            authority: authority.to_string(),
            x_request_id: request_id.to_string(),
            downstream_remote_address: peer.to_string(),
            reporter,
            ..Default::default()
        };
        Self {
            telemetry,
            labels,
            entry,
            start: Instant::now(),
            request_bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn source(&mut self, w: &Workload) {
        let l = &mut self.labels;
        l.source_workload = w.name.clone();
        l.source_workload_namespace = w.namespace.clone();
        // Known to peers only through mTLS, which comes later.
        l.source_principal = UNKNOWN.to_string();
        l.source_app = w.app.clone();
        l.source_version = or_unknown(&w.version);
    }

    pub fn destination_workload(&mut self, w: &Workload) {
        let l = &mut self.labels;
        l.destination_workload = w.name.clone();
        l.destination_workload_namespace = w.namespace.clone();
        l.destination_principal = UNKNOWN.to_string();
        l.destination_app = w.app.clone();
        l.destination_version = or_unknown(&w.version);
    }

    pub fn destination_service(&mut self, host: &str, namespace: &str) {
        let l = &mut self.labels;
        l.destination_service = host.to_string();
        l.destination_service_name = service_name(host);
        l.destination_service_namespace = or_unknown(namespace);
    }

    /// Records the outcome when the response body ends.
    pub fn finish(mut self, mut response: Response<Body>) -> Response<Body> {
        let flags = ResponseFlags::from(&response);
        self.labels.response_code = response.status().as_u16().to_string();
        self.labels.response_flags = flags.to_string();
        self.entry.response_code = response.status().as_u16();
        self.entry.response_flags = flags.to_string();
        if let Some(up) = response.extensions().get::<UpstreamHost>() {
            self.entry.upstream_host = up.name.clone();
            if self.labels.reporter == "source" {
                let label = |k: &str| up.labels.get(k).cloned();
                self.labels.destination_app = label("app").unwrap_or_else(|| UNKNOWN.into());
                self.labels.destination_version =
                    label("version").unwrap_or_else(|| UNKNOWN.into());
                self.labels.destination_workload = label("workload")
                    .or_else(|| label("app"))
                    .unwrap_or_else(|| UNKNOWN.into());
                self.labels.destination_workload_namespace =
                    self.labels.destination_service_namespace.clone();
                self.labels.destination_principal = UNKNOWN.into();
            }
        }
        for l in [
            &mut self.labels.destination_app,
            &mut self.labels.destination_version,
            &mut self.labels.destination_workload,
            &mut self.labels.destination_workload_namespace,
            &mut self.labels.destination_principal,
            &mut self.labels.destination_service,
            &mut self.labels.destination_service_name,
            &mut self.labels.destination_service_namespace,
            &mut self.labels.source_workload,
            &mut self.labels.source_workload_namespace,
            &mut self.labels.source_principal,
            &mut self.labels.source_app,
            &mut self.labels.source_version,
        ] {
            if l.is_empty() {
                *l = UNKNOWN.to_string();
            }
        }
        if let Some(g) = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
        {
            self.labels.grpc_response_status = g.to_string();
        }
        let body = std::mem::replace(response.body_mut(), crate::http::body::empty());
        *response.body_mut() = Counted::new(body, Box::new(self)).boxed_body();
        response
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        UNKNOWN.into()
    } else {
        s.into()
    }
}

impl OnEnd for Exchange {
    fn on_end(mut self: Box<Self>, end: BodyEnd) {
        let elapsed = self.start.elapsed();
        let req = self.request_bytes.load(Ordering::Relaxed);
        if let Some(g) = end.grpc_status {
            self.labels.grpc_response_status = g;
        }
        if !end.complete && !self.labels.response_flags.contains("DC") {
            // The caller went away (or the upstream body failed) before the end.
            let flags = if self.labels.response_flags == "-" {
                "DC".to_string()
            } else {
                format!("{},DC", self.labels.response_flags)
            };
            self.labels.response_flags = flags.clone();
            self.entry.response_flags = flags;
        }
        self.entry.bytes_received = req;
        self.entry.bytes_sent = end.bytes;
        self.entry.duration = elapsed.as_millis() as u64;
        self.telemetry.request_done(
            &self.labels,
            req,
            end.bytes,
            elapsed.as_secs_f64() * 1000.0,
            Some(&self.entry),
        );
    }
}
