//! The proxy's own endpoints: admin (localhost only), health, and Prometheus.

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{
    app::Shared,
    http::{body::Body, outbound::text},
};

/// Which endpoints a port serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// 127.0.0.1:15000: `/config_dump`, `/ready`, `/quitquitquit`, `/logging`,
    /// `/stats/prometheus`.
    Admin,
    /// 15021: `/healthz/ready`.
    Health,
    /// 15090: `/stats/prometheus`.
    Prometheus,
}

/// Sets the log filter (`/logging?level=debug`); supplied by the binary, which owns logging.
pub type LogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

pub async fn serve(listener: TcpListener, port: Port, shared: Arc<Shared>) {
    let mut shutdown = shared.drain.signal();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            // Health answers 503 while draining, so it keeps serving; the others stop.
            _ = crate::drain::Drain::started(&mut shutdown), if port != Port::Health => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(port, &shared, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn handle(port: Port, shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let ready = || {
        if shared.drain.is_draining() {
            text(503, "DRAINING\n")
        } else if shared.tls.as_ref().is_some_and(|t| !t.ready()) {
            // Not ready to serve the mesh until the agent has issued our certificate.
            text(503, "NO CERTIFICATE YET\n")
        } else {
            text(200, "LIVE\n")
        }
    };
    match (port, path) {
        (Port::Health, "/healthz/ready") => ready(),
        (Port::Prometheus | Port::Admin, "/stats/prometheus") => {
            let mut r = text(200, &shared.telemetry.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                // prometheus-client writes OpenMetrics text (`# EOF`, counter families
                // without `_total`): say so, or Prometheus drops the types.
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (Port::Admin, "/ready") => ready(),
        (Port::Admin, "/config_dump") => {
            let mut r = text(200, &shared.store.current().raw);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        (Port::Admin, "/quitquitquit") if req.method() == Method::POST => {
            tracing::info!("quitquitquit: draining");
            shared.drain.start();
            text(200, "OK\n")
        }
        (Port::Admin, "/logging") if req.method() == Method::POST => {
            let Some(level) = query(&req).remove("level") else {
                return text(400, "usage: POST /logging?level=<filter>\n");
            };
            match &shared.log_level {
                Some(set) => match set(&level) {
                    Ok(()) => text(200, &format!("log level: {level}\n")),
                    Err(e) => text(400, &format!("{e}\n")),
                },
                None => text(501, "log level cannot be changed in this process\n"),
            }
        }
        _ => {
            let mut r = text(404, "not found\n");
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}
