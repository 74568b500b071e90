//! Test support: backends on loopback, the proxy in-process with a config file, a client.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mizzen_proxy::{
    app::App,
    env::{Config, OutboundListener, Workload, WorkloadFlags},
};
use mizzen_proxy_config::*;
use tokio::net::TcpListener;

pub const HOST: &str = "serviceb.default.svc.cluster.local";
pub const PORT: u16 = 8080;

/// What a backend answers: (status, delay) for the n-th request (0-based).
pub type Behaviour = Arc<dyn Fn(usize, &Request<Incoming>) -> (u16, Duration) + Send + Sync>;

pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A backend that answers 200 with its name.
pub async fn backend(name: &'static str) -> Backend {
    backend_with(name, Arc::new(|_, _| (200, Duration::ZERO))).await
}

/// A backend on 127.0.0.1 answering with its name in the body and `x-backend`, echoing what
/// the proxy sent in `x-echo-*` headers. Speaks HTTP/1.1 and h2c.
pub async fn backend_with(name: &'static str, behaviour: Behaviour) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let behaviour = behaviour.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let (status, delay) = behaviour(n, &req);
                    async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let mut resp = Response::builder()
                            .status(status)
                            .header("x-backend", name)
                            .header(
                                "x-echo-path",
                                req.uri()
                                    .path_and_query()
                                    .map(|p| p.as_str())
                                    .unwrap_or("/"),
                            )
                            .header("x-echo-version", format!("{:?}", req.version()));
                        for h in [
                            "host",
                            "x-request-id",
                            "traceparent",
                            "x-b3-traceid",
                            "x-added",
                            "x-forwarded-client-cert",
                            "connection",
                        ] {
                            if let Some(v) = req.headers().get(h) {
                                resp = resp.header(format!("x-echo-{h}"), v.clone());
                            }
                        }
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let text = if body.is_empty() {
                            Bytes::from(name)
                        } else {
                            body
                        };
                        Ok::<_, Infallible>(resp.body(Full::new(text)).unwrap())
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend { addr, hits }
}

pub fn endpoint(addr: SocketAddr, version: &str) -> Endpoint {
    Endpoint {
        address: addr.ip().to_string(),
        ports: [("http".to_string(), addr.port())].into(),
        labels: [
            ("app".to_string(), "serviceb".to_string()),
            ("version".to_string(), version.to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

pub fn dest(subset: Option<&str>) -> Destination {
    Destination {
        host: HOST.into(),
        subset: subset.map(str::to_string),
        port: None,
    }
}

pub fn weighted(subset: Option<&str>, weight: u32) -> WeightedDestination {
    WeightedDestination {
        destination: dest(subset),
        weight,
        headers: HeaderOps::default(),
    }
}

/// serviceb with subsets v1/v2 (DestinationRule `dr-serviceb-subsets.yaml`), port 8080 HTTP.
pub fn serviceb(endpoints: Vec<Endpoint>, routes: Vec<HttpRoute>) -> Service {
    Service {
        host: HOST.into(),
        aliases: vec!["serviceb".into(), "serviceb.default".into()],
        namespace: "default".into(),
        ports: vec![ServicePort {
            number: PORT,
            name: "http".into(),
            protocol: Protocol::Http,
            target_port: None,
        }],
        subsets: ["v1", "v2"]
            .iter()
            .map(|v| Subset {
                name: v.to_string(),
                labels: [("version".to_string(), v.to_string())].into(),
                policy: None,
            })
            .collect(),
        http_routes: routes,
        endpoints,
        ..Default::default()
    }
}

pub fn route(name: &str, action: HttpAction) -> HttpRoute {
    HttpRoute {
        name: name.into(),
        action,
        // Istio's default retries would hide failures the tests look at.
        retry: Some(Retry::disabled()),
        ..Default::default()
    }
}

/// Outlier detection that ejects after `errors` consecutive errors for `base_ms`, any share of
/// the endpoints.
pub fn ejecting(errors: u32, base_ms: u64) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx_errors: Some(errors),
        consecutive_gateway_errors: None,
        interval_ms: 10_000,
        base_ejection_time_ms: base_ms,
        max_ejection_percent: 100,
        min_health_percent: 0,
        consecutive_local_origin_failures: None,
    }
}

pub fn config(services: Vec<Service>) -> ProxyConfig {
    let mut c = ProxyConfig::new("default");
    c.services = services;
    c.services.sort_by(|a, b| a.host.cmp(&b.host));
    c
}

pub struct Proxy {
    pub outbound: SocketAddr,
    pub inbound: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    pub prometheus: SocketAddr,
    pub path: PathBuf,
    pub dir: tempfile::TempDir,
    pub app: Arc<mizzen_proxy::app::Shared>,
}

impl Proxy {
    pub fn write_config(&self, bytes: &[u8]) {
        // Write then rename, as a ConfigMap update would.
        let tmp = self.dir.path().join("config.json.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

pub fn test_config(path: PathBuf) -> Config {
    let workload = Workload::from_strings(
        &BTreeMap::new(),
        &WorkloadFlags {
            name: Some("servicea-v1".into()),
            app: Some("servicea".into()),
            version: Some("v1".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
    );
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut c = Config::sidecar(path, workload);
    c.outbound_capture = None;
    c.inbound_capture = None;
    c.outbound = vec![OutboundListener {
        listen: any,
        host: HOST.into(),
        port: PORT,
    }];
    c.admin = Some(any);
    c.health = Some(any);
    c.prometheus = Some(any);
    c.poll_interval = Duration::from_millis(200);
    c.header_read_timeout = Duration::from_millis(500);
    c.drain = Duration::from_secs(2);
    c.access_log = false;
    c
}

pub async fn start(cfg: &ProxyConfig) -> Proxy {
    start_with(cfg, |_| {}).await
}

pub async fn start_with(cfg: &ProxyConfig, tweak: impl FnOnce(&mut Config)) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, cfg.to_json()).unwrap();
    let mut c = test_config(path.clone());
    tweak(&mut c);
    let app = App::bind(c, None).await.unwrap();
    let b = app.bound.clone();
    let shared = app.shared.clone();
    tokio::spawn(app.run());
    Proxy {
        outbound: b.outbound[0],
        inbound: b.inbound.clone(),
        admin: b.admin.unwrap(),
        health: b.health.unwrap(),
        prometheus: b.prometheus.unwrap(),
        path,
        dir,
        app: shared,
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Reply {
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(client: &TestClient, addr: SocketAddr, path: &str) -> Reply {
    get_with(client, addr, path, &[]).await
}

pub async fn get_with(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::get(format!("http://{addr}{path}")).header("host", "serviceb:8080");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(client, b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Sends `n` GETs, `concurrency` at a time, and counts replies by `x-backend` (or status).
pub async fn tally(
    client: &TestClient,
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut done = 0;
    while done < n {
        let batch = concurrency.min(n - done);
        let replies = futures::future::join_all((0..batch).map(|_| get(client, addr, "/"))).await;
        for r in replies {
            let key = if r.status == 200 {
                r.header("x-backend").to_string()
            } else {
                r.status.to_string()
            };
            *counts.entry(key).or_default() += 1;
        }
        done += batch;
    }
    counts
}

pub async fn metrics(addr: SocketAddr) -> String {
    get(&client(), addr, "/stats/prometheus").await.body
}

/// The value of the first sample of `name` whose labels contain all of `labels`.
/// Asserts that the exposition `text` has a sample of `name` with these labels.
#[track_caller]
pub fn assert_sample(text: &str, name: &str, labels: &[(&str, &str)]) {
    assert!(
        sample(text, name, labels).is_some(),
        "no {name} with {labels:?} in\n{text}"
    );
}

/// Whether the proxy whose metrics are at `prometheus` reports `want` for the sample within
/// 5 s (metrics of a connection are counted when it closes).
pub async fn sample_becomes(
    prometheus: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> bool {
    wait_for(async || sample(&metrics(prometheus).await, name, labels) == Some(want)).await
}

pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

/// The proxy with one inbound listener in front of `app` (local mode's `--inbound`).
pub async fn start_inbound(cfg: &ProxyConfig, app: SocketAddr) -> Proxy {
    start_with(cfg, |c| {
        c.inbound = vec![mizzen_proxy::env::InboundListener {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            app,
        }];
    })
    .await
}

/// A backend that answers 200 with every request header it received, one `name: value` per
/// line, so a test sees exactly what the proxy forwarded.
pub async fn header_echo() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let text: String = req
                        .headers()
                        .iter()
                        .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                        .collect();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)))) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend { addr, hits }
}

/// A plain HTTP/1.1 server on loopback answering every request with `status` and `body`
/// (`delay` first), counting requests.
pub async fn text_server(status: u16, body: String, delay: Duration) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let body = Bytes::from(body);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (counter, body) = (counter.clone(), body.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    async move {
                        tokio::time::sleep(delay).await;
                        let mut resp = Response::new(Full::new(body));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend { addr, hits }
}
pub mod agent;

/// A plain HTTP/1.1 server on loopback that answers `ok` and counts the connections it
/// accepted and those that have since closed.
pub struct CountingBackend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
}

pub async fn counting_backend() -> CountingBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    CountingBackend {
        addr,
        accepted,
        closed,
    }
}

/// A server on loopback that answers every request on a connection with the raw bytes of
/// `response` (keep-alive), for answers a library server would not write.
pub async fn raw_server(response: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    // One answer per request head (the proxy's GETs carry no body).
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Whether `f` holds within 5 s (asked every 50 ms).
pub async fn wait_for(mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A TCP echo server on 127.0.0.1.
pub async fn tcp_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Writes `bytes` to a new connection to `addr` and reads as many back: `None` when the
/// connection is closed first (or nothing comes within 5 s). The stream stays open for the
/// caller.
pub async fn tcp_echoed(
    addr: SocketAddr,
    bytes: &[u8],
) -> (tokio::net::TcpStream, Option<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; bytes.len()];
    let echoed = async {
        s.write_all(bytes).await.ok()?;
        s.read_exact(&mut buf).await.ok()
    };
    let ok = tokio::time::timeout(Duration::from_secs(5), echoed)
        .await
        .ok()
        .flatten();
    (s, ok.map(|_| buf))
}

/// A PEM CRL from `ca` revoking the certificates numbered `serials`, next updated on the first
/// of January of `next_year` (a past year makes it stale).
pub fn crl(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    serials: &[u64],
    next_year: i32,
) -> String {
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2025, 1, 1),
        next_update: rcgen::date_time_ymd(next_year, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*s),
                revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(ca).unwrap().pem().unwrap()
}
