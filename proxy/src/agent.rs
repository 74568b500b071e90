//! The proxy's client of the node agent's workload API (HTTP/1.1 over the agent's Unix socket).
//!
//! Two long-lived streams, each a thin I/O loop around pure parts:
//! - [`keep_identity`]: `POST /v1/identity` with this workload's CSR and projected token; every
//!   certificate the agent pushes (the first one, then each renewal) goes into the [`CertStore`]
//!   the TLS configs read per handshake, so a renewal needs no restart and drops no connection.
//! - [`follow_endpoints`]: `GET /v1/endpoints`; each snapshot replaces what [`AgentEndpoints`]
//!   answers, so a removed pod stops receiving new requests as soon as the agent says so.
//!
//! When a stream ends or fails (the agent restarted, the pod is not in its cache yet), the loop
//! reconnects with capped, jittered exponential backoff ([`Backoff`]) and meanwhile keeps what it
//! has: the still-valid certificate, the last endpoints snapshot. The key is made once, here, and
//! never leaves the process; neither it nor the token is ever logged.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mizzen_identity::bundle::BundleError;
use mizzen_identity::csr::CsrError;
use mizzen_identity::tls::TlsError;
use mizzen_identity::workload_api::{Event, SignRequest, Version};
use mizzen_identity::{
    CertStore, CertificateRequest, PrivateKey, RefreshPolicy, SpiffeId, TrustBundle,
};
use serde::Deserialize;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tracing::Instrument;

use crate::balance::locality::Locality;
use crate::config::ConfigStore;
use crate::endpoints::{ConfigEndpoints, Endpoint, EndpointSource};

pub const IDENTITY_PATH: &str = "/v1/identity";
pub const ENDPOINTS_PATH: &str = "/v1/endpoints";

/// How long connecting and receiving the response head may take; a hung agent is then treated
/// as a failed attempt rather than waited on forever.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest line accepted: an endpoints snapshot of a large cluster is the big one.
pub const MAX_LINE: usize = 32 * 1024 * 1024;
/// How much of a refusal's body is read for its message.
const MAX_REFUSAL: usize = 64 * 1024;

/// Why one session with the agent ended.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("reading the service-account token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to the node agent at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the node agent at {path} did not answer {what} within {after:?}")]
    Timeout {
        path: PathBuf,
        what: &'static str,
        after: Duration,
    },
    #[error("HTTP with the node agent: {0}")]
    Http(#[from] hyper::Error),
    #[error("the node agent refused {what} with {status}: {message}")]
    Refused {
        what: &'static str,
        status: StatusCode,
        message: String,
    },
    #[error("the node agent sent a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("the node agent ended the {0} stream")]
    Closed(&'static str),
}

/// Why a certificate event could not be installed; the current certificate stays.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("roots from the node agent: {0}")]
    Bundle(#[from] BundleError),
    #[error("certificate from the node agent: {0}")]
    Store(#[from] TlsError),
    #[error("{0}")]
    Key(#[from] CsrError),
}

/// Delays between reconnection attempts: [`RefreshPolicy::retry_at`]'s doubling backoff with
/// equal jitter and a cap, never more than half of what the current certificate has left.
/// Reset once a session delivered something, so a brief agent restart is retried at once.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RefreshPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: RefreshPolicy) -> Self {
        Backoff { policy, attempt: 0 }
    }

    /// The wait before the next attempt, at `now`, for a certificate expiring at `not_after`
    /// (`None`: nothing to protect, plain backoff). `jitter` is a uniform draw in `[0, 1)`.
    pub fn next_delay(
        &mut self,
        now: SystemTime,
        not_after: Option<SystemTime>,
        jitter: f64,
    ) -> Duration {
        let at = self
            .policy
            .retry_at(self.attempt, now, not_after.unwrap_or(now), jitter);
        self.attempt = self.attempt.saturating_add(1);
        at.duration_since(now).unwrap_or(Duration::ZERO)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(RefreshPolicy::default())
    }
}

/// Splits a byte stream into lines, whatever the chunk boundaries.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter that refuses lines longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        LineSplitter {
            pending: Vec::new(),
            max,
        }
    }

    /// Feeds `chunk`, calling `each` with every line it completes (newline and a trailing `\r`
    /// removed; empty lines skipped).
    pub fn push(&mut self, chunk: &[u8], mut each: impl FnMut(&str)) -> Result<(), AgentError> {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(newline) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = &self.pending[start..start + newline];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                each(&String::from_utf8_lossy(line));
            }
            start += newline + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.max {
            self.pending = Vec::new();
            return Err(AgentError::LineTooLong);
        }
        Ok(())
    }
}

/// What a workload API event changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    /// A new certificate (and its roots) is in the store.
    Certificate,
    /// New roots are in the store.
    Bundle,
    /// The agent reported a problem; nothing changed.
    AgentError(String),
}

/// Applies one workload API event to `store`, installing certificates with `key` (the key the
/// CSR was made with; every certificate of the stream is for it).
pub fn install(
    store: &CertStore,
    key: &PrivateKey,
    event: Event,
) -> Result<Installed, InstallError> {
    match event {
        Event::Certificate {
            chain_pem,
            roots_pem,
            ..
        } => {
            let bundle = TrustBundle::from_pem(&roots_pem)?;
            store.update(&chain_pem, key.duplicate()?, bundle)?;
            Ok(Installed::Certificate)
        }
        Event::Bundle { roots_pem } => {
            store.set_bundle(TrustBundle::from_pem(&roots_pem)?);
            Ok(Installed::Bundle)
        }
        Event::Error { message } => Ok(Installed::AgentError(message)),
    }
}

/// How a session ended: whether it delivered anything first (which resets the backoff), and why.
struct Ended {
    delivered: bool,
    why: AgentError,
}

/// Resolves once shutdown is asked for (or its sender is gone: nobody can ask any more, and the
/// process is on its way out).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs `session` again and again until shutdown, waiting out the backoff in between.
/// `not_after` is the expiry the backoff must not overshoot, if any.
async fn reconnecting<S, F>(
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    not_after: impl Fn() -> Option<SystemTime>,
    mut session: S,
) where
    S: FnMut() -> F,
    F: Future<Output = Ended>,
{
    let mut backoff = Backoff::default();
    loop {
        let ended = tokio::select! {
            ended = session() => ended,
            () = stopped(&mut shutdown) => return,
        };
        if ended.delivered {
            backoff.reset();
        }
        let delay = backoff.next_delay(SystemTime::now(), not_after(), rand::random());
        tracing::warn!(
            stream = what,
            error = %ended.why,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "node agent stream ended; reconnecting"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut shutdown) => return,
        }
    }
}

/// Sends `request` over a new connection to the agent and returns the response once its status
/// says the stream is on; a refusal becomes [`AgentError::Refused`] with the agent's message.
async fn open(
    socket: &Path,
    what: &'static str,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, AgentError> {
    let head = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| AgentError::Connect {
                path: socket.to_path_buf(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Ends by itself once the response body is done or dropped (no further requests).
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "node agent connection");
            }
        });
        Ok::<_, AgentError>(sender.send_request(request).await?)
    };
    let timed_out = || AgentError::Timeout {
        path: socket.to_path_buf(),
        what,
        after: HEAD_TIMEOUT,
    };
    let response = tokio::time::timeout(HEAD_TIMEOUT, head)
        .await
        .map_err(|_| timed_out())??;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = tokio::time::timeout(
        HEAD_TIMEOUT,
        Limited::new(response.into_body(), MAX_REFUSAL).collect(),
    )
    .await;
    let message = match body {
        Ok(Ok(body)) => refusal_message(&body.to_bytes()),
        _ => "(no readable message)".to_string(),
    };
    Err(AgentError::Refused {
        what,
        status,
        message,
    })
}

/// The message of a refusal body: its `error` event, else the text itself.
fn refusal_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match Event::from_line(text.trim()) {
        Ok(Event::Error { message }) => message,
        _ => text.trim().to_string(),
    }
}

/// Reads `body` line by line until it ends (an error: these streams are meant to last).
async fn read_lines(
    mut body: Incoming,
    what: &'static str,
    mut each: impl FnMut(&str),
) -> Result<(), AgentError> {
    let mut lines = LineSplitter::new(MAX_LINE);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            lines.push(&data, &mut each)?;
        }
    }
    Err(AgentError::Closed(what))
}

fn request(method: http::Method, path: &'static str, body: Bytes) -> Request<Full<Bytes>> {
    let has_body = !body.is_empty();
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = http::Uri::from_static(path);
    let headers = request.headers_mut();
    headers.insert(header::HOST, header::HeaderValue::from_static("localhost"));
    if has_body {
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
    }
    request
}

/// What the identity stream needs across reconnections.
struct IdentityClient {
    socket: PathBuf,
    token_file: PathBuf,
    csr_pem: String,
    key: PrivateKey,
    store: Arc<CertStore>,
}

impl IdentityClient {
    async fn session(&self) -> Ended {
        let mut delivered = false;
        let why = match self.stream(&mut delivered).await {
            Ok(()) => AgentError::Closed("identity"),
            Err(why) => why,
        };
        Ended { delivered, why }
    }

    async fn stream(&self, delivered: &mut bool) -> Result<(), AgentError> {
        // Read on every connection: the kubelet rotates the projected token.
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| AgentError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let body =
            serde_json::to_vec(&SignRequest::new(&self.csr_pem, token.trim())).unwrap_or_default();
        let response = open(
            &self.socket,
            "the certificate request",
            request(http::Method::POST, IDENTITY_PATH, body.into()),
        )
        .await?;
        read_lines(response.into_body(), "identity", |line| {
            let event = match Event::from_line(line) {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a workload API line");
                    return;
                }
            };
            match install(&self.store, &self.key, event) {
                Ok(Installed::Certificate) => {
                    *delivered = true;
                    let not_after = self.store.validity().map(|v| v.not_after);
                    tracing::info!(
                        id = %self.store.id(),
                        expires_in_s = not_after
                            .and_then(|t| t.duration_since(SystemTime::now()).ok())
                            .map_or(0, |d| d.as_secs()),
                        "certificate installed"
                    );
                }
                Ok(Installed::Bundle) => tracing::info!("trust bundle updated"),
                Ok(Installed::AgentError(message)) => {
                    tracing::warn!(%message, "node agent reports a certificate problem");
                }
                Err(e) => tracing::error!(error = %e, "certificate not installed; keeping the current one"),
            }
        })
        .await
    }
}

/// Keeps `store` supplied with certificates from the node agent at `socket` until `shutdown`
/// turns true (or its sender is dropped).
///
/// One P-256 key and CSR for `store.id()` are made at the start and reused on every
/// reconnection; the token is read from `token_file` for each. A refusal (401/403: the pod may
/// not be in the agent's cache yet) is logged with the agent's message and retried.
pub async fn keep_identity(
    socket: PathBuf,
    token_file: PathBuf,
    store: Arc<CertStore>,
    shutdown: watch::Receiver<bool>,
) {
    let request = match CertificateRequest::for_workload(store.id()) {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(
                error = %e,
                id = %store.id(),
                "cannot make a key and CSR; no certificates"
            );
            return;
        }
    };
    let span = tracing::info_span!("agent_identity", id = %store.id());
    let client = Arc::new(IdentityClient {
        socket,
        token_file,
        csr_pem: request.csr_pem,
        key: request.key,
        store: store.clone(),
    });
    reconnecting(
        "identity",
        shutdown,
        || store.validity().map(|v| v.not_after),
        || {
            let client = client.clone();
            async move { client.session().await }
        },
    )
    .instrument(span)
    .await;
}

/// One line of `GET /v1/endpoints`: every service port the agent knows and its ready endpoints.
/// The same JSON as the agent's own type; the proxy keeps its own so it does not depend on the
/// agent crate (and through it on kube).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EndpointsSnapshot {
    pub v: Version,
    pub services: Vec<ServicePortEndpoints>,
    /// The locality (`region/zone/subzone`) of the agent's node, where this proxy runs
    /// (absent from agents before it was added, and where the node has no topology labels).
    #[serde(default)]
    pub locality: Option<String>,
    /// The agent's node's name.
    #[serde(default)]
    pub node: Option<String>,
}

/// The endpoints behind one service port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ServicePortEndpoints {
    pub host: String,
    /// The service port clients dial.
    pub port: u16,
    pub endpoints: Vec<AgentEndpoint>,
}

/// One ready endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AgentEndpoint {
    pub address: String,
    /// The port on the pod.
    pub port: u16,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod's service account (absent from agents before it was added, and for endpoints
    /// that are not pods): the identity its proxy must present, in this mesh's trust domain.
    #[serde(default)]
    pub service_account: Option<ServiceAccountRef>,
    /// Where the endpoint runs, `region/zone/subzone` (absent when the agent does not know).
    #[serde(default)]
    pub locality: Option<String>,
    /// The node it runs on.
    #[serde(default)]
    pub node: Option<String>,
}

/// A pod's service account, which names the SPIFFE identity its proxy serves.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl EndpointsSnapshot {
    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

/// A snapshot arranged for lookups: host → service port → endpoints (sorted).
#[derive(Debug, Default, PartialEq)]
struct Index {
    hosts: HashMap<String, HashMap<u16, Vec<Endpoint>>>,
    /// The agent's node's.
    locality: Option<Locality>,
    /// The agent's node.
    node: Option<String>,
}

impl Index {
    /// Indexes `snapshot`; service accounts become SPIFFE ids in `trust_domain` (one that does
    /// not make a valid id leaves the endpoint's identity unknown).
    fn of(snapshot: EndpointsSnapshot, trust_domain: &str) -> Self {
        let mut hosts: HashMap<String, HashMap<u16, Vec<Endpoint>>> = HashMap::new();
        for service in snapshot.services {
            let list = hosts
                .entry(service.host)
                .or_default()
                .entry(service.port)
                .or_default();
            list.extend(service.endpoints.into_iter().map(|e| {
                Endpoint {
                    host: e.address,
                    port: e.port,
                    labels: e.labels,
                    weight: 1,
                    identity: e
                        .service_account
                        .and_then(|sa| SpiffeId::new(trust_domain, &sa.namespace, &sa.name).ok()),
                    locality: e
                        .locality
                        .as_deref()
                        .map(Locality::parse)
                        .unwrap_or_default(),
                    node: e.node,
                }
            }));
        }
        for list in hosts.values_mut().flat_map(HashMap::values_mut) {
            list.sort();
            list.dedup();
        }
        Index {
            hosts,
            locality: snapshot
                .locality
                .as_deref()
                .map(Locality::parse)
                .filter(|l| !l.is_empty()),
            node: snapshot.node,
        }
    }
}

/// Endpoints as the node agent serves them, falling back to the config file for hosts the agent
/// does not know (ServiceEntry hosts, and everything before the first snapshot arrives).
pub struct AgentEndpoints {
    config: Arc<ConfigStore>,
    fallback: ConfigEndpoints,
    current: ArcSwap<Index>,
    changes: AtomicU64,
}

impl AgentEndpoints {
    pub fn new(config: Arc<ConfigStore>) -> Self {
        AgentEndpoints {
            fallback: ConfigEndpoints::new(config.clone()),
            config,
            current: ArcSwap::from_pointee(Index::default()),
            changes: AtomicU64::new(0),
        }
    }

    /// Makes `snapshot` the agent's current picture. Returns whether any answer changed (a
    /// snapshot equal to the current one, as after a reconnection, changes nothing).
    pub fn apply(&self, snapshot: EndpointsSnapshot) -> bool {
        let trust_domain = self.config.current().config().mesh.trust_domain.clone();
        let index = Index::of(snapshot, &trust_domain);
        if *self.current.load_full() == index {
            return false;
        }
        self.current.store(Arc::new(index));
        self.changes.fetch_add(1, Ordering::Release);
        true
    }
}

impl EndpointSource for AgentEndpoints {
    fn endpoints(
        &self,
        service_host: &str,
        port: u16,
        subset: &BTreeMap<String, String>,
    ) -> Vec<Endpoint> {
        let current = self.current.load();
        let Some(ports) = current.hosts.get(service_host) else {
            return self.fallback.endpoints(service_host, port, subset);
        };
        ports
            .get(&port)
            .into_iter()
            .flatten()
            .filter(|e| subset.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
            .cloned()
            .collect()
    }

    /// The agent's changes plus the config's version: both only grow, so the sum moves whenever
    /// either does.
    fn generation(&self) -> u64 {
        self.changes
            .load(Ordering::Acquire)
            .wrapping_add(self.fallback.generation())
    }

    fn locality(&self) -> Option<Locality> {
        self.current.load().locality.clone()
    }

    fn node(&self) -> Option<String> {
        self.current.load().node.clone()
    }
}

async fn endpoints_session(socket: &Path, endpoints: &AgentEndpoints) -> Ended {
    let mut delivered = false;
    let result = async {
        let response = open(
            socket,
            "the endpoints request",
            request(http::Method::GET, ENDPOINTS_PATH, Bytes::new()),
        )
        .await?;
        read_lines(
            response.into_body(),
            "endpoints",
            |line| match EndpointsSnapshot::from_line(line) {
                Ok(snapshot) => {
                    delivered = true;
                    let services = snapshot.services.len();
                    if endpoints.apply(snapshot) {
                        tracing::debug!(services, "endpoints updated");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "skipping an endpoints line"),
            },
        )
        .await
    };
    let why = match result.await {
        Ok(()) => AgentError::Closed("endpoints"),
        Err(why) => why,
    };
    Ended { delivered, why }
}

/// Feeds `endpoints` from the node agent at `socket` until `shutdown` turns true (or its sender
/// is dropped), reconnecting with backoff and keeping the last snapshot in between.
pub async fn follow_endpoints(
    socket: PathBuf,
    endpoints: Arc<AgentEndpoints>,
    shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("agent_endpoints", socket = %socket.display());
    let socket = Arc::new(socket);
    reconnecting(
        "endpoints",
        shutdown,
        || None,
        || {
            let (socket, endpoints) = (socket.clone(), endpoints.clone());
            async move { endpoints_session(&socket, &endpoints).await }
        },
    )
    .instrument(span)
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(splitter: &mut LineSplitter, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        splitter
            .push(chunk, |line| out.push(line.to_string()))
            .unwrap();
        out
    }

    #[test]
    fn lines_are_whole_whatever_the_chunks() {
        let mut s = LineSplitter::new(64);
        assert!(collect(&mut s, b"{\"a\"").is_empty());
        assert_eq!(
            collect(&mut s, b":1}\n{\"b\":2}\r\n\n{\"c\""),
            ["{\"a\":1}", "{\"b\":2}"]
        );
        assert_eq!(collect(&mut s, b":3}\n"), ["{\"c\":3}"]);
        assert!(collect(&mut s, b"").is_empty());
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut s = LineSplitter::new(8);
        assert_eq!(collect(&mut s, b"12345678\n"), ["12345678"]);
        let err = s.push(b"123456789", |_| {}).unwrap_err();
        assert!(matches!(err, AgentError::LineTooLong), "{err}");
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..9)
            .map(|_| b.next_delay(now, None, 1.0).as_millis())
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // Jitter spreads a delay over its upper half.
        assert_eq!(b.next_delay(now, None, 0.0), Duration::from_secs(15));
        b.reset();
        assert_eq!(b.next_delay(now, None, 0.0), Duration::from_millis(250));
        // Never past half of what the certificate has left.
        let mut b = Backoff::default();
        for _ in 0..6 {
            b.next_delay(now, None, 1.0);
        }
        let expiry = now + Duration::from_secs(4);
        assert_eq!(b.next_delay(now, Some(expiry), 1.0), Duration::from_secs(2));
    }

    #[test]
    fn snapshot_lines_decode_and_index_by_host_and_port() {
        let line = r#"{"v":1,"services":[
            {"host":"r.shop.svc.cluster.local","port":9080,"endpoints":[
                {"address":"10.0.0.2","port":8080,"labels":{"version":"v2"}},
                {"address":"10.0.0.1","port":8080,"labels":{"version":"v1"}}]},
            {"host":"r.shop.svc.cluster.local","port":9443,"endpoints":[]}]}"#
            .replace('\n', "");
        let snapshot = EndpointsSnapshot::from_line(&line).unwrap();
        let index = Index::of(snapshot, "cluster.local");
        let ports = &index.hosts["r.shop.svc.cluster.local"];
        assert!(ports[&9443].is_empty());
        let hosts: Vec<&str> = ports[&9080].iter().map(|e| e.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.2"]);
        assert!(ports[&9080].iter().all(|e| e.weight == 1 && e.port == 8080));
        assert!(EndpointsSnapshot::from_line(r#"{"v":2,"services":[]}"#).is_err());
        assert!(ports[&9080].iter().all(|e| e.identity.is_none()));
        // Endpoints that are not pods (and lines from older agents) come without labels or
        // service account.
        let bare =
            r#"{"v":1,"services":[{"host":"h","port":1,"endpoints":[{"address":"a","port":2}]}]}"#;
        let bare = EndpointsSnapshot::from_line(bare).unwrap();
        assert!(bare.services[0].endpoints[0].labels.is_empty());
        assert_eq!(bare.services[0].endpoints[0].service_account, None);
    }

    #[test]
    fn localities_of_the_node_and_of_each_endpoint_are_read() {
        let line = r#"{"v":1,"locality":"us-east1/us-east1-b/","node":"n1","services":[
            {"host":"h","port":1,"endpoints":[
                {"address":"10.0.0.1","port":2,"locality":"us-east1/us-east1-c/rack-4","node":"n7"},
                {"address":"10.0.0.2","port":2}]}]}"#
            .replace('\n', "");
        let index = Index::of(
            EndpointsSnapshot::from_line(&line).unwrap(),
            "cluster.local",
        );
        assert_eq!(index.locality, Some(Locality::parse("us-east1/us-east1-b")));
        let eps = &index.hosts["h"][&1];
        assert_eq!(
            (
                eps[0].locality.zone.as_str(),
                eps[0].locality.subzone.as_str()
            ),
            ("us-east1-c", "rack-4")
        );
        assert!(eps[1].locality.is_empty());
        assert_eq!(
            (eps[0].node.as_deref(), eps[1].node.as_deref()),
            (Some("n7"), None)
        );
        assert_eq!(index.node.as_deref(), Some("n1"));
        // A node without topology labels says nothing about where the proxy runs.
        let bare = r#"{"v":1,"locality":"//","services":[]}"#;
        assert_eq!(
            Index::of(EndpointsSnapshot::from_line(bare).unwrap(), "c").locality,
            None
        );
    }

    #[test]
    fn service_accounts_become_identities_in_the_mesh_trust_domain() {
        let line = r#"{"v":1,"services":[{"host":"r.shop.svc.cluster.local","port":9080,
            "endpoints":[
                {"address":"10.0.0.1","port":8080,"labels":{},
                 "service_account":{"namespace":"shop","name":"reviews"}},
                {"address":"10.0.0.2","port":8080,"labels":{},
                 "service_account":{"namespace":"shop","name":"Not Valid!"}}]}]}"#
            .replace('\n', "");
        let index = Index::of(EndpointsSnapshot::from_line(&line).unwrap(), "corp.example");
        let ids: Vec<Option<String>> = index.hosts["r.shop.svc.cluster.local"][&9080]
            .iter()
            .map(|e| e.identity.as_ref().map(SpiffeId::uri))
            .collect();
        assert_eq!(
            ids,
            [
                Some("spiffe://corp.example/ns/shop/sa/reviews".to_string()),
                None
            ]
        );
    }

    #[test]
    fn certificates_install_with_the_csr_key_and_bad_ones_leave_the_current() {
        use mizzen_identity::SpiffeId;
        let ours = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/cart").unwrap();
        let other = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/admin").unwrap();
        let root = mizzen_ca::RootCa::generate("cluster.local", Duration::from_secs(3600)).unwrap();
        let authority = root.authority(None).unwrap();
        let store = CertStore::new(ours.clone());
        let request = CertificateRequest::for_workload(&ours).unwrap();
        let event = |id: &SpiffeId, csr: &str| {
            let issued = authority
                .sign_workload(csr, id, Duration::from_secs(60))
                .unwrap();
            Event::Certificate {
                chain_pem: issued.chain_pem,
                roots_pem: issued.roots_pem,
                not_after: 0,
            }
        };
        let leaf = |store: &CertStore| store.certified_key().unwrap().cert[0].clone();

        let first = event(&ours, &request.csr_pem);
        assert_eq!(
            install(&store, &request.key, first).unwrap(),
            Installed::Certificate
        );
        let installed = leaf(&store);
        assert_eq!(mizzen_identity::svid::spiffe_id(&installed).unwrap(), ours);
        // The same key serves the renewal too.
        let renewal = event(&ours, &request.csr_pem);
        install(&store, &request.key, renewal).unwrap();
        assert_ne!(leaf(&store), installed);
        let renewed = leaf(&store);

        // Another workload's certificate, or one for another key, is refused; ours stays.
        let stranger = CertificateRequest::for_workload(&other).unwrap();
        let err = install(&store, &stranger.key, event(&other, &stranger.csr_pem)).unwrap_err();
        assert!(matches!(err, InstallError::Store(_)), "{err}");
        let foreign_key = CertificateRequest::for_workload(&ours).unwrap();
        let err = install(&store, &request.key, event(&ours, &foreign_key.csr_pem)).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        assert_eq!(leaf(&store), renewed);

        // New roots alone; garbage roots are refused; agent errors change nothing.
        let next = mizzen_ca::RootCa::generate("cluster.local", Duration::from_secs(3600)).unwrap();
        let bundle = Event::Bundle {
            roots_pem: format!("{}{}", root.cert_pem(), next.cert_pem()),
        };
        assert_eq!(
            install(&store, &request.key, bundle).unwrap(),
            Installed::Bundle
        );
        assert_eq!(store.bundle().unwrap().len(), 2);
        let garbage = Event::Bundle {
            roots_pem: "nothing".into(),
        };
        assert!(matches!(
            install(&store, &request.key, garbage),
            Err(InstallError::Bundle(_))
        ));
        assert_eq!(store.bundle().unwrap().len(), 2);
        let said = Event::Error {
            message: "renewal failed".into(),
        };
        assert_eq!(
            install(&store, &request.key, said).unwrap(),
            Installed::AgentError("renewal failed".into())
        );
        assert_eq!(leaf(&store), renewed);
    }

    #[test]
    fn refusal_messages_come_from_the_error_event() {
        let line = Event::Error {
            message: "pod shop/cart is not on node a".into(),
        }
        .to_line();
        assert_eq!(
            refusal_message(line.as_bytes()),
            "pod shop/cart is not on node a"
        );
        assert_eq!(refusal_message(b"  plain text\n"), "plain text");
    }
}
