//! The canary controller end to end on loopback, with real proxies: the file driver
//! ([`LocalCanary`]) writes the canary's VirtualService into a directory of Istio YAML, the
//! file-mode renderer turns the directory into the proxy config, and a client-side proxy routes
//! real requests between two backends, v1 and v2, each behind its own inbound proxy. The checks
//! read the v2 inbound proxy's `/stats/prometheus` (`reporter="destination"`, as a canary pod's
//! sidecar reports), exactly as the controller scrapes a canary pod in a cluster.
//!
//! Rounds run on a simulated clock one interval apart (no sleeping); between two rounds the
//! client sends a fixed number of requests, so the metric window of each round is exactly the
//! traffic sent at the previous weight.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mizzen_crds::rollouts::canary::{Canary, CanaryPhase};
use mizzen_operator::{RenderSettings, canary::local::LocalCanary, files::render_dir};
use mizzen_proxy::{
    app::{App, Shared},
    env::{Config, InboundListener, OutboundListener, Workload, WorkloadFlags},
};
use tokio::net::TcpListener;

const HOST: &str = "reviews.default.svc.cluster.local";
const PORT: u16 = 9080;
/// Requests sent at each weight: the observed share is then within ±5 points of the weight
/// with overwhelming probability (σ ≤ 1.6 points).
const REQUESTS_PER_STEP: usize = 1000;
const CONCURRENCY: usize = 25;
const LOCALHOST: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A backend that answers with its name in `x-backend`, and 500 to every `error_every`-th
/// request (0: never).
async fn backend(name: &'static str, error_every: usize) -> SocketAddr {
    let listener = TcpListener::bind(LOCALHOST).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    let status = if error_every > 0 && n.is_multiple_of(error_every) {
                        500
                    } else {
                        200
                    };
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("x-backend", name)
                                .body(Full::new(Bytes::from(name)))
                                .unwrap(),
                        )
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn proxy_config(config_path: PathBuf, name: &str, version: &str) -> Config {
    let workload = Workload::from_strings(
        &BTreeMap::new(),
        &WorkloadFlags {
            name: Some(name.into()),
            app: Some(name.split('-').next().unwrap().into()),
            version: Some(version.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
    );
    let mut c = Config::sidecar(config_path, workload);
    c.outbound_capture = None;
    c.inbound_capture = None;
    c.admin = Some(LOCALHOST);
    c.health = Some(LOCALHOST);
    c.prometheus = Some(LOCALHOST);
    c.poll_interval = Duration::from_millis(200);
    c.drain = Duration::from_secs(1);
    c.access_log = false;
    c
}

struct Started {
    bound: mizzen_proxy::app::Bound,
    shared: Arc<Shared>,
}

async fn start(config: Config) -> Started {
    let app = App::bind(config, None).await.unwrap();
    let started = Started {
        bound: app.bound.clone(),
        shared: app.shared.clone(),
    };
    tokio::spawn(app.run());
    started
}

/// A backend behind its inbound proxy; returns the proxy's inbound address and its metrics URL.
async fn workload(dir: &Path, version: &'static str, error_every: usize) -> (SocketAddr, String) {
    let app = backend(version, error_every).await;
    // The inbound side needs no routes: an empty config of its namespace.
    let path = dir.join(format!("inbound-{version}.json"));
    std::fs::write(
        &path,
        mizzen_proxy_config::ProxyConfig::new("default").to_json(),
    )
    .unwrap();
    let mut c = proxy_config(path, &format!("reviews-{version}"), version);
    c.inbound = vec![InboundListener {
        listen: LOCALHOST,
        app,
    }];
    let p = start(c).await;
    let metrics = format!("http://{}/stats/prometheus", p.bound.prometheus.unwrap());
    (p.bound.inbound[0], metrics)
}

fn mesh_yaml(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: reviews, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: reviews, version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"#,
        v1.port(),
        v2.port()
    )
}

fn canary() -> Canary {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollouts.mizzen.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"service": HOST, "stableSubset": "v1", "canarySubset": "v2",
          "analysis": {"interval": "1s", "threshold": 1, "stepWeight": 20, "maxWeight": 100,
            "metrics": [
              {"name": "request-success-rate", "thresholdRange": {"min": 99}},
              {"name": "request-duration", "thresholdRange": {"max": 500}},
            ]}},
    }))
    .unwrap()
}

/// The mesh under test: Istio YAML in `mesh/`, rendered into `out/`, a client-side proxy
/// following `out/default.json`, and the canary's file driver.
struct Rig {
    _tmp: tempfile::TempDir,
    mesh: PathBuf,
    out: PathBuf,
    client_proxy: Started,
    rollout: LocalCanary,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Rig {
    async fn new(v2_error_every: usize) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = tmp.path().join("mesh");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&mesh).unwrap();
        let (v1, _) = workload(tmp.path(), "v1", 0).await;
        let (v2, v2_metrics) = workload(tmp.path(), "v2", v2_error_every).await;
        std::fs::write(mesh.join("reviews.yaml"), mesh_yaml(v1, v2)).unwrap();
        render(&mesh, &out);
        let mut c = proxy_config(out.join("default.json"), "productpage-v1", "v1");
        c.outbound = vec![OutboundListener {
            listen: LOCALHOST,
            host: HOST.into(),
            port: PORT,
        }];
        let client_proxy = start(c).await;
        let rollout = LocalCanary::new(&mesh, canary(), vec![v2_metrics]);
        Rig {
            _tmp: tmp,
            mesh,
            out,
            client_proxy,
            rollout,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// One round, then the directory rendered and the client proxy's config reloaded at once
    /// (rather than waiting for its file watch), so the next requests see the new routes.
    async fn round(&mut self, now: Timestamp) {
        self.rollout.round(now).await.unwrap();
        render(&self.mesh, &self.out);
        self.client_proxy.shared.store.reload().unwrap();
    }

    /// Sends `n` requests through the client proxy; counts answers by backend (`x-backend`)
    /// and status.
    async fn traffic(&self, n: usize) -> Tally {
        let addr = self.client_proxy.bound.outbound[0];
        let mut tally = Tally::default();
        let mut sent = 0;
        while sent < n {
            let batch = CONCURRENCY.min(n - sent);
            let replies = futures::future::join_all((0..batch).map(|_| async {
                let req = http::Request::get(format!("http://{addr}/reviews/1"))
                    .header("host", format!("{HOST}:{PORT}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
                    .await
                    .expect("an answer within 10 s")
                    .expect("the proxy answers");
                let backend = resp
                    .headers()
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string();
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                (backend, status)
            }))
            .await;
            for (backend, status) in replies {
                *tally.by_backend.entry(backend).or_default() += 1;
                if status >= 500 {
                    tally.errors += 1;
                }
            }
            sent += batch;
        }
        tally
    }
}

#[derive(Debug, Default)]
struct Tally {
    by_backend: BTreeMap<String, usize>,
    errors: usize,
}

impl Tally {
    fn percent(&self, backend: &str) -> f64 {
        let total: usize = self.by_backend.values().sum();
        100.0 * self.by_backend.get(backend).copied().unwrap_or(0) as f64 / total as f64
    }
}

fn render(mesh: &Path, out: &Path) {
    let rendered = render_dir(mesh, out, &RenderSettings::default()).unwrap();
    assert!(
        rendered.problems.is_empty(),
        "render problems: {:?}",
        rendered.problems
    );
    assert!(
        rendered.statuses.iter().all(|(_, s)| s.accepted),
        "refused: {:?}",
        rendered.statuses
    );
}

fn start_time() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_step_by_step_with_the_split_matching_the_weight() {
    let mut rig = Rig::new(0).await;
    let mut now = start_time();
    let mut steps = Vec::new();
    for _ in 0..20 {
        rig.round(now).await;
        let status = rig.rollout.status();
        if status.phase == CanaryPhase::Succeeded {
            break;
        }
        let tally = rig.traffic(REQUESTS_PER_STEP).await;
        assert_eq!(tally.errors, 0, "{tally:?}");
        if status.phase == CanaryPhase::Progressing {
            let v2 = tally.percent("v2");
            let weight = f64::from(status.canary_weight);
            eprintln!("weight {weight}%: the canary got {v2:.1}% of {REQUESTS_PER_STEP}");
            assert!(
                (v2 - weight).abs() <= 5.0,
                "at weight {weight} the canary got {v2:.1}% ({tally:?})"
            );
            steps.push(status.canary_weight);
        }
        now = now.checked_add(SignedDuration::from_secs(1)).unwrap();
    }
    let status = rig.rollout.status();
    assert_eq!(status.phase, CanaryPhase::Succeeded, "{status:#?}");
    steps.dedup();
    assert_eq!(steps, [0, 20, 40, 60, 80, 100]);
    assert!(
        status
            .last_metrics
            .iter()
            .all(|m| m.passed && m.value.is_some()),
        "{:?}",
        status.last_metrics
    );
    // Promoted: the stable subset now selects v2, and all traffic goes to it.
    let tally = rig.traffic(200).await;
    assert_eq!(tally.percent("v2"), 100.0, "{tally:?}");
    let dr = std::fs::read_to_string(rig.mesh.join("reviews.yaml")).unwrap();
    assert!(
        dr.contains("Written by the Mizzen canary controller"),
        "{dr}"
    );
    let reasons: Vec<&str> = rig
        .rollout
        .events()
        .iter()
        .map(|e| e.reason.as_str())
        .collect();
    assert!(
        reasons.contains(&"Promoting") && reasons.contains(&"Succeeded"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answering_20_percent_errors_is_rolled_back_and_v1_gets_everything() {
    let mut rig = Rig::new(5).await;
    let mut now = start_time();
    for _ in 0..10 {
        rig.round(now).await;
        if rig.rollout.status().phase == CanaryPhase::Failed {
            break;
        }
        let _ = rig.traffic(REQUESTS_PER_STEP).await;
        now = now.checked_add(SignedDuration::from_secs(1)).unwrap();
    }
    let status = rig.rollout.status();
    assert_eq!(status.phase, CanaryPhase::Failed, "{status:#?}");
    assert_eq!(status.canary_weight, 0);
    let rate = status
        .last_metrics
        .iter()
        .find(|m| m.name == "request-success-rate")
        .unwrap();
    assert!(!rate.passed);
    let value = rate.value.unwrap();
    assert!((75.0..=85.0).contains(&value), "success rate {value}");
    eprintln!("rolled back at a success rate of {value:.1}%");

    let tally = rig.traffic(REQUESTS_PER_STEP).await;
    assert_eq!(
        tally.by_backend.get("v1").copied(),
        Some(REQUESTS_PER_STEP),
        "every request after the rollback goes to v1: {tally:?}"
    );
    assert_eq!(tally.errors, 0);
    let warning = rig
        .rollout
        .events()
        .iter()
        .find(|e| e.reason == "ThresholdReached")
        .expect("a ThresholdReached event");
    assert!(
        warning.message.contains("request-success-rate"),
        "{}",
        warning.message
    );
}
