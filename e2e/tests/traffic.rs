//! Traffic management with the Istio fixtures applied unchanged (e2e/fixtures): the ingress
//! gateway's host and cookie match, the 90/10 split, fault injection, retries; and locality
//! (the kind workers are in two zones).

use std::time::Duration;

use kube::Client;
use mizzen_e2e::{
    cluster::{self, TestNamespace},
    manifests,
    traffic::{self, Reply, share},
    wait,
};
use serde_json::Value;

/// `serviceb` (v1 and v2) and its subsets in a new meshed namespace, `extra` applied on top,
/// and the client restarted on the config rendered from them. Returns the client pod.
async fn serviceb_with(
    client: &Client,
    ns: &TestNamespace,
    serviceb: &[Value],
    extra: &[Value],
) -> anyhow::Result<String> {
    manifests::deploy(client, &ns.name, serviceb).await?;
    let before = wait::proxy_config_version(client, &ns.name).await?;
    let mut objects = manifests::load("e2e/fixtures/dr-serviceb-subsets.yaml")?;
    objects.extend(extra.iter().cloned());
    manifests::apply(client, &ns.name, &objects).await?;
    wait::new_proxy_config(client, &ns.name, before, &["client"]).await?;
    traffic::pod(client, &ns.name, "client").await
}

const SERVICEB: &str = "http://serviceb:9080/reviews/1";

/// From outside the cluster, through the kind port mapping to the ingress gateway: the
/// fixture's VirtualService serves the demo's productpage only for its host with the cookie
/// `user=b-nova`.
#[tokio::test]
async fn ingress_gateway_serves_the_demo_by_host_and_cookie() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, "ingress", true).await?;
    manifests::deploy(
        &client,
        &ns.name,
        &manifests::load("e2e/manifests/demo.yaml")?,
    )
    .await?;
    manifests::apply(
        &client,
        &ns.name,
        &manifests::load("e2e/fixtures/gateway-and-cookie-match.yaml")?,
    )
    .await?;
    // The host port e2e/kind-config.yaml maps to the gateway's HTTP NodePort.
    let url = "http://127.0.0.1:8080/productpage";
    let matching = [
        "-H",
        "Host: test.techup.xy",
        "-H",
        "Cookie: theme=dark; user=b-nova",
    ];
    // The gateway picks the new Gateway and VirtualService up from its rendered config.
    wait::until(
        "the gateway to route test.techup.xy",
        Duration::from_secs(150),
        || async { Ok(traffic::from_host(url, &matching)?.status == 200) },
    )
    .await?;
    for _ in 0..10 {
        let r = traffic::from_host(url, &matching)?;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.version.is_some(), "no x-demo-version: {r:?}");
    }
    let no_cookie = traffic::from_host(url, &["-H", "Host: test.techup.xy"])?;
    assert_eq!(no_cookie.status, 404, "{no_cookie:?}");
    let other_cookie = traffic::from_host(
        url,
        &["-H", "Host: test.techup.xy", "-H", "Cookie: user=alice"],
    )?;
    assert_eq!(other_cookie.status, 404, "{other_cookie:?}");
    let other_host = traffic::from_host(
        url,
        &["-H", "Host: other.example", "-H", "Cookie: user=b-nova"],
    )?;
    assert_eq!(other_host.status, 404, "{other_host:?}");
    Ok(())
}

/// `vs-canary-90-10.yaml`: v2 gets 10% of 400 requests, within 5 points.
#[tokio::test]
async fn weighted_split_90_10() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, "split", true).await?;
    let pod = serviceb_with(
        &client,
        &ns,
        &manifests::load("e2e/manifests/serviceb.yaml")?,
        &manifests::load("e2e/fixtures/vs-canary-90-10.yaml")?,
    )
    .await?;
    let replies = traffic::from_pod(&ns.name, &pod, SERVICEB, 400, false, &[])?;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let v2 = share(&replies, |r| r.version.as_deref() == Some("v2"));
    assert!(
        (0.05..=0.15).contains(&v2),
        "v2 got {:.1}% of 400",
        v2 * 100.0
    );
    Ok(())
}

/// `vs-fault-abort.yaml`: half of the requests (all routed to v2) are answered 500 by the
/// proxy, within 12 points over 200.
#[tokio::test]
async fn fault_abort_answers_500_to_half() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, "abort", true).await?;
    let pod = serviceb_with(
        &client,
        &ns,
        &manifests::load("e2e/manifests/serviceb.yaml")?,
        &manifests::load("e2e/fixtures/vs-fault-abort.yaml")?,
    )
    .await?;
    let replies = traffic::from_pod(&ns.name, &pod, SERVICEB, 200, false, &[])?;
    let aborted = share(&replies, |r| r.status == 500);
    assert!(
        (0.38..=0.62).contains(&aborted),
        "{:.1}% aborted",
        aborted * 100.0
    );
    let served: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        served.len() + (aborted * 200.0).round() as usize,
        200,
        "{replies:?}"
    );
    assert!(
        served.iter().all(|r| r.version.as_deref() == Some("v2")),
        "{served:?}"
    );
    Ok(())
}

/// `vs-fault-delay.yaml` (the old `percent` spelling): about half of 20 parallel requests
/// take the 10 s delay, the others do not.
#[tokio::test]
async fn fault_delay_holds_half_for_ten_seconds() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, "delay", true).await?;
    let pod = serviceb_with(
        &client,
        &ns,
        &manifests::load("e2e/manifests/serviceb.yaml")?,
        &manifests::load("e2e/fixtures/vs-fault-delay.yaml")?,
    )
    .await?;
    let replies = traffic::from_pod(&ns.name, &pod, SERVICEB, 20, true, &[])?;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let delayed = share(&replies, |r| r.seconds >= 9.5);
    let fast = share(&replies, |r| r.seconds < 3.0);
    assert!((0.15..=0.85).contains(&delayed), "{replies:?}");
    assert!(
        (delayed + fast - 1.0).abs() < 1e-9,
        "a request neither fast nor delayed: {replies:?}"
    );
    assert!(
        replies.iter().all(|r| r.version.as_deref() == Some("v1")),
        "{replies:?}"
    );
    Ok(())
}

/// `vs-retries.yaml` against a v1 that fails half of its requests with 500: without the
/// VirtualService about half fail; with it (3 retries) at most a few do. The fixture leaves
/// `retryOn` to Istio's default, which retries 503 but not 500, so the test adds
/// `retryOn: 5xx` to it, as a user of this demo would.
#[tokio::test]
async fn retries_hide_intermittent_errors() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, "retries", true).await?;
    let mut serviceb = manifests::without(
        manifests::load("e2e/manifests/serviceb.yaml")?,
        &["serviceb-v2"],
    );
    manifests::append_args(&mut serviceb, "serviceb-v1", &["--error-rate", "0.5"]);
    let pod = serviceb_with(&client, &ns, &serviceb, &[]).await?;
    let without = traffic::from_pod(&ns.name, &pod, SERVICEB, 100, false, &[])?;
    let failed_without = share(&without, |r| r.status != 200);
    assert!(
        failed_without > 0.3,
        "{:.0}% failed without retries",
        failed_without * 100.0
    );

    let mut retries = manifests::load("e2e/fixtures/vs-retries.yaml")?;
    retries[0]["spec"]["http"][0]["retries"]["retryOn"] = "5xx".into();
    let before = wait::proxy_config_version(&client, &ns.name).await?;
    manifests::apply(&client, &ns.name, &retries).await?;
    wait::new_proxy_config(&client, &ns.name, before, &["client"]).await?;
    let pod = traffic::pod(&client, &ns.name, "client").await?;
    let with = traffic::from_pod(&ns.name, &pod, SERVICEB, 200, false, &[])?;
    let failed_with = share(&with, |r| r.status != 200);
    // 4 tries at 50% each: 6.25% expected.
    assert!(
        failed_with < 0.15,
        "{:.1}% failed with 3 retries",
        failed_with * 100.0
    );
    Ok(())
}

/// Runs Deployment `name`'s pods in `zone` (e2e/kind-config.yaml labels one worker per zone).
fn pin_to_zone(objects: &mut [Value], name: &str, zone: &str) {
    manifests::find(objects, "Deployment", name)["spec"]["template"]["spec"]["nodeSelector"] =
        serde_json::json!({"topology.kubernetes.io/zone": zone});
}

/// A Service with `trafficDistribution: PreferClose` (v1 in the client's zone, v2 in the
/// other): every request stays in the client's zone, with no DestinationRule locality setting
/// and no outlier detection, as under Istio.
#[tokio::test]
async fn prefer_close_keeps_requests_in_the_clients_zone() -> anyhow::Result<()> {
    let client = cluster::client().await?;
    let ns = TestNamespace::create(&client, "locality", true).await?;
    let mut serviceb = manifests::load("e2e/manifests/serviceb.yaml")?;
    pin_to_zone(&mut serviceb, "serviceb-v1", "zone-a");
    pin_to_zone(&mut serviceb, "serviceb-v2", "zone-b");
    pin_to_zone(&mut serviceb, "client", "zone-a");
    manifests::find(&mut serviceb, "Service", "serviceb")["spec"]["trafficDistribution"] =
        "PreferClose".into();
    let pod = serviceb_with(&client, &ns, &serviceb, &[]).await?;
    let replies = traffic::from_pod(&ns.name, &pod, SERVICEB, 100, false, &[])?;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let near = share(&replies, |r| r.version.as_deref() == Some("v1"));
    assert_eq!(near, 1.0, "{replies:?}");
    Ok(())
}
