//! The canary controller's Kubernetes shell against kube's tower-test mock API server: one round
//! reads the DestinationRule and the two subsets' pods, applies the VirtualService with the new
//! weights (owned by the Canary), records the Event and applies the status — exactly those
//! requests, in that order. Promotion patches the DestinationRule's stable subset.

mod support;

use http::{Method, StatusCode};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use mizzen_crds::rollouts::canary::{Canary, CanaryPhase};
use mizzen_operator::canary::{
    Action, Traffic,
    driver::{Memory, round},
    kube::{Context, KubeWorld, reconcile},
    metrics::CanaryMetrics,
};
use serde_json::{Value, json};
use std::sync::Arc;
use support::{Handle, expect, mock, next, reply};

fn canary(status: Value) -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "rollouts.mizzen.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "shop", "uid": "u-1"},
        "spec": {"service": "reviews", "stableSubset": "v1", "canarySubset": "v2",
                 "analysis": {"interval": "1m", "stepWeight": 20, "maxWeight": 100}},
        "status": status,
    }))
    .unwrap()
}

fn pod(name: &str, version: &str, hash: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop",
                        "labels": {"version": version, "pod-template-hash": hash}},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": items})
}

const DR_LIST: &str = "/apis/networking.istio.io/v1/namespaces/shop/destinationrules";

fn rule() -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
           "metadata": {"name": "reviews", "namespace": "shop"},
           "spec": {"host": "reviews", "subsets": [
               {"name": "v1", "labels": {"version": "v1"}},
               {"name": "v2", "labels": {"version": "v2"}}]}})
}

/// Answers the three reads of an observation: the DestinationRules, then the stable and the
/// canary pods (both ready, the canary at revision `rev-2`).
async fn serve_observation(handle: &mut Handle) {
    let (m, path, _, send) = next(handle).await;
    assert_eq!((m, path.split('?').next().unwrap()), (Method::GET, DR_LIST));
    reply(
        send,
        StatusCode::OK,
        &list("DestinationRuleList", vec![rule()]),
    );
    for (version, hash) in [("v1", "rev-1"), ("v2", "rev-2")] {
        let (m, path, _, send) = next(handle).await;
        assert_eq!(m, Method::GET);
        assert!(
            path.starts_with("/api/v1/namespaces/shop/pods?")
                && path.contains(&format!("labelSelector=version%3D{version}")),
            "{path}"
        );
        reply(
            send,
            StatusCode::OK,
            &list(
                "PodList",
                vec![pod(&format!("reviews-{version}"), version, hash)],
            ),
        );
    }
}

/// Answers the Event the recorder creates and returns it.
async fn serve_event(handle: &mut Handle) -> Value {
    let (m, path, body, send) = next(handle).await;
    assert_eq!(
        (m, path.as_str()),
        (
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/shop/events?"
        )
    );
    reply(send, StatusCode::CREATED, &body);
    body
}

/// Answers the status apply and returns its body.
async fn serve_status(handle: &mut Handle) -> Value {
    let (m, path, body, send) = next(handle).await;
    assert_eq!(m, Method::PATCH);
    assert!(
        path.starts_with(
            "/apis/rollouts.mizzen.io/v1alpha1/namespaces/shop/canaries/reviews/status?"
        ) && path.contains("fieldManager=mizzen-canary")
            && path.contains("force=true"),
        "{path}"
    );
    let mut answer = body.clone();
    answer["metadata"] = json!({"name": "reviews", "namespace": "shop"});
    answer["spec"] = json!({});
    reply(send, StatusCode::OK, &answer);
    body
}

fn world(client: kube::Client) -> KubeWorld {
    let reporter = Reporter {
        controller: "mizzen-canary".into(),
        instance: Some("test".into()),
    };
    KubeWorld::new(client.clone(), Recorder::new(client, reporter))
}

#[tokio::test]
async fn a_round_applies_the_weights_records_the_step_and_writes_status() {
    let (client, mut handle) = mock();
    let c = canary(json!({
        "phase": "Progressing", "canaryWeight": 0, "lastAppliedRevision": "rev-2",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "lastAnalysisTime": "2026-01-01T00:00:00Z",
    }));
    let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
    let server = tokio::spawn(async move {
        serve_observation(&mut handle).await;
        let vs = expect(
            &mut handle,
            Method::PATCH,
            "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/reviews?&force=true&fieldManager=mizzen-canary",
            StatusCode::OK,
            json!({}),
        )
        .await;
        let event = serve_event(&mut handle).await;
        let status = serve_status(&mut handle).await;
        (vs, event, status)
    });
    let mut memory = Memory::default();
    let decision = round(&mut world(client), &mut memory, &c, now)
        .await
        .unwrap();
    assert_eq!(
        decision.actions[0],
        Action::SetTraffic(Traffic::weights(20))
    );
    let (vs, event, status) = server.await.unwrap();

    assert_eq!(
        vs["spec"]["http"][0]["route"],
        json!([
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
        ])
    );
    assert_eq!(vs["spec"]["hosts"], json!(["reviews"]));
    let owner = &vs["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            &owner["kind"],
            &owner["name"],
            &owner["uid"],
            &owner["controller"]
        ),
        (
            &json!("Canary"),
            &json!("reviews"),
            &json!("u-1"),
            &json!(true)
        )
    );

    assert_eq!(event["reason"], "StepWeight");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["kind"], "Canary");
    assert_eq!(event["note"], "checks passed: canary weight 20");

    assert_eq!(status["apiVersion"], "rollouts.mizzen.io/v1alpha1");
    assert_eq!(status["kind"], "Canary");
    let s = &status["status"];
    assert_eq!(s["phase"], "Progressing");
    assert_eq!(s["canaryWeight"], 20);
    assert_eq!(s["lastAnalysisTime"], "2026-01-01T00:01:00Z");
    assert_eq!(s["history"][0]["weight"], 20);
}

#[tokio::test]
async fn promotion_patches_the_stable_subset_then_writes_status() {
    let (client, mut handle) = mock();
    let c = canary(json!({
        "phase": "Progressing", "canaryWeight": 100, "lastAppliedRevision": "rev-2",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "lastAnalysisTime": "2026-01-01T00:00:00Z",
    }));
    let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
    let server = tokio::spawn(async move {
        serve_observation(&mut handle).await;
        // Promotion reads the rule again and patches it; traffic stays at 100 (no apply).
        let (m, path, _, send) = next(&mut handle).await;
        assert_eq!((m, path.split('?').next().unwrap()), (Method::GET, DR_LIST));
        reply(
            send,
            StatusCode::OK,
            &list("DestinationRuleList", vec![rule()]),
        );
        // Not `next`: that helper takes every PATCH with a field manager for a server-side
        // apply, and this one is a JSON Patch that names its manager.
        let (req, send) = handle.next_request().await.unwrap();
        let (m, path) = (req.method().clone(), req.uri().to_string());
        assert_eq!(req.headers()["content-type"], "application/json-patch+json");
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let patch: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(m, Method::PATCH);
        assert!(
            path.starts_with(&format!("{DR_LIST}/reviews?"))
                && path.contains("fieldManager=mizzen-canary"),
            "{path}"
        );
        reply(send, StatusCode::OK, &rule());
        let event = serve_event(&mut handle).await;
        let status = serve_status(&mut handle).await;
        (patch, event, status)
    });
    let decision = round(&mut world(client), &mut Memory::default(), &c, now)
        .await
        .unwrap();
    assert!(decision.actions.contains(&Action::Promote {
        revision: "rev-2".into()
    }));
    let (patch, event, status) = server.await.unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/spec/subsets/0/name", "value": "v1"},
            {"op": "add", "path": "/spec/subsets/0/labels", "value": {"version": "v2"}},
        ])
    );
    assert_eq!(event["reason"], "Promoting");
    assert_eq!(status["status"]["phase"], "Promoting");
}

#[tokio::test]
async fn a_call_between_rounds_writes_nothing() {
    let (client, mut handle) = mock();
    let c = canary(json!({
        "phase": "Progressing", "canaryWeight": 20, "lastAppliedRevision": "rev-2",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "lastAnalysisTime": "2026-01-01T00:00:30Z",
    }));
    let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
    let server = tokio::spawn(async move {
        serve_observation(&mut handle).await;
        // Nothing else: any further request would be left unanswered and fail the round.
        handle
    });
    let decision = round(&mut world(client), &mut Memory::default(), &c, now)
        .await
        .unwrap();
    assert!(decision.actions.is_empty(), "{:?}", decision.actions);
    assert_eq!(decision.requeue_after, std::time::Duration::from_secs(30));
    let _ = CanaryPhase::Progressing;
    drop(server.await.unwrap());
}

fn context(
    client: kube::Client,
    leading: bool,
) -> (Arc<Context>, tokio::sync::watch::Sender<bool>) {
    let (tx, rx) = tokio::sync::watch::channel(leading);
    let ctx = Context::new(client, "test".into(), rx, CanaryMetrics::default());
    (Arc::new(ctx), tx)
}

#[tokio::test]
async fn a_follower_makes_no_call_and_looks_again_soon() {
    let (client, mut handle) = mock();
    let (ctx, _tx) = context(client, false);
    let c = Arc::new(canary(json!({"phase": "Progressing", "canaryWeight": 20})));
    let requeue = reconcile(c, ctx.clone()).await.unwrap();
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
    );
    // No request was made: the mock (whose client `ctx` still holds) has nothing pending.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_leader_first_repairs_the_routing_then_runs_the_round() {
    let (client, mut handle) = mock();
    let (ctx, _tx) = context(client, true);
    let c = Arc::new(canary(json!({
        "phase": "Progressing", "canaryWeight": 40, "lastAppliedRevision": "rev-2",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        // far in the future: the round is not due, so the repair is the only write
        "lastAnalysisTime": "2100-01-01T00:00:00Z",
    })));
    let server = tokio::spawn(async move {
        let vs = expect(
            &mut handle,
            Method::PATCH,
            "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/reviews?&force=true&fieldManager=mizzen-canary",
            StatusCode::OK,
            json!({}),
        )
        .await;
        serve_observation(&mut handle).await;
        vs
    });
    reconcile(c.clone(), ctx.clone()).await.unwrap();
    let vs = server.await.unwrap();
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 40);
    // The round recorded the Canary's weight on the controller's metrics.
    let id = vec![
        ("namespace".to_string(), "shop".to_string()),
        ("name".to_string(), "reviews".to_string()),
    ];
    assert_eq!(ctx.metrics.weight.get_or_create(&id).get(), 40);
}

/// The leader's first reconcile of a Canary it has no memory of: the routing repair (the
/// VirtualService applied), then the observation; the round is not due, so nothing else.
async fn serve_first_sight(handle: &mut Handle) {
    expect(
        handle,
        Method::PATCH,
        "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/reviews?&force=true&fieldManager=mizzen-canary",
        StatusCode::OK,
        json!({}),
    )
    .await;
    serve_observation(handle).await;
}

fn not_due(uid: &str) -> Canary {
    let mut c = canary(json!({
        "phase": "Progressing", "canaryWeight": 40, "lastAppliedRevision": "rev-2",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "lastAnalysisTime": "2100-01-01T00:00:00Z",
    }));
    c.metadata.uid = Some(uid.into());
    c
}

/// The controller over the mock API server: it lists the Canaries, runs a round of the one it
/// finds (its memory is kept), then the watches report the Canary deleted, and the memory goes
/// at once (the round's own requeue is decades away, so it is not what drops it).
#[tokio::test]
async fn a_deleted_canarys_memory_is_dropped() {
    let (client, mut handle) = mock();
    let (ctx, _tx) = context(client.clone(), true);
    let controller = tokio::spawn(mizzen_operator::canary::kube::run(client, ctx.clone()));
    let c = serde_json::to_value(not_due("u-1")).unwrap();
    let key = ("shop".to_string(), "reviews".to_string());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The lists and watches (the controller's and the deletion watch's) interleave with the
    // round's own calls: answer each by what it asks for. The two watches are held until the
    // round has left its memory, then answered with the deletion; later ones stay open.
    let mut held = Vec::new();
    let mut deleted = false;
    while !deleted || !ctx.remembered().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "memory: {:?}",
            ctx.remembered()
        );
        let Ok(Some((req, send))) =
            tokio::time::timeout(std::time::Duration::from_millis(20), handle.next_request()).await
        else {
            if !deleted && ctx.remembered() == [key.clone()] && held.len() == 2 {
                let mut gone = c.clone();
                gone["metadata"]["resourceVersion"] = "2".into();
                let line = json!({"type": "DELETED", "object": gone});
                for watch in held.drain(..) {
                    let watch: support::Respond = watch;
                    watch.send_response(
                        http::Response::builder()
                            .status(StatusCode::OK)
                            .body(kube::client::Body::from(format!("{line}\n").into_bytes()))
                            .unwrap(),
                    );
                }
                deleted = true;
            }
            continue;
        };
        let path = req.uri().path_and_query().unwrap().to_string();
        let (method, route) = (req.method().clone(), path.split('?').next().unwrap());
        match (method, route) {
            (Method::GET, "/apis/rollouts.mizzen.io/v1alpha1/canaries")
                if path.contains("watch=true") =>
            {
                held.push(send);
            }
            (Method::GET, "/apis/rollouts.mizzen.io/v1alpha1/canaries") => {
                // Once deleted, the Canary is no longer listed (should the watcher relist).
                let items = if deleted { vec![] } else { vec![c.clone()] };
                let mut list = list("CanaryList", items);
                list["apiVersion"] = "rollouts.mizzen.io/v1alpha1".into();
                list["metadata"] = json!({"resourceVersion": "1"});
                reply(send, StatusCode::OK, &list);
            }
            (Method::PATCH, r) if r.ends_with("/virtualservices/reviews") => {
                reply(send, StatusCode::OK, &json!({}));
            }
            (Method::GET, DR_LIST) => reply(
                send,
                StatusCode::OK,
                &list("DestinationRuleList", vec![rule()]),
            ),
            (Method::GET, "/api/v1/namespaces/shop/pods") => {
                let version = if path.contains("version%3Dv1") {
                    "v1"
                } else {
                    "v2"
                };
                let hash = if version == "v1" { "rev-1" } else { "rev-2" };
                reply(
                    send,
                    StatusCode::OK,
                    &list("PodList", vec![pod("p", version, hash)]),
                );
            }
            (m, _) => panic!("unexpected request {m} {path}"),
        }
    }
    controller.abort();
}

/// A Canary created again under the same name (a new uid) does not inherit the memory of the
/// one before it: its first reconcile repairs the routing again, as for a Canary never seen.
#[tokio::test]
async fn a_recreated_canary_starts_without_the_old_memory() {
    let (client, mut handle) = mock();
    let (ctx, _tx) = context(client, true);
    let server = tokio::spawn(async move {
        serve_first_sight(&mut handle).await;
        // The same Canary again: remembered, so no repair, only the observation.
        serve_observation(&mut handle).await;
        // Same name, new uid: the repair comes first again.
        serve_first_sight(&mut handle).await;
    });
    reconcile(Arc::new(not_due("u-1")), ctx.clone())
        .await
        .unwrap();
    reconcile(Arc::new(not_due("u-1")), ctx.clone())
        .await
        .unwrap();
    reconcile(Arc::new(not_due("u-2")), ctx.clone())
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(ctx.remembered().len(), 1);
}
