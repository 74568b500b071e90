//! The mesh itself: injection, mutual TLS, certificate rotation.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Pod};
use kube::{Api, api::ListParams};
use mizzen_e2e::{
    cluster::{self, TestNamespace},
    manifests, metrics,
    traffic::{self, Load},
    wait,
};

/// Every pod of a meshed namespace gets the init container and the proxy (a native sidecar),
/// all of them ready, and the app answers through them.
#[tokio::test]
async fn sidecars_are_injected_and_ready() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, "inject", true).await?;
    manifests::deploy(
        &client,
        &ns.name,
        &manifests::load("e2e/manifests/serviceb.yaml")?,
    )
    .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let list = pods.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 3, "serviceb-v1, serviceb-v2, client");
    for pod in &list.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert!(
            annotations.contains_key("sidecar.istio.io/status"),
            "{name}: not injected"
        );
        let spec = pod.spec.clone().unwrap_or_default();
        let init: Vec<_> = spec.init_containers.unwrap_or_default();
        let names: Vec<_> = init.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(&names[..2], ["mizzen-init", "mizzen-proxy"], "{name}");
        assert_eq!(init[1].restart_policy.as_deref(), Some("Always"), "{name}");
        let status = pod.status.clone().unwrap_or_default();
        let proxy = status
            .init_container_statuses
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == "mizzen-proxy")
            .unwrap_or_else(|| panic!("{name}: no status of mizzen-proxy"));
        assert!(proxy.ready, "{name}: the proxy is not ready");
        assert!(
            status
                .container_statuses
                .unwrap_or_default()
                .iter()
                .all(|c| c.ready),
            "{name}: a container is not ready"
        );
    }
    let client_pod = traffic::pod(&client, &ns.name, "client").await?;
    let replies = traffic::from_pod(
        &ns.name,
        &client_pod,
        "http://serviceb:9080/reviews/1",
        10,
        false,
        &[],
    )?;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    Ok(())
}

/// Between meshed pods the connection is mutual TLS with SPIFFE identities; under a STRICT
/// PeerAuthentication a client without a sidecar is refused, while meshed clients go on.
#[tokio::test]
async fn mtls_between_pods_and_plaintext_refused_under_strict() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, "mtls", true).await?;
    let outside = TestNamespace::create(&client, "plain", false).await?;
    let serviceb = manifests::load("e2e/manifests/serviceb.yaml")?;
    manifests::deploy(&client, &ns.name, &serviceb).await?;
    let only_client: Vec<_> = serviceb
        .iter()
        .filter(|o| o["metadata"]["name"] == "client")
        .cloned()
        .collect();
    manifests::deploy(&client, &outside.name, &only_client).await?;
    let meshed = traffic::pod(&client, &ns.name, "client").await?;
    let plain = traffic::pod(&client, &outside.name, "client").await?;
    let url = format!("http://serviceb.{}:9080/reviews/1", ns.name);

    // PERMISSIVE (no PeerAuthentication): both get through; the meshed one over mTLS.
    let replies = traffic::from_pod(&ns.name, &meshed, &url, 10, false, &[])?;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let replies = traffic::from_pod(&outside.name, &plain, &url, 3, false, &[])?;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let server = traffic::pod(&client, &ns.name, "serviceb").await?;
    let text = metrics::scrape(&client, &ns.name, &server, 15090, "/stats/prometheus").await?;
    let mtls = metrics::sum(
        &text,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    assert!(mtls > 0.0, "no mutual_tls request on {server}:\n{text}");
    let principals = metrics::label_values(&text, "istio_requests_total", "source_principal");
    let expected = format!("/ns/{}/sa/default", ns.name);
    assert!(
        principals
            .iter()
            .any(|p| p.starts_with("spiffe://") && p.ends_with(&expected)),
        "{principals:?}"
    );

    // STRICT: the plaintext client is refused (no HTTP response at all), the meshed one is not.
    let before = wait::proxy_config_version(&client, &ns.name).await?;
    manifests::apply(
        &client,
        &ns.name,
        &[manifests::peer_authentication("STRICT")],
    )
    .await?;
    wait::new_proxy_config(&client, &ns.name, before, &["serviceb-v1", "serviceb-v2"]).await?;
    wait::until(
        "plaintext refused under STRICT",
        Duration::from_secs(90),
        || {
            let (ns, plain, url) = (outside.name.clone(), plain.clone(), url.clone());
            async move {
                let r = traffic::from_pod(&ns, &plain, &url, 1, false, &[])?;
                Ok(r[0].status == 0)
            }
        },
    )
    .await?;
    let replies = traffic::from_pod(&outside.name, &plain, &url, 5, false, &[])?;
    assert!(replies.iter().all(|r| r.status == 0), "{replies:?}");
    let replies = traffic::from_pod(&ns.name, &meshed, &url, 20, false, &[])?;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    Ok(())
}

/// With the short workload certificate lifetime `e2e/kind.sh` gives the node agent
/// (`MIZZEN_WORKLOAD_CERT_TTL=2m`, renewed at half-life), certificates rotate during steady
/// mTLS traffic and not one request fails.
#[tokio::test]
async fn certificate_rotates_without_failed_requests() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let agents: Api<DaemonSet> = Api::namespaced(client.clone(), "mizzen-system");
    let agent = agents.get("mizzen-agent").await?;
    let ttl = agent
        .spec
        .template
        .spec
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.env)
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.name == "MIZZEN_WORKLOAD_CERT_TTL")
        .and_then(|e| e.value);
    assert_eq!(
        ttl.as_deref(),
        Some("2m"),
        "the agent must run with MIZZEN_WORKLOAD_CERT_TTL=2m (e2e/kind.sh sets it)"
    );

    let ns = TestNamespace::create(&client, "rotate", true).await?;
    manifests::deploy(
        &client,
        &ns.name,
        &manifests::load("e2e/manifests/serviceb.yaml")?,
    )
    .await?;
    let meshed = traffic::pod(&client, &ns.name, "client").await?;
    let server = traffic::pod(&client, &ns.name, "serviceb").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let node = pods
        .get(&server)
        .await?
        .spec
        .and_then(|s| s.node_name)
        .unwrap_or_default();
    let agent_pods: Api<Pod> = Api::namespaced(client.clone(), "mizzen-system");
    let agent_pod = agent_pods
        .list(
            &ListParams::default()
                .labels("app.kubernetes.io/name=mizzen-agent")
                .fields(&format!("spec.nodeName={node}")),
        )
        .await?
        .items
        .into_iter()
        .find_map(|p| p.metadata.name)
        .expect("an agent on the server's node");
    let renewals = || async {
        let text = metrics::scrape(&client, "mizzen-system", &agent_pod, 9091, "/metrics").await?;
        anyhow::Ok(metrics::sum(
            &text,
            "mizzen_agent_certificate_renewals_total",
            &[("result", "ok")],
        ))
    };
    let before = renewals().await?;

    // 75 s of traffic: past the 60 s half-life of every certificate on the node.
    let load = Load::start(&ns.name, &meshed, "http://serviceb:9080/reviews/1", "0.1")?;
    tokio::time::sleep(Duration::from_secs(75)).await;
    let replies = load.stop();
    let after = renewals().await?;

    assert!(
        replies.len() > 100,
        "only {} requests were made",
        replies.len()
    );
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        replies.len()
    );
    assert!(
        after > before,
        "no certificate was renewed on {node} ({before} -> {after})"
    );
    Ok(())
}
