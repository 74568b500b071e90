//! The route's whole-request timeout (`timeout` of a VirtualService HTTP route).
//!
//! The clock starts when the request enters the layer and stops when the response head
//! arrives, retries and backoff included (so stack it outside the retry layer). On expiry the
//! upstream call is dropped (cancelling it) and the caller gets Envoy's 504 `upstream request
//! timeout` with flag UT. A response body that is already streaming is not cut short.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{Response, StatusCode};
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::{
    flags::ResponseFlags,
    reply::{LocalReply, UPSTREAM_TIMEOUT, local_reply},
};

/// Applies a whole-request timeout; `None` or zero means none.
#[derive(Clone, Copy, Debug, Default)]
pub struct TimeoutLayer {
    timeout: Option<Duration>,
}

impl TimeoutLayer {
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout: timeout.filter(|t| !t.is_zero()),
        }
    }

    /// From the rendered route's `timeoutMs`.
    pub fn from_ms(timeout_ms: Option<u64>) -> Self {
        Self::new(timeout_ms.map(Duration::from_millis))
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S, Req, B> Service<Req> for Timeout<S>
where
    S: Service<Req, Response = Response<B>>,
    B: LocalReply,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep: self.timeout.map(tokio::time::sleep),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F, B, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: LocalReply,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => {
                ready!(sleep.poll(cx));
                Poll::Ready(Ok(local_reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    UPSTREAM_TIMEOUT,
                    ResponseFlags::UT,
                )))
            }
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Request;
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;
    use tower_test::mock;

    type Body = Full<Bytes>;

    fn ok() -> Response<Body> {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }

    #[tokio::test(start_paused = true)]
    async fn answers_504_ut_when_the_upstream_is_slow() {
        let (svc, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let svc = TimeoutLayer::from_ms(Some(1_000)).layer(svc);
        let started = tokio::time::Instant::now();
        let call = tokio::spawn(svc.oneshot(Request::new(())));
        let (_req, _send) = handle.next_request().await.unwrap();
        // never answered
        let resp = call.await.unwrap().unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(1_000));
        assert_eq!(resp.status(), 504);
        assert_eq!(ResponseFlags::from(&resp).to_string(), "UT");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "upstream request timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_response_passes_untouched() {
        let (svc, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let svc = TimeoutLayer::from_ms(Some(1_000)).layer(svc);
        let call = tokio::spawn(svc.oneshot(Request::new(())));
        let (_req, send) = handle.next_request().await.unwrap();
        tokio::time::sleep(Duration::from_millis(999)).await;
        send.send_response(ok());
        let resp = call.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        assert!(ResponseFlags::from(&resp).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn none_and_zero_mean_no_timeout() {
        for layer in [TimeoutLayer::from_ms(None), TimeoutLayer::from_ms(Some(0))] {
            let (svc, mut handle) = mock::pair::<Request<()>, Response<Body>>();
            let svc = layer.layer(svc);
            let call = tokio::spawn(svc.oneshot(Request::new(())));
            let (_req, send) = handle.next_request().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            send.send_response(ok());
            assert_eq!(call.await.unwrap().unwrap().status(), 200);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn errors_pass_through() {
        let (svc, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let svc = TimeoutLayer::from_ms(Some(1_000)).layer(svc);
        let call = tokio::spawn(svc.oneshot(Request::new(())));
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_error("boom");
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }
}
