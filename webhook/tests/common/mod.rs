//! Shared by the webhook's integration tests: a test PKI written to files, a running server,
//! the golden cases.
#![allow(dead_code)]

pub mod client;

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use mizzen_webhook::{
    config::Config,
    inject::InjectSettings,
    metrics::Metrics,
    server::{self, Running},
};
use serde_json::{Value, json};

/// The proxy image every golden file is written with.
pub const GOLDEN_IMAGE: &str = "ghcr.io/mizzen-mesh/mizzen-proxy:golden";

/// The name the test server's certificate is for.
pub const SERVER_NAME: &str = "mizzen-webhook.mizzen-system.svc";

/// A CA and a serving certificate it signed, as PEM.
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A fresh CA and a serving certificate for [`SERVER_NAME`].
pub fn issue() -> Issued {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mizzen test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    Issued {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A directory under the test target dir, emptied.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `issued` as `tls.crt` / `tls.key` in `dir` the way the kubelet does: each file
/// replaced by a rename, so a reader sees the old or the new file, never half of one.
pub fn write_pair(dir: &Path, issued: &Issued) {
    for (name, text) in [("tls.key", &issued.key_pem), ("tls.crt", &issued.cert_pem)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// A server on 127.0.0.1 (any port) serving the pair in `dir`, polling it every 100 ms.
pub async fn start_server(dir: &Path, inject: InjectSettings) -> (Running, Arc<Metrics>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = Config {
        listen: listener.local_addr().unwrap(),
        tls_cert: dir.join("tls.crt"),
        tls_key: dir.join("tls.key"),
        cert_poll: Duration::from_millis(100),
        inject,
    };
    let metrics = Arc::new(Metrics::default());
    let running = server::start(listener, &config, metrics.clone())
        .await
        .unwrap();
    (running, metrics)
}

/// One golden case: `testdata/inject/<name>.yaml` → `<name>.injected.yaml`.
pub struct Case {
    pub name: String,
    pub input: PathBuf,
    pub golden: PathBuf,
}

impl Case {
    /// Cases named `legacy-*` run with native sidecars off; all use [`GOLDEN_IMAGE`].
    pub fn settings(&self) -> InjectSettings {
        InjectSettings {
            proxy_image: GOLDEN_IMAGE.to_string(),
            native_sidecar: !self.name.starts_with("legacy-"),
            ..InjectSettings::default()
        }
    }
}

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/inject")
}

pub fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let file = p.file_name()?.to_str()?.to_string();
            let name = file.strip_suffix(".yaml")?;
            if name.ends_with(".injected") {
                return None;
            }
            Some(Case {
                name: name.to_string(),
                golden: p.with_file_name(format!("{name}.injected.yaml")),
                input: p,
            })
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        cases.len() >= 10,
        "expected the golden cases in {}",
        testdata().display()
    );
    cases
}

/// Every document of a YAML file.
pub fn read_docs(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The pod an API server would send for `doc`, with the pointer of its template (`""` for a
/// Pod); `None` for objects that hold no pod.
pub fn admitted_pod(doc: &Value) -> Option<(Value, &'static str)> {
    let text = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let pointer =
        mizzen_webhook::inject::workload::template_pointer(text("/apiVersion"), text("/kind"))?;
    if pointer.is_empty() {
        return Some((doc.clone(), pointer));
    }
    let template = doc.pointer(pointer).unwrap();
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata").cloned().unwrap_or(json!({}))});
    pod["spec"] = template["spec"].clone();
    Some((pod, pointer))
}

/// The namespace `doc` is created in.
pub fn namespace_of(doc: &Value) -> String {
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string()
}

/// An AdmissionReview of a pod CREATE, as the API server sends it.
pub fn pod_review(uid: &str, namespace: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "uid": "u-1", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// The JSON patch of an AdmissionReview answer, which carries it base64-encoded, as
/// Kubernetes encodes bytes.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let bytes: k8s_openapi::ByteString = match response.get("patch")? {
        Value::String(_) => serde_json::from_value(response["patch"].clone()).unwrap(),
        other => panic!("unexpected patch encoding: {other}"),
    };
    Some(serde_json::from_slice(&bytes.0).unwrap())
}

/// A readable account of where two JSON values differ.
pub fn differences(expected: &Value, actual: &Value) -> String {
    let patch = json_patch::diff(expected, actual);
    serde_json::to_string_pretty(&patch).unwrap()
}
