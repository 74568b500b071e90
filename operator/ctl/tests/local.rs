//! `local up examples/bookinfo` for 8 seconds, in this process: the renderer, the local agent,
//! six sidecars with mTLS between them, the demo app and the traffic driver. What the sidecars'
//! own metrics say afterwards is what is asserted.

use std::path::PathBuf;
use std::time::Duration;

use mizzen_local::state::StateDir;
use mizzen_local::{Options, up};

fn bookinfo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo")
}

/// Both runs in one test, one after the other: the demo's WorkloadEntries listen on fixed
/// ports (19080–19084), so two meshes of it cannot run at once (nextest runs tests in parallel
/// processes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_up_of_the_demo() {
    the_demo_mesh_serves_splits_and_uses_mtls().await;
    a_faulty_canary_rolls_back().await;
}

async fn the_demo_mesh_serves_splits_and_uses_mtls() {
    let state = StateDir::create().unwrap();
    let state_path = state.path().to_path_buf();
    let options = Options {
        dir: bookinfo(),
        duration: Some(Duration::from_secs(8)),
        canary: false,
        faulty: false,
        rps: 40,
        ui: false,
    };
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        up(options, state, std::future::pending()),
    )
    .await
    .expect("local up stops within 60 s")
    .expect("local up runs");

    // Requests went through: the driver's and the sidecars' counts agree.
    let driver = summary.last.driver;
    assert!(driver.ok >= 100, "{driver:?}");
    assert!(driver.failed <= driver.sent / 50, "{driver:?}");
    let page = summary
        .last
        .total
        .service("productpage.bookinfo.svc.cluster.local")
        .expect("productpage served");
    assert!(page.success_rate.unwrap() > 98.0, "{page:?}");

    // Reviews split 80/10/10 across the three versions.
    let reviews = summary
        .last
        .total
        .service("reviews.bookinfo.svc.cluster.local")
        .expect("reviews served");
    let total: f64 = reviews.versions.values().sum();
    let share = |v: &str| reviews.versions.get(v).copied().unwrap_or(0.0) / total;
    assert!(total >= 100.0, "{reviews:?}");
    assert!((0.65..0.93).contains(&share("v1")), "{reviews:?}");
    for v in ["v2", "v3"] {
        assert!((0.03..0.2).contains(&share(v)), "{v}: {reviews:?}");
    }
    // v2 and v3 call ratings once per review, v1 never.
    let ratings = summary
        .last
        .total
        .service("ratings.bookinfo.svc.cluster.local")
        .expect("ratings served");
    let rated: f64 = ratings.versions.values().sum();
    let starred = reviews.versions["v2"] + reviews.versions["v3"];
    assert!(
        (rated - starred).abs() <= 2.0,
        "{rated} ratings for {starred} reviews"
    );

    // Every hop was mutual TLS between the WorkloadEntries' service accounts.
    let ids = &summary.last.total.identities;
    assert!(!ids.is_empty());
    for (id, _) in ids {
        assert_eq!(id.security_policy, "mutual_tls", "{id:?}");
    }
    let hop = |from: &str, to: &str| {
        ids.iter().any(|(id, n)| {
            id.source_principal
                .ends_with(&format!("/ns/bookinfo/sa/{from}"))
                && id.destination_principal == format!("spiffe://cluster.local/ns/bookinfo/sa/{to}")
                && *n > 0.0
        })
    };
    assert!(hop("traffic", "bookinfo-productpage"), "{ids:?}");
    assert!(hop("bookinfo-productpage", "bookinfo-reviews"), "{ids:?}");
    assert!(hop("bookinfo-reviews", "bookinfo-ratings"), "{ids:?}");

    // Stopped cleanly: the state directory (tokens, CA key) is gone.
    assert!(!state_path.exists());
}

/// `--canary --faulty`: reviews v2 fails 20% of its requests, so the Canary in the directory
/// rolls back after its two tolerated failed checks and v1 takes all traffic again. The
/// directory itself is left untouched (the canary writes into a working copy).
async fn a_faulty_canary_rolls_back() {
    let before = std::fs::read_to_string(bookinfo().join("reviews-split.yaml")).unwrap();
    let options = Options {
        dir: bookinfo(),
        duration: Some(Duration::from_secs(20)),
        canary: true,
        faulty: true,
        rps: 40,
        ui: false,
    };
    let summary = tokio::time::timeout(
        Duration::from_secs(90),
        up(options, StateDir::create().unwrap(), std::future::pending()),
    )
    .await
    .expect("local up stops within 90 s")
    .expect("local up runs");

    let status = summary.canary.expect("the canary ran");
    assert_eq!(
        status.phase,
        mizzen_crds::rollouts::canary::CanaryPhase::Failed,
        "{status:?}"
    );
    assert_eq!(status.canary_weight, 0);
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("request-success-rate"),
        "{status:?}"
    );
    // v2 was reached while the canary ran, and some of its answers failed end to end.
    let reviews = summary
        .last
        .total
        .service("reviews.bookinfo.svc.cluster.local")
        .unwrap();
    assert!(
        reviews.versions.get("v2").copied().unwrap_or(0.0) > 0.0,
        "{reviews:?}"
    );
    assert!(summary.last.driver.failed > 0, "{:?}", summary.last.driver);
    // After the rollback the last seconds went to v1 only.
    let recent = summary
        .last
        .recent
        .service("reviews.bookinfo.svc.cluster.local")
        .unwrap();
    let recent_v2 = recent.versions.get("v2").copied().unwrap_or(0.0);
    let recent_v1 = recent.versions.get("v1").copied().unwrap_or(0.0);
    assert!(recent_v2 == 0.0 && recent_v1 > 0.0, "{recent:?}");
    assert_eq!(
        std::fs::read_to_string(bookinfo().join("reviews-split.yaml")).unwrap(),
        before
    );
}
