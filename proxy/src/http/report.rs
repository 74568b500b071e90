//! Reporting one request: its metric labels, access-log entry, and the hook that records both
//! when the response body ends (so durations and sizes cover the whole exchange).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime},
};

use http::{Response, uri::PathAndQuery};
use mizzen_resilience::ResponseFlags;

use crate::{
    http::{
        body::{Body, BodyEnd, Counted, OnEnd},
        headers::{GRPC_STATUS, path_and_query, request_protocol},
    },
    telemetry::{
        AccessLogEntry, Label, LabelParts, PeerLabels, RequestKey, ServiceLabels, Telemetry,
        access_log::rfc3339, trace,
    },
    upstream::{Origin, UpstreamHost},
};

/// What a request is known to be before it is answered. Its metric labels are assembled from
/// shared parts; the access-log entry exists only when the access log is on.
pub struct Exchange {
    telemetry: Arc<Telemetry>,
    reporter: &'static str,
    protocol: &'static str,
    pub parts: LabelParts,
    log: Option<Box<AccessLogEntry>>,
    start: Instant,
    /// The request body's size, once it ends; `None` for a request without a body.
    request_bytes: Option<Arc<AtomicU64>>,
    flags: ResponseFlags,
    response_code: u16,
    grpc_status: Label,
    /// Where the upstream service says the response came from, once the request is sent.
    origin: Option<Arc<Origin>>,
}

/// Stores the request body's size where the response's end can read it.
pub struct RequestBytes(pub Arc<AtomicU64>);

impl OnEnd for RequestBytes {
    fn on_end(self, end: BodyEnd) {
        self.0.store(end.bytes, Ordering::Relaxed);
    }
}

/// The facts of a request the report starts from.
struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `http` or `grpc`.
    pub protocol: &'static str,
    pub authority: &'a str,
    /// Read as text only for the access log.
    pub request_id: &'a http::HeaderValue,
    pub version: http::Version,
    pub peer: std::net::SocketAddr,
}

impl Exchange {
    /// `reporter` is `source` (outbound: this workload is the source) or `destination`.
    fn new(telemetry: Arc<Telemetry>, reporter: &'static str, head: Head<'_>) -> Self {
        let local = telemetry.workload.clone();
        let parts = if reporter == "destination" {
            LabelParts {
                source: PeerLabels::default(),
                destination: local,
                service: ServiceLabels::default(),
                security_policy: Label::Static("none"),
            }
        } else {
            LabelParts {
                source: local,
                destination: PeerLabels::default(),
                service: ServiceLabels::default(),
                security_policy: Label::UNKNOWN,
            }
        };
        let log = telemetry.access_log.then(|| {
            Box::new(AccessLogEntry {
                start_time: rfc3339(SystemTime::now()),
                method: head.method.to_string(),
                path: head.path.to_string(),
                protocol: format!("{:?}", head.version),
                authority: head.authority.to_string(),
                x_request_id: head.request_id.to_str().unwrap_or_default().to_string(),
                downstream_remote_address: head.peer.to_string(),
                reporter,
                ..Default::default()
            })
        });
        Self {
            telemetry,
            reporter,
            protocol: head.protocol,
            parts,
            log,
            start: Instant::now(),
            request_bytes: None,
            flags: ResponseFlags::default(),
            response_code: 0,
            grpc_status: Label::EMPTY,
            origin: None,
        }
    }

    /// Starts the report of a request arriving with `parts` and `body`: makes sure it carries
    /// a request id and trace context (adding what is missing) and records its head. Gives
    /// back the report, the body (its size counted into the report) and the request's target
    /// (path and query), which routing reads.
    pub fn start(
        telemetry: Arc<Telemetry>,
        reporter: &'static str,
        parts: &mut http::request::Parts,
        body: hyper::body::Incoming,
        authority: &str,
        peer: std::net::SocketAddr,
    ) -> (Self, Body, PathAndQuery) {
        let target = path_and_query(parts);
        let request_id = trace::ensure(&mut parts.headers);
        let head = Head {
            method: parts.method.as_str(),
            path: target.as_str(),
            protocol: request_protocol(&parts.headers),
            authority,
            request_id: &request_id,
            version: parts.version,
            peer,
        };
        let mut ex = Self::new(telemetry, reporter, head);
        let body = ex.counted_body(body);
        (ex, body, target)
    }

    /// The request's body, its size counted into this report when it ends. A request that
    /// came without one (most do) gets an empty body at no cost: there is nothing to count.
    fn counted_body(&mut self, body: hyper::body::Incoming) -> Body {
        if http_body::Body::is_end_stream(&body) {
            return crate::http::body::empty();
        }
        Counted::new(
            crate::http::body::boxed(body),
            RequestBytes(self.request_bytes.insert(Arc::default()).clone()),
        )
        .boxed_body()
    }

    /// Fills in the access-log entry, when there is one.
    pub fn log(&mut self, fill: impl FnOnce(&mut AccessLogEntry)) {
        if let Some(entry) = &mut self.log {
            fill(entry);
        }
    }

    /// Where the upstream service of this request is to say which endpoint answered.
    pub fn origin(&mut self) -> Arc<Origin> {
        self.origin.get_or_insert_default().clone()
    }

    pub fn destination_service(&mut self, service: ServiceLabels) {
        self.parts.service = service;
    }

    /// Records the outcome when the response body ends.
    pub fn finish(mut self, mut response: Response<Body>) -> Response<Body> {
        self.flags = ResponseFlags::from(&response);
        self.response_code = response.status().as_u16();
        if let Some(UpstreamHost {
            endpoint,
            principal,
        }) = self.origin.take().and_then(|o| o.take())
        {
            if let Some(entry) = &mut self.log {
                entry.upstream_host.clone_from(&endpoint.name);
            }
            if self.reporter == "source" {
                self.parts.destination = endpoint.peer.clone();
                if let Some(principal) = principal {
                    self.parts.destination.principal = Label::Shared(principal);
                }
            }
        }
        // Only a gRPC exchange has a `grpc_response_status` (in a trailers-only response, here).
        if self.protocol == "grpc"
            && let Some(g) = response
                .headers()
                .get(GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
        {
            self.grpc_status = Label::from(g);
        }
        let body = std::mem::replace(response.body_mut(), crate::http::body::empty());
        *response.body_mut() = Counted::new(body, self).boxed_body();
        response
    }
}

impl OnEnd for Exchange {
    fn on_end(mut self, end: BodyEnd) {
        let elapsed = self.start.elapsed();
        let req = self
            .request_bytes
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        if let Some(g) = end.grpc_status {
            self.grpc_status = Label::from(g);
        }
        if !end.complete {
            // The caller went away (or the upstream body failed) before the end.
            self.flags |= ResponseFlags::DC;
        }
        let (flags, code) = (self.flags, self.response_code);
        self.log(|entry| {
            entry.response_code = code;
            entry.response_flags = flags.to_string();
            entry.bytes_received = req;
            entry.bytes_sent = end.bytes;
            entry.duration = elapsed.as_millis() as u64;
        });
        let key = RequestKey {
            parts: &self.parts,
            reporter: self.reporter,
            protocol: self.protocol,
            flags,
            response_code: code,
            grpc_status: &self.grpc_status,
        };
        self.telemetry.request_done(
            &key,
            req,
            end.bytes,
            elapsed.as_secs_f64() * 1000.0,
            self.log.as_deref(),
        );
    }
}
