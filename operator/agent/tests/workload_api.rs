//! The workload API end to end over a real Unix socket in a temporary directory: a fake
//! TokenReviewer, an in-memory node pod cache and a fake node CA signer that signs with a
//! `mizzen-ca` root held in memory. A proxy-side client sends a CSR and a token and reads the
//! JSON-lines stream.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{ask, send};
use futures::future::BoxFuture;
use http::StatusCode;
use mizzen_agent::authz::{
    AUDIENCE, ClusterAuthorizer, EXTRA_POD_NAME, EXTRA_POD_UID, ReviewError, ReviewOutcome,
    TokenReviewer,
};
use mizzen_agent::certify::CertifySettings;
use mizzen_agent::endpoints::EndpointsEvent;
use mizzen_agent::local::LocalAuthorizer;
use mizzen_agent::metrics::Metrics;
use mizzen_agent::node_ca::{self, NodeCaError, NodeCaSettings, NodeCaSigner};
use mizzen_agent::pods::{NodePods, PodInfo};
use mizzen_agent::server::{self, Agent};
use mizzen_ca::{LocalCa, RootCa};
use mizzen_identity::bundle::certs_from_pem;
use mizzen_identity::svid::{self, Role};
use mizzen_identity::workload_api::Event;
use mizzen_identity::{CertificateRequest, RefreshPolicy, SpiffeId, TrustBundle};
use rustls_pki_types::UnixTime;
use tokio::sync::watch;

const NODE: &str = "node-a";

/// TokenReviews answered from a table: token → outcome.
#[derive(Default)]
struct FakeReviewer {
    answers: Mutex<HashMap<String, ReviewOutcome>>,
}

impl TokenReviewer for FakeReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<ReviewOutcome, ReviewError>> {
        assert_eq!(audience, AUDIENCE);
        let answer = self.answers.lock().unwrap().get(token).cloned().unwrap_or(
            ReviewOutcome::Unauthenticated("invalid bearer token".into()),
        );
        Box::pin(async move { Ok(answer) })
    }
}

/// The operator's side of the CSR API, in memory: signs node CAs with a root it holds.
struct FakeSigner {
    root: Mutex<Arc<RootCa>>,
}

impl NodeCaSigner for FakeSigner {
    fn sign<'a>(
        &'a self,
        node: &'a str,
        csr_pem: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String, NodeCaError>> {
        let root = self.root.lock().unwrap().clone();
        Box::pin(async move {
            let authority = root.authority(None)?;
            let issued =
                authority
                    .sign_node_ca(csr_pem, node, ttl)
                    .map_err(|e| NodeCaError::Wait {
                        name: "fake".into(),
                        reason: e.to_string(),
                    })?;
            Ok(issued.chain_pem)
        })
    }
}

struct Mesh {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    reviewer: Arc<FakeReviewer>,
    pods: Arc<NodePods>,
    root: Arc<RootCa>,
    signer: Arc<FakeSigner>,
    roots_tx: watch::Sender<Option<TrustBundle>>,
    endpoints_tx: watch::Sender<Arc<EndpointsEvent>>,
}

impl Mesh {
    /// An agent on a fresh socket, signing workload certificates for `ttl`.
    async fn start(ttl: Duration) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let root =
            Arc::new(RootCa::generate("cluster.local", Duration::from_secs(3600 * 24)).unwrap());
        let signer = Arc::new(FakeSigner {
            root: Mutex::new(root.clone()),
        });
        let (roots_tx, roots_rx) = watch::channel(Some(
            TrustBundle::from_der([root.cert_der().clone()]).unwrap(),
        ));
        let (authority_tx, authorities) = watch::channel(None);
        let metrics = Metrics::default();
        tokio::spawn(node_ca::keep_node_ca(
            signer.clone(),
            NodeCaSettings {
                node: NODE.into(),
                ttl: Duration::from_secs(3600),
                policy: RefreshPolicy::default(),
            },
            roots_rx,
            authority_tx,
            metrics.clone(),
        ));
        let reviewer = Arc::new(FakeReviewer::default());
        let pods = NodePods::new();
        let (endpoints_tx, endpoints) = watch::channel(Arc::new(EndpointsEvent::default()));
        let agent = Agent {
            authorizer: Arc::new(ClusterAuthorizer {
                reviewer: reviewer.clone(),
                pods: pods.clone(),
                node: NODE.into(),
                trust_domain: "cluster.local".into(),
                cache_grace: Duration::from_millis(200),
            }),
            authorities,
            endpoints,
            settings: CertifySettings {
                ttl,
                policy: RefreshPolicy::default(),
                authority_wait: Duration::from_secs(5),
            },
            metrics,
        };
        let listener = server::bind(&socket).unwrap();
        tokio::spawn(server::serve(listener, Arc::new(agent)));
        Mesh {
            _dir: dir,
            socket,
            reviewer,
            pods,
            root,
            signer,
            roots_tx,
            endpoints_tx,
        }
    }

    /// A pod on `node` running as `ns/sa`, and a token for it.
    fn pod(&self, ns: &str, sa: &str, name: &str, node: &str) -> String {
        let uid = format!("uid-{name}");
        self.pods.insert(
            ns,
            name,
            PodInfo {
                uid: uid.clone(),
                node: node.into(),
                service_account: sa.into(),
                terminated: false,
            },
        );
        let token = format!("token-{ns}-{name}");
        self.reviewer.answers.lock().unwrap().insert(
            token.clone(),
            ReviewOutcome::Authenticated {
                username: format!("system:serviceaccount:{ns}:{sa}"),
                audiences: vec![AUDIENCE.into()],
                extra: BTreeMap::from([
                    (EXTRA_POD_NAME.to_string(), vec![name.to_string()]),
                    (EXTRA_POD_UID.to_string(), vec![uid]),
                ]),
            },
        );
        token
    }

    fn bundle(&self) -> TrustBundle {
        TrustBundle::from_der([self.root.cert_der().clone()]).unwrap()
    }
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

/// Checks a certificate event against the bundle; returns the leaf's SPIFFE id and expiry.
fn verify(event: &Event, bundle: &TrustBundle, key: &CertificateRequest) -> (SpiffeId, u64) {
    let Event::Certificate {
        chain_pem,
        roots_pem,
        not_after,
    } = event
    else {
        panic!("expected a certificate, got {event:?}");
    };
    let chain = certs_from_pem(chain_pem).unwrap();
    assert_eq!(chain.len(), 2, "leaf and node CA");
    let roots = TrustBundle::from_pem(roots_pem).unwrap();
    assert_eq!(roots.roots(), bundle.roots());
    let now = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    );
    let got = svid::verify_chain(bundle, &chain[0], &chain[1..], now, Role::Server).unwrap();
    svid::verify_chain(bundle, &chain[0], &chain[1..], now, Role::Client).unwrap();
    // The certificate is for the proxy's own key: the key never left it.
    let leaf = x509_spki(&chain[0]);
    assert_eq!(leaf, key.key.public_key_der());
    (got, *not_after)
}

fn x509_spki(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.public_key().raw.to_vec()
}

#[tokio::test]
async fn a_proxy_gets_a_chain_to_the_root_with_its_exact_identity() {
    let mesh = Mesh::start(Duration::from_secs(3600)).await;
    let token = mesh.pod("shop", "cart", "cart-0", NODE);
    let cart = id("shop", "cart");
    let csr = CertificateRequest::for_workload(&cart).unwrap();
    let mut lines = ask(&mesh.socket, &csr.csr_pem, &token).await;
    assert_eq!(lines.status, StatusCode::OK);
    let event = lines.next(Duration::from_secs(10)).await.unwrap();
    let (got, not_after) = verify(&event, &mesh.bundle(), &csr);
    assert_eq!(got.uri(), "spiffe://cluster.local/ns/shop/sa/cart");
    let left = not_after
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
    assert!((3590..=3600).contains(&left), "{left}");
}

#[tokio::test]
async fn refusals_name_the_reason_with_the_right_status() {
    let mesh = Mesh::start(Duration::from_secs(3600)).await;
    let cart_token = mesh.pod("shop", "cart", "cart-0", NODE);
    let remote_token = mesh.pod("shop", "cart", "cart-1", "node-b");
    let cart_csr = CertificateRequest::for_workload(&id("shop", "cart")).unwrap();

    // Another service account's identity.
    let admin_csr = CertificateRequest::for_workload(&id("shop", "admin")).unwrap();
    let mut r = ask(&mesh.socket, &admin_csr.csr_pem, &cart_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let Some(Event::Error { message }) = r.next(Duration::from_secs(5)).await else {
        panic!("expected an error event");
    };
    assert_eq!(
        message,
        "CSR asks for identity `spiffe://cluster.local/ns/shop/sa/admin`, but the token is for `spiffe://cluster.local/ns/shop/sa/cart`"
    );
    assert!(
        r.next(Duration::from_secs(5)).await.is_none(),
        "one line, then the end"
    );

    // A pod on another node.
    let mut r = ask(&mesh.socket, &cart_csr.csr_pem, &remote_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let Some(Event::Error { message }) = r.next(Duration::from_secs(5)).await else {
        panic!()
    };
    assert!(
        message.contains("pod shop/cart-1 does not run on node `node-a`"),
        "{message}"
    );

    // Expired, wrong-audience and unknown tokens (the TokenReview says unauthenticated).
    mesh.reviewer.answers.lock().unwrap().insert(
        "expired".into(),
        ReviewOutcome::Unauthenticated(
            "[invalid bearer token, service account token has expired]".into(),
        ),
    );
    mesh.reviewer.answers.lock().unwrap().insert(
        "audience".into(),
        ReviewOutcome::Authenticated {
            username: "system:serviceaccount:shop:cart".into(),
            audiences: vec!["https://kubernetes.default.svc".into()],
            extra: BTreeMap::new(),
        },
    );
    for (token, needle) in [
        ("expired", "service account token has expired"),
        ("audience", "do not include `mizzen-ca`"),
        ("nonsense", "invalid bearer token"),
    ] {
        let mut r = ask(&mesh.socket, &cart_csr.csr_pem, token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token}");
        let Some(Event::Error { message }) = r.next(Duration::from_secs(5)).await else {
            panic!()
        };
        assert!(message.contains(needle), "{token}: {message}");
    }

    // Malformed bodies and CSRs.
    let mut r = send(&mesh.socket, "POST", "/v1/identity", b"{not json".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let Some(Event::Error { message }) = r.next(Duration::from_secs(5)).await else {
        panic!()
    };
    assert!(message.starts_with("request body:"), "{message}");
    let mut r = ask(
        &mesh.socket,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        &cart_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let Some(Event::Error { message }) = r.next(Duration::from_secs(5)).await else {
        panic!()
    };
    assert!(message.contains("csr_pem"), "{message}");
    let big = vec![b' '; server::MAX_BODY + 1];
    let r = send(&mesh.socket, "POST", "/v1/identity", big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = send(&mesh.socket, "GET", "/v1/identity", Vec::new()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn short_lived_certificates_are_renewed_before_they_expire() {
    let mesh = Mesh::start(Duration::from_secs(2)).await;
    let token = mesh.pod("shop", "cart", "cart-0", NODE);
    let csr = CertificateRequest::for_workload(&id("shop", "cart")).unwrap();
    let mut lines = ask(&mesh.socket, &csr.csr_pem, &token).await;
    let first = lines.next(Duration::from_secs(10)).await.unwrap();
    let (_, first_expiry) = verify(&first, &mesh.bundle(), &csr);
    let mut expiry = first_expiry;
    for _ in 0..3 {
        let next = lines.next(Duration::from_secs(3)).await.unwrap();
        let received = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (got, new_expiry) = verify(&next, &mesh.bundle(), &csr);
        assert_eq!(got, id("shop", "cart"));
        assert!(
            received <= expiry,
            "renewed at {received}, after expiry {expiry}"
        );
        assert!(new_expiry >= expiry);
        expiry = new_expiry;
    }
    assert!(expiry > first_expiry, "the renewals carry later expiries");
}

#[tokio::test]
async fn the_stream_ends_when_the_pod_is_gone() {
    let mesh = Mesh::start(Duration::from_secs(3600)).await;
    let token = mesh.pod("shop", "cart", "cart-0", NODE);
    let csr = CertificateRequest::for_workload(&id("shop", "cart")).unwrap();
    let mut lines = ask(&mesh.socket, &csr.csr_pem, &token).await;
    assert!(matches!(
        lines.next(Duration::from_secs(10)).await,
        Some(Event::Certificate { .. })
    ));
    mesh.pods.remove("shop", "cart-0");
    assert_eq!(lines.next(Duration::from_secs(5)).await, None);
}

#[tokio::test]
async fn a_root_rotation_pushes_the_new_bundle() {
    let mesh = Mesh::start(Duration::from_secs(3600)).await;
    let token = mesh.pod("shop", "cart", "cart-0", NODE);
    let csr = CertificateRequest::for_workload(&id("shop", "cart")).unwrap();
    let mut lines = ask(&mesh.socket, &csr.csr_pem, &token).await;
    lines.next(Duration::from_secs(10)).await.unwrap();
    let new_root =
        Arc::new(RootCa::generate("cluster.local", Duration::from_secs(3600 * 24)).unwrap());
    *mesh.signer.root.lock().unwrap() = new_root.clone();
    let merged =
        TrustBundle::from_der([mesh.root.cert_der().clone(), new_root.cert_der().clone()]).unwrap();
    mesh.roots_tx.send_replace(Some(merged.clone()));
    let Some(Event::Bundle { roots_pem }) = lines.next(Duration::from_secs(10)).await else {
        panic!("expected a bundle event");
    };
    assert_eq!(
        TrustBundle::from_pem(&roots_pem).unwrap().roots(),
        merged.roots()
    );
}

#[tokio::test]
async fn endpoints_stream_full_snapshots() {
    let mesh = Mesh::start(Duration::from_secs(3600)).await;
    let mut lines = send(&mesh.socket, "GET", "/v1/endpoints", Vec::new()).await;
    assert_eq!(lines.status, StatusCode::OK);
    let first = lines.next_line().await.unwrap();
    assert_eq!(first, "{\"v\":1,\"services\":[]}\n");
    let snapshot: EndpointsEvent = serde_json::from_value(serde_json::json!({"v": 1, "services": [
        {"host": "reviews.shop.svc.cluster.local", "port": 9080,
         "endpoints": [{"address": "10.0.0.1", "port": 8080, "labels": {"version": "v1"}}]}
    ]}))
    .unwrap();
    mesh.endpoints_tx.send_replace(Arc::new(snapshot.clone()));
    let next = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(EndpointsEvent::from_line(&next).unwrap(), snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_of_110_pods_is_certified() {
    let mesh = Arc::new(Mesh::start(Duration::from_secs(24 * 3600)).await);
    let pods: Vec<(SpiffeId, String)> = (0..110)
        .map(|n| {
            let sa = format!("sa-{}", n % 37);
            let token = mesh.pod("shop", &sa, &format!("pod-{n}"), NODE);
            (id("shop", &sa), token)
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = pods
        .into_iter()
        .map(|(id, token)| {
            let mesh = mesh.clone();
            tokio::spawn(async move {
                let csr = CertificateRequest::for_workload(&id).unwrap();
                let mut lines = ask(&mesh.socket, &csr.csr_pem, &token).await;
                assert_eq!(lines.status, StatusCode::OK);
                let event = lines.next(Duration::from_secs(30)).await.unwrap();
                let (got, _) = verify(&event, &mesh.bundle(), &csr);
                assert_eq!(got, id);
                lines
            })
        })
        .collect();
    let mut streams = Vec::new();
    for task in tasks {
        streams.push(task.await.unwrap());
    }
    let took = started.elapsed();
    println!("110 pods certified in {took:?} (fresh agent, each proxy making its key and CSR)");
    assert_eq!(streams.len(), 110);
}

/// A local-mode agent (identities file with one token for `default/web`) on a fresh socket,
/// signing with whatever authority `authorities` holds.
struct LocalAgent {
    dir: tempfile::TempDir,
    socket: PathBuf,
    _endpoints_tx: watch::Sender<Arc<EndpointsEvent>>,
}

fn serve_local(
    dir: tempfile::TempDir,
    authorities: node_ca::AuthorityRx,
    ttl: Duration,
) -> LocalAgent {
    let identities = dir.path().join("identities.json");
    std::fs::write(
        &identities,
        r#"{"v":1,"tokens":{"web-secret":"spiffe://cluster.local/ns/default/sa/web"}}"#,
    )
    .unwrap();
    let (endpoints_tx, endpoints) = watch::channel(Arc::new(EndpointsEvent::default()));
    let socket = dir.path().join("agent.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let listener = server::bind(&socket).unwrap();
    tokio::spawn(server::serve(
        listener,
        Arc::new(Agent {
            authorizer: Arc::new(LocalAuthorizer::new(identities)),
            authorities,
            endpoints,
            settings: CertifySettings {
                ttl,
                policy: RefreshPolicy::default(),
                authority_wait: Duration::from_secs(1),
            },
            metrics: Metrics::default(),
        }),
    ));
    LocalAgent {
        dir,
        socket,
        _endpoints_tx: endpoints_tx,
    }
}

fn local_ca(dir: &tempfile::TempDir) -> LocalCa {
    LocalCa::open_or_create(
        &dir.path().join("ca"),
        "cluster.local",
        Duration::from_secs(3600 * 24),
    )
    .unwrap()
}

#[tokio::test]
async fn local_mode_signs_from_the_local_ca_with_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let ca = local_ca(&dir);
    let (_authority_tx, authorities) = watch::channel(Some(Arc::new(ca.authority().unwrap())));
    let agent = serve_local(dir, authorities, Duration::from_secs(600));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&agent.socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o666
    );
    let web = id("default", "web");
    let csr = CertificateRequest::for_workload(&web).unwrap();
    let mut lines = ask(&agent.socket, &csr.csr_pem, "web-secret").await;
    assert_eq!(lines.status, StatusCode::OK);
    let Some(Event::Certificate { chain_pem, .. }) = lines.next(Duration::from_secs(5)).await
    else {
        panic!()
    };
    let chain = certs_from_pem(&chain_pem).unwrap();
    assert_eq!(chain.len(), 1, "signed by the local root directly");
    let bundle = TrustBundle::from_der([ca.root().cert_der().clone()]).unwrap();
    let now = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    );
    assert_eq!(
        svid::verify_chain(&bundle, &chain[0], &[], now, Role::Client).unwrap(),
        web
    );

    let r = ask(&agent.socket, &csr.csr_pem, "guess").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A non-socket file at the socket path is never removed.
    let file = agent.dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        server::bind(&file),
        Err(server::BindError::NotASocket(_))
    ));
}

#[tokio::test]
async fn a_failed_renewal_reports_backs_off_and_recovers_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = local_ca(&dir);
    let authority = Arc::new(ca.authority().unwrap());
    let (authority_tx, authorities) = watch::channel(Some(authority.clone()));
    let agent = serve_local(dir, authorities, Duration::from_secs(3));
    let csr = CertificateRequest::for_workload(&id("default", "web")).unwrap();
    let mut lines = ask(&agent.socket, &csr.csr_pem, "web-secret").await;
    let Some(Event::Certificate { not_after, .. }) = lines.next(Duration::from_secs(5)).await
    else {
        panic!()
    };
    // The authority is lost: the next renewal fails, and says so.
    authority_tx.send_replace(None);
    let Some(Event::Error { message }) = lines.next(Duration::from_secs(3)).await else {
        panic!("expected a renewal error")
    };
    assert!(
        message.starts_with("renewal failed, will retry:"),
        "{message}"
    );
    // Back again: a retry (not the next full window) brings a new certificate before expiry.
    authority_tx.send_replace(Some(authority));
    let renewed = loop {
        match lines.next(Duration::from_secs(3)).await {
            Some(Event::Error { .. }) => continue,
            Some(event) => break event,
            None => panic!("stream ended"),
        }
    };
    let Event::Certificate {
        not_after: new_expiry,
        ..
    } = renewed
    else {
        panic!("expected a certificate, got {renewed:?}")
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now <= not_after,
        "recovered at {now}, after expiry {not_after}"
    );
    assert!(new_expiry >= not_after);
}
