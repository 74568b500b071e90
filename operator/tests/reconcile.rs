//! The thin Kubernetes shell against kube's tower-test mock API server: each test states the
//! exact requests a reconcile pass makes (method, path, body) and answers them.

use std::time::Duration;

use http::{Method, StatusCode};

use mizzen_operator::{
    RenderSettings,
    files::load_text,
    metrics::Metrics,
    reconcile::{Outcome, Reconciler},
};
use serde_json::{Value, json};
use tokio::sync::watch;

mod support;
use support::{Handle, expect, mock};

const INPUT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, uid: uid-shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good, namespace: shop, generation: 3}
spec:
  hosts: [reviews]
  http: [{timeout: 2s, route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: shop, generation: 1}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: 60}
    - {destination: {host: reviews}, weight: 60}
"#;

fn reconciler(leading: bool) -> (Reconciler, Handle, watch::Sender<bool>) {
    reconciler_with(leading, RenderSettings::default())
}

fn reconciler_with(
    leading: bool,
    settings: RenderSettings,
) -> (Reconciler, Handle, watch::Sender<bool>) {
    let (client, handle) = mock();
    let (tx, rx) = watch::channel(leading);
    let mut registry = prometheus_client::registry::Registry::default();
    let mut r = Reconciler::new(
        client,
        settings,
        Some("pod-0".into()),
        rx,
        Metrics::new(&mut registry),
    );
    load_text(r.index_mut(), INPUT, "default", "test.yaml".as_ref()).unwrap();
    (r, handle, tx)
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

fn config_map_list(items: Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "1"}, "items": items})
}

const LIST: &str = "/api/v1/configmaps?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dmizzen";
const CACERTS: &str = "/api/v1/namespaces/mizzen-system/secrets/cacerts";
const MIZZEN_CA: &str = "/api/v1/namespaces/mizzen-system/secrets/mizzen-ca";
const APPLY: &str = "/api/v1/namespaces/shop/configmaps/mizzen-proxy-config?&force=true&fieldManager=mizzen-operator";

async fn no_secrets(handle: &mut Handle) {
    expect(
        handle,
        Method::GET,
        CACERTS,
        StatusCode::NOT_FOUND,
        not_found(),
    )
    .await;
    expect(
        handle,
        Method::GET,
        MIZZEN_CA,
        StatusCode::NOT_FOUND,
        not_found(),
    )
    .await;
}

fn vs_status_path(name: &str) -> String {
    format!("/apis/networking.istio.io/v1/namespaces/shop/virtualservices/{name}/status?")
}

fn vs_answer(name: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name, "namespace": "shop"}})
}

/// The first pass: creates the ConfigMap, writes both statuses, and an Event for the bad one.
async fn first_pass(handle: &mut Handle) -> String {
    expect(
        handle,
        Method::GET,
        LIST,
        StatusCode::OK,
        config_map_list(json!([])),
    )
    .await;
    no_secrets(handle).await;
    let cm = expect(handle, Method::PATCH, APPLY, StatusCode::OK, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mizzen-proxy-config", "namespace": "shop"}})).await;
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "mizzen"
    );
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], "uid-shop");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "Namespace");
    assert!(
        cm.get("binaryData").is_none(),
        "a small config is text only: {cm}"
    );
    let config: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    assert_eq!(config["namespace"], "shop");
    assert_eq!(
        config["services"][0]["httpRoutes"][0]["timeoutMs"], 2000,
        "the valid VirtualService renders"
    );
    assert_eq!(
        config["services"][0]["httpRoutes"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the invalid one is left out"
    );
    let hash = cm["metadata"]["annotations"]["mizzen.io/config-hash"]
        .as_str()
        .unwrap()
        .to_string();

    // Statuses, in object order: bad (Invalid, then its Event), good (Accepted).
    let bad = expect(
        handle,
        Method::PATCH,
        &vs_status_path("bad"),
        StatusCode::OK,
        vs_answer("bad"),
    )
    .await;
    let cond = &bad["status"]["conditions"][0];
    assert_eq!(
        (
            cond["type"].as_str(),
            cond["status"].as_str(),
            cond["reason"].as_str()
        ),
        (Some("Accepted"), Some("False"), Some("Invalid"))
    );
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.http[0].route: weights"),
        "{cond}"
    );
    assert_eq!(bad["status"]["observedGeneration"], 1);
    let event = expect(handle, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events?", StatusCode::CREATED, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "shop"}, "eventTime": "2026-01-01T00:00:00.000000Z"})).await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "Invalid");
    assert_eq!(event["regarding"]["name"], "bad");
    let good = expect(
        handle,
        Method::PATCH,
        &vs_status_path("good"),
        StatusCode::OK,
        vs_answer("good"),
    )
    .await;
    assert_eq!(good["status"]["conditions"][0]["status"], "True");
    assert_eq!(good["status"]["observedGeneration"], 3);
    hash
}

async fn run(r: &mut Reconciler) -> Outcome {
    tokio::time::timeout(Duration::from_secs(10), r.reconcile())
        .await
        .expect("reconcile made a request nobody answered")
        .unwrap()
}

fn existing(hash: &str) -> Value {
    config_map_list(
        json!([{"metadata": {"name": "mizzen-proxy-config", "namespace": "shop", "annotations": {"mizzen.io/config-hash": hash}}}]),
    )
}

#[tokio::test]
async fn creates_then_skips_unchanged_then_updates_on_change() {
    let (mut r, mut handle, _leader) = reconciler(true);
    let server = tokio::spawn(async move {
        let hash = first_pass(&mut handle).await;
        // Second pass: the ConfigMap exists with the same hash; statuses already written.
        expect(
            &mut handle,
            Method::GET,
            LIST,
            StatusCode::OK,
            existing(&hash),
        )
        .await;
        no_secrets(&mut handle).await;
        // Third pass, after an edit: the ConfigMap is applied again.
        expect(
            &mut handle,
            Method::GET,
            LIST,
            StatusCode::OK,
            existing(&hash),
        )
        .await;
        no_secrets(&mut handle).await;
        let cm = expect(&mut handle, Method::PATCH, APPLY, StatusCode::OK, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mizzen-proxy-config", "namespace": "shop"}})).await;
        assert_ne!(cm["metadata"]["annotations"]["mizzen.io/config-hash"], hash);
        assert!(
            cm["data"]["config.json"]
                .as_str()
                .unwrap()
                .contains("\"timeoutMs\":5000")
        );
        let good = expect(
            &mut handle,
            Method::PATCH,
            &vs_status_path("good"),
            StatusCode::OK,
            vs_answer("good"),
        )
        .await;
        assert_eq!(good["status"]["observedGeneration"], 4);
        handle
    });
    let first = run(&mut r).await;
    assert_eq!(
        (
            first.config_maps_applied,
            first.statuses_written,
            first.events
        ),
        (1, 2, 1)
    );
    let second = run(&mut r).await;
    assert_eq!(
        (
            second.config_maps_applied,
            second.config_maps_unchanged,
            second.statuses_written
        ),
        (0, 1, 0)
    );

    let edit = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: good, namespace: shop, generation: 4}\nspec:\n  hosts: [reviews]\n  http: [{timeout: 5s, route: [{destination: {host: reviews}}]}]\n";
    load_text(r.index_mut(), edit, "default", "edit.yaml".as_ref()).unwrap();
    let third = run(&mut r).await;
    assert_eq!(
        (
            third.config_maps_applied,
            third.statuses_written,
            third.events
        ),
        (1, 1, 0)
    );
    let mut handle = server.await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), handle.next_request())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn deletes_config_maps_when_the_namespace_loses_its_label() {
    let (mut r, mut handle, _leader) = reconciler(true);
    let server = tokio::spawn(async move {
        let hash = first_pass(&mut handle).await;
        let list = config_map_list(json!([
            {"metadata": {"name": "mizzen-proxy-config", "namespace": "shop", "annotations": {"mizzen.io/config-hash": hash}}},
            {"metadata": {"name": "mizzen-ca-root-cert", "namespace": "shop"}}
        ]));
        expect(&mut handle, Method::GET, LIST, StatusCode::OK, list).await;
        no_secrets(&mut handle).await;
        let ok = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
        expect(
            &mut handle,
            Method::DELETE,
            "/api/v1/namespaces/shop/configmaps/mizzen-ca-root-cert?",
            StatusCode::OK,
            ok.clone(),
        )
        .await;
        expect(
            &mut handle,
            Method::DELETE,
            "/api/v1/namespaces/shop/configmaps/mizzen-proxy-config?",
            StatusCode::OK,
            ok,
        )
        .await;
    });
    run(&mut r).await;
    let unlabel = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, uid: uid-shop}\n";
    load_text(r.index_mut(), unlabel, "default", "ns.yaml".as_ref()).unwrap();
    let out = run(&mut r).await;
    assert_eq!((out.config_maps_applied, out.config_maps_deleted), (0, 2));
    server.await.unwrap();
}

#[tokio::test]
async fn writes_the_trust_bundle_from_the_ca_secret() {
    let (mut r, mut handle, _leader) = reconciler(true);
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            LIST,
            StatusCode::OK,
            config_map_list(json!([])),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            CACERTS,
            StatusCode::NOT_FOUND,
            not_found(),
        )
        .await;
        // base64 of "-----ROOT-----\n"
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mizzen-ca", "namespace": "mizzen-system"}, "data": {"ca.crt": "LS0tLS1ST09ULS0tLS0K"}});
        expect(&mut handle, Method::GET, MIZZEN_CA, StatusCode::OK, secret).await;
        let answer = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop"}});
        expect(
            &mut handle,
            Method::PATCH,
            APPLY,
            StatusCode::OK,
            answer.clone(),
        )
        .await;
        let bundle = expect(&mut handle, Method::PATCH, "/api/v1/namespaces/shop/configmaps/mizzen-ca-root-cert?&force=true&fieldManager=mizzen-operator", StatusCode::OK, answer.clone()).await;
        assert_eq!(bundle["data"]["root-cert.pem"], "-----ROOT-----\n");
        assert_eq!(bundle["metadata"]["ownerReferences"][0]["uid"], "uid-shop");
        // The root namespace gets the bundle too (the node agents read it there), though it
        // is never meshed.
        let bundle = expect(&mut handle, Method::PATCH, "/api/v1/namespaces/mizzen-system/configmaps/mizzen-ca-root-cert?&force=true&fieldManager=mizzen-operator", StatusCode::OK, answer).await;
        assert_eq!(bundle["data"]["root-cert.pem"], "-----ROOT-----\n");
        for name in ["bad"] {
            expect(
                &mut handle,
                Method::PATCH,
                &vs_status_path(name),
                StatusCode::OK,
                vs_answer(name),
            )
            .await;
        }
        expect(&mut handle, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events?", StatusCode::CREATED, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "shop"}, "eventTime": "2026-01-01T00:00:00.000000Z"})).await;
        expect(
            &mut handle,
            Method::PATCH,
            &vs_status_path("good"),
            StatusCode::OK,
            vs_answer("good"),
        )
        .await;
    });
    let out = run(&mut r).await;
    assert_eq!(out.config_maps_applied, 3);
    server.await.unwrap();
}

#[tokio::test]
async fn a_follower_renders_but_writes_nothing() {
    let (mut r, mut handle, leader) = reconciler(false);
    let out = run(&mut r).await;
    assert_eq!(out, Outcome::default());
    assert_eq!(
        r.rendered().configs.len(),
        1,
        "followers keep a rendered view, ready to lead"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), handle.next_request())
            .await
            .is_err()
    );

    // Once it leads, the same reconciler writes.
    leader.send(true).unwrap();
    let server = tokio::spawn(async move {
        first_pass(&mut handle).await;
    });
    let out = run(&mut r).await;
    assert_eq!(out.config_maps_applied, 1);
    server.await.unwrap();
}

/// The config of `shop` as the proxy reads it from an applied ConfigMap body, and where it was
/// (`"data"` or `"binaryData"`).
fn stored_config(cm: &Value) -> (&'static str, Value) {
    let typed: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(cm.clone()).unwrap();
    let (field, bytes) = match (typed.data, typed.binary_data) {
        (Some(d), None) => ("data", d["config.json"].clone().into_bytes()),
        (None, Some(b)) => ("binaryData", b["config.json"].0.clone()),
        other => panic!("exactly one of data and binaryData must be set: {other:?}"),
    };
    let json = mizzen_proxy_config::payload::decode(&bytes).unwrap();
    (field, serde_json::from_str(&json).unwrap())
}

/// A config that grows past the gzip threshold is applied under `binaryData` only, and under
/// `data` only once it shrinks again: each apply body names one field, and server-side apply
/// drops the field the manager stopped setting. The hash annotation follows the JSON.
#[tokio::test]
async fn a_config_crossing_the_gzip_threshold_moves_between_data_and_binary_data() {
    // The threshold is the size of the starting config: one more service crosses it.
    let mut index = mizzen_operator::Index::new("mizzen-system");
    load_text(&mut index, INPUT, "default", "test.yaml".as_ref()).unwrap();
    let start = mizzen_operator::render(&index, &RenderSettings::default());
    let settings = RenderSettings {
        gzip_above_bytes: start.configs["shop"].bytes,
        ..RenderSettings::default()
    };
    let (mut r, mut handle, _leader) = reconciler_with(true, settings);
    let server = tokio::spawn(async move {
        let first = first_pass(&mut handle).await;
        let mut current = first.clone();
        let mut applied = Vec::new();
        for _ in 0..2 {
            // The list shows the hash of what was applied last.
            expect(
                &mut handle,
                Method::GET,
                LIST,
                StatusCode::OK,
                existing(&current),
            )
            .await;
            no_secrets(&mut handle).await;
            let cm = expect(&mut handle, Method::PATCH, APPLY, StatusCode::OK, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mizzen-proxy-config", "namespace": "shop"}})).await;
            current = cm["metadata"]["annotations"]["mizzen.io/config-hash"]
                .as_str()
                .unwrap()
                .to_string();
            applied.push(cm);
        }
        (first, applied)
    });
    run(&mut r).await;
    assert!(
        !r.rendered().configs["shop"].payload().is_gzip(),
        "at the threshold the config is still text"
    );

    let ratings = "apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: shop}\nspec: {ports: [{name: http, port: 9080}]}\n";
    load_text(r.index_mut(), ratings, "default", "ratings.yaml".as_ref()).unwrap();
    let out = run(&mut r).await;
    assert_eq!(out.config_maps_applied, 1);
    let big = r.rendered().configs["shop"].clone();
    assert!(big.payload().is_gzip(), "{big:?}");
    assert_eq!(big.stored_bytes, big.payload().stored_bytes());

    r.index_mut().delete_service("shop", "ratings");
    let out = run(&mut r).await;
    assert_eq!(out.config_maps_applied, 1);
    let small = r.rendered().configs["shop"].clone();
    assert!(!small.payload().is_gzip());

    let (first, applied) = server.await.unwrap();
    let (field, config) = stored_config(&applied[0]);
    assert_eq!(field, "binaryData");
    assert!(applied[0].get("data").is_none(), "{}", applied[0]);
    let hosts: Vec<&str> = config["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            "ratings.shop.svc.cluster.local",
            "reviews.shop.svc.cluster.local"
        ]
    );
    assert_eq!(
        applied[0]["metadata"]["annotations"]["mizzen.io/config-hash"],
        big.hash.as_str(),
        "the annotation hashes the JSON"
    );
    assert_eq!(config, serde_json::from_str::<Value>(&big.json()).unwrap());

    let (field, config) = stored_config(&applied[1]);
    assert_eq!(field, "data");
    assert!(applied[1].get("binaryData").is_none(), "{}", applied[1]);
    assert_eq!(config["services"].as_array().unwrap().len(), 1);
    assert_eq!(
        applied[1]["metadata"]["annotations"]["mizzen.io/config-hash"],
        first.as_str(),
        "back to the first JSON, back to its hash"
    );
}
