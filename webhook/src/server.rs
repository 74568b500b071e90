//! The HTTPS server: `/inject` and `/validate` take AdmissionReviews; `/healthz`, `/readyz` and
//! `/metrics` are for the kubelet and Prometheus. Each review handler is parse → pure decision
//! ([`crate::admission`]) → answer; bodies that are not reviews are refused at the HTTP level
//! (415 wrong content type, 413 over [`MAX_BODY`], 400 malformed) and the server carries on.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use axum_server::{Handle, tls_rustls::RustlsConfig};

use crate::{
    admission::{self, Verdict},
    config::Config,
    inject::InjectSettings,
    metrics::{AdmissionLabels, Metrics},
    tls::CertStore,
};

/// The largest AdmissionReview accepted. The API server caps objects at about 1.5 MiB, so a
/// real review stays below this.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub settings: InjectSettings,
    pub metrics: Arc<Metrics>,
    pub certs: Arc<CertStore>,
}

#[derive(Clone, Copy, Debug)]
enum Webhook {
    Inject,
    Validate,
}

impl Webhook {
    fn name(self) -> &'static str {
        match self {
            Self::Inject => "inject",
            Self::Validate => "validate",
        }
    }
}

/// The routes, with the body limit.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/inject",
            post(|s: State<Arc<AppState>>, r: Request| review(s, Webhook::Inject, r)),
        )
        .route(
            "/validate",
            post(|s: State<Arc<AppState>>, r: Request| review(s, Webhook::Validate, r)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn is_json(request: &Request) -> Result<(), String> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Err("Content-Type must be application/json (none given)".into());
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(format!(
            "Content-Type must be application/json (got {text:?})"
        ))
    }
}

async fn review(
    State(state): State<Arc<AppState>>,
    webhook: Webhook,
    request: Request,
) -> Response {
    let started = Instant::now();
    let refuse = |status: StatusCode, message: String| {
        state.metrics.admission(
            AdmissionLabels {
                webhook: webhook.name(),
                operation: "unknown",
                result: "malformed",
            },
            None,
        );
        tracing::warn!(webhook = webhook.name(), status = status.as_u16(), %message, "refused a request");
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{message}\n"),
        )
            .into_response()
    };
    if let Err(message) = is_json(&request) {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    }
    // A declared length over the limit is refused before reading anything.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body exceeds {MAX_BODY} bytes"),
        );
    }
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the body exceeds {MAX_BODY} bytes")
            } else {
                format!("reading the body: {}", rejection.body_text())
            };
            return refuse(status, message);
        }
    };
    let parsed = match admission::parse(&body) {
        Ok(parsed) => parsed,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let decision = match webhook {
        Webhook::Inject => admission::inject(&parsed, &state.settings),
        Webhook::Validate => admission::validate(&parsed),
    };
    let req = &parsed.request;
    let operation = admission::operation_name(&req.operation);
    let elapsed = started.elapsed();
    state.metrics.admission(
        AdmissionLabels {
            webhook: webhook.name(),
            operation,
            result: decision.verdict.as_str(),
        },
        Some(elapsed.as_secs_f64()),
    );
    let fields = (
        req.uid.as_str(),
        req.kind.kind.as_str(),
        req.namespace.as_deref().unwrap_or(""),
        req.name.as_str(),
    );
    match decision.verdict {
        Verdict::Denied | Verdict::Error => tracing::info!(
            webhook = webhook.name(), uid = fields.0, kind = fields.1, namespace = fields.2, name = fields.3,
            operation, result = decision.verdict.as_str(), reason = %decision.note, micros = elapsed.as_micros() as u64,
            "admission refused"
        ),
        _ => tracing::debug!(
            webhook = webhook.name(), uid = fields.0, kind = fields.1, namespace = fields.2, name = fields.3,
            operation, result = decision.verdict.as_str(), reason = %decision.note, micros = elapsed.as_micros() as u64,
            "admission answered"
        ),
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        decision.to_json(),
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let not_after = state.certs.not_after();
    if now < not_after {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the serving certificate expired at {not_after} (Unix time); waiting for a new one\n"),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    handle: Handle<SocketAddr>,
    serve: tokio::task::JoinHandle<io::Result<()>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish (up to `grace`), and waits.
    pub async fn shutdown(self, grace: Duration) -> io::Result<()> {
        self.handle.graceful_shutdown(Some(grace));
        let result = self
            .serve
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        self.watcher.abort();
        result
    }

    /// Waits until the server stops by itself (it does not, short of an error).
    pub async fn wait(&mut self) -> io::Result<()> {
        (&mut self.serve)
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    }

    pub fn handle(&self) -> Handle<SocketAddr> {
        self.handle.clone()
    }
}

/// Serves on `listener` (already bound) with the certificate files of `config`, re-reading them
/// every `config.cert_poll`.
pub async fn start(
    listener: TcpListener,
    config: &Config,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Running> {
    let certs = Arc::new(CertStore::load(&config.tls_cert, &config.tls_key)?);
    let watcher = certs.spawn_watcher(config.cert_poll, metrics.clone());
    let tls = RustlsConfig::from_config(certs.server_config());
    let state = Arc::new(AppState {
        settings: config.inject.clone(),
        metrics,
        certs,
    });
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
    let app = router(state);
    let serve = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    Ok(Running {
        addr,
        handle,
        serve,
        watcher,
    })
}
