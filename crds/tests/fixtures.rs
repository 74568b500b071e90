//! Every Istio fixture users apply reads through the registry (the path the CLI, webhook and
//! operator take), survives a round trip without losing a field, and normalises its older
//! spellings.

use std::{fs, path::Path};

use mizzen_crds::{document, resource::MeshResource};
use serde_json::json;

fn fixtures() -> Vec<(String, Vec<serde_json::Value>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/istio");
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                document::parse_stream(&fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 11);
    out
}

fn read(doc: &serde_json::Value) -> MeshResource {
    MeshResource::from_value(doc)
        .expect("parses")
        .expect("is a mesh kind")
}

/// `50` and `50.0` are the same percentage; compare numbers by value.
fn numbers_as_f64(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => json!(n.as_f64()),
        serde_json::Value::Array(a) => a.iter().map(numbers_as_f64).collect(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
            .collect(),
        other => other.clone(),
    }
}

#[test]
fn fixtures_round_trip_without_losing_a_field() {
    for (name, docs) in fixtures() {
        for doc in docs {
            let first = read(&doc);
            let written = first.to_value();
            assert_eq!(read(&written), first, "{name}");
            // Nothing the user wrote disappears: every spec field is still there, as written.
            assert_eq!(
                numbers_as_f64(&written["spec"]),
                numbers_as_f64(&doc["spec"]),
                "{name}"
            );
            assert!(
                first.validate().iter().all(|p| !p.is_error()),
                "{name}: {:?}",
                first.validate()
            );
        }
    }
}

#[test]
fn older_spellings_normalise_into_their_current_fields() {
    let all = fixtures();
    let doc = |file: &str| all.iter().find(|(n, _)| n == file).unwrap().1[0].clone();

    let mut delay = read(&doc("vs-fault-delay.yaml"));
    delay.normalize();
    let v = delay.to_value();
    assert_eq!(
        v["spec"]["http"][0]["fault"]["delay"]["percentage"],
        json!({"value": 50.0})
    );
    assert!(
        v["spec"]["http"][0]["fault"]["delay"]
            .get("percent")
            .is_none()
    );
    assert!(delay.validate().is_empty(), "{:?}", delay.validate());

    let mut outlier = read(&doc("dr-outlier-detection.yaml"));
    outlier.normalize();
    let v = outlier.to_value();
    assert_eq!(
        v["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"],
        3
    );
    assert!(
        v["spec"]["trafficPolicy"]["outlierDetection"]
            .get("consecutiveErrors")
            .is_none()
    );

    let mut mirror = read(&json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": "m"},
        "spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}], "mirror": {"host": "b"}, "mirror_percent": 25}]}
    }));
    mirror.normalize();
    assert_eq!(
        mirror.to_value()["spec"]["http"][0]["mirrorPercentage"],
        json!({"value": 25.0})
    );
}

#[test]
fn every_served_version_reads_and_others_are_refused_by_name() {
    let base = json!({"kind": "DestinationRule", "metadata": {"name": "r"}, "spec": {"host": "a"}});
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let mut doc = base.clone();
        doc["apiVersion"] = json!(format!("networking.istio.io/{version}"));
        assert!(matches!(read(&doc), MeshResource::DestinationRule(_)));
    }
    let mut doc = base;
    doc["apiVersion"] = json!("networking.istio.io/v2");
    let err = MeshResource::from_value(&doc).unwrap_err();
    assert_eq!(err.problem.path, "apiVersion");
    assert!(
        err.problem
            .message
            .contains("served versions: v1, v1beta1, v1alpha3"),
        "{}",
        err.problem
    );
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert_eq!(MeshResource::from_value(&other), Ok(None));
}
