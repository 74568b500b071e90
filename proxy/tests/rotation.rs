//! Rotation under load (issue 6): two proxies get their certificates from a fake node agent
//! with a 10-second lifetime, renewed before half-life and pushed, while clients send requests
//! through the mTLS pair for 60 seconds. Midway the agent rotates the root with an overlap:
//! both roots trusted, then certificates from the new root, then the new root alone. Not one
//! request may fail, each proxy must see at least five new certificates, and after the switch
//! both proxies must verify handshakes against the new root only.
//!
//! Traffic takes two paths: HTTP clients on keep-alive connections (the outbound proxy pools its
//! mesh connections) and raw TCP clients that open a new connection every few requests (each
//! one a new mesh connection with a full handshake: the proxies never resume TLS sessions).
//! Besides, the test makes full handshakes with the proxies' current certificates itself, all
//! along: peers certified by the agent connect to the inbound proxy and take connections from
//! the outbound proxy's connector, about ten a second.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mizzen_ca::RootCa;
use mizzen_identity::svid::{self, Role};
use mizzen_identity::{CertStore, CertificateRequest, SpiffeId, TrustBundle};
use mizzen_proxy::app::{App, Shared};
use mizzen_proxy::env::{Config, InboundListener, OutboundListener};
use mizzen_proxy::mtls::{Alpn, MeshTls};
use mizzen_proxy_config::{
    InboundConfig, PeerAuthMode, PeerAuthentication, Protocol, ProxyConfig, ServicePort,
};
use rustls::HandshakeKind;
use support::agent::FakeAgent;
use support::*;
use tokio::net::{TcpListener, TcpStream};

const LIFETIME: Duration = Duration::from_secs(10);
const RUN: Duration = Duration::from_secs(60);
/// When, into the run, the root rotation starts.
const ROOT_ROTATION_AT: Duration = Duration::from_secs(20);
/// How long both roots stay trusted once every proxy has a certificate from the new one.
const OVERLAP: Duration = Duration::from_secs(5);
/// The service's raw TCP port (its HTTP port is [`PORT`]).
const TCP_PORT: u16 = 8081;
/// Requests per TCP connection before the client opens a new one.
const PER_CONNECTION: usize = 3;
/// How long one request, or one expected change of state, may take.
const BOUND: Duration = Duration::from_secs(5);

fn spiffe(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).unwrap()
}

fn new_root() -> Arc<RootCa> {
    Arc::new(RootCa::generate("cluster.local", Duration::from_secs(86400)).unwrap())
}

fn bundle(roots: &[&RootCa]) -> TrustBundle {
    TrustBundle::from_der(roots.iter().map(|r| r.cert_der().clone())).unwrap()
}

/// A proxy started in-process, with every address it bound.
struct Running {
    app: Arc<Shared>,
    outbound: Vec<SocketAddr>,
    inbound: Vec<SocketAddr>,
    prometheus: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Running {
    fn store(&self) -> &CertStore {
        &self
            .app
            .tls
            .as_ref()
            .expect("mesh TLS from the agent")
            .store
    }

    fn tls(&self) -> &MeshTls {
        self.app.tls.as_ref().expect("mesh TLS from the agent")
    }
}

/// A proxy for workload `sa` whose certificate comes from `agent`.
async fn proxy(
    agent: &FakeAgent,
    sa: &str,
    cfg: &ProxyConfig,
    tweak: impl FnOnce(&mut Config),
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, cfg.to_json()).unwrap();
    let mut c = test_config(path);
    c.workload.service_account = sa.into();
    c.agent = Some(agent.settings(dir.path(), &spiffe(sa)));
    tweak(&mut c);
    let app = App::bind(c, None).await.unwrap();
    let running = Running {
        app: app.shared.clone(),
        outbound: app.bound.outbound.clone(),
        inbound: app.bound.inbound.clone(),
        prometheus: app.bound.prometheus.unwrap(),
        _dir: dir,
    };
    tokio::spawn(app.run());
    running
}

/// The outbound proxy (serviceb over HTTP and raw TCP, both to the inbound proxy, which runs a
/// sidecar) and the inbound proxy (STRICT) in front of a backend.
async fn mesh(agent: &FakeAgent) -> (Running, Running) {
    let app = backend("b").await;
    let mut server = ProxyConfig::new("default");
    server.inbound = InboundConfig {
        peer_authentication: vec![PeerAuthentication {
            name: "default/default".into(),
            selector: None,
            mode: PeerAuthMode::Strict,
            ports: Default::default(),
        }],
        ..Default::default()
    };
    let inbound = proxy(agent, "serviceb", &server, |c| {
        c.outbound.clear();
        c.inbound = vec![InboundListener {
            listen: "127.0.0.1:0".parse().unwrap(),
            app: app.addr,
        }];
    })
    .await;
    let to = inbound.inbound[0];
    let mut ep = endpoint(to, "v1");
    ep.ports.insert("tcp".into(), to.port());
    ep.labels
        .insert("security.istio.io/tlsMode".into(), "istio".into());
    let mut service = serviceb(vec![ep], vec![]);
    service.ports.push(ServicePort {
        number: TCP_PORT,
        name: "tcp".into(),
        protocol: Protocol::Tcp,
        target_port: None,
    });
    let outbound = proxy(agent, "servicea", &config(vec![service]), |c| {
        c.outbound.push(OutboundListener {
            listen: "127.0.0.1:0".parse().unwrap(),
            host: HOST.into(),
            port: TCP_PORT,
        });
    })
    .await;
    (outbound, inbound)
}

/// Waits, within [`BOUND`], until `ready` holds.
async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let wait = async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(BOUND, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// The store's leaf (DER), if it has one.
fn leaf(store: &CertStore) -> Option<Vec<u8>> {
    store.certified_key().map(|k| k.cert[0].as_ref().to_vec())
}

/// Whether the store's certificate chains to `root` (and only through it).
fn issued_by(store: &CertStore, root: &RootCa) -> bool {
    let Some(key) = store.certified_key() else {
        return false;
    };
    let now = rustls::pki_types::UnixTime::now();
    svid::verify_chain(
        &bundle(&[root]),
        &key.cert[0],
        &key.cert[1..],
        now,
        Role::Server,
    )
    .is_ok()
}

fn roots_are(store: &CertStore, expected: &TrustBundle) -> bool {
    store.bundle().is_some_and(|b| *b == *expected)
}

/// What the traffic saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    /// New TCP connections through the outbound proxy (each a new mesh connection).
    connections: AtomicUsize,
    /// The first few failures, for the assertion message.
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, path: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut errors = self.errors.lock().unwrap();
                if errors.len() < 20 {
                    errors.push(format!("{path}: {e}"));
                }
            }
        }
    }
}

/// One GET on an HTTP/1.1 connection; anything but `200 b` is a failure.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) -> Result<(), String> {
    let req = Request::get("/")
        .header("host", "serviceb:8080")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let call = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        match (status.as_u16(), body.to_bytes().as_ref()) {
            (200, b"b") => Ok(()),
            (code, body) => Err(format!("{code}: {}", String::from_utf8_lossy(body))),
        }
    };
    tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Requests on one keep-alive client (its pool keeps the connection) until `until`.
async fn http_loop(addr: SocketAddr, until: Instant, tally: Arc<Tally>) {
    let c = client();
    while Instant::now() < until {
        let call = async {
            let req = Request::get(format!("http://{addr}/"))
                .header("host", "serviceb:8080")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let r = tokio::time::timeout(BOUND, c.request(req))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body = r.into_body().collect().await.map_err(|e| e.to_string())?;
            match (status, body.to_bytes().as_ref()) {
                (200, b"b") => Ok(()),
                (code, body) => Err(format!("{code}: {}", String::from_utf8_lossy(body))),
            }
        };
        tally.record("http", call.await);
    }
}

/// New TCP connections through the outbound proxy's TCP port, [`PER_CONNECTION`] requests on
/// each, until `until`.
async fn tcp_loop(addr: SocketAddr, until: Instant, tally: Arc<Tally>) {
    while Instant::now() < until {
        let opened = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok::<_, String>(sender)
        };
        let mut sender = match tokio::time::timeout(BOUND, opened).await {
            Ok(Ok(sender)) => sender,
            Ok(Err(e)) => {
                tally.record("tcp connect", Err(e));
                continue;
            }
            Err(_) => {
                tally.record("tcp connect", Err("timed out".into()));
                continue;
            }
        };
        tally.connections.fetch_add(1, Ordering::Relaxed);
        for _ in 0..PER_CONNECTION {
            tally.record("tcp", get_on(&mut sender).await);
        }
    }
}

/// Counts the distinct certificates a store holds over time (the first one excluded).
async fn count_rotations(store: &CertStore, until: Instant) -> usize {
    let mut current = leaf(store);
    let mut rotations = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = leaf(store);
        if now != current {
            rotations += 1;
            current = now;
        }
    }
    rotations
}

/// A stand-alone mesh TLS for `sa` with a certificate from `signer`, trusting `roots`; new for
/// each probe, so its handshakes are full ones (no session to resume).
fn probe_tls(sa: &str, signer: &RootCa, roots: &TrustBundle) -> MeshTls {
    let id = spiffe(sa);
    let req = CertificateRequest::for_workload(&id).unwrap();
    let issued = signer
        .authority(Some(roots.clone()))
        .unwrap()
        .sign_workload(&req.csr_pem, &id, Duration::from_secs(600))
        .unwrap();
    let store = CertStore::new(id);
    store
        .update(&issued.chain_pem, req.key, roots.clone())
        .unwrap();
    MeshTls::new(store).unwrap()
}

/// One request to the inbound proxy at `addr` from a client presenting `client`'s
/// certificate: how the handshake went (full or resumed) if the request was served.
async fn inbound_call(addr: SocketAddr, client: &MeshTls) -> Result<HandshakeKind, String> {
    let call = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let tls = client
            .connect(tcp, HOST, PORT, Alpn::Http1)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let kind = tls.get_ref().1.handshake_kind();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        get_on(&mut sender).await?;
        kind.ok_or_else(|| "no handshake kind after the handshake".to_string())
    };
    tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Whether the inbound proxy at `addr` serves a client presenting `client`'s certificate.
async fn inbound_accepts(addr: SocketAddr, client: &MeshTls) -> Result<(), String> {
    inbound_call(addr, client).await.map(drop)
}

/// Whether the outbound proxy's mesh TLS accepts a server presenting `server`'s certificate.
async fn outbound_accepts(proxy: &Running, server: MeshTls) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // The handshake's outcome is the client's to report.
        let _ = server.accept(tcp).await;
    });
    let call = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // A host of its own, so no session from the traffic is resumed.
        proxy
            .tls()
            .connect(tcp, "probe.default.svc.cluster.local", 1, Alpn::Http1)
            .await
            .map(drop)
            .map_err(|e| format!("handshake: {e}"))
    };
    let result = tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
    serving.abort();
    result
}

/// Both proxies take a peer of `root` (true) or refuse it (false).
async fn assert_peers_of(outbound: &Running, inbound: &Running, root: &RootCa, taken: bool) {
    let probe_roots = bundle(&[root]).merged(&outbound.store().bundle().unwrap());
    let client = probe_tls("probe", root, &probe_roots);
    let server = probe_tls("probe", root, &probe_roots);
    let (inbound_result, outbound_result) = (
        inbound_accepts(inbound.inbound[0], &client).await,
        outbound_accepts(outbound, server).await,
    );
    if taken {
        inbound_result.expect("the inbound proxy serves a client of a trusted root");
        outbound_result.expect("the outbound proxy accepts a server of a trusted root");
    } else {
        assert!(
            inbound_result.is_err(),
            "the inbound proxy served a client of a root it no longer trusts"
        );
        let err = outbound_result
            .expect_err("the outbound proxy accepted a server of a root it no longer trusts");
        assert!(err.contains("UnknownIssuer"), "{err}");
    }
}

/// The root rotation, step by step, checked on both proxies at each step.
async fn rotate_root(
    agent: &FakeAgent,
    old: &RootCa,
    new: &Arc<RootCa>,
    outbound: &Running,
    inbound: &Running,
) {
    let both = bundle(&[old, new]);
    let stores = [outbound.store(), inbound.store()];

    // 1. Overlap: both roots trusted everywhere before anything is signed by the new one.
    agent.trust(both.clone());
    eventually("both proxies trusting both roots", || {
        stores.iter().all(|s| roots_are(s, &both))
    })
    .await;
    assert_peers_of(outbound, inbound, old, true).await;
    assert_peers_of(outbound, inbound, new, true).await;

    // 2. Certificates from the new root, still handed out with both roots.
    agent.sign_with(new.clone());
    eventually("both proxies holding a certificate of the new root", || {
        stores
            .iter()
            .all(|s| issued_by(s, new) && roots_are(s, &both))
    })
    .await;
    tokio::time::sleep(OVERLAP).await;

    // 3. The old root withdrawn.
    let only_new = bundle(&[new]);
    agent.trust(only_new.clone());
    eventually("both proxies trusting the new root alone", || {
        stores.iter().all(|s| roots_are(s, &only_new))
    })
    .await;
    assert_peers_of(outbound, inbound, new, true).await;
    assert_peers_of(outbound, inbound, old, false).await;
}

/// Full handshakes with both proxies, one pair after another until `until`: peers certified by
/// the agent as of each moment, with no session to resume, so each handshake checks the
/// proxies' current certificates and roots both ways.
async fn full_handshake_loop(
    agent: &FakeAgent,
    outbound: &Running,
    inbound: SocketAddr,
    until: Instant,
    tally: &Tally,
) {
    let id = spiffe("probe");
    while Instant::now() < until {
        let client = MeshTls::new(agent.certify(&id, LIFETIME)).unwrap();
        let result = inbound_call(inbound, &client).await.and_then(|kind| {
            (kind == HandshakeKind::Full)
                .then_some(())
                .ok_or_else(|| format!("{kind:?} handshake"))
        });
        tally.record("full handshake with the inbound proxy", result);
        let server = MeshTls::new(agent.certify(&id, LIFETIME)).unwrap();
        let result = outbound_accepts(outbound, server).await;
        tally.record("full handshake from the outbound proxy", result);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn istio_tcp_opened(prometheus: SocketAddr) -> f64 {
    let text = metrics(prometheus).await;
    sample(
        &text,
        "istio_tcp_connections_opened_total",
        &[("reporter", "destination")],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_of_traffic_through_certificate_and_root_rotations_fail_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = new_root();
    let agent = FakeAgent::start(dir.path(), old.clone(), LIFETIME);
    let (outbound, inbound) = mesh(&agent).await;
    eventually("both proxies holding a first certificate", || {
        leaf(outbound.store()).is_some() && leaf(inbound.store()).is_some()
    })
    .await;
    // The agent's lifetime (give or take the second X.509 rounds to).
    let left = outbound
        .store()
        .validity()
        .unwrap()
        .not_after
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        left <= LIFETIME && left > LIFETIME - Duration::from_secs(2),
        "{left:?}"
    );

    let started = Instant::now();
    let until = started + RUN;
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(tokio::spawn(http_loop(
            outbound.outbound[0],
            until,
            tally.clone(),
        )));
        clients.push(tokio::spawn(tcp_loop(
            outbound.outbound[1],
            until,
            tally.clone(),
        )));
    }
    let rotations = async {
        tokio::join!(
            count_rotations(outbound.store(), until),
            count_rotations(inbound.store(), until)
        )
    };
    let handshakes = Tally::default();
    let probes = full_handshake_loop(&agent, &outbound, inbound.inbound[0], until, &handshakes);
    let rotation = async {
        tokio::time::sleep(ROOT_ROTATION_AT).await;
        let begun = started.elapsed();
        rotate_root(&agent, &old, &new_root(), &outbound, &inbound).await;
        (begun, started.elapsed())
    };
    let ((outbound_rotations, inbound_rotations), (root_from, root_to), ()) =
        tokio::time::timeout(RUN + Duration::from_secs(30), async {
            tokio::join!(rotations, rotation, probes)
        })
        .await
        .expect("the run ends on time");
    for client in clients {
        tokio::time::timeout(BOUND * 2, client)
            .await
            .expect("clients stop at the end of the run")
            .unwrap();
    }
    let elapsed = started.elapsed();
    let mesh_connections = istio_tcp_opened(inbound.prometheus).await;
    // How the traffic's mesh connections were made: the outbound proxy's own connector, to the
    // inbound proxy, for the service port the TCP clients used.
    let tcp = TcpStream::connect(inbound.inbound[0]).await.unwrap();
    let traffic_kind = outbound
        .tls()
        .connect(tcp, HOST, TCP_PORT, Alpn::Tcp)
        .await
        .expect("a mesh connection after the run")
        .get_ref()
        .1
        .handshake_kind();

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    println!(
        "rotation under load: {ok} requests ok, {failed} failed in {:.1} s; \
         {} new TCP connections through the pair ({mesh_connections} raw TCP mesh connections \
         at the inbound proxy); certificate rotations seen: outbound {outbound_rotations}, \
         inbound {inbound_rotations} ({} certificates signed by the agent); root rotation from \
         {:.1} s to {:.1} s; full handshakes with the proxies: {} ok, {} failed; a new mesh \
         connection of the outbound proxy after the run: {traffic_kind:?} handshake",
        elapsed.as_secs_f64(),
        tally.connections.load(Ordering::Relaxed),
        agent.issued(),
        root_from.as_secs_f64(),
        root_to.as_secs_f64(),
        handshakes.ok.load(Ordering::Relaxed),
        handshakes.failed.load(Ordering::Relaxed),
    );
    assert_eq!(
        failed,
        0,
        "failed requests: {:?}",
        tally.errors.lock().unwrap()
    );
    assert_eq!(
        handshakes.failed.load(Ordering::Relaxed),
        0,
        "failed full handshakes: {:?}",
        handshakes.errors.lock().unwrap()
    );
    assert!(ok > 1000, "too little traffic to mean anything: {ok}");
    assert!(
        handshakes.ok.load(Ordering::Relaxed) > 100,
        "too few full handshakes to mean anything"
    );
    assert!(
        outbound_rotations >= 5 && inbound_rotations >= 5,
        "rotations: outbound {outbound_rotations}, inbound {inbound_rotations}"
    );
    // The run's last certificates are from the new root, with the new root alone trusted.
    let roots = agent.roots();
    assert_eq!(roots.len(), 1);
    for store in [outbound.store(), inbound.store()] {
        assert!(roots_are(store, &roots));
        assert!(!issued_by(store, &old));
    }
}

/// A peer that resumes a TLS session skips certificate verification: the session must not
/// outlive the trust it was made under. Here a peer of the old root keeps its session across
/// the root rotation and tries it once the old root is withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_under_a_withdrawn_root_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let old = new_root();
    let agent = FakeAgent::start(dir.path(), old.clone(), LIFETIME);
    let (outbound, inbound) = mesh(&agent).await;
    eventually("both proxies holding a first certificate", || {
        leaf(outbound.store()).is_some() && leaf(inbound.store()).is_some()
    })
    .await;
    // A peer certified by the old root that trusts both, so only the proxy's decision counts.
    let new = new_root();
    let any = bundle(&[&old, &new]);
    let client = probe_tls("probe", &old, &any);
    let first = inbound_call(inbound.inbound[0], &client).await;
    let second = inbound_call(inbound.inbound[0], &client).await;
    println!("before the rotation: {first:?}, then {second:?}");
    assert_eq!(first, Ok(HandshakeKind::Full));

    rotate_root(&agent, &old, &new, &outbound, &inbound).await;
    // A fresh peer of the old root is refused (rotate_root checked); a resumed one must be too.
    let after = inbound_call(inbound.inbound[0], &client).await;
    assert!(
        after.is_err(),
        "the inbound proxy served a peer of the withdrawn root: {after:?}"
    );
}

/// The same for expiry: a session must not outlive the peer certificate it was made with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_does_not_outlive_the_peer_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(dir.path(), new_root(), LIFETIME);
    let (outbound, inbound) = mesh(&agent).await;
    eventually("both proxies holding a first certificate", || {
        leaf(outbound.store()).is_some() && leaf(inbound.store()).is_some()
    })
    .await;
    let store = agent.certify(&spiffe("probe"), Duration::from_secs(2));
    let expires = store.validity().unwrap().not_after;
    let client = MeshTls::new(store).unwrap();
    let first = inbound_call(inbound.inbound[0], &client).await;
    assert_eq!(first, Ok(HandshakeKind::Full));
    let wait = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_secs(1);
    tokio::time::sleep(wait).await;
    let fresh = MeshTls::new(agent.certify(&spiffe("probe"), Duration::from_secs(600))).unwrap();
    assert_eq!(
        inbound_call(inbound.inbound[0], &fresh).await,
        Ok(HandshakeKind::Full),
        "the inbound proxy still serves"
    );
    let after = inbound_call(inbound.inbound[0], &client).await;
    assert!(
        after.is_err(),
        "the inbound proxy served a peer whose certificate expired: {after:?}"
    );
}
