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
    type Future = BoxFuture<'static, Result<Response<RB>, BoxError>>;

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
            replay_limit: self.replay_limit,
        };
        Box::pin(tries.run(ready, req))
    }
}

/// What a request's retrying needs of the layer, without the layer's own service.
struct Tries {
    policy: Arc<RetryPolicy>,
    backoff: Backoff,
    budget: RetryBudget,
    replay_limit: usize,
}

impl Tries {
    /// Prepares the request and starts its first try here, so the future holds the try's
    /// future and the head kept for retries, not the request as well: every byte of a
    /// request's future is copied when it is boxed.
    fn run<S, B, RB>(
        self,
        mut ready: S,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<RB>, BoxError>> + Send + 'static
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
        RB: LocalReply + Send + 'static,
    {
        let (parts, body) = req.into_parts();
        let limit = if self.policy.attempts == 0 {
            0
        } else {
            self.replay_limit
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
        let (first_head, parts) = if self.policy.attempts > 0 && template.is_some() {
            let mut parts = parts;
            if self.policy.remote_localities {
                parts.extensions.insert(TriedLevels::default());
            }
            (try_head(&parts, 1), Some(parts))
        } else {
            (parts, None)
        };
        // The first try goes to the service `poll_ready` drove.
        let per_try = self.policy.per_try_timeout;
        let first = try_once(
            ready.call(Request::from_parts(first_head, first_body)),
            per_try,
        );
        async move {
            let mut result = first.await;
            let mut retries = 0;
            loop {
                let retriable = match &result {
                    Ok(response) => self.policy.retries_response(response),
                    Err(error) => self
                        .policy
                        .retries_error(UpstreamError::classify(error.as_ref())),
                };
                if !retriable {
                    return finish(result, false);
                }
                if retries >= self.policy.attempts {
                    // With retries off nothing ran out.
                    return finish(result, self.policy.attempts > 0);
                }
                // Need a head and body to send again and room in the budget.
                let (Some(parts), Some(replay)) = (
                    parts.as_ref(),
                    template.as_ref().and_then(ReplayBody::try_clone),
                ) else {
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
                        let req = Request::from_parts(try_head(parts, retries + 1), replay);
                        try_once(ready.call(req), per_try).await
                    }
                    Err(e) => Err(e),
                };
            }
        }
    }
}

/// One try (its call made), bounded by the per-try timeout.
async fn try_once<F, RB, E>(call: F, per_try: Option<Duration>) -> TryResult<RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    match per_try {
        None => call.await.map_err(Into::into),
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(UpstreamError::new(UpstreamErrorKind::Timeout).into()),
        },
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
