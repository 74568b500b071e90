//! Mirroring: a route's `mirrors` get fire-and-forget copies of a share of its requests, sent
//! through their own upstreams, never awaited. Only requests whose body is small enough to
//! buffer are copied.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use http::Request;
use http_body::Body as _;
use http_body_util::BodyExt;
use mizzen_proxy_config::Mirror as MirrorTo;
use mizzen_resilience::mirror::Mirror;

use crate::{
    app::Shared,
    config::Snapshot,
    http::body::{self, Body},
    upstream::{Upstream, UpstreamKey, UpstreamService},
};

/// Bodies up to this size are buffered so they can be copied.
const MAX_MIRRORED_BODY: u64 = 64 * 1024;

/// The upstream a mirror was made for (rebuilt when the upstream is) and the mirror.
type MirrorEntry = (Arc<Upstream>, Mirror<UpstreamService>);

/// One [`Mirror`] per mirrored upstream, so the bound on copies in flight holds across
/// requests. The share of requests copied is drawn per route before it is used.
#[derive(Default)]
pub struct Mirrors {
    map: Mutex<HashMap<UpstreamKey, MirrorEntry>>,
}

impl Mirrors {
    fn for_upstream(&self, upstream: Arc<Upstream>) -> Mirror<UpstreamService> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&upstream.key) {
            Some((up, m)) if Arc::ptr_eq(up, &upstream) => m.clone(),
            _ => {
                let m = Mirror::new(
                    // Nobody reports a copy's response.
                    UpstreamService::new(upstream.clone(), None),
                    100.0,
                );
                map.insert(upstream.key.clone(), (upstream, m.clone()));
                m
            }
        }
    }
}

/// Sends the copies (if any) and gives back the request to send on as the primary.
pub async fn send_copies(
    shared: &Arc<Shared>,
    snap: &Arc<Snapshot>,
    mirrors: &[MirrorTo],
    port: u16,
    req: Request<Body>,
) -> Request<Body> {
    if mirrors.is_empty() {
        return req;
    }
    let small = req.body().is_end_stream()
        || req
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_MIRRORED_BODY);
    if !small {
        return req;
    }
    let (parts, b) = req.into_parts();
    let bytes = match b.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "request body failed before mirroring");
            return Request::from_parts(parts, body::empty());
        }
    };
    for m in mirrors {
        if !mizzen_route::percent_hit(m.percentage, rand::random()) {
            continue;
        }
        let d = &m.destination;
        let upstream = shared.upstreams.get(
            snap,
            &*shared.endpoints,
            &d.host,
            d.subset.as_deref(),
            d.port.unwrap_or(port),
        );
        shared
            .mirrors
            .for_upstream(upstream)
            .mirror(&parts, bytes.clone());
    }
    Request::from_parts(parts, body::full(bytes))
}

/// Sends a route's mirror copies as the request passes through, so that the layers above it
/// (fault injection) decide first whether a request goes upstream, and so is mirrored, at all.
#[derive(Clone)]
pub struct MirrorLayer {
    shared: Arc<Shared>,
    snap: Arc<Snapshot>,
    /// The route's mirrors, as its compiled route shares them (not copied per request).
    mirrors: Arc<[MirrorTo]>,
    port: u16,
}

impl MirrorLayer {
    /// `None` when the route mirrors nothing, so such routes pay nothing.
    pub fn for_route(
        shared: &Arc<Shared>,
        snap: &Arc<Snapshot>,
        mirrors: Option<&Arc<[MirrorTo]>>,
        port: u16,
    ) -> Option<Self> {
        mirrors.map(|mirrors| Self {
            shared: shared.clone(),
            snap: snap.clone(),
            mirrors: mirrors.clone(),
            port,
        })
    }
}

impl<S> tower::Layer<S> for MirrorLayer {
    type Service = MirrorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MirrorService {
            layer: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct MirrorService<S> {
    layer: MirrorLayer,
    inner: S,
}

impl<S, F, R, E> tower::Service<Request<Body>> for MirrorService<S>
where
    S: tower::Service<Request<Body>, Response = R, Error = E, Future = F> + Clone + Send + 'static,
    F: std::future::Future<Output = Result<R, E>> + Send + 'static,
{
    type Response = R;
    type Error = E;
    type Future = futures::future::BoxFuture<'static, Result<R, E>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The ready service goes with this request; a fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let l = self.layer.clone();
        Box::pin(async move {
            let req = send_copies(&l.shared, &l.snap, &l.mirrors, l.port, req).await;
            inner.call(req).await
        })
    }
}
