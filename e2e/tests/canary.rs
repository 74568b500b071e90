//! The canary controller on a live cluster: a Canary of the demo's reviews from v1 to v2,
//! under steady load, promotes a good v2 and rolls back one that fails half its requests.

use std::time::Duration;

use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use mizzen_e2e::{
    cluster::{self, TestNamespace},
    manifests,
    traffic::{self, Load},
    wait,
};
use serde_json::{Value, json};

fn canary() -> Value {
    json!({
        "apiVersion": "rollouts.mizzen.io/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "reviews"},
        "spec": {
            "service": "reviews",
            "stableSubset": "v1",
            "canarySubset": "v2",
            "analysis": {
                "interval": "10s",
                "threshold": 2,
                "maxWeight": 100,
                "stepWeight": 25,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "10s"}
                ]
            }
        }
    })
}

fn subsets() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {
            "host": "reviews",
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}}
            ]
        }
    })
}

/// Runs the Canary with v2 as given and returns its final phase and the version share of
/// 100 requests made after it ended.
async fn rollout(prefix: &str, v2_args: &[&str]) -> anyhow::Result<(String, Vec<traffic::Reply>)> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, prefix, true).await?;
    let mut demo = manifests::without(
        manifests::load("e2e/manifests/demo.yaml")?,
        &["reviews-v3", "productpage-v1", "productpage"],
    );
    manifests::append_args(&mut demo, "reviews-v2", v2_args);
    manifests::deploy(&client, &ns.name, &demo).await?;
    manifests::apply(&client, &ns.name, &[subsets(), canary()]).await?;
    let pod = traffic::pod(&client, &ns.name, "client").await?;
    let _load = Load::start(&ns.name, &pod, "http://reviews:9080/reviews/1", "0.05")?;

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "rollouts.mizzen.io",
        "v1alpha1",
        "Canary",
    ));
    let canaries: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
    let phase = |c: &DynamicObject| {
        c.data["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    wait::until("the Canary to finish", Duration::from_secs(420), || async {
        let p = phase(&canaries.get("reviews").await?);
        Ok(matches!(p.as_str(), "Succeeded" | "Failed"))
    })
    .await?;
    let phase = phase(&canaries.get("reviews").await?);
    // The routes the controller left behind reach the proxies with the next rendered config.
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait::new_proxy_config(&client, &ns.name, None, &["client"]).await?;
    let pod = traffic::pod(&client, &ns.name, "client").await?;
    let after = traffic::from_pod(
        &ns.name,
        &pod,
        "http://reviews:9080/reviews/1",
        100,
        false,
        &[],
    )?;
    Ok((phase, after))
}

#[tokio::test]
async fn canary_promotes_a_good_version() -> anyhow::Result<()> {
    let (phase, after) = rollout("promote", &[]).await?;
    assert_eq!(phase, "Succeeded");
    assert!(
        after
            .iter()
            .all(|r| r.status == 200 && r.version.as_deref() == Some("v2")),
        "after promotion every request goes to v2: {after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn canary_rolls_back_a_bad_version() -> anyhow::Result<()> {
    let (phase, after) = rollout("rollback", &["--error-rate", "0.5"]).await?;
    assert_eq!(phase, "Failed");
    assert!(
        after
            .iter()
            .all(|r| r.status == 200 && r.version.as_deref() == Some("v1")),
        "after the rollback every request goes to v1: {after:?}"
    );
    Ok(())
}
