//! The proxy's client of the node agent, against a fake agent on a real Unix socket in a
//! temporary directory. The fake speaks the workload API's wire form (JSON lines over HTTP/1.1),
//! signs CSRs with an in-memory `mizzen-ca` root, and can refuse, renew, go away and come back.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use mizzen_ca::{Authority, RootCa};
use mizzen_identity::svid;
use mizzen_identity::workload_api::{Event, SignRequest};
use mizzen_identity::{CertStore, SpiffeId};
use mizzen_proxy::agent::{self, AgentEndpoints};
use mizzen_proxy::config::ConfigStore;
use mizzen_proxy::endpoints::EndpointSource;
use mizzen_proxy::telemetry::Metrics;
use mizzen_proxy_config::{
    Endpoint as ConfigEndpoint, Protocol, ProxyConfig, Service, ServicePort,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const ID: &str = "spiffe://cluster.local/ns/shop/sa/cart";
/// How long any one expectation may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the fake agent does with certificate requests, and what it saw.
struct Fake {
    authority: Authority,
    /// Certificate requests left to refuse with 403.
    refuse: AtomicUsize,
    /// After the first certificate, one renewal this much later (none if `None`).
    renew_after: Option<Duration>,
    /// Every token presented, in order.
    tokens: Mutex<Vec<String>>,
    /// Endpoints lines, the latest first to every new stream.
    endpoints: watch::Receiver<String>,
}

impl Fake {
    fn new(renew_after: Option<Duration>, endpoints: watch::Receiver<String>) -> Arc<Self> {
        let root = RootCa::generate("cluster.local", Duration::from_secs(3600)).unwrap();
        Arc::new(Fake {
            authority: root.authority(None).unwrap(),
            refuse: AtomicUsize::new(0),
            renew_after,
            tokens: Mutex::new(Vec::new()),
            endpoints,
        })
    }

    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }

    fn sign(&self, csr_pem: &str) -> Event {
        let id = SpiffeId::parse(ID).unwrap();
        let issued = self
            .authority
            .sign_workload(csr_pem, &id, Duration::from_secs(600))
            .unwrap();
        Event::Certificate {
            chain_pem: issued.chain_pem,
            roots_pem: issued.roots_pem,
            not_after: issued
                .not_after
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, agent::IDENTITY_PATH) => self.identity(req).await,
            (&Method::GET, agent::ENDPOINTS_PATH) => {
                let mut rx = self.endpoints.clone();
                rx.mark_changed();
                let lines = futures::stream::unfold(rx, |mut rx| async move {
                    rx.changed().await.ok()?;
                    let line = format!("{}\n", rx.borrow_and_update().as_str());
                    Some((Ok(Frame::data(Bytes::from(line))), rx))
                });
                Response::new(StreamBody::new(lines).boxed_unsync())
            }
            _ => panic!("unexpected request {} {}", req.method(), req.uri()),
        }
    }

    async fn identity(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let request = SignRequest::from_json(&body).unwrap();
        self.tokens.lock().unwrap().push(request.token.clone());
        let refused = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refused {
            let line = Event::Error {
                message: "pod shop/cart-1 is not in this node's cache".into(),
            }
            .to_line();
            let mut response = Response::new(Full::new(Bytes::from(line)).boxed_unsync());
            *response.status_mut() = StatusCode::FORBIDDEN;
            return response;
        }
        let (tx, rx) = mpsc::channel::<Event>(4);
        tx.try_send(self.sign(&request.csr_pem)).unwrap();
        if let Some(after) = self.renew_after {
            let fake = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(fake.sign(&request.csr_pem)).await;
                // Keep the stream open, as the agent does, until the proxy hangs up.
                tx.closed().await;
            });
        } else {
            tokio::spawn(async move { tx.closed().await });
        }
        let lines = futures::stream::unfold(rx, |mut rx| async move {
            let event = rx.recv().await?;
            Some((Ok(Frame::data(Bytes::from(event.to_line()))), rx))
        });
        Response::new(StreamBody::new(lines).boxed_unsync())
    }
}

/// The fake agent serving at `socket`; aborting the task closes the socket's connections too.
fn serve(fake: Arc<Fake>, socket: &Path) -> JoinHandle<()> {
    support::agent::serve_unix(socket, move |req| fake.clone().handle(req))
}

/// Waits, within [`BOUND`], until `ready` returns something.
async fn eventually<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let wait = async {
        loop {
            if let Some(value) = ready() {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(BOUND, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The current leaf certificate (DER), after checking it is for [`ID`].
fn leaf(store: &CertStore) -> Option<Vec<u8>> {
    let certified = store.certified_key()?;
    let leaf = &certified.cert[0];
    assert_eq!(
        svid::spiffe_id(leaf).unwrap().uri(),
        ID,
        "the leaf's SPIFFE id"
    );
    Some(leaf.as_ref().to_vec())
}

struct Identity {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    token_file: PathBuf,
    store: Arc<CertStore>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn start_identity(dir: tempfile::TempDir) -> Identity {
    logs();
    let socket = dir.path().join("agent.sock");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-1\n").unwrap();
    let store = CertStore::new(SpiffeId::parse(ID).unwrap());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(agent::keep_identity(
        socket.clone(),
        token_file.clone(),
        store.clone(),
        stopped,
    ));
    Identity {
        _dir: dir,
        socket,
        token_file,
        store,
        stop,
        task,
    }
}

fn no_endpoints() -> watch::Receiver<String> {
    watch::channel(String::new()).1
}

#[tokio::test]
async fn certificate_for_our_identity_then_a_renewal_then_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Some(Duration::from_secs(1)), no_endpoints());
    let id = start_identity(dir);
    let server = serve(fake.clone(), &id.socket);

    let first = eventually("the first certificate", || leaf(&id.store)).await;
    let bundle = id
        .store
        .bundle()
        .expect("roots installed with the certificate");
    assert_eq!(
        bundle.roots(),
        fake.authority.roots().roots(),
        "the agent's roots"
    );
    assert_eq!(fake.tokens(), ["token-1"], "token sent, newline trimmed");

    eventually("the renewal", || leaf(&id.store).filter(|l| *l != first)).await;
    // The renewal came on the same stream: no second request.
    assert_eq!(fake.tokens().len(), 1);

    id.stop.send(true).unwrap();
    tokio::time::timeout(BOUND, id.task)
        .await
        .expect("keep_identity returns on shutdown")
        .unwrap();
    server.abort();
}

#[tokio::test]
async fn the_agent_going_away_and_back_gives_a_new_certificate_with_a_fresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(None, no_endpoints());
    let id = start_identity(dir);
    let server = serve(fake.clone(), &id.socket);
    let first = eventually("the first certificate", || leaf(&id.store)).await;

    server.abort();
    let _ = server.await;
    std::fs::remove_file(&id.socket).unwrap();
    // The kubelet rotates the token while the agent is away.
    std::fs::write(&id.token_file, "token-2").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        leaf(&id.store),
        Some(first.clone()),
        "the still-valid certificate is kept while the agent is away"
    );
    assert!(!id.task.is_finished());

    let server = serve(fake.clone(), &id.socket);
    eventually("a certificate after reconnecting", || {
        leaf(&id.store).filter(|l| *l != first)
    })
    .await;
    assert_eq!(fake.tokens(), ["token-1", "token-2"]);
    id.stop.send(true).unwrap();
    tokio::time::timeout(BOUND, id.task).await.unwrap().unwrap();
    server.abort();
}

/// Log output kept in memory, to check what the client writes (and what it never writes).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every test's logs, captured by one process-wide subscriber. Each test calls this first: a
/// per-test (scoped) subscriber would miss events whose call sites another test, running at the
/// same time, reached first (tracing caches per call site whether anyone listens).
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn refusals_are_logged_and_retried_until_the_agent_signs() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(None, no_endpoints());
    fake.refuse.store(2, Ordering::SeqCst);
    let id = start_identity(dir);
    let server = serve(fake.clone(), &id.socket);
    eventually("a certificate after two refusals", || leaf(&id.store)).await;
    assert_eq!(
        fake.tokens().len(),
        3,
        "two refused requests, then one signed"
    );
    assert!(!id.task.is_finished());
    id.stop.send(true).unwrap();
    tokio::time::timeout(BOUND, id.task).await.unwrap().unwrap();
    server.abort();

    let text = logs().text();
    assert_eq!(
        text.matches("403 Forbidden: pod shop/cart-1 is not in this node's cache")
            .count(),
        2,
        "each refusal logged with the agent's message: {text}"
    );
    assert!(text.contains("certificate installed"), "{text}");
    // Every test's tokens are `token-<n>`: none is ever logged, by any test so far.
    assert!(!text.contains("token-"), "a token was logged: {text}");
}

#[tokio::test]
async fn no_agent_at_all_is_retried_and_shutdown_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let id = start_identity(dir);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!id.task.is_finished(), "a missing socket is retried");
    assert!(leaf(&id.store).is_none());
    drop(id.stop);
    tokio::time::timeout(BOUND, id.task)
        .await
        .expect("a dropped shutdown sender ends the task")
        .unwrap();
}

const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const EXTERNAL: &str = "api.example.com";

fn config(external_address: &str) -> String {
    let mut config = ProxyConfig::new("shop");
    let port = |number| ServicePort {
        number,
        name: "http".into(),
        protocol: Protocol::Http,
        target_port: None,
    };
    // Sorted by host, as the operator writes them (lookups are a binary search).
    for (host, address) in [(EXTERNAL, external_address), (REVIEWS, "192.0.2.1")] {
        config.services.push(Service {
            host: host.into(),
            namespace: "shop".into(),
            ports: vec![port(9080)],
            endpoints: vec![ConfigEndpoint {
                address: address.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    config.to_json()
}

fn snapshot(endpoints: &[(&str, &str)]) -> String {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(address, version)| {
            serde_json::json!({"address": address, "port": 8080,
                "labels": {"app": "reviews", "version": version},
                "service_account": {"namespace": "shop", "name": format!("reviews-{version}")}})
        })
        .collect();
    serde_json::json!({"v": 1, "services": [
        {"host": REVIEWS, "port": 9080, "endpoints": endpoints},
        {"host": REVIEWS, "port": 9443, "endpoints": []}
    ]})
    .to_string()
}

fn hosts(
    source: &dyn EndpointSource,
    host: &str,
    port: u16,
    subset: &[(&str, &str)],
) -> Vec<String> {
    let subset: BTreeMap<String, String> = subset
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    source
        .endpoints(host, port, &subset)
        .iter()
        .map(|e| {
            assert_eq!(e.weight, 1);
            e.authority()
        })
        .collect()
}

#[tokio::test]
async fn endpoints_follow_the_agent_with_subsets_and_config_fallback() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config("203.0.113.7")).unwrap();
    let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
    let store = ConfigStore::load(&config_path, metrics, Default::default()).unwrap();
    let endpoints = Arc::new(AgentEndpoints::new(store.clone()));

    // Before the agent says anything, the config answers for every host.
    assert_eq!(hosts(&*endpoints, REVIEWS, 9080, &[]), ["192.0.2.1:9080"]);
    let g0 = endpoints.generation();

    let (lines, rx) = watch::channel(snapshot(&[("10.0.0.1", "v1"), ("10.0.0.2", "v2")]));
    let fake = Fake::new(None, rx);
    let socket = dir.path().join("agent.sock");
    let server = serve(fake.clone(), &socket);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(agent::follow_endpoints(
        socket.clone(),
        endpoints.clone(),
        stopped,
    ));
    let g1 = eventually("the first snapshot", || {
        Some(endpoints.generation()).filter(|g| *g != g0)
    })
    .await;
    assert_eq!(g1, g0 + 1);

    // The agent's endpoints, filtered by the subset's labels.
    assert_eq!(
        hosts(&*endpoints, REVIEWS, 9080, &[]),
        ["10.0.0.1:8080", "10.0.0.2:8080"]
    );
    assert_eq!(
        hosts(&*endpoints, REVIEWS, 9080, &[("version", "v2")]),
        ["10.0.0.2:8080"]
    );
    assert_eq!(
        hosts(
            &*endpoints,
            REVIEWS,
            9080,
            &[("app", "reviews"), ("version", "v1")]
        ),
        ["10.0.0.1:8080"]
    );
    assert!(hosts(&*endpoints, REVIEWS, 9080, &[("version", "v3")]).is_empty());
    // Each pod's service account is the identity its proxy must present (secure naming), in
    // the mesh's trust domain; the config's endpoints without one have none.
    let identities: Vec<Option<String>> = endpoints
        .endpoints(REVIEWS, 9080, &BTreeMap::new())
        .iter()
        .map(|e| e.identity.as_ref().map(|id| id.uri()))
        .collect();
    assert_eq!(
        identities,
        [
            Some("spiffe://cluster.local/ns/shop/sa/reviews-v1".to_string()),
            Some("spiffe://cluster.local/ns/shop/sa/reviews-v2".to_string())
        ]
    );
    assert_eq!(
        endpoints.endpoints(EXTERNAL, 9080, &BTreeMap::new())[0].identity,
        None
    );
    // A known host: the agent is authoritative, even where it has nothing.
    assert!(hosts(&*endpoints, REVIEWS, 9443, &[]).is_empty());
    assert!(hosts(&*endpoints, REVIEWS, 1, &[]).is_empty());
    // A host the agent does not know: the config's endpoints.
    assert_eq!(
        hosts(&*endpoints, EXTERNAL, 9080, &[]),
        ["203.0.113.7:9080"]
    );

    // The same picture again (as after a reconnect) changes nothing; a pod going away does.
    lines.send_replace(snapshot(&[("10.0.0.1", "v1"), ("10.0.0.2", "v2")]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(endpoints.generation(), g1);
    lines.send_replace(snapshot(&[("10.0.0.2", "v2")]));
    let g2 = eventually("the pod's removal", || {
        Some(endpoints.generation()).filter(|g| *g != g1)
    })
    .await;
    assert_eq!(g2, g1 + 1);
    assert_eq!(hosts(&*endpoints, REVIEWS, 9080, &[]), ["10.0.0.2:8080"]);
    assert!(hosts(&*endpoints, REVIEWS, 9080, &[("version", "v1")]).is_empty());

    // A new config moves the generation too, and the fallback answers from it.
    std::fs::write(&config_path, config("203.0.113.8")).unwrap();
    assert!(store.reload().unwrap());
    assert!(endpoints.generation() > g2);
    assert_eq!(
        hosts(&*endpoints, EXTERNAL, 9080, &[]),
        ["203.0.113.8:9080"]
    );

    // The agent going away keeps the last picture; coming back with a new one replaces it.
    server.abort();
    let _ = server.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hosts(&*endpoints, REVIEWS, 9080, &[]), ["10.0.0.2:8080"]);
    assert!(!task.is_finished());
    lines.send_replace(snapshot(&[("10.0.0.3", "v1")]));
    let server = serve(fake, &socket);
    eventually("the snapshot after reconnecting", || {
        Some(()).filter(|()| hosts(&*endpoints, REVIEWS, 9080, &[]) == ["10.0.0.3:8080"])
    })
    .await;

    stop.send(true).unwrap();
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
    server.abort();
}
