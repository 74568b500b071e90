//! Connections to upstreams: a pooled hyper client per upstream and protocol.
//!
//! [`MeshConnector`] is the proxy-to-proxy hop. It opens plain TCP today and reports failures
//! as [`UpstreamError::connect_failure`] so retries and telemetry see `connect-failure` (UF).
//! mTLS origination (a later issue) wraps the stream here, per endpoint identity.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use mizzen_resilience::UpstreamError;
use tokio::net::TcpStream;

use super::body::Body;

#[derive(Clone)]
pub struct MeshConnector {
    tcp: HttpConnector,
}

impl MeshConnector {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.enforce_http(true);
        Self { tcp }
    }
}

impl tower::Service<Uri> for MeshConnector {
    type Response = TokioIo<TcpStream>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        self.tcp
            .poll_ready(cx)
            .map_err(UpstreamError::connect_failure)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let fut = self.tcp.call(uri);
        Box::pin(async move { fut.await.map_err(UpstreamError::connect_failure) })
    }
}

pub type HttpClient = Client<MeshConnector, Body>;

/// Settings of one upstream's pool.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2: bool,
}

pub fn client(settings: PoolSettings) -> HttpClient {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(settings.idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if settings.h2 {
        builder
            .http2_only(true)
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_adaptive_window(true);
    }
    builder.build(MeshConnector::new(settings.connect_timeout))
}
