//! Fault injection (`fault` of a VirtualService HTTP route): delay then abort.
//!
//! Each request draws independently for the delay and for the abort, from a [`Draw`] shared
//! by all clones of the service (seed it in tests with [`SharedDraw::new`] and
//! [`RandomDraw::seeded`]). A delayed request waits `fixedDelayMs` before going on and its
//! response carries flag DI. An aborted request never reaches the upstream:
//! - an HTTP abort answers that status with the body `fault filter abort`;
//! - a gRPC abort answers HTTP 200, `content-type: application/grpc` and a trailers-only
//!   response (`grpc-status`, `grpc-message` in the head, no body);
//!
//! both with flag FI.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use http::{HeaderValue, Response, StatusCode, header};
use mizzen_proxy_config::{AbortStatus, Fault};
use tower::{Layer, Service};

pub use crate::draw::{Draw, RandomDraw, SharedDraw};
use crate::{
    flags::ResponseFlags,
    reply::{FAULT_ABORT, LocalReply, local_reply},
};

/// Injects the route's faults; `None` passes every request through.
#[derive(Clone, Debug, Default)]
pub struct FaultLayer {
    fault: Option<Arc<Fault>>,
    draw: SharedDraw,
}

impl FaultLayer {
    pub fn new(fault: Option<Fault>) -> Self {
        Self::shared(fault.map(Arc::new))
    }

    /// For a fault shared with the compiled route (no copy per request).
    pub fn shared(fault: Option<Arc<Fault>>) -> Self {
        Self {
            fault: fault.filter(|f| f.delay.is_some() || f.abort.is_some()),
            draw: SharedDraw::random(),
        }
    }

    /// Draws percentages from `draw` instead of the default random source.
    pub fn with_draw(mut self, draw: SharedDraw) -> Self {
        self.draw = draw;
        self
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultInjection<S>;
    fn layer(&self, inner: S) -> FaultInjection<S> {
        FaultInjection {
            inner,
            fault: self.fault.clone(),
            draw: self.draw.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FaultInjection<S> {
    inner: S,
    fault: Option<Arc<Fault>>,
    draw: SharedDraw,
}

/// What was decided for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Decision {
    delay: Option<Duration>,
    abort: Option<AbortStatus>,
}

fn decide(fault: &Fault, draw: &SharedDraw) -> Decision {
    let delay = fault
        .delay
        .as_ref()
        .filter(|d| d.fixed_delay_ms > 0 && draw.hit(d.percentage))
        .map(|d| Duration::from_millis(d.fixed_delay_ms));
    let abort = fault
        .abort
        .as_ref()
        .filter(|a| draw.hit(a.percentage))
        .map(|a| a.status);
    Decision { delay, abort }
}

/// The response an abort answers with (flag FI included).
pub fn abort_response<B: LocalReply>(status: AbortStatus) -> Response<B> {
    match status {
        AbortStatus::Http(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            local_reply(status, FAULT_ABORT, ResponseFlags::FI)
        }
        AbortStatus::Grpc(code) => {
            let mut response = Response::new(B::from_bytes(Bytes::new()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
            headers.insert("grpc-message", HeaderValue::from_static(FAULT_ABORT));
            ResponseFlags::FI.insert_into(&mut response);
            response
        }
    }
}

impl<S, Req, B> Service<Req> for FaultInjection<S>
where
    S: Service<Req, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    Req: Send + 'static,
    B: LocalReply + Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<B>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let decision = match &self.fault {
            Some(fault) => decide(fault, &self.draw),
            None => return Either::Left(self.inner.call(req)),
        };
        if decision.delay.is_none() && decision.abort.is_none() {
            return Either::Left(self.inner.call(req));
        }
        // Take the service that was driven ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            if let Some(delay) = decision.delay {
                tokio::time::sleep(delay).await;
            }
            let mut response = match decision.abort {
                Some(status) => abort_response(status),
                None => inner.call(req).await?,
            };
            if decision.delay.is_some() {
                ResponseFlags::DI.insert_into(&mut response);
            }
            Ok(response)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use http_body_util::{BodyExt, Full};
    use mizzen_proxy_config::{FaultAbort, FaultDelay};
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering},
    };
    use tower::ServiceExt;
    use tower_test::mock;

    type Body = Full<Bytes>;

    fn delay(ms: u64, pct: f64) -> Option<FaultDelay> {
        Some(FaultDelay {
            fixed_delay_ms: ms,
            percentage: pct,
        })
    }

    fn abort(status: AbortStatus, pct: f64) -> Option<FaultAbort> {
        Some(FaultAbort {
            status,
            percentage: pct,
        })
    }

    /// An upstream that answers 200 and counts its calls.
    fn counting(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static {
        tower::service_fn(move |_req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn delay_waits_then_forwards_with_di() {
        let (svc, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let layer = FaultLayer::new(Some(Fault {
            delay: delay(5_000, 100.0),
            abort: None,
        }));
        let svc = layer.layer(svc);
        let start = tokio::time::Instant::now();
        let call = tokio::spawn(svc.oneshot(Request::new(())));
        let (_req, send) = handle.next_request().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(5_000));
        send.send_response(Response::new(Full::new(Bytes::from_static(b"ok"))));
        let resp = call.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(ResponseFlags::from(&resp).to_string(), "DI");
    }

    #[tokio::test]
    async fn http_abort_never_reaches_upstream() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = FaultLayer::new(Some(Fault {
            delay: None,
            abort: abort(AbortStatus::Http(503), 100.0),
        }))
        .layer(counting(calls.clone()));
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(resp.status(), 503);
        assert_eq!(ResponseFlags::from(&resp).to_string(), "FI");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "fault filter abort");
    }

    #[tokio::test]
    async fn grpc_abort_is_trailers_only() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = FaultLayer::new(Some(Fault {
            delay: None,
            abort: abort(AbortStatus::Grpc(14), 100.0),
        }))
        .layer(counting(calls.clone()));
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(ResponseFlags::from(&resp).to_string(), "FI");
        let body = resp.into_body();
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_and_abort_together_flag_both() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = FaultLayer::new(Some(Fault {
            delay: delay(100, 100.0),
            abort: abort(AbortStatus::Http(418), 100.0),
        }))
        .layer(counting(calls.clone()));
        let start = tokio::time::Instant::now();
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(resp.status(), 418);
        assert_eq!(ResponseFlags::from(&resp).to_string(), "DI,FI");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    async fn aborted_of_2000(pct: f64, seed: u64) -> usize {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = FaultLayer::new(Some(Fault {
            delay: None,
            abort: abort(AbortStatus::Http(500), pct),
        }))
        .with_draw(SharedDraw::new(RandomDraw::seeded(seed)));
        let mut svc = layer.layer(counting(calls.clone()));
        let mut aborted = 0;
        for _ in 0..2000 {
            let resp = svc
                .ready()
                .await
                .unwrap()
                .call(Request::new(()))
                .await
                .unwrap();
            if resp.status() == 500 {
                assert_eq!(ResponseFlags::from(&resp), ResponseFlags::FI);
                aborted += 1;
            }
        }
        assert_eq!(aborted + calls.load(Ordering::SeqCst), 2000);
        aborted
    }

    #[tokio::test]
    async fn percentages_hold_over_2000_requests() {
        let half = aborted_of_2000(50.0, 2026).await;
        assert!((900..=1100).contains(&half), "50% aborted {half} of 2000");
        assert_eq!(aborted_of_2000(0.0, 2026).await, 0);
        assert_eq!(aborted_of_2000(100.0, 2026).await, 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn half_delayed_within_five_points() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = FaultLayer::new(Some(Fault {
            delay: delay(10, 50.0),
            abort: None,
        }))
        .with_draw(SharedDraw::new(RandomDraw::seeded(11)));
        let mut svc = layer.layer(counting(calls.clone()));
        let mut delayed = 0;
        for _ in 0..2000 {
            let resp = svc
                .ready()
                .await
                .unwrap()
                .call(Request::new(()))
                .await
                .unwrap();
            if ResponseFlags::from(&resp).contains(ResponseFlags::DI) {
                delayed += 1;
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2000);
        assert!((900..=1100).contains(&delayed), "{delayed} delayed of 2000");
    }

    #[tokio::test]
    async fn no_fault_passes_through() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = FaultLayer::new(None).layer(counting(calls.clone()));
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(ResponseFlags::from(&resp).is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
