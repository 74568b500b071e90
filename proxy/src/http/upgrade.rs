//! Upgrades (WebSocket and other `Upgrade:` protocols over HTTP/1.1): the request goes
//! upstream as is; on `101 Switching Protocols` both sides are joined byte for byte.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::{
    http::{body::Body, outbound::call},
    upstream::{ForceHttp1, Upstream, UpstreamService},
};

pub async fn forward(upstream: Arc<Upstream>, mut req: Request<Body>) -> Response<Body> {
    let downstream = hyper::upgrade::on(&mut req);
    req.extensions_mut().insert(ForceHttp1);
    let mut resp = call(UpstreamService { upstream }, req).await;
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
