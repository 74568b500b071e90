//! Retries (`retries` of a VirtualService HTTP route) with Istio/Envoy semantics.
//!
//! [`RetryLayer`] takes `Request<B>` for any body `B` and calls the service below it with
//! `Request<ReplayBody<B>>`: the body streams to the first try while up to
//! [`DEFAULT_REPLAY_LIMIT`] bytes are kept so later tries can send it again (see [`replay`]);
//! a request whose body is larger is tried once.
//!
//! For each try:
//! - the outcome is classified by [`RetryPolicy`] (`retryOn`): a response by status and
//!   `grpc-status` head, an error by the [`UpstreamError`] in its source
//!   chain (an error without one counts as a reset);
//! - `perTryTimeoutMs` bounds the wait for the response head; when it fires the try is
//!   cancelled and counts as an upstream timeout (retried under `5xx`, `gateway-error`,
//!   `reset`);
//! - before a retry the layer waits a jittered exponential backoff ([`Backoff`]) and takes a
//!   permit from the upstream's [`RetryBudget`] (`maxRetries`); with none left it stops.
//!
//! What the caller gets:
//! - a response that is not retriable, or a retriable one when retrying stopped for lack of
//!   budget or of a replayable body: unchanged;
//! - a retriable response after the last allowed retry: that response with flag URX;
//! - a per-try timeout (or a client [`Timeout`](crate::UpstreamErrorKind::Timeout)) on the
//!   last try: Envoy's 504 `upstream request timeout` with flag UT (and URX when retries ran
//!   out);
//! - any other error on the last try: that error, boxed, for the data path to turn into a
//!   local reply (see [`UpstreamErrorKind::local_reply`](crate::UpstreamErrorKind::local_reply)).

mod backoff;
mod budget;
mod policy;
pub mod replay;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Sleep;
use tower::{Layer, Service, ServiceExt};

pub use self::{
    backoff::Backoff,
    budget::{RetryBudget, RetryPermit},
    policy::{DEFAULT_BACKOFF_BASE, RetryPolicy},
    replay::{DEFAULT_REPLAY_LIMIT, ReplayBody},
};
use crate::{
    BoxError,
    flags::ResponseFlags,
    reply::{LocalReply, UPSTREAM_TIMEOUT, local_reply},
    upstream::{UpstreamError, UpstreamErrorKind},
};

/// Which try a request is, 1 for the first (Envoy's `x-envoy-attempt-count`). The layer puts
/// it in the extensions of every retry it sends (2 and up); a request without one is a first
/// try, which so costs nothing (an extension is a map allocated per request). Read it with
/// [`Attempt::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The try `req` is.
    pub fn of<B>(req: &Request<B>) -> Self {
        req.extensions().get::<Self>().copied().unwrap_or(Self(1))
    }
}

/// The priority levels (localities) the tries of one request have gone to, shared by all of
/// them, so that a retry can go elsewhere (Istio's `retryRemoteLocalities`, Envoy's
/// `previous_priorities`). The layer puts it in every try's extensions when the route asks for
/// it; the balancer reads and adds to it.
#[derive(Clone, Debug, Default)]
pub struct TriedLevels(Arc<AtomicU64>);

impl TriedLevels {
    /// Levels 0 to 63, one bit each.
    pub fn mask(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn add(&self, level: u16) {
        if level < 64 {
            self.0.fetch_or(1 << level, Ordering::Relaxed);
        }
    }
}

/// The head of try number `attempt`.
fn try_head(parts: &http::request::Parts, attempt: u32) -> http::request::Parts {
    let mut head = parts.clone();
    if attempt > 1 {
        head.extensions.insert(Attempt(attempt));
    }
    head
}

/// Retries a route's requests by its policy, within an upstream's budget.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: Arc<RetryPolicy>,
    backoff: Backoff,
    budget: RetryBudget,
    replay_limit: usize,
}

impl RetryLayer {
    /// `policy` as rendered for the route (use `Retry::istio_default()` when the route has
    /// none); `budget` is the upstream's (see [`crate::circuit::ClusterLimits::retry_budget`]).
    pub fn new(policy: &mizzen_proxy_config::Retry, budget: RetryBudget) -> Self {
        Self::from_policy(Arc::new(RetryPolicy::new(policy)), budget)
    }

    /// For a rendered route's `retry`: `None` is Istio's default policy.
    pub fn for_route(retry: Option<&mizzen_proxy_config::Retry>, budget: RetryBudget) -> Self {
        match retry {
            Some(r) => Self::new(r, budget),
            None => Self::new(&mizzen_proxy_config::Retry::istio_default(), budget),
        }
    }

    /// A policy compiled once and shared, e.g. the mesh default of a config snapshot.
    pub fn from_policy(policy: Arc<RetryPolicy>, budget: RetryBudget) -> Self {
        Self {
            backoff: Backoff::new(policy.backoff_base),
            policy,
            budget,
            replay_limit: DEFAULT_REPLAY_LIMIT,
        }
    }

    /// Keep up to `limit` bytes of request body for retries (default 64 KiB).
    pub fn with_replay_limit(mut self, limit: usize) -> Self {
        self.replay_limit = limit;
        self
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: self.policy.clone(),
            backoff: self.backoff,
            budget: self.budget.clone(),
            replay_limit: self.replay_limit,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
    backoff: Backoff,
    budget: RetryBudget,
    replay_limit: usize,
}

/// The outcome of one try.
type TryResult<RB> = Result<Response<RB>, BoxError>;

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    RB: LocalReply + Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The first try goes to the service `poll_ready` drove, which then serves the
        // retries; this layer keeps a fresh clone for its next call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let tries = Tries {
            policy: self.policy.clone(),
            backoff: self.backoff,
            budget: self.budget.clone(),
        };
        tries.start(ready, req, self.replay_limit)
    }
}

/// What a request's retrying needs of the layer, without the layer's own service.
struct Tries {
    policy: Arc<RetryPolicy>,
    backoff: Backoff,
    budget: RetryBudget,
}

/// What a retry sends again: the service (the one `poll_ready` drove for the first try), the
/// request's head and the copy of its body.
struct Again<S, B> {
    ready: S,
    parts: http::request::Parts,
    template: ReplayBody<B>,
}

pin_project_lite::pin_project! {
    /// The response of [`Retry`]. The first try is polled in place; only a request that is
    /// tried again (rare) gets a boxed future for its retries. Every byte of a request's
    /// future is copied when the stack's future is built and boxed, so the common path holds
    /// no retry loop, and the first try once, not also as the loop's pending await.
    pub struct ResponseFuture<S, B, RB>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        first: TryOnce<S::Future>,
        tries: Option<Tries>,
        again: Option<Again<S, B>>,
        retrying: Option<BoxFuture<'static, TryResult<RB>>>,
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B, RB>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    RB: LocalReply + Send + 'static,
{
    type Output = TryResult<RB>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TryResult<RB>> {
        let this = self.project();
        if let Some(retrying) = this.retrying {
            return retrying.as_mut().poll(cx);
        }
        let result = std::task::ready!(this.first.poll(cx));
        let tries = this.tries.take().expect("polled after it answered");
        // Most first tries answer what is not retried: no loop to set up.
        if !tries.retriable(&result) || tries.policy.attempts == 0 {
            return Poll::Ready(finish(result, false));
        }
        let retrying = this
            .retrying
            .insert(Box::pin(tries.retry(this.again.take(), result)));
        retrying.as_mut().poll(cx)
    }
}

impl Tries {
    /// Prepares the request and starts its first try, keeping the head and body a retry
    /// would send again.
    fn start<S, B, RB>(
        self,
        mut ready: S,
        req: Request<B>,
        replay_limit: usize,
    ) -> ResponseFuture<S, B, RB>
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        B: Body,
    {
        let (parts, body) = req.into_parts();
        let limit = if self.policy.attempts == 0 {
            0
        } else {
            replay_limit
        };
        let template = ReplayBody::new(body, limit);
        // The template is never read itself: each try gets a reader from the start. A body
        // known to be too large from its size hint goes to the first (and only) try as is.
        let (first_body, template) = match template.try_clone() {
            Some(reader) => (reader, Some(template)),
            None => (template, None),
        };
        // The head is copied for the first try only when a later try could need it: with
        // retries off or a body that cannot be sent again, the request goes as it came.
        let (first_head, kept) = match template {
            Some(template) if self.policy.attempts > 0 => {
                let mut parts = parts;
                if self.policy.remote_localities {
                    parts.extensions.insert(TriedLevels::default());
                }
                (try_head(&parts, 1), Some((parts, template)))
            }
            _ => (parts, None),
        };
        let first = TryOnce::new(
            ready.call(Request::from_parts(first_head, first_body)),
            self.policy.per_try_timeout,
        );
        ResponseFuture {
            first,
            tries: Some(self),
            again: kept.map(|(parts, template)| Again {
                ready,
                parts,
                template,
            }),
            retrying: None,
        }
    }

    /// Whether `result` is one the policy retries.
    fn retriable<RB>(&self, result: &TryResult<RB>) -> bool {
        match result {
            Ok(response) => self.policy.retries_response(response),
            Err(error) => self
                .policy
                .retries_error(UpstreamError::classify(error.as_ref())),
        }
    }

    /// The retries after a first try answered `result`: while the outcome is retriable, the
    /// policy allows another try, the body can be sent again and the budget has room.
    async fn retry<S, B, RB>(
        self,
        again: Option<Again<S, B>>,
        mut result: TryResult<RB>,
    ) -> TryResult<RB>
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        B: Body,
        RB: LocalReply,
    {
        let mut retries = 0;
        let Some(Again {
            mut ready,
            parts,
            template,
        }) = again
        else {
            // Nothing to send again (a body too large to keep).
            return finish(result, false);
        };
        loop {
            if !self.retriable(&result) {
                return finish(result, false);
            }
            if retries >= self.policy.attempts {
                return finish(result, true);
            }
            // Need a body to send again and room in the budget.
            let Some(replay) = template.try_clone() else {
                return finish(result, false);
            };
            let Some(_permit) = self.budget.try_acquire() else {
                return finish(result, false);
            };
            retries += 1;
            // Let go of the failed answer (and its connection) before waiting.
            drop(result);
            tokio::time::sleep(self.backoff.delay(retries)).await;
            let readiness: Result<_, BoxError> =
                ready.ready().await.map(|_| ()).map_err(Into::into);
            result = match readiness {
                Ok(()) => {
                    let req = Request::from_parts(try_head(&parts, retries + 1), replay);
                    TryOnce::new(ready.call(req), self.policy.per_try_timeout).await
                }
                Err(e) => Err(e),
            };
        }
    }
}

pin_project_lite::pin_project! {
    /// One try (its call made), bounded by the per-try timeout (boxed: most routes set none,
    /// and a request's future is copied whole when it is built).
    struct TryOnce<F> {
        #[pin]
        call: F,
        limit: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> TryOnce<F> {
    fn new(call: F, per_try: Option<Duration>) -> Self {
        Self {
            call,
            limit: per_try.map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }
}

impl<F, RB, E> Future for TryOnce<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = TryResult<RB>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TryResult<RB>> {
        let this = self.project();
        // The answer first, as `tokio::time::timeout`: one that is ready wins over the limit.
        if let Poll::Ready(result) = this.call.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.limit.as_mut().map(|limit| limit.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                Poll::Ready(Err(UpstreamError::new(UpstreamErrorKind::Timeout).into()))
            }
            _ => Poll::Pending,
        }
    }
}

/// The caller's answer once retrying stops; `exhausted` when the retry limit was reached on
/// a retriable outcome.
fn finish<RB: LocalReply>(result: TryResult<RB>, exhausted: bool) -> TryResult<RB> {
    let urx = if exhausted {
        ResponseFlags::URX
    } else {
        ResponseFlags::EMPTY
    };
    match result {
        Ok(mut response) => {
            urx.insert_into(&mut response);
            Ok(response)
        }
        Err(error)
            if UpstreamError::find_kind(error.as_ref()) == Some(UpstreamErrorKind::Timeout) =>
        {
            Ok(local_reply(
                StatusCode::GATEWAY_TIMEOUT,
                UPSTREAM_TIMEOUT,
                ResponseFlags::UT | urx,
            ))
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests;
