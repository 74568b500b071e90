//! Circuit breaking from a DestinationRule's `connectionPool`, per upstream service/subset.
//!
//! [`CircuitBreakers`] is the proxy-wide registry: one [`ClusterLimits`] per upstream
//! ([`Destination`]: host, subset, port), shared by every route and connection that calls it.
//! Limits (unset or 0 means unlimited, as in Istio):
//! - `http2MaxRequests`: requests in flight to the upstream. One more is shed at once.
//! - `http1MaxPendingRequests`: requests waiting for the upstream (for the service below to
//!   become ready, or for a connection from [`ClusterLimits::acquire_connection`]). One more
//!   is shed at once, so nothing queues without bound once it is set.
//! - `maxConnections`: connections open to the upstream; the client pool takes a
//!   [`ConnectionPermit`] per connection it opens (or uses [`ClusterLimits::connection_semaphore`]).
//! - `maxRetries`: retries in flight, as a [`RetryBudget`] for the retry layer; or, when the
//!   DestinationRule sets a `retryBudget`, a share of the requests in flight and pending with
//!   a floor (Envoy's retry budget, which then replaces `maxRetries`).
//!
//! A shed request gets Envoy's 503 `upstream connect error or disconnect/reset before headers.
//! reset reason: overflow`, header `x-envoy-overloaded: true` and flag UO. A request counts as
//! in flight from when the service below takes it until its response head arrives; while it
//! waits for that service it counts as pending instead.
//!
//! Look limits up once per upstream and config (the registry takes a lock), not per request.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
};

use futures::future::{Either, Ready, ready};
use http::{HeaderValue, Response, StatusCode};
use mizzen_proxy_config::{ConnectionPool, Destination, RetryBudget as RetryShare};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::{
    flags::ResponseFlags,
    reply::{LocalReply, OVERFLOW, local_reply},
    retry::RetryBudget,
};

/// A limit was reached; the request must be shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream overflow: circuit breaker limit reached")
    }
}

impl std::error::Error for Overflow {}

/// The 503 UO a shed request gets.
pub fn overflow_response<B: LocalReply>() -> Response<B> {
    let mut response = local_reply(StatusCode::SERVICE_UNAVAILABLE, OVERFLOW, ResponseFlags::UO);
    response
        .headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    response
}

/// The proxy-wide registry of per-upstream limits. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct CircuitBreakers {
    clusters: Arc<Mutex<HashMap<Destination, Arc<ClusterLimits>>>>,
}

impl CircuitBreakers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The limits of `cluster`, made on first use. When the config's `pool` or retry budget
    /// changed, new limits replace the old ones; requests holding permits of the old ones
    /// finish on them.
    pub fn limits(
        &self,
        cluster: &Destination,
        pool: Option<&ConnectionPool>,
        retry_budget: Option<&RetryShare>,
    ) -> Arc<ClusterLimits> {
        let default = ConnectionPool::default();
        let pool = pool.unwrap_or(&default);
        let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        match clusters.get(cluster) {
            Some(limits) if limits.pool == *pool && limits.share.as_ref() == retry_budget => {
                limits.clone()
            }
            _ => {
                let limits = Arc::new(ClusterLimits::with_retry_budget(pool, retry_budget));
                clusters.insert(cluster.clone(), limits.clone());
                limits
            }
        }
    }

    /// Forgets the upstreams a new config no longer has.
    pub fn retain(&self, mut keep: impl FnMut(&Destination) -> bool) {
        let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        clusters.retain(|d, _| keep(d));
    }
}

/// The limits and counters of one upstream.
#[derive(Debug)]
pub struct ClusterLimits {
    pool: ConnectionPool,
    share: Option<RetryShare>,
    max_requests: u32,
    max_pending: u32,
    load: Arc<Load>,
    connections: Option<Arc<Semaphore>>,
    retries: RetryBudget,
}

/// The requests in flight and waiting towards one upstream.
#[derive(Debug, Default)]
pub struct Load {
    requests: AtomicU32,
    pending: AtomicU32,
}

impl Load {
    /// Requests in flight plus waiting: what a retry budget's share is taken of.
    pub fn active(&self) -> u32 {
        let requests = self.requests.load(Ordering::Acquire);
        requests.saturating_add(self.pending.load(Ordering::Acquire))
    }
}

/// Istio reads 0 as "not set", which is unlimited.
fn limit(value: Option<u32>) -> Option<u32> {
    value.filter(|v| *v > 0)
}

impl ClusterLimits {
    pub fn new(pool: &ConnectionPool) -> Self {
        Self::with_retry_budget(pool, None)
    }

    /// Limits from `pool`, with retries capped by `share` instead of `maxRetries` when set.
    pub fn with_retry_budget(pool: &ConnectionPool, share: Option<&RetryShare>) -> Self {
        let load = Arc::new(Load::default());
        let retries = match share {
            Some(s) => RetryBudget::share(s.percent, s.min_retry_concurrency, load.clone()),
            None => RetryBudget::new(limit(pool.max_retries)),
        };
        Self {
            pool: pool.clone(),
            share: share.copied(),
            max_requests: limit(pool.http2_max_requests).unwrap_or(u32::MAX),
            max_pending: limit(pool.http1_max_pending_requests).unwrap_or(u32::MAX),
            load,
            connections: limit(pool.max_connections).map(|n| Arc::new(Semaphore::new(n as usize))),
            retries,
        }
    }

    pub fn unlimited() -> Self {
        Self::new(&ConnectionPool::default())
    }

    /// The pool these limits were made from.
    pub fn pool(&self) -> &ConnectionPool {
        &self.pool
    }

    /// The upstream's retry budget (`maxRetries`), for [`crate::retry::RetryLayer::new`].
    pub fn retry_budget(&self) -> RetryBudget {
        self.retries.clone()
    }

    pub fn in_flight(&self) -> u32 {
        self.load.requests.load(Ordering::Acquire)
    }

    pub fn pending(&self) -> u32 {
        self.load.pending.load(Ordering::Acquire)
    }

    /// The `maxConnections` semaphore, `None` when unlimited.
    pub fn connection_semaphore(&self) -> Option<Arc<Semaphore>> {
        self.connections.clone()
    }

    fn take(counter: &AtomicU32, max: u32) -> Result<(), Overflow> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| Overflow)
    }

    /// Whether one more request could be in flight now.
    pub fn has_request_room(&self) -> bool {
        self.in_flight() < self.max_requests
    }

    /// Counts one request in flight, or refuses at once.
    pub fn try_request(self: &Arc<Self>) -> Result<RequestPermit, Overflow> {
        Self::take(&self.load.requests, self.max_requests)?;
        Ok(RequestPermit(self.clone()))
    }

    /// Counts one request waiting, or refuses at once.
    pub fn try_pending(self: &Arc<Self>) -> Result<PendingPermit, Overflow> {
        Self::take(&self.load.pending, self.max_pending)?;
        Ok(PendingPermit(self.clone()))
    }

    /// A permit to open (and keep) one connection now, or a refusal: a TCP connection does
    /// not wait for one (Envoy's TCP proxy closes it at once, flag UO).
    pub fn try_connection(&self) -> Result<ConnectionPermit, Overflow> {
        let Some(semaphore) = &self.connections else {
            return Ok(ConnectionPermit { _permit: None });
        };
        let permit = semaphore
            .clone()
            .try_acquire_owned()
            .map_err(|_| Overflow)?;
        Ok(ConnectionPermit {
            _permit: Some(permit),
        })
    }

    /// A permit to open (and keep) one connection. When none is free the caller waits,
    /// counted as pending; when the pending limit is reached it is refused at once.
    pub async fn acquire_connection(self: &Arc<Self>) -> Result<ConnectionPermit, Overflow> {
        let Some(semaphore) = &self.connections else {
            return Ok(ConnectionPermit { _permit: None });
        };
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Ok(ConnectionPermit {
                _permit: Some(permit),
            });
        }
        let _pending = self.try_pending()?;
        let permit = semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Overflow)?;
        Ok(ConnectionPermit {
            _permit: Some(permit),
        })
    }
}

/// One request in flight; released on drop.
#[derive(Debug)]
pub struct RequestPermit(Arc<ClusterLimits>);

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.0.load.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request waiting; released on drop.
#[derive(Debug)]
pub struct PendingPermit(Arc<ClusterLimits>);

impl Drop for PendingPermit {
    fn drop(&mut self) {
        self.0.load.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One open connection (a no-op when connections are unlimited); released on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

/// Sheds requests beyond an upstream's limits.
#[derive(Clone, Debug)]
pub struct CircuitLayer {
    limits: Arc<ClusterLimits>,
}

impl CircuitLayer {
    pub fn new(limits: Arc<ClusterLimits>) -> Self {
        Self { limits }
    }
}

impl<S> Layer<S> for CircuitLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            limits: self.limits.clone(),
            waiting: Waiting::No,
        }
    }
}

/// Sheds with 503 UO what exceeds an upstream's limits, instead of queueing it without bound.
///
/// Readiness is where the limits are checked: `poll_ready` refuses a request at once when the
/// upstream is full, counts it as pending while the service below is not ready (shedding it
/// when the pending queue is full), and `call` counts it in flight. The call's future is the
/// service below's, holding the in-flight permit: no box, no clone of the service.
#[derive(Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    limits: Arc<ClusterLimits>,
    waiting: Waiting,
}

/// Where a request stands between `poll_ready` and `call`.
#[derive(Debug)]
enum Waiting {
    /// Not waiting for the service below.
    No,
    /// Waiting for it, counted as pending (until the permit drops).
    Pending { _counted: PendingPermit },
    /// Over a limit: `call` sheds the request without calling below.
    Shed,
}

/// A clone starts afresh: what one request waits for is not another's.
impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: self.limits.clone(),
            waiting: Waiting::No,
        }
    }
}

impl<S, Req, B> Service<Req> for CircuitBreaker<S>
where
    S: Service<Req, Response = Response<B>>,
    B: LocalReply,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<B>, S::Error>>, Admitted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Like Envoy: refuse at once when the upstream is full, else wait (counted as
        // pending) for the side below to take the request.
        if matches!(self.waiting, Waiting::Shed) {
            return Poll::Ready(Ok(()));
        }
        if !self.limits.has_request_room() {
            self.waiting = Waiting::Shed;
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(result) => {
                self.waiting = Waiting::No;
                Poll::Ready(result)
            }
            Poll::Pending if matches!(self.waiting, Waiting::Pending { .. }) => Poll::Pending,
            Poll::Pending => {
                self.waiting = match self.limits.try_pending() {
                    Ok(permit) => Waiting::Pending { _counted: permit },
                    Err(Overflow) => Waiting::Shed,
                };
                match self.waiting {
                    Waiting::Shed => Poll::Ready(Ok(())),
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if matches!(
            std::mem::replace(&mut self.waiting, Waiting::No),
            Waiting::Shed
        ) {
            return Either::Left(ready(Ok(overflow_response())));
        }
        match self.limits.try_request() {
            Ok(permit) => Either::Right(Admitted {
                inner: self.inner.call(req),
                permit: Some(permit),
            }),
            Err(Overflow) => Either::Left(ready(Ok(overflow_response()))),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request the circuit breaker let through: in flight until its response head arrives.
    pub struct Admitted<F> {
        #[pin]
        inner: F,
        permit: Option<RequestPermit>,
    }
}

impl<F: Future> Future for Admitted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        this.permit.take();
        Poll::Ready(output)
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

    use std::time::Duration;

    type Body = Full<Bytes>;

    fn pool(max_requests: Option<u32>, max_pending: Option<u32>) -> ConnectionPool {
        ConnectionPool {
            http2_max_requests: max_requests,
            http1_max_pending_requests: max_pending,
            ..ConnectionPool::default()
        }
    }

    fn ok() -> Response<Body> {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }

    async fn assert_overflow(resp: Response<Body>) {
        assert_eq!(resp.status(), 503);
        assert_eq!(ResponseFlags::from(&resp).to_string(), "UO");
        assert_eq!(resp.headers()["x-envoy-overloaded"], "true");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn excess_in_flight_requests_are_shed_at_once() {
        let limits = Arc::new(ClusterLimits::new(&pool(Some(2), None)));
        let (svc, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let svc = CircuitLayer::new(limits.clone()).layer(svc);
        let a = tokio::spawn(svc.clone().oneshot(Request::new(())));
        let b = tokio::spawn(svc.clone().oneshot(Request::new(())));
        let (_ra, send_a) = handle.next_request().await.unwrap();
        let (_rb, send_b) = handle.next_request().await.unwrap();
        assert_eq!(limits.in_flight(), 2);

        // The third is answered without waiting for the other two.
        assert_overflow(svc.clone().oneshot(Request::new(())).await.unwrap()).await;

        send_a.send_response(ok());
        assert_eq!(a.await.unwrap().unwrap().status(), 200);
        assert_eq!(limits.in_flight(), 1);
        let c = tokio::spawn(svc.clone().oneshot(Request::new(())));
        let (_rc, send_c) = handle.next_request().await.unwrap();
        send_b.send_response(ok());
        send_c.send_response(ok());
        assert_eq!(b.await.unwrap().unwrap().status(), 200);
        assert_eq!(c.await.unwrap().unwrap().status(), 200);
        assert_eq!(limits.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_requests_beyond_the_pending_limit_are_shed() {
        let limits = Arc::new(ClusterLimits::new(&pool(None, Some(1))));
        let (svc, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        handle.allow(0); // the upstream side takes nothing for now
        let svc = CircuitLayer::new(limits.clone()).layer(svc);
        let waiting = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::task::yield_now().await;
        assert_eq!(limits.pending(), 1);
        assert_eq!(limits.in_flight(), 0, "waiting is not in flight");
        assert_overflow(svc.clone().oneshot(Request::new(())).await.unwrap()).await;

        handle.allow(1);
        let (_req, send) = handle.next_request().await.unwrap();
        assert_eq!(limits.pending(), 0);
        assert_eq!(limits.in_flight(), 1);
        send.send_response(ok());
        assert_eq!(waiting.await.unwrap().unwrap().status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_upstream_sheds_at_once_rather_than_counting_the_request_as_pending() {
        let limits = Arc::new(ClusterLimits::new(&pool(Some(1), Some(5))));
        let _in_flight = limits.try_request().unwrap();
        let (svc, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        handle.allow(0); // the side below is not ready either
        let svc = CircuitLayer::new(limits.clone()).layer(svc);
        let answer = tokio::time::timeout(Duration::from_secs(1), svc.oneshot(Request::new(())))
            .await
            .expect("answered at once, not queued");
        assert_overflow(answer.unwrap()).await;
        assert_eq!(limits.pending(), 0, "shed, not queued");
        assert_eq!(limits.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_and_unset_are_unlimited() {
        for p in [pool(None, None), pool(Some(0), Some(0))] {
            let limits = Arc::new(ClusterLimits::new(&p));
            let permits: Vec<_> = (0..10_000).map(|_| limits.try_request().unwrap()).collect();
            assert_eq!(limits.in_flight(), 10_000);
            drop(permits);
            assert!(limits.connection_semaphore().is_none());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn connections_wait_as_pending_and_overflow_beyond() {
        let limits = Arc::new(ClusterLimits::new(&ConnectionPool {
            max_connections: Some(1),
            http1_max_pending_requests: Some(1),
            ..ConnectionPool::default()
        }));
        let first = limits.acquire_connection().await.unwrap();
        let l2 = limits.clone();
        let second = tokio::spawn(async move { l2.acquire_connection().await });
        tokio::task::yield_now().await;
        assert_eq!(limits.pending(), 1);
        assert_eq!(limits.acquire_connection().await.unwrap_err(), Overflow);
        drop(first);
        let second = second.await.unwrap().unwrap();
        assert_eq!(limits.pending(), 0);
        drop(second);
        assert_eq!(
            limits.connection_semaphore().unwrap().available_permits(),
            1
        );
    }

    #[test]
    fn the_registry_shares_limits_per_upstream() {
        let breakers = CircuitBreakers::new();
        let v1 = Destination {
            host: "reviews.default.svc.cluster.local".into(),
            subset: Some("v1".into()),
            port: Some(9080),
        };
        let v2 = Destination {
            subset: Some("v2".into()),
            ..v1.clone()
        };
        let p = pool(Some(1), None);
        let a = breakers.limits(&v1, Some(&p), None);
        let b = breakers.clone().limits(&v1, Some(&p), None);
        assert!(Arc::ptr_eq(&a, &b));
        let _held = a.try_request().unwrap();
        assert_eq!(b.try_request().unwrap_err(), Overflow);
        // Another subset has its own counters.
        let other = breakers.limits(&v2, Some(&p), None);
        assert!(other.try_request().is_ok());
        // A changed pool replaces the limits.
        let changed = breakers.limits(&v1, Some(&pool(Some(5), None)), None);
        assert!(!Arc::ptr_eq(&a, &changed));
        assert_eq!(changed.in_flight(), 0);
        breakers.retain(|d| d.subset.as_deref() == Some("v2"));
        let fresh = breakers.limits(&v1, Some(&pool(Some(5), None)), None);
        assert!(!Arc::ptr_eq(&changed, &fresh));
    }

    #[test]
    fn the_retry_budget_follows_max_retries() {
        let limits = ClusterLimits::new(&ConnectionPool {
            max_retries: Some(1),
            ..ConnectionPool::default()
        });
        let budget = limits.retry_budget();
        let _one = budget.try_acquire().unwrap();
        assert!(limits.retry_budget().try_acquire().is_none());
    }

    #[test]
    fn a_retry_budget_follows_the_load_with_a_floor_and_replaces_max_retries() {
        let share = RetryShare {
            percent: 25.0,
            min_retry_concurrency: 2,
        };
        let pool = ConnectionPool {
            max_retries: Some(1),
            ..ConnectionPool::default()
        };
        let limits = Arc::new(ClusterLimits::with_retry_budget(&pool, Some(&share)));
        let budget = limits.retry_budget();
        // Idle upstream: the floor, not maxRetries.
        let held: Vec<_> = (0..2).map(|_| budget.try_acquire().unwrap()).collect();
        assert!(budget.try_acquire().is_none());
        // 19 requests in flight and 1 waiting: 25% of 20 is 5.
        let mut requests: Vec<_> = (0..19).map(|_| limits.try_request().unwrap()).collect();
        let waiting = limits.try_pending().unwrap();
        let more: Vec<_> = (0..3).map(|_| budget.try_acquire().unwrap()).collect();
        assert_eq!(budget.active(), 5);
        assert!(budget.try_acquire().is_none());
        // 25% of 18 is 4.5: truncated to 4, like Envoy.
        requests.truncate(17);
        drop(more);
        let _again: Vec<_> = (0..2).map(|_| budget.try_acquire().unwrap()).collect();
        assert!(budget.try_acquire().is_none());
        drop((requests, waiting, held));
        assert!(
            budget.try_acquire().is_none(),
            "no load, 2 in flight: the floor"
        );
    }

    #[test]
    fn the_registry_remakes_limits_when_the_retry_budget_changes() {
        let breakers = CircuitBreakers::new();
        let d = Destination::default();
        let a = breakers.limits(&d, None, None);
        let share = RetryShare::default();
        let b = breakers.limits(&d, None, Some(&share));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&b, &breakers.limits(&d, None, Some(&share))));
    }
}
