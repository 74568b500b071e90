//! Golden injection tests, like Istio's `testdata/inject`: every `testdata/inject/<case>.yaml`
//! goes through the pure function and through the HTTPS server with a real AdmissionReview, and
//! both must give `<case>.injected.yaml`; injecting that again changes nothing. (The third path,
//! `mizzenctl inject`, is checked against the same files in `operator/ctl/tests/inject.rs`.)
//!
//! Regenerate the golden files after an intended change with
//! `MIZZEN_UPDATE_GOLDEN=1 cargo test -p mizzen-webhook --test inject_golden`, and review the
//! diff.

mod common;

use std::fs;

use bytes::Bytes;
use common::{client::Conn, *};
use mizzen_webhook::inject::{
    Outcome,
    workload::{WorkloadOutcome, inject_workload},
};
use serde_json::Value;

fn header(case: &Case) -> String {
    format!(
        "# Generated from {}.yaml by `MIZZEN_UPDATE_GOLDEN=1 cargo test -p mizzen-webhook --test inject_golden`; do not edit.\n",
        case.name
    )
}

#[test]
fn goldens_through_the_pure_function() {
    let update = std::env::var_os("MIZZEN_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut injected_any = false;
    let mut skipped_any = false;
    for case in cases() {
        let settings = case.settings();
        let docs = read_docs(&case.input);
        let out: Vec<Value> = docs
            .iter()
            .map(|doc| {
                let (out, outcome) = inject_workload(doc, &settings)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
                injected_any |= outcome == WorkloadOutcome::Pod(Outcome::Injected);
                skipped_any |= matches!(outcome, WorkloadOutcome::Pod(Outcome::Skipped(_)));
                out
            })
            .collect();
        if update {
            let body: Vec<String> = out
                .iter()
                .map(|d| serde_saphyr::to_string(d).unwrap())
                .collect();
            fs::write(
                &case.golden,
                format!("{}{}", header(&case), body.join("---\n")),
            )
            .unwrap();
        }
        let golden = read_docs(&case.golden);
        assert_eq!(
            golden.len(),
            out.len(),
            "{}: number of documents",
            case.name
        );
        for (i, (want, got)) in golden.iter().zip(&out).enumerate() {
            assert!(
                want == got,
                "{} document {i} differs from {} (MIZZEN_UPDATE_GOLDEN=1 to accept):\n{}",
                case.name,
                case.golden.display(),
                differences(want, got)
            );
        }
        // A second pass changes nothing.
        for (i, doc) in out.iter().enumerate() {
            let (again, outcome) = inject_workload(doc, &settings).unwrap();
            assert_eq!(
                &again, doc,
                "{} document {i}: second pass changed it",
                case.name
            );
            assert!(
                !matches!(outcome, WorkloadOutcome::Pod(Outcome::Injected)),
                "{} document {i}: injected twice",
                case.name
            );
        }
    }
    assert!(
        injected_any && skipped_any,
        "the cases cover both injection and skips"
    );
}

/// The cases that must stay byte-for-byte unchanged, and those that must be injected.
#[test]
fn goldens_cover_the_required_situations() {
    let unchanged = [
        "already-injected",
        "host-network",
        "opt-out-annotation",
        "opt-out-label",
    ];
    for case in cases() {
        let input = read_docs(&case.input);
        let golden = read_docs(&case.golden);
        if unchanged.contains(&case.name.as_str()) {
            assert_eq!(input, golden, "{} must pass through unchanged", case.name);
        } else {
            assert_ne!(input, golden, "{} must be injected", case.name);
        }
    }
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    for required in [
        "already-injected",
        "deployment",
        "future-fields",
        "host-network",
        "legacy-sidecar",
        "opt-out-annotation",
        "opt-out-label",
        "probes",
        "proxy-resources",
        "traffic-annotations",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing golden case {required}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goldens_through_the_https_server() {
    let dir = scratch("golden-server");
    let issued = issue();
    write_pair(&dir, &issued);
    let native = start_server(&dir, cases()[0].settings()).await.0;
    let legacy_settings = cases()
        .into_iter()
        .find(|c| c.name.starts_with("legacy-"))
        .unwrap()
        .settings();
    let legacy = start_server(&dir, legacy_settings).await.0;
    let config = client::client_config(&[&issued.ca_pem]);

    let mut reviewed = 0;
    for case in cases() {
        let server = if case.settings().native_sidecar {
            &native
        } else {
            &legacy
        };
        let mut conn = Conn::connect(server.addr, SERVER_NAME, config.clone())
            .await
            .unwrap();
        let golden = read_docs(&case.golden);
        for (i, doc) in read_docs(&case.input).iter().enumerate() {
            let Some((pod, pointer)) = admitted_pod(doc) else {
                continue;
            };
            let namespace = namespace_of(doc);
            let uid = format!("{}-{i}", case.name);
            let body = serde_json::to_vec(&pod_review(&uid, &namespace, &pod)).unwrap();
            let (status, answer) = conn.post_json("/inject", Bytes::from(body)).await.unwrap();
            assert_eq!(
                status,
                200,
                "{}: {}",
                case.name,
                String::from_utf8_lossy(&answer)
            );
            let answer: Value = serde_json::from_slice(&answer).unwrap();
            let response = &answer["response"];
            assert_eq!(response["uid"], uid.as_str());
            assert_eq!(response["allowed"], true, "{}: {response}", case.name);
            let mut patched = pod.clone();
            if let Some(patch) = patch_of(response) {
                assert_eq!(response["patchType"], "JSONPatch");
                json_patch::patch(&mut patched, &patch).unwrap();
            }
            // The server's result is the golden pod (or the golden template as a pod).
            let want = golden[i].pointer(pointer).unwrap();
            for part in ["metadata", "spec"] {
                assert!(
                    want[part] == patched[part],
                    "{} document {i}: the server's {part} differs from the golden file:\n{}",
                    case.name,
                    differences(&want[part], &patched[part])
                );
            }
            if pointer.is_empty() {
                assert_eq!(&patched, want, "{}: the whole pod", case.name);
            }
            reviewed += 1;

            // Reviewing the injected pod again gives no patch.
            let body = serde_json::to_vec(&pod_review(&uid, &namespace, &patched)).unwrap();
            let (status, again) = conn.post_json("/inject", Bytes::from(body)).await.unwrap();
            assert_eq!(status, 200);
            let again: Value = serde_json::from_slice(&again).unwrap();
            assert_eq!(again["response"]["allowed"], true);
            assert!(
                patch_of(&again["response"]).is_none(),
                "{} document {i}: second review patched again",
                case.name
            );
        }
    }
    assert!(reviewed >= 12, "only {reviewed} pods reviewed");
    native
        .shutdown(std::time::Duration::from_secs(1))
        .await
        .unwrap();
    legacy
        .shutdown(std::time::Duration::from_secs(1))
        .await
        .unwrap();
}
