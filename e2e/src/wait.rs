//! Bounded waits: every wait in the suite has a deadline and says what it waited for.

use std::{future::Future, time::Duration};

use anyhow::{Context, bail};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{Api, Client, api::ListParams};

/// Polls `check` every second until it returns `true`; fails after `timeout`, naming `what`
/// and the last error.
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("condition never held");
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until every Deployment in `ns` has rolled out: all replicas updated and ready.
pub async fn rollouts(client: &Client, ns: &str, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    until(&format!("the Deployments of {ns}"), timeout, || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await?;
            for d in &list.items {
                let want = d.spec.replicas.unwrap_or(1);
                let status = d.status.clone().unwrap_or_default();
                let generation = d.metadata.generation.unwrap_or(0);
                if status.observed_generation.unwrap_or(0) < generation
                    || status.updated_replicas.unwrap_or(0) < want
                    || status.ready_replicas.unwrap_or(0) < want
                    || status.replicas.unwrap_or(0) > want
                {
                    anyhow::bail!(
                        "{} has {}/{want} ready",
                        d.metadata.name.clone().unwrap_or_default(),
                        status.ready_replicas.unwrap_or(0)
                    );
                }
            }
            Ok(!list.items.is_empty())
        }
    })
    .await
}

/// The `resourceVersion` of the namespace's rendered proxy config (`None` before the operator
/// has written it).
pub async fn proxy_config_version(client: &Client, ns: &str) -> anyhow::Result<Option<String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(api
        .get_opt("mizzen-proxy-config")
        .await
        .context("reading the mizzen-proxy-config ConfigMap")?
        .and_then(|cm| cm.metadata.resource_version))
}

/// Waits until the operator has rendered a new proxy config for `ns` (its ConfigMap differs
/// from `previous`), then restarts `deployment` so its proxies start from it at once instead of
/// waiting for the kubelet to refresh the mounted file (up to a minute or so).
pub async fn new_proxy_config(
    client: &Client,
    ns: &str,
    previous: Option<String>,
    deployments: &[&str],
) -> anyhow::Result<()> {
    until(
        &format!("a new rendered proxy config in {ns}"),
        Duration::from_secs(60),
        || {
            let previous = previous.clone();
            async move {
                Ok(proxy_config_version(client, ns)
                    .await?
                    .is_some_and(|v| Some(v) != previous))
            }
        },
    )
    .await?;
    for deployment in deployments {
        crate::traffic::kubectl(&["-n", ns, "rollout", "restart", "deployment", deployment])?;
    }
    for deployment in deployments {
        crate::traffic::kubectl(&[
            "-n",
            ns,
            "rollout",
            "status",
            "deployment",
            deployment,
            "--timeout=180s",
        ])?;
    }
    Ok(())
}
