use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mizzen_proxy_config::Retry as RetryConfig;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::*;

type Body = Full<Bytes>;
type Mock = mock::Mock<Request<ReplayBody<Body>>, Response<Body>>;
type Handle = mock::Handle<Request<ReplayBody<Body>>, Response<Body>>;

fn config(attempts: u32, retry_on: &[&str]) -> RetryConfig {
    RetryConfig {
        attempts,
        per_try_timeout_ms: None,
        retry_on: retry_on.iter().map(|s| s.to_string()).collect(),
        retriable_status_codes: Vec::new(),
        backoff_ms: None,
        retry_remote_localities: false,
    }
}

fn status(code: u16) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("status {code}"))));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

fn request(body: &'static str) -> Request<Body> {
    Request::post("http://reviews:9080/r")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn start(
    layer: RetryLayer,
    body: &'static str,
) -> (
    tokio::task::JoinHandle<Result<Response<Body>, BoxError>>,
    Handle,
) {
    let (svc, handle): (Mock, Handle) = mock::pair();
    let svc = layer.layer(svc);
    (tokio::spawn(svc.oneshot(request(body))), handle)
}

async fn body_of(req: Request<ReplayBody<Body>>) -> Bytes {
    req.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test(start_paused = true)]
async fn the_tries_of_a_request_share_the_localities_tried_only_when_the_route_asks() {
    for remote in [false, true] {
        let layer = RetryLayer::new(
            &RetryConfig {
                retry_remote_localities: remote,
                ..config(2, &["5xx"])
            },
            RetryBudget::unlimited(),
        );
        let (call, mut handle) = start(layer, "payload");
        let (req, send) = handle.next_request().await.unwrap();
        let first = req.extensions().get::<TriedLevels>().cloned();
        assert_eq!(first.is_some(), remote);
        if let Some(tried) = &first {
            tried.add(0);
        }
        send.send_response(status(503));
        let (req, send) = handle.next_request().await.unwrap();
        // The retry sees what the first try recorded.
        let second = req.extensions().get::<TriedLevels>().map(TriedLevels::mask);
        assert_eq!(second, remote.then_some(0b1));
        send.send_response(status(200));
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
}

#[tokio::test(start_paused = true)]
async fn a_flaky_503_becomes_a_success_with_the_same_body() {
    let layer = RetryLayer::new(&config(2, &["5xx"]), RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "payload");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/r");
    assert_eq!(Attempt::of(&req), Attempt(1));
    assert_eq!(
        req.extensions().get::<Attempt>(),
        None,
        "a first try carries no extension"
    );
    assert_eq!(body_of(req).await, "payload");
    send.send_response(status(503));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.method(), "POST");
    assert_eq!(Attempt::of(&req), Attempt(2));
    assert_eq!(body_of(req).await, "payload");
    send.send_response(status(200));
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(ResponseFlags::from(&resp).is_empty());
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_return_the_last_response_with_urx() {
    let layer = RetryLayer::new(&config(2, &["gateway-error"]), RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "");
    for code in [502, 503, 504] {
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(status(code));
    }
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(ResponseFlags::from(&resp).to_string(), "URX");
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "status 504"
    );
}

#[tokio::test(start_paused = true)]
async fn non_retriable_responses_pass_at_once() {
    let layer = RetryLayer::new(&config(3, &["gateway-error"]), RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "");
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(status(500));
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 500);
    assert!(ResponseFlags::from(&resp).is_empty());
}

#[tokio::test(start_paused = true)]
async fn connect_failures_are_retried_and_the_last_error_returned() {
    let layer = RetryLayer::new(&config(1, &["connect-failure"]), RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "");
    for _ in 0..2 {
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_error(UpstreamError::connect_failure("connection refused"));
    }
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        UpstreamError::find_kind(err.as_ref()),
        Some(UpstreamErrorKind::ConnectFailure)
    );
}

#[tokio::test(start_paused = true)]
async fn resets_are_not_retried_under_connect_failure() {
    let layer = RetryLayer::new(&config(3, &["connect-failure"]), RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "");
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(UpstreamError::reset("connection reset by peer"));
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        UpstreamError::classify(err.as_ref()),
        UpstreamErrorKind::Reset
    );
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_retries_then_succeeds() {
    let mut cfg = config(2, &["5xx"]);
    cfg.per_try_timeout_ms = Some(100);
    let layer = RetryLayer::new(&cfg, RetryBudget::unlimited());
    let t0 = Instant::now();
    let (call, mut handle) = start(layer, "x");
    let (_req, _never) = handle.next_request().await.unwrap();
    let (req, send) = handle.next_request().await.unwrap();
    let waited = t0.elapsed();
    // per-try timeout plus at most the first backoff ceiling
    assert!(
        waited >= Duration::from_millis(100) && waited <= Duration::from_millis(125),
        "{waited:?}"
    );
    assert_eq!(body_of(req).await, "x");
    send.send_response(status(200));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_on_the_last_try_answers_504_ut() {
    let mut cfg = config(1, &["reset"]);
    cfg.per_try_timeout_ms = Some(100);
    let layer = RetryLayer::new(&cfg, RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "");
    let (_a, _sa) = handle.next_request().await.unwrap();
    let (_b, _sb) = handle.next_request().await.unwrap();
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(ResponseFlags::from(&resp).to_string(), "UT,URX");
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "upstream request timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_not_retried_without_a_matching_condition() {
    let mut cfg = config(2, &["connect-failure"]);
    cfg.per_try_timeout_ms = Some(100);
    let layer = RetryLayer::new(&cfg, RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "");
    let (_a, _sa) = handle.next_request().await.unwrap();
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(ResponseFlags::from(&resp).to_string(), "UT");
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_in_a_trailers_only_response_is_retried() {
    let layer = RetryLayer::new(&RetryConfig::istio_default(), RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "");
    let (_req, send) = handle.next_request().await.unwrap();
    let mut unavailable = status(200);
    unavailable
        .headers_mut()
        .insert("grpc-status", "14".parse().unwrap());
    send.send_response(unavailable);
    let (_req, send) = handle.next_request().await.unwrap();
    let mut ok = status(200);
    ok.headers_mut().insert("grpc-status", "0".parse().unwrap());
    send.send_response(ok);
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.headers()["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retrying() {
    let budget = RetryBudget::new(Some(1));
    let held = budget.try_acquire().unwrap();
    let layer = RetryLayer::new(&config(3, &["5xx"]), budget.clone());
    let (call, mut handle) = start(layer, "");
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(status(503));
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 503);
    assert!(ResponseFlags::from(&resp).is_empty());
    drop(held);
    assert_eq!(budget.active(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_budget_counts_retries_in_flight() {
    let budget = RetryBudget::new(Some(5));
    let layer = RetryLayer::new(&config(1, &["5xx"]), budget.clone());
    let (call, mut handle) = start(layer, "");
    let (_req, send) = handle.next_request().await.unwrap();
    assert_eq!(budget.active(), 0);
    send.send_response(status(500));
    let (_req, send) = handle.next_request().await.unwrap();
    assert_eq!(budget.active(), 1);
    send.send_response(status(200));
    call.await.unwrap().unwrap();
    assert_eq!(budget.active(), 0);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_limit_are_sent_once() {
    let layer =
        RetryLayer::new(&config(3, &["5xx"]), RetryBudget::unlimited()).with_replay_limit(4);
    let (call, mut handle) = start(layer, "more than four bytes");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(body_of(req).await, "more than four bytes");
    send.send_response(status(503));
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 503);
    assert!(ResponseFlags::from(&resp).is_empty());
}

#[tokio::test(start_paused = true)]
async fn zero_attempts_means_one_try() {
    let layer = RetryLayer::new(&RetryConfig::disabled(), RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "b");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(body_of(req).await, "b");
    send.send_response(status(503));
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 503);
    assert!(ResponseFlags::from(&resp).is_empty());
}

#[tokio::test(start_paused = true)]
async fn backoff_between_tries_stays_under_its_ceiling() {
    let mut cfg = config(4, &["5xx"]);
    cfg.backoff_ms = Some(100);
    let layer = RetryLayer::new(&cfg, RetryBudget::unlimited());
    let (call, mut handle) = start(layer, "");
    let mut last = Instant::now();
    let mut gaps = Vec::new();
    for i in 0..5 {
        let (_req, send) = handle.next_request().await.unwrap();
        gaps.push(last.elapsed());
        last = Instant::now();
        send.send_response(status(if i == 4 { 200 } else { 503 }));
    }
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    // first try at once, then ceilings of 100, 200, 400, 800 ms (max 10 × base = 1 s)
    assert_eq!(gaps[0], Duration::ZERO);
    for (gap, ceiling) in gaps[1..].iter().zip([100, 200, 400, 800]) {
        assert!(
            *gap <= Duration::from_millis(ceiling),
            "{gap:?} > {ceiling} ms"
        );
    }
}
