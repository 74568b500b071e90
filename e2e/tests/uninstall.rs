//! `kubectl delete -f manifests/` leaves nothing of Mizzen behind. Destructive, so ignored in
//! the normal run: `e2e/kind.sh` runs it last, on its own (`-- --ignored`).

use std::time::Duration;

use k8s_openapi::{
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Namespace,
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, Client, Resource, api::ListParams};
use mizzen_e2e::{cluster, repo_path, traffic::kubectl, wait};
use serde::de::DeserializeOwned;

/// Names of every object of kind `K` that belongs to Mizzen: named `mizzen*`, or (CRDs) in one
/// of the groups Mizzen serves.
async fn leftovers<K>(client: &Client, mine: impl Fn(&str) -> bool) -> anyhow::Result<Vec<String>>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let list = Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| o.meta().name.clone())
        .filter(|n| mine(n))
        .collect())
}

#[tokio::test]
#[ignore = "destructive: uninstalls Mizzen; e2e/kind.sh runs it last"]
async fn uninstall_leaves_nothing_behind() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let manifests = repo_path("manifests");
    kubectl(&[
        "delete",
        "-f",
        manifests.to_str().unwrap_or("manifests"),
        "--ignore-not-found",
        "--wait=true",
        "--timeout=300s",
    ])?;
    let named = |n: &str| n.starts_with("mizzen");
    let groups = |n: &str| n.ends_with(".istio.io") || n.ends_with(".mizzen.io");
    wait::until(
        "Mizzen's namespaces to be gone",
        Duration::from_secs(300),
        || async { Ok(leftovers::<Namespace>(&client, named).await?.is_empty()) },
    )
    .await?;
    let mut left = Vec::new();
    for (kind, names) in [
        (
            "CustomResourceDefinition",
            leftovers::<CustomResourceDefinition>(&client, groups).await?,
        ),
        ("Namespace", leftovers::<Namespace>(&client, named).await?),
        (
            "MutatingWebhookConfiguration",
            leftovers::<MutatingWebhookConfiguration>(&client, named).await?,
        ),
        (
            "ValidatingWebhookConfiguration",
            leftovers::<ValidatingWebhookConfiguration>(&client, named).await?,
        ),
        (
            "ClusterRole",
            leftovers::<ClusterRole>(&client, named).await?,
        ),
        (
            "ClusterRoleBinding",
            leftovers::<ClusterRoleBinding>(&client, named).await?,
        ),
    ] {
        left.extend(names.into_iter().map(|n| format!("{kind} {n}")));
    }
    assert!(left.is_empty(), "left behind after uninstall: {left:?}");
    Ok(())
}
