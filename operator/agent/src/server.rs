//! The workload API: HTTP/1.1 over the agent's Unix socket.
//!
//! - `POST /v1/identity` with a [`SignRequest`] body: a streaming response of JSON lines
//!   ([`Event`]s): the certificate first, then each renewal and each new trust bundle, until the
//!   pod is gone or the proxy hangs up. A refusal is one `error` event with the status saying
//!   which kind: 400 malformed, 401 bad token, 403 wrong node or identity, 413 body too large,
//!   503 not ready.
//! - `GET /v1/endpoints`: a streaming response of [`EndpointsEvent`] lines, the full picture
//!   first and again after each change.
//!
//! The socket is created mode 0666 so the proxy (UID 1337) can connect: the directory it lives in
//! is the access boundary, and the token is what proves who is asking.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use mizzen_identity::SpiffeId;
use mizzen_identity::workload_api::{Event, SignRequest};
use rcgen::{CertificateSigningRequestParams, SanType};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::authz::Authorizer;
use crate::certify::{self, CertifySettings, SignError};
use crate::endpoints::EndpointsEvent;
use crate::metrics::Metrics;
use crate::node_ca::AuthorityRx;

/// The largest request body accepted (a P-256 CSR and a token are a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request body.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub const IDENTITY_PATH: &str = "/v1/identity";
pub const ENDPOINTS_PATH: &str = "/v1/endpoints";
/// JSON lines.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the workload API serves from.
pub struct Agent {
    pub authorizer: Arc<dyn Authorizer>,
    pub authorities: AuthorityRx,
    pub endpoints: watch::Receiver<Arc<EndpointsEvent>>,
    pub settings: CertifySettings,
    pub metrics: Metrics,
}

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Binds the socket at `path`, removing a stale socket left by an earlier run, and opens it to
/// every local user (mode 0666).
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(io_err)?,
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(io_err)?;
    Ok(listener)
}

/// Serves connections until the listener fails.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let agent = agent.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let agent = agent.clone();
                async move { Ok::<_, Infallible>(handle(agent, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "workload API connection");
            }
        });
    }
}

async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, IDENTITY_PATH) => identity(agent, req).await,
        (&Method::GET, ENDPOINTS_PATH) => endpoints(&agent),
        (_, IDENTITY_PATH | ENDPOINTS_PATH) => refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here", req.method()),
        ),
        (_, path) => refuse(StatusCode::NOT_FOUND, format!("no such endpoint `{path}`")),
    }
}

fn refuse(status: StatusCode, message: String) -> Response<Body> {
    let line = Event::Error { message }.to_line();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .body(Full::new(Bytes::from(line)).boxed_unsync())
        .unwrap_or_default()
}

fn streaming(body: Body) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .body(body)
        .unwrap_or_default()
}

/// The SPIFFE id the CSR asks for: its single URI SAN. Reading it also checks the CSR's
/// self-signature.
pub fn requested_id(csr_pem: &str) -> Result<SpiffeId, String> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| format!("csr_pem is not a valid PEM PKCS#10 request: {e}"))?;
    match csr.params.subject_alt_names.as_slice() {
        [SanType::URI(uri)] => SpiffeId::parse(uri.as_str()).map_err(|e| format!("csr_pem: {e}")),
        other => Err(format!(
            "csr_pem must have exactly one SAN, the workload's SPIFFE URI; it has {}",
            other.len()
        )),
    }
}

/// The request body, decoded, and the identity its CSR asks for.
async fn read_request(
    req: Request<Incoming>,
) -> Result<(SignRequest, SpiffeId), (StatusCode, String)> {
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    );
    let body = match read.await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {MAX_BODY} bytes"),
            ));
        }
        Ok(Err(e)) => {
            return Err((StatusCode::BAD_REQUEST, format!("reading the request: {e}")));
        }
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {BODY_TIMEOUT:?}"),
            ));
        }
    };
    let request = SignRequest::from_json(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("request body: {e}")))?;
    let requested =
        requested_id(&request.csr_pem).map_err(|message| (StatusCode::BAD_REQUEST, message))?;
    Ok((request, requested))
}

async fn identity(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let metrics = &agent.metrics;
    let (request, requested) = match read_request(req).await {
        Ok(parsed) => parsed,
        Err((status, message)) => {
            metrics.issued("malformed");
            return refuse(status, message);
        }
    };
    let grant = match agent.authorizer.authorize(&request.token, &requested).await {
        Ok(grant) => grant,
        Err(refusal) => {
            metrics.issued(refusal.reason());
            tracing::info!(requested = %requested, reason = %refusal, "certificate refused");
            return refuse(refusal.status(), refusal.to_string());
        }
    };
    let signed = certify::authority(&agent.authorities, agent.settings.authority_wait)
        .await
        .and_then(|authority| {
            certify::sign(&authority, &request.csr_pem, &grant, agent.settings.ttl)
        });
    let first = match signed {
        Ok(first) => first,
        Err(e) => {
            let status = match e {
                SignError::NoAuthority(_) | SignError::AuthorityGone => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                SignError::Workload(mizzen_ca::workload::WorkloadError::Ca(_)) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                SignError::Workload(_) => StatusCode::BAD_REQUEST,
            };
            metrics.issued("error");
            return refuse(status, e.to_string());
        }
    };
    metrics.issued("ok");
    let (tx, rx) = mpsc::channel::<Event>(8);
    // Capacity 8, empty: the first send cannot wait.
    let _ = tx.try_send(first.event.clone());
    let stream = certify::Stream {
        grant: grant.clone(),
        csr_pem: request.csr_pem,
        authorizer: agent.authorizer.clone(),
        authorities: agent.authorities.clone(),
        settings: agent.settings.clone(),
        metrics: agent.metrics.clone(),
    };
    let span = tracing::info_span!("certificate_stream", id = %grant.id);
    let gauge = agent.metrics.streams.clone();
    tokio::spawn(
        async move {
            gauge.inc();
            certify::keep_renewing(stream, first, tx).await;
            gauge.dec();
        }
        .instrument(span),
    );
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((Ok(Frame::data(Bytes::from(event.to_line()))), rx))
    });
    streaming(StreamBody::new(lines).boxed_unsync())
}

fn endpoints(agent: &Agent) -> Response<Body> {
    let mut rx = agent.endpoints.clone();
    rx.mark_changed();
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let line = rx.borrow_and_update().to_line();
        Some((Ok(Frame::data(Bytes::from(line))), rx))
    });
    streaming(StreamBody::new(lines).boxed_unsync())
}
