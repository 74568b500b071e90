//! Upgrades (WebSocket and other `Upgrade:` protocols over HTTP/1.1): the request goes
//! upstream as is; on `101 Switching Protocols` both sides are joined byte for byte.

use futures::future::BoxFuture;

use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::{
    http::{body::Body, outbound::call},
    upstream::{ForceHttp1, UpstreamService},
};

/// Boxed: upgrades are rare, and the future of one, held inline by the request path that
/// may take this turn, would enlarge every request's future.
pub fn forward(
    upstream: UpstreamService,
    req: Request<Body>,
) -> BoxFuture<'static, Response<Body>> {
    Box::pin(forward_inner(upstream, req))
}

async fn forward_inner(upstream: UpstreamService, mut req: Request<Body>) -> Response<Body> {
    let downstream = hyper::upgrade::on(&mut req);
    req.extensions_mut().insert(ForceHttp1);
    let mut resp = call(upstream, req).await;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream_side) {
                Ok((d, u)) => {
                    let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                        tracing::debug!(error = %e, "upgraded connection ended");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    resp
}
