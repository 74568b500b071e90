//! The Lease loop against kube's tower-test mock: create when missing, renew with the read
//! resourceVersion, follow a live holder without writing, lose a race on 409.

use std::time::Duration;

use http::{Method, StatusCode};
use k8s_openapi::jiff::Timestamp;

use mizzen_operator::leader::{LeaderElector, LeaseSettings};
use serde_json::{Value, json};

mod support;
use support::{Handle, expect, mock};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/mizzen-system/leases/mizzen-operator";

fn elector() -> (LeaderElector, Handle) {
    let (client, handle) = mock();
    let (e, _rx) = LeaderElector::new(client, LeaseSettings::new("mizzen-system", "pod-a"));
    (e, handle)
}

fn lease(holder: &str, renewed: &str, rv: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "mizzen-operator", "namespace": "mizzen-system", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": 2}})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404})
}

#[tokio::test]
async fn creates_the_lease_when_missing() {
    let (e, mut handle) = elector();
    let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            LEASE,
            StatusCode::NOT_FOUND,
            not_found(),
        )
        .await;
        let body = expect(
            &mut handle,
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/mizzen-system/leases?",
            StatusCode::CREATED,
            lease("pod-a", "2026-01-01T00:00:00.000000Z", "1"),
        )
        .await;
        assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    });
    assert!(e.try_once(now).await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn renews_its_own_lease_with_the_resource_version() {
    let (e, mut handle) = elector();
    let now: Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            LEASE,
            StatusCode::OK,
            lease("pod-a", "2026-01-01T00:00:03.000000Z", "7"),
        )
        .await;
        let body = expect(
            &mut handle,
            Method::PUT,
            &format!("{LEASE}?"),
            StatusCode::OK,
            lease("pod-a", "2026-01-01T00:00:05.000000Z", "8"),
        )
        .await;
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["spec"]["renewTime"], "2026-01-01T00:00:05.000000Z");
        assert_eq!(
            body["spec"]["acquireTime"], "2026-01-01T00:00:03.000000Z",
            "acquire time kept on renew"
        );
        assert_eq!(body["spec"]["leaseTransitions"], 2);
    });
    assert!(e.try_once(now).await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn follows_a_live_holder_and_takes_over_an_expired_one() {
    let (e, mut handle) = elector();
    let server = tokio::spawn(async move {
        // Live: nothing written.
        expect(
            &mut handle,
            Method::GET,
            LEASE,
            StatusCode::OK,
            lease("pod-b", "2026-01-01T00:00:00.000000Z", "3"),
        )
        .await;
        // Expired: taken over; a conflict means someone else won.
        expect(
            &mut handle,
            Method::GET,
            LEASE,
            StatusCode::OK,
            lease("pod-b", "2026-01-01T00:00:00.000000Z", "3"),
        )
        .await;
        let body = expect(&mut handle, Method::PUT, &format!("{LEASE}?"), StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409})).await;
        assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        handle
    });
    assert!(
        !e.try_once("2026-01-01T00:00:10Z".parse().unwrap())
            .await
            .unwrap()
    );
    assert!(
        !e.try_once("2026-01-01T00:00:20Z".parse().unwrap())
            .await
            .unwrap()
    );
    let mut handle = server.await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), handle.next_request())
            .await
            .is_err()
    );
}
