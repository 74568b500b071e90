use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::*;

fn review(kind: Value, operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": kind,
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    })
}

fn pod_review(pod: Value) -> Vec<u8> {
    serde_json::to_vec(&review(
        json!({"group": "", "version": "v1", "kind": "Pod"}),
        "CREATE",
        pod,
    ))
    .unwrap()
}

fn vs(weights: [u32; 2]) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": weights[0]},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": weights[1]}
            ]}]
        }
    })
}

fn vs_review(object: Value, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&review(
        json!({"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"}),
        operation,
        object,
    ))
    .unwrap()
}

/// The response part of an answer, as JSON (what the API server reads). kube's own encoding of
/// the same answer must carry the same information.
fn answer(decision: Decision) -> Value {
    let review: Value = serde_json::from_slice(&decision.to_json()).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let mut kube = serde_json::to_value(decision.into_review()).unwrap();
    if let Some(bytes) = kube["response"].get("patch").cloned() {
        let bytes: Vec<u8> = serde_json::from_value(bytes).unwrap();
        kube["response"]["patch"] = serde_json::to_value(ByteString(bytes)).unwrap();
    }
    assert_eq!(review, kube);
    review["response"].clone()
}

/// The patch travels as base64, as Kubernetes encodes bytes.
fn patch_of(response: &Value) -> json_patch::Patch {
    let bytes: ByteString = serde_json::from_value(response["patch"].clone()).unwrap();
    serde_json::from_slice(&bytes.0).unwrap()
}

#[test]
fn injects_a_pod_with_a_json_patch() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    });
    let r = parse(&pod_review(pod.clone())).unwrap();
    let decision = inject(&r, &InjectSettings::default());
    assert_eq!(decision.verdict, Verdict::Injected);
    let response = answer(decision);
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch_of(&response)).unwrap();
    let expected = crate::inject::inject(&pod, "shop", &InjectSettings::default())
        .unwrap()
        .pod;
    assert_eq!(patched, expected);
}

#[test]
fn passes_skipped_pods_and_other_operations_without_a_patch() {
    let opted_out = json!({
        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    });
    let d = inject(
        &parse(&pod_review(opted_out.clone())).unwrap(),
        &InjectSettings::default(),
    );
    assert_eq!(d.verdict, Verdict::Skipped);
    assert_eq!(
        d.note,
        "opted out by the annotation sidecar.istio.io/inject=false"
    );
    let response = answer(d);
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());

    let update = serde_json::to_vec(&review(
        json!({"group": "", "version": "v1", "kind": "Pod"}),
        "UPDATE",
        opted_out,
    ))
    .unwrap();
    let d = inject(&parse(&update).unwrap(), &InjectSettings::default());
    assert_eq!(
        (d.verdict, d.note.as_str()),
        (Verdict::Skipped, "not a CREATE")
    );
}

#[test]
fn refuses_pods_with_bad_annotations() {
    let pod = json!({
        "metadata": {"annotations": {"sidecar.istio.io/proxyCPU": "a lot"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    });
    let d = inject(
        &parse(&pod_review(pod)).unwrap(),
        &InjectSettings::default(),
    );
    assert_eq!(d.verdict, Verdict::Error);
    let response = answer(d);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    assert_eq!(
        response["status"]["message"],
        "mizzen sidecar injection: annotation sidecar.istio.io/proxyCPU: \"a lot\": \"a lot\" is not a Kubernetes quantity (examples: 100m, 0.5, 128Mi, 1Gi)"
    );
}

#[test]
fn a_bad_virtual_service_is_denied_naming_the_field() {
    let d = validate(&parse(&vs_review(vs([90, 20]), "CREATE")).unwrap());
    assert_eq!(d.verdict, Verdict::Denied);
    let response = answer(d);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["status"], "Failure");
    assert_eq!(response["status"]["reason"], "Invalid");
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(
        response["status"]["message"],
        "spec.http[0].route: weights of a route must add up to 100 (got 110)"
    );
    assert_eq!(
        response["status"]["details"]["causes"],
        json!([{"reason": "FieldValueInvalid", "field": "spec.http[0].route", "message": "weights of a route must add up to 100 (got 110)"}])
    );
}

#[test]
fn every_error_is_listed_and_warnings_pass_on() {
    let mut bad = vs([90, 20]);
    bad["spec"]["http"][0]["timeout"] = json!("0s");
    bad["spec"]["http"][0]["retries"] = json!({"attempts": 3, "perTryTimeout": "2s"});
    bad["spec"]["http"][0]["fault"] = json!({"abort": {"percent": 10, "httpStatus": 700}});
    let d = validate(&parse(&vs_review(bad, "UPDATE")).unwrap());
    let response = answer(d);
    let message = response["status"]["message"].as_str().unwrap();
    let parts: Vec<&str> = message.split("; ").collect();
    assert!(parts.len() >= 2, "{message}");
    assert!(
        parts.iter().any(|p| p.starts_with("spec.http[0].route: ")),
        "{message}"
    );
    assert!(
        parts
            .iter()
            .any(|p| p.starts_with("spec.http[0].fault.abort.httpStatus: ")),
        "{message}"
    );
    let warnings = response["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .starts_with("spec.http[0].fault.abort.percent: ")),
        "{warnings:?}"
    );
}

#[test]
fn a_good_virtual_service_is_allowed() {
    let d = validate(&parse(&vs_review(vs([90, 10]), "CREATE")).unwrap());
    assert_eq!(d.verdict, Verdict::Allowed);
    let response = answer(d);
    assert_eq!(response["allowed"], true);
    assert!(response.get("warnings").is_none());
}

#[test]
fn parse_errors_are_denied_at_their_field() {
    let mut obj = vs([100, 0]);
    obj["spec"]["http"][0]["rout"] = json!([]);
    let response = answer(validate(&parse(&vs_review(obj, "CREATE")).unwrap()));
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.http[0].rout: unknown field `rout`"),
        "{message}"
    );
}

#[test]
fn deletes_and_foreign_kinds_are_allowed() {
    let mut r = review(
        json!({"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"}),
        "DELETE",
        Value::Null,
    );
    r["request"]["oldObject"] = vs([90, 20]);
    let d = validate(&parse(&serde_json::to_vec(&r).unwrap()).unwrap());
    assert_eq!(d.verdict, Verdict::Allowed);
    assert_eq!(answer(d)["allowed"], true);

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let d = validate(&parse(&vs_review(cm, "CREATE")).unwrap());
    assert_eq!(
        (d.verdict, d.note.as_str()),
        (Verdict::Allowed, "not a mesh resource")
    );
}

#[test]
fn malformed_bodies_say_what_is_wrong() {
    let err = |body: &[u8]| parse(body).unwrap_err().to_string();
    assert!(
        err(b"not json").starts_with("the body is not JSON: expected ident"),
        "{}",
        err(b"not json")
    );
    assert_eq!(
        err(b"[]"),
        "the body is not an AdmissionReview: expected a JSON object"
    );
    assert_eq!(
        err(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#),
        "the body is not an AdmissionReview: expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got \"admission.k8s.io/v1beta1\" and \"AdmissionReview\""
    );
    assert_eq!(
        err(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
        "the AdmissionReview has no request"
    );
    let mut r = review(
        json!({"group": "", "version": "v1", "kind": "Pod"}),
        "CREATE",
        json!({}),
    );
    r["request"]["operation"] = json!("EXPLODE");
    let e = err(&serde_json::to_vec(&r).unwrap());
    assert!(
        e.starts_with("malformed AdmissionReview at request.operation: unknown variant `EXPLODE`"),
        "{e}"
    );
    r["request"]["operation"] = json!("CREATE");
    r["request"]["object"] = json!("a string");
    assert_eq!(
        err(&serde_json::to_vec(&r).unwrap()),
        "malformed AdmissionReview at request.object: expected an object"
    );
}

#[test]
fn the_pruned_diff_is_json_patch_diff() {
    let pod = json!({
        "metadata": {"name": "p", "labels": {"a": "1"}, "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"containers": [{"name": "c", "image": "i", "readinessProbe": {"httpGet": {"port": 8080}}}], "volumes": [{"name": "v"}]}
    });
    let injected = crate::inject::inject(&pod, "ns", &InjectSettings::default())
        .unwrap()
        .pod;
    let pairs = [
        (pod.clone(), injected.clone()),
        (injected.clone(), pod.clone()),
        (
            json!({"a": [1, 2, {"b": 3}], "c": "x"}),
            json!({"a": [1, {"b": 4}], "d": null}),
        ),
        (
            json!({"a/b": {"~c": 1}}),
            json!({"a/b": {"~c": 2, "e": [1]}}),
        ),
        (json!(1), json!("one")),
        (
            json!({"same": {"deep": [1, 2]}}),
            json!({"same": {"deep": [1, 2]}}),
        ),
    ];
    for (left, right) in pairs {
        let ours = diff(&left, &right);
        assert_eq!(ours, json_patch::diff(&left, &right), "{left} -> {right}");
        let mut applied = left.clone();
        json_patch::patch(&mut applied, &ours).unwrap();
        assert_eq!(applied, right);
    }
}
