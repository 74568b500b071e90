//! The layers stacked the way the data path stacks them, against a scripted upstream.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mizzen_proxy_config::{AbortStatus, ConnectionPool, Destination, Fault, FaultAbort, Retry};
use mizzen_resilience::{
    BoxError, ResponseFlags, UpstreamError,
    circuit::{CircuitBreakers, CircuitLayer},
    draw::{RandomDraw, SharedDraw},
    fault::FaultLayer,
    retry::{ReplayBody, RetryLayer},
    timeout::TimeoutLayer,
};
use tower::{ServiceBuilder, ServiceExt};

type Body = Full<Bytes>;

/// What the scripted upstream does with each call, in order.
#[derive(Clone, Copy)]
enum Step {
    Status(u16),
    Refuse,
    Hang,
}

/// An upstream that plays `steps` and records the bodies it was sent.
#[derive(Clone, Default)]
struct Upstream {
    steps: Arc<Mutex<VecDeque<Step>>>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Upstream {
    fn new(steps: &[Step]) -> Self {
        Self {
            steps: Arc::new(Mutex::new(steps.iter().copied().collect())),
            bodies: Arc::default(),
        }
    }

    async fn call(self, req: Request<ReplayBody<Body>>) -> Result<Response<Body>, BoxError> {
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Status(200));
        let body = req.into_body().collect().await?.to_bytes();
        self.bodies.lock().unwrap().push(body);
        match step {
            Step::Status(code) => {
                let mut r = Response::new(Full::new(Bytes::from_static(b"upstream")));
                *r.status_mut() = StatusCode::from_u16(code).unwrap();
                Ok(r)
            }
            Step::Refuse => Err(UpstreamError::connect_failure("connection refused").into()),
            Step::Hang => std::future::pending().await,
        }
    }
}

fn stack(
    upstream: Upstream,
    fault: Option<Fault>,
    timeout_ms: Option<u64>,
    retry: Retry,
    pool: ConnectionPool,
) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone
{
    let breakers = CircuitBreakers::new();
    let limits = breakers.limits(&Destination::default(), Some(&pool), None);
    let up = upstream;
    ServiceBuilder::new()
        .layer(FaultLayer::new(fault).with_draw(SharedDraw::new(RandomDraw::seeded(1))))
        .layer(TimeoutLayer::from_ms(timeout_ms))
        .layer(RetryLayer::new(&retry, limits.retry_budget()))
        .layer(CircuitLayer::new(limits))
        .service(tower::service_fn(move |req| up.clone().call(req)))
}

fn retry(attempts: u32, on: &[&str], per_try_ms: Option<u64>) -> Retry {
    Retry {
        attempts,
        per_try_timeout_ms: per_try_ms,
        retry_on: on.iter().map(|s| s.to_string()).collect(),
        ..Retry::istio_default()
    }
}

fn post(body: &'static str) -> Request<Body> {
    Request::post("http://reviews:9080/")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retries_turn_a_flaky_upstream_into_successes() {
    let upstream = Upstream::new(&[Step::Refuse, Step::Status(503), Step::Status(200)]);
    let svc = stack(
        upstream.clone(),
        None,
        Some(10_000),
        Retry::istio_default(),
        ConnectionPool::default(),
    );
    let resp = svc.oneshot(post("order=1")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(ResponseFlags::from(&resp).is_empty());
    let bodies = upstream.bodies.lock().unwrap().clone();
    assert_eq!(bodies, vec![Bytes::from_static(b"order=1"); 3]);
}

#[tokio::test(start_paused = true)]
async fn the_route_timeout_covers_every_try() {
    let upstream = Upstream::new(&[Step::Hang, Step::Hang, Step::Hang, Step::Hang]);
    let start = tokio::time::Instant::now();
    let svc = stack(
        upstream.clone(),
        None,
        Some(1_000),
        retry(3, &["5xx"], Some(400)),
        ConnectionPool::default(),
    );
    let resp = svc.oneshot(post("")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(1_000));
    assert_eq!(resp.status(), 504);
    assert_eq!(ResponseFlags::from(&resp).to_string(), "UT");
    assert!(
        upstream.bodies.lock().unwrap().len() >= 2,
        "per-try timeouts led to retries"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fault_abort_is_not_retried_and_never_reaches_the_upstream() {
    let upstream = Upstream::new(&[]);
    let fault = Fault {
        delay: None,
        abort: Some(FaultAbort {
            status: AbortStatus::Http(503),
            percentage: 100.0,
        }),
    };
    let svc = stack(
        upstream.clone(),
        Some(fault),
        None,
        retry(3, &["5xx"], None),
        ConnectionPool::default(),
    );
    let resp = svc.oneshot(post("")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(ResponseFlags::from(&resp).to_string(), "FI");
    assert!(upstream.bodies.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_circuit_sheds_excess_with_503_uo_while_others_wait() {
    let upstream = Upstream::new(&[Step::Hang]);
    let pool = ConnectionPool {
        http2_max_requests: Some(1),
        ..ConnectionPool::default()
    };
    let svc = stack(upstream.clone(), None, None, Retry::disabled(), pool);
    let first = tokio::spawn(svc.clone().oneshot(post("")));
    tokio::task::yield_now().await;
    let resp = svc.clone().oneshot(post("")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(ResponseFlags::from(&resp).to_string(), "UO");
    assert!(!first.is_finished());
    first.abort();
}
