//! The server side of a connection: HTTP/1.1 with keep-alive and h2c (prior knowledge) on the
//! same port, with upgrades, and Envoy's answers to bad clients: 400 for a malformed request,
//! 431 for oversized headers, and a closed connection for one that never finishes its headers.

use std::{future::Future, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

use super::body::Body;

#[derive(Clone, Copy, Debug)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

pub async fn serve<S, F, Fut>(
    stream: S,
    settings: ServerSettings,
    handler: F,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32)
        .adaptive_window(true);
    // The handler's future is the service's: no wrapper future moved per request.
    let svc = hyper::service::service_fn(handler);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        }
        _ = crate::drain::Drain::watch(&shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
