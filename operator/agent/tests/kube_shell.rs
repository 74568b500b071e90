//! The thin Kubernetes shells against kube's tower-test mock API server: the exact requests the
//! node CA signer and the TokenReviewer make, and how they read the answers.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use mizzen_agent::authz::{KubeTokenReviewer, ReviewOutcome, TokenReviewer};
use mizzen_agent::node_ca::{KubeNodeCaSigner, NodeCaError, NodeCaSigner};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Answers the next request with what `respond` makes of its body; returns its method, path and
/// query, and body.
async fn answer(
    handle: &mut Handle,
    status: StatusCode,
    respond: impl FnOnce(&Value) -> Value,
) -> (Method, String, Value) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("no request came")
        .expect("client gone");
    let method = req.method().clone();
    let path = req.uri().path_and_query().unwrap().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    let answer = respond(&body);
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    (method, path, body)
}

fn mock() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

fn csr_list(item: Value) -> Value {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequestList",
        "metadata": {"resourceVersion": "7"}, "items": [item]})
}

#[tokio::test]
async fn node_ca_signer_creates_the_exact_csr_and_waits_for_the_certificate() {
    let (client, mut handle) = mock();
    let signer = KubeNodeCaSigner {
        client,
        timeout: Duration::from_secs(10),
    };
    let task = tokio::spawn(async move {
        signer
            .sign(
                "node-a",
                "-----BEGIN CERTIFICATE REQUEST-----\n",
                Duration::from_secs(48 * 3600),
            )
            .await
    });

    let (method, path, body) = answer(&mut handle, StatusCode::CREATED, Value::clone).await;
    assert_eq!(
        (method, path.as_str()),
        (Method::POST, &*format!("{CSRS}?"))
    );
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    let suffix = name.strip_prefix("mizzen-node-ca-node-a-").expect(&name);
    assert_eq!(suffix.len(), 8);
    assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    assert_eq!(
        body,
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "mizzen", "mizzen.io/node": "node-a"}
            },
            "spec": {
                // base64 of the PEM CSR.
                "request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K",
                "signerName": "mizzen.io/node-ca",
                "usages": ["digital signature", "cert sign"],
                "expirationSeconds": 172800
            }
        })
    );
    // The watch for that one object: first the list by name, answered with the signed object.
    let mut signed = body.clone();
    signed["status"] = json!({"certificate": "Q0hBSU4="});
    let (method, path, _) = answer(&mut handle, StatusCode::OK, |_| csr_list(signed)).await;
    assert_eq!(method, Method::GET);
    assert!(
        path.starts_with(CSRS) && path.contains(&format!("fieldSelector=metadata.name%3D{name}")),
        "{path}"
    );
    let chain = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(chain, "CHAIN");
}

#[tokio::test]
async fn a_denied_node_ca_request_says_why() {
    let (client, mut handle) = mock();
    let signer = KubeNodeCaSigner {
        client,
        timeout: Duration::from_secs(10),
    };
    let task = tokio::spawn(async move {
        signer
            .sign("node-a", "CSR", Duration::from_secs(3600))
            .await
    });
    let (_, _, mut body) = answer(&mut handle, StatusCode::CREATED, Value::clone).await;
    body["status"] = json!({"conditions": [{"type": "Denied", "status": "True",
        "reason": "WrongNode", "message": "requester runs on node-b"}]});
    answer(&mut handle, StatusCode::OK, |_| csr_list(body)).await;
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, NodeCaError::Refused { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("was denied: requester runs on node-b"),
        "{err}"
    );
}

#[tokio::test]
async fn token_review_asks_for_the_mizzen_ca_audience() {
    let (client, mut handle) = mock();
    let reviewer = KubeTokenReviewer { client };
    let task = tokio::spawn(async move { reviewer.review("tok", "mizzen-ca").await });
    let (method, path, body) = answer(&mut handle, StatusCode::CREATED, |_| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
            "status": {"authenticated": false, "error": "token has expired"}})
    })
    .await;
    assert_eq!(
        (method, path.as_str()),
        (Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews?")
    );
    assert_eq!(
        body,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {}, "spec": {"token": "tok", "audiences": ["mizzen-ca"]}})
    );
    assert_eq!(
        task.await.unwrap().unwrap(),
        ReviewOutcome::Unauthenticated("token has expired".into())
    );
}
