//! Load generator for the webhook benchmark (`bench/webhook.sh`): N concurrent HTTPS clients,
//! one keep-alive connection each, sending pod AdmissionReviews to `/inject`, reporting latency
//! percentiles and reviews per second.
//!
//! ```text
//! loadgen write-cert DIR                       # tls.crt, tls.key, ca.crt for the server
//! loadgen run --addr 127.0.0.1:18443 --ca DIR/ca.crt --clients 100 --seconds 20 [--rate 1000]
//! ```
//! Without `--rate` every client sends its next review as soon as the last is answered (the
//! most the server can do). With `--rate R` the clients together send R reviews per second on a
//! fixed schedule, and latency counts from when a review was due, so a slow server cannot hide
//! its queue (no coordinated omission).

#[path = "../tests/common/client.rs"]
#[allow(dead_code)]
mod client;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use client::Conn;
use serde_json::json;

const SERVER_NAME: &str = "mizzen-webhook.mizzen-system.svc";
/// Every answer must say this (and carry a patch, checked by the tests, not here).
const ALLOWED: &[u8] = b"\"allowed\":true";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a CA (ca.crt) and a serving pair (tls.crt, tls.key) for the webhook's name.
    WriteCert { dir: PathBuf },
    /// Send reviews and report.
    Run {
        #[arg(long)]
        addr: SocketAddr,
        /// The CA that signed the server's certificate.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Measured seconds (after a 2 s warm-up).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Total reviews per second across all clients; 0 = as fast as answered.
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
}

/// A pod as the ReplicaSet controller creates it, with what the API server has filled in by
/// the time the webhook sees it (about 4 KiB of JSON).
fn review(i: usize) -> Bytes {
    let pod = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "generateName": "productpage-v1-7c8f9d6b5d-", "namespace": "bookinfo",
            "creationTimestamp": null,
            "labels": {"app": "productpage", "version": "v1", "pod-template-hash": "7c8f9d6b5d"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "productpage-v1-7c8f9d6b5d",
                                 "uid": "0f5c3f5e-8f61-4f0e-9d1c-6c3f3f2a9a10", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "time": "2026-11-22T10:00:00Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}, "f:version": {}},
                                            "f:ownerReferences": {".": {}, "k:{\"uid\":\"0f5c3f5e-8f61-4f0e-9d1c-6c3f3f2a9a10\"}": {}}},
                                            "f:spec": {"f:containers": {"k:{\"name\":\"productpage\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {}}}}}}]
        },
        "spec": {
            "volumes": [{"name": "tmp", "emptyDir": {}},
                        {"name": "kube-api-access-x2b9k", "projected": {"sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}],
                            "defaultMode": 420}}],
            "containers": [{
                "name": "productpage", "image": "docker.io/istio/examples-bookinfo-productpage-v1:1.20.1",
                "ports": [{"name": "http", "containerPort": 9080, "protocol": "TCP"}],
                "env": [{"name": "FLASK_ENV", "value": "production"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "kube-api-access-x2b9k", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": "http", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "livenessProbe": {"tcpSocket": {"port": 9080}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                "securityContext": {"runAsUser": 1000}
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "bookinfo-productpage", "serviceAccount": "bookinfo-productpage",
            "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {}
    });
    let body = json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": format!("8f7e2b0c-{i:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bookinfo", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "3a1f", "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn write_cert(dir: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let now = std::time::SystemTime::now();
    let data = mizzen_webhook::bootstrap::issue(SERVER_NAME, now)?;
    for (name, bytes) in data {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

struct ClientResult {
    latencies_us: Vec<u32>,
    errors: usize,
}

async fn run(
    addr: SocketAddr,
    ca: PathBuf,
    clients: usize,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<()> {
    let ca = std::fs::read_to_string(ca)?;
    let config = client::client_config(&[&ca]);
    // Wait (bounded) for the server to listen.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Conn::connect(addr, SERVER_NAME, config.clone())
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the webhook at {addr} did not answer in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bodies: Vec<Bytes> = (0..64).map(review).collect();
    println!(
        "review body: {} bytes; {clients} clients; {} s measured after 2 s warm-up; {}",
        bodies[0].len(),
        seconds,
        if rate == 0 {
            "closed loop (each client sends when answered)".to_string()
        } else {
            format!("open loop at {rate} reviews/s")
        }
    );

    let before = server_histogram(addr, config.clone()).await?;
    let warmup = Duration::from_secs(2);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + warmup;
    let end = measure_from + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let config = config.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = ClientResult { latencies_us: Vec::new(), errors: 0 };
            let mut conn = match Conn::connect(addr, SERVER_NAME, config).await {
                Ok(conn) => conn,
                Err(_) => {
                    result.errors += 1;
                    return result;
                }
            };
            // Per-client schedule: every `interval`, offset so the clients interleave.
            let interval = (rate > 0).then(|| Duration::from_secs_f64(clients as f64 / rate as f64));
            let mut due = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / clients as f64));
            let mut n = c;
            tokio::time::sleep_until(start.into()).await;
            loop {
                if interval.is_some() {
                    tokio::time::sleep_until(due.into()).await;
                } else {
                    due = Instant::now();
                }
                if due >= end {
                    break;
                }
                let body = bodies[n % bodies.len()].clone();
                n += clients;
                let ok = match conn.post_json("/inject", body).await {
                    Ok((200, answer)) => answer.windows(ALLOWED.len()).any(|w| w == ALLOWED),
                    _ => false,
                };
                let done = Instant::now();
                if due >= measure_from {
                    if ok {
                        result.latencies_us.push(done.duration_since(due).as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        result.errors += 1;
                    }
                }
                if let Some(i) = interval {
                    due += i;
                }
            }
            result
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let r = t.await?;
        all.extend(r.latencies_us);
        errors += r.errors;
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let idx = ((p / 100.0) * (all.len() - 1) as f64).round() as usize;
        all[idx] as f64 / 1000.0
    };
    let rps = all.len() as f64 / seconds as f64;
    println!("answered: {} reviews, errors: {errors}", all.len());
    println!("throughput: {rps:.0} reviews/s");
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        pct(100.0)
    );
    let after = server_histogram(addr, config.clone()).await?;
    let handled: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, a)| {
            let b = before.iter().find(|(l, _)| l == le).map_or(0, |(_, b)| *b);
            (*le, a - b)
        })
        .collect();
    let total = handled.last().map_or(0, |(_, n)| *n);
    let server_p = |p: f64| {
        handled
            .iter()
            .find(|(_, n)| *n as f64 >= total as f64 * p / 100.0)
            .map_or(f64::NAN, |(le, _)| le * 1000.0)
    };
    println!(
        "server-side handling (body read to answer, from its histogram; whole run incl. warm-up): p50 <= {:.2} ms, p99 <= {:.2} ms",
        server_p(50.0),
        server_p(99.0)
    );
    println!(
        "RESULT clients={clients} rate={} reviews={} errors={errors} rps={rps:.0} p50_ms={:.2} p99_ms={:.2}",
        if rate == 0 {
            "max".to_string()
        } else {
            rate.to_string()
        },
        all.len(),
        pct(50.0),
        pct(99.0)
    );
    anyhow::ensure!(errors == 0, "{errors} reviews failed");
    Ok(())
}

/// The server's `/inject` latency histogram: cumulative counts by upper bound (seconds).
async fn server_histogram(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<Vec<(f64, u64)>> {
    let mut conn = Conn::connect(addr, SERVER_NAME, config).await?;
    let (status, body) = conn.request("GET", "/metrics", None, Bytes::new()).await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    let text = String::from_utf8_lossy(&body);
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) =
            line.strip_prefix("mizzen_webhook_admission_duration_seconds_bucket{le=\"")
        else {
            continue;
        };
        if !rest.contains("webhook=\"inject\"") {
            continue;
        }
        let (le, rest) = rest.split_once('"').unwrap_or_default();
        let count = rest
            .rsplit(' ')
            .next()
            .unwrap_or("0")
            .parse::<u64>()
            .unwrap_or(0);
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        buckets.push((le, count));
    }
    if buckets.is_empty() {
        // No review answered yet: the family has no series.
        buckets.push((f64::INFINITY, 0));
    }
    Ok(buckets)
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Cmd::WriteCert { dir } => write_cert(dir),
        Cmd::Run {
            addr,
            ca,
            clients,
            seconds,
            rate,
        } => {
            // One thread: the bench pins this process to one core.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(run(addr, ca, clients, seconds, rate))
        }
    }
}
