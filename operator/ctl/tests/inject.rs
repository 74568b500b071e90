//! `mizzenctl inject` against the webhook's golden files (`webhook/testdata/inject`): the built
//! binary must produce exactly `<case>.injected.yaml` for every `<case>.yaml`, the same result
//! the pure function and the HTTPS server give (`webhook/tests/inject_golden.rs`), and running it
//! on its own output must change nothing.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

/// The image the golden files are written with (as in the webhook's tests).
const GOLDEN_IMAGE: &str = "ghcr.io/mizzen-mesh/mizzen-proxy:golden";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../webhook/testdata/inject")
}

/// `(case name, input, golden)` for every case.
fn cases() -> Vec<(String, PathBuf, PathBuf)> {
    let mut cases: Vec<_> = fs::read_dir(testdata())
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".yaml")?
                .to_string();
            if name.ends_with(".injected") {
                return None;
            }
            let golden = path.with_file_name(format!("{name}.injected.yaml"));
            Some((name, path, golden))
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "golden cases missing in {}",
        testdata().display()
    );
    cases
}

/// Cases named `legacy-*` are written with native sidecars off.
fn settings_args(case: &str) -> Vec<&'static str> {
    let mut args = vec!["--proxy-image", GOLDEN_IMAGE];
    if case.starts_with("legacy-") {
        args.extend(["--native-sidecar", "false"]);
    }
    args
}

fn mizzenctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mizzenctl"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn docs(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn inject_ok(file: &Path, case: &str) -> Vec<Value> {
    let mut args = vec!["inject", "-f", file.to_str().unwrap()];
    args.extend(settings_args(case));
    let out = mizzenctl(&args, None);
    assert!(
        out.status.success(),
        "mizzenctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    docs(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn every_golden_case_matches_and_a_second_pass_changes_nothing() {
    for (case, input, golden) in cases() {
        let want = docs(&fs::read_to_string(&golden).unwrap());
        let got = inject_ok(&input, &case);
        assert_eq!(got.len(), want.len(), "{case}: number of documents");
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                w == g,
                "{case} document {i}: mizzenctl inject differs from {}; it wrote:\n{}",
                golden.display(),
                serde_json::to_string_pretty(g).unwrap()
            );
        }
        assert_eq!(
            inject_ok(&golden, &case),
            want,
            "{case}: a second pass changed it"
        );
    }
}

#[test]
fn reads_stdin_writes_files_and_reports_skips() {
    let input = fs::read_to_string(testdata().join("multi-document.yaml")).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("inject-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let target = dir.join("out.yaml");
    let mut args = vec!["inject", "-f", "-", "-o", target.to_str().unwrap()];
    args.extend(settings_args("multi-document"));
    let out = mizzenctl(&args, Some(&input));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "-o writes the file, not stdout");
    let golden =
        docs(&fs::read_to_string(testdata().join("multi-document.injected.yaml")).unwrap());
    assert_eq!(docs(&fs::read_to_string(&target).unwrap()), golden);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DaemonSet/kube-system/log-shipper: not injected: namespace kube-system is never injected"),
        "{stderr}"
    );
    assert!(
        stderr.contains("injected the sidecar into 2 pod template(s)"),
        "{stderr}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn injects_inside_lists() {
    let list = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings, namespace: shop}
    data: {a: "1"}
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: shop}
    spec:
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers: [{name: web, image: nginx}]
"#;
    let out = mizzenctl(&["inject", "-f", "-"], Some(list));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = docs(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["kind"], "List");
    assert_eq!(docs[0]["items"][0]["data"]["a"], "1");
    let init = &docs[0]["items"][1]["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(init[0]["name"], "mizzen-init");
    assert_eq!(init[1]["name"], "mizzen-proxy");
    // The default image is the one `mizzenctl install` deploys.
    assert_eq!(
        init[1]["image"],
        format!(
            "ghcr.io/mizzen-mesh/mizzen-proxy:{}",
            env!("CARGO_PKG_VERSION")
        )
        .as_str()
    );
}

#[test]
fn refuses_objects_it_cannot_inject_and_writes_nothing() {
    let bad = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations:
        traffic.sidecar.istio.io/excludeOutboundIPRanges: "10.0.0.1"
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: clash, namespace: shop}
spec:
  containers: [{name: mizzen-proxy, image: x}]
"#;
    let out = mizzenctl(&["inject", "-f", "-"], Some(bad));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing is written on error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: Deployment/shop/web: annotation traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.0.0.1\": \"10.0.0.1\" is not an IP range in CIDR form"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: Pod/shop/clash: spec.containers[0].name: the pod already has a container named mizzen-proxy"),
        "{stderr}"
    );
    let out = mizzenctl(&["inject", "-f", "-"], Some("a: [1, 2\nb"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid YAML"));
}
