//! The cluster the suite runs against, and one namespace per test.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

/// A client for the current kubeconfig context (the kind cluster).
pub async fn client() -> anyhow::Result<Client> {
    // kube's rustls is built with ring only; the provider must be chosen once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default()
        .await
        .context("no usable kubeconfig: run the suite through e2e/kind.sh")
}

/// A namespace that exists for one test. Dropping it deletes the namespace (and everything in
/// it) with `kubectl`, so the deletion also happens when the test panics, while its async
/// runtime is already gone.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<unique>`, labelled `istio-injection=enabled` when `meshed`, with
    /// the `privileged` Pod Security level the init container's NET_ADMIN needs.
    pub async fn create(client: &Client, prefix: &str, meshed: bool) -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!(
            "e2e-{prefix}-{:x}{:05x}",
            std::process::id(),
            nanos % 0x10_0000
        );
        let mut labels = BTreeMap::from([
            (
                "app.kubernetes.io/part-of".to_string(),
                "mizzen-e2e".to_string(),
            ),
            (
                "pod-security.kubernetes.io/enforce".to_string(),
                "privileged".to_string(),
            ),
        ]);
        if meshed {
            labels.insert("istio-injection".into(), "enabled".into());
        }
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace { name })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .status();
    }
}
