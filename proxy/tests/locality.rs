//! Locality load balancing through the proxy on loopback: endpoints in this proxy's zone take
//! the traffic while they are healthy and shed it to the next zone as outlier detection ejects
//! them (Istio's default with outlier detection); `distribute` splits traffic by locality.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use mizzen_proxy::balance::locality::Locality;
use mizzen_proxy_config::*;
use support::*;

fn in_locality(e: Endpoint, locality: &str) -> Endpoint {
    Endpoint {
        locality: Some(locality.into()),
        ..e
    }
}

async fn start_in(cfg: &ProxyConfig, locality: &str) -> Proxy {
    let here = Locality::parse(locality);
    start_with(cfg, move |c| c.workload.locality = Some(here)).await
}

#[tokio::test]
async fn traffic_stays_in_the_zone_and_fails_over_as_its_endpoints_are_ejected() {
    let failing = Arc::new(AtomicBool::new(false));
    let near_a = backend("near-a").await;
    let flag = failing.clone();
    let near_b = backend_with(
        "near-b",
        Arc::new(move |_, _| {
            let status = if flag.load(Ordering::Relaxed) {
                503
            } else {
                200
            };
            (status, Duration::ZERO)
        }),
    )
    .await;
    let far = backend("far").await;
    let mut svc = serviceb(
        vec![
            in_locality(endpoint(near_a.addr, "v1"), "us-east1/us-east1-b"),
            in_locality(endpoint(near_b.addr, "v1"), "us-east1/us-east1-b"),
            in_locality(endpoint(far.addr, "v1"), "us-east1/us-east1-c"),
        ],
        vec![],
    );
    svc.policy = Some(TrafficPolicy {
        outlier_detection: Some(ejecting(1, 60_000)),
        ..Default::default()
    });
    let proxy = start_in(&config(vec![svc]), "us-east1/us-east1-b/").await;
    let c = client();

    let counts = tally(&c, proxy.outbound, 100, 4).await;
    assert_eq!(far.hits(), 0, "{counts:?}");
    assert_eq!(
        counts.get("near-a").copied().unwrap_or(0) + counts.get("near-b").copied().unwrap_or(0),
        100,
        "{counts:?}"
    );

    // One of the two near endpoints fails and is ejected: the zone is half healthy, its
    // health 1.4 × 50 % = 70 %, and the next zone takes the other 30 %.
    failing.store(true, Ordering::Relaxed);
    let served = near_b.hits();
    assert!(
        wait_for(async || {
            let _ = get(&c, proxy.outbound, "/").await;
            near_b.hits() > served
        })
        .await,
        "the failing endpoint was never tried"
    );
    let before = (near_b.hits(), far.hits());
    let counts = tally(&c, proxy.outbound, 1000, 4).await;
    assert_eq!(
        near_b.hits(),
        before.0,
        "an ejected endpoint got traffic: {counts:?}"
    );
    let far_share = (far.hits() - before.1) as f64 / 10.0;
    assert!(
        (24.0..=36.0).contains(&far_share),
        "far zone took {far_share} % ({counts:?})"
    );
    assert_eq!(
        counts.get("near-a").copied().unwrap_or(0) + counts.get("far").copied().unwrap_or(0),
        1000,
        "{counts:?}"
    );
}

#[tokio::test]
async fn without_outlier_detection_or_with_locality_off_every_zone_is_used() {
    let near = backend("near").await;
    let far = backend("far").await;
    let endpoints = vec![
        in_locality(endpoint(near.addr, "v1"), "r/z1"),
        in_locality(endpoint(far.addr, "v1"), "r/z2"),
    ];
    for policy in [
        TrafficPolicy::default(),
        TrafficPolicy {
            outlier_detection: Some(ejecting(5, 60_000)),
            locality_lb: Some(LocalityLb {
                disabled: true,
                ..Default::default()
            }),
            ..Default::default()
        },
    ] {
        let mut svc = serviceb(endpoints.clone(), vec![]);
        svc.policy = Some(TrafficPolicy {
            load_balancer: Some(LoadBalancer::RoundRobin),
            ..policy
        });
        let proxy = start_in(&config(vec![svc]), "r/z1").await;
        let counts = tally(&client(), proxy.outbound, 20, 1).await;
        assert_eq!(counts.get("far"), Some(&10), "{counts:?}");
        assert_eq!(counts.get("near"), Some(&10), "{counts:?}");
    }
}

#[tokio::test]
async fn distribute_sends_each_locality_its_share_and_none_to_others() {
    let z1 = backend("z1").await;
    let z2 = backend("z2").await;
    let z3 = backend("z3").await;
    let mut svc = serviceb(
        vec![
            in_locality(endpoint(z1.addr, "v1"), "r/z1/a"),
            in_locality(endpoint(z2.addr, "v1"), "r/z2/a"),
            in_locality(endpoint(z3.addr, "v1"), "r/z3/a"),
        ],
        vec![],
    );
    svc.policy = Some(TrafficPolicy {
        locality_lb: Some(LocalityLb {
            distribute: vec![LocalityDistribute {
                from: "r/z1/*".into(),
                to: [("r/z1/*".to_string(), 80), ("r/z2/*".to_string(), 20)].into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    let proxy = start_in(&config(vec![svc.clone()]), "r/z1/a").await;
    let counts = tally(&client(), proxy.outbound, 2000, 8).await;
    let share = |name: &str| counts.get(name).copied().unwrap_or(0) as f64 / 20.0;
    assert!((77.0..=83.0).contains(&share("z1")), "{counts:?}");
    assert!((17.0..=23.0).contains(&share("z2")), "{counts:?}");
    assert_eq!(z3.hits(), 0, "{counts:?}");

    // A proxy in a locality no `from` names balances over every endpoint.
    let proxy = start_in(&config(vec![svc]), "r/z9/a").await;
    let counts = tally(&client(), proxy.outbound, 300, 8).await;
    assert!(counts.get("z3").is_some_and(|n| *n > 50), "{counts:?}");
}

#[tokio::test]
async fn a_service_preferring_close_endpoints_stays_in_the_zone_without_outlier_detection() {
    let near = backend("near").await;
    let far = backend("far").await;
    let mut svc = serviceb(
        vec![
            in_locality(endpoint(near.addr, "v1"), "r/z1/a"),
            in_locality(endpoint(far.addr, "v1"), "r/z2/a"),
        ],
        vec![],
    );
    svc.traffic_distribution = Some(TrafficDistribution::PreferSameZone);
    let proxy = start_in(&config(vec![svc.clone()]), "r/z1/b").await;
    let counts = tally(&client(), proxy.outbound, 50, 4).await;
    assert_eq!(counts.get("near"), Some(&50), "{counts:?}");

    // A DestinationRule's localityLbSetting takes precedence: turned off, both zones serve.
    svc.policy = Some(TrafficPolicy {
        load_balancer: Some(LoadBalancer::RoundRobin),
        locality_lb: Some(LocalityLb {
            disabled: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let proxy = start_in(&config(vec![svc]), "r/z1/b").await;
    let counts = tally(&client(), proxy.outbound, 20, 1).await;
    assert_eq!(counts.get("far"), Some(&10), "{counts:?}");
}

/// `retryRemoteLocalities`: a retry of a request that failed in this zone goes to the next
/// zone; without it, retries stay in the zone (Envoy's default) and the caller sees the error.
#[tokio::test]
async fn retries_go_to_other_localities_only_when_the_route_says_so() {
    let near = backend_with("near", Arc::new(|_, _| (503, Duration::ZERO))).await;
    let far = backend("far").await;
    for remote in [false, true] {
        let r = HttpRoute {
            retry: Some(Retry {
                attempts: 2,
                per_try_timeout_ms: None,
                retry_on: vec!["5xx".into()],
                retriable_status_codes: vec![],
                backoff_ms: Some(1),
                retry_remote_localities: remote,
            }),
            ..route("retry", HttpAction::Route(vec![weighted(None, 100)]))
        };
        let mut svc = serviceb(
            vec![
                in_locality(endpoint(near.addr, "v1"), "r/z1"),
                in_locality(endpoint(far.addr, "v1"), "r/z2"),
            ],
            vec![r],
        );
        // Outlier detection turns locality failover on; it never ejects here.
        svc.policy = Some(TrafficPolicy {
            outlier_detection: Some(ejecting(1_000, 60_000)),
            ..Default::default()
        });
        let proxy = start_in(&config(vec![svc]), "r/z1").await;
        let counts = tally(&client(), proxy.outbound, 20, 1).await;
        let expected = if remote { "far" } else { "503" };
        assert_eq!(
            counts.get(expected),
            Some(&20),
            "remote={remote}: {counts:?}"
        );
    }
}
