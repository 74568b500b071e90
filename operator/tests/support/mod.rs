//! Kube's tower-test mock API server as the operator's tests drive it: a test states each
//! request it expects (method, path with query) and the answer, and reads back what was sent.
#![allow(dead_code)]

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::Value;

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
pub type Respond = tower_test::mock::SendResponse<Response<Body>>;

/// A client whose requests the test answers through the handle.
pub fn mock() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

/// The next request: method, path with query, JSON body (`Null` when empty), and its
/// responder. A server-side apply (a PATCH with a field manager) must say so in its content
/// type, whatever the test.
pub async fn next(handle: &mut Handle) -> (Method, String, Value, Respond) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request within 10 s")
        .expect("client alive");
    let method = req.method().clone();
    let path = req.uri().path_and_query().unwrap().to_string();
    if method == Method::PATCH && path.contains("fieldManager") {
        assert_eq!(
            req.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/apply-patch+yaml"),
            "{path}"
        );
    }
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, path, body, send)
}

/// Expects `method path` exactly; answers `status` with `answer`; returns the request body.
pub async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
    status: StatusCode,
    answer: Value,
) -> Value {
    let (m, p, body, send) = next(handle).await;
    assert_eq!((m, p.as_str()), (method, path), "unexpected request");
    reply(send, status, &answer);
    body
}

pub fn reply(send: Respond, status: StatusCode, answer: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(answer).unwrap()))
            .unwrap(),
    );
}
