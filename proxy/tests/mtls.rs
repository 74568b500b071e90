//! Mesh mTLS between two proxies on loopback: the outbound proxy originates mTLS to a meshed
//! endpoint, the inbound proxy terminates it per PeerAuthentication, learns the caller's SPIFFE
//! identity and reports it; STRICT refuses plaintext, PERMISSIVE serves both. Secure naming: the
//! caller accepts only the server identity the endpoint (or the DestinationRule) names.

mod support;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use mizzen_identity::{CertificateRequest, SpiffeId};
use mizzen_proxy::{env::InboundListener, mtls::MeshTls};
use mizzen_proxy_config::{
    ClientTls, ClientTlsMode, InboundConfig, PeerAuthMode, PeerAuthentication, ProxyConfig,
    TrafficPolicy,
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use support::*;

/// A mesh root and a certificate for `ns/<ns>/sa/<sa>`, written as the proxy's files.
fn issue(dir: &Path, ca: &mizzen_ca::Authority, sa: &str) -> Arc<MeshTls> {
    let id = SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).unwrap();
    let req = CertificateRequest::for_workload(&id).unwrap();
    let issued = ca
        .sign_workload(&req.csr_pem, &id, Duration::from_secs(3600))
        .unwrap();
    let (chain, key, roots) = (
        dir.join(format!("{sa}.pem")),
        dir.join(format!("{sa}.key")),
        dir.join("roots.pem"),
    );
    std::fs::write(&chain, &issued.chain_pem).unwrap();
    std::fs::write(&key, req.key.key_pair().serialize_pem()).unwrap();
    std::fs::write(&roots, &issued.roots_pem).unwrap();
    Arc::new(MeshTls::from_files(&chain, &key, &roots).unwrap())
}

fn peer_auth(mode: PeerAuthMode) -> InboundConfig {
    InboundConfig {
        peer_authentication: vec![PeerAuthentication {
            name: "default/default".into(),
            selector: None,
            mode,
            ports: Default::default(),
        }],
        ..Default::default()
    }
}

struct Pair {
    outbound: Proxy,
    inbound: Proxy,
    inbound_addr: SocketAddr,
    ca: mizzen_ca::Authority,
    dir: tempfile::TempDir,
}

async fn pair(mode: PeerAuthMode) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let ca = mizzen_ca::RootCa::generate("cluster.local", Duration::from_secs(86400))
        .unwrap()
        .authority(None)
        .unwrap();
    let client_tls = issue(dir.path(), &ca, "servicea");
    let server_tls = issue(dir.path(), &ca, "serviceb");
    let app = backend("b").await;
    let mut server_config = ProxyConfig::new("default");
    server_config.inbound = peer_auth(mode);
    let inbound = start_with(&server_config, |c| {
        c.outbound.clear();
        c.outbound.push(mizzen_proxy::env::OutboundListener {
            listen: "127.0.0.1:0".parse().unwrap(),
            host: HOST.into(),
            port: PORT,
        });
        c.inbound = vec![InboundListener {
            listen: "127.0.0.1:0".parse().unwrap(),
            app: app.addr,
        }];
        c.tls = Some(server_tls);
        // As in a pod: the workload runs as the account its certificate names.
        c.workload.service_account = "serviceb".into();
    })
    .await;
    let inbound_addr = inbound.inbound[0];
    let mut ep = endpoint(inbound_addr, "v1");
    // The injector's label: auto mTLS sends mTLS to endpoints that run a sidecar.
    ep.labels
        .insert("security.istio.io/tlsMode".into(), "istio".into());
    let outbound = start_with(&config(vec![serviceb(vec![ep], vec![])]), |c| {
        c.tls = Some(client_tls);
    })
    .await;
    Pair {
        outbound,
        inbound,
        inbound_addr,
        ca,
        dir,
    }
}

#[tokio::test]
async fn strict_serves_mtls_from_the_mesh_and_refuses_plaintext() {
    let p = pair(PeerAuthMode::Strict).await;
    let c = client();
    for _ in 0..3 {
        let r = get(&c, p.outbound.outbound, "/hello").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(p.inbound.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/servicea",
            ),
            ("response_code", "200"),
        ],
    );
    // The caller's proxy reports the server's identity from the handshake.
    let m = metrics(p.outbound.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/default/sa/serviceb",
            ),
            ("response_code", "200"),
        ],
    );
    // A plaintext client straight to the inbound port is refused, not served.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        client().get(format!("http://{}/", p.inbound_addr).parse().unwrap()),
    )
    .await
    .expect("refused promptly");
    assert!(plain.is_err(), "plaintext must be refused under STRICT");
}

#[tokio::test]
async fn permissive_serves_mtls_and_plaintext_on_one_port() {
    let p = pair(PeerAuthMode::Permissive).await;
    let r = get(&client(), p.outbound.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(&client(), p.inbound_addr, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(p.inbound.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[("connection_security_policy", "mutual_tls")],
    );
    assert_sample(
        &m,
        "istio_requests_total",
        &[("connection_security_policy", "none")],
    );
}

/// The app behind the inbound proxy learns its mTLS caller from x-forwarded-client-cert, as
/// behind Istio's sidecar: the element the inbound proxy appends is the only one, since the
/// caller's proxy drops what its app wrote, and a plaintext request carries none.
#[tokio::test]
async fn the_app_learns_its_mtls_caller_from_x_forwarded_client_cert() {
    let p = pair(PeerAuthMode::Permissive).await;
    let forged = [("x-forwarded-client-cert", "By=spiffe://forged;Hash=0")];
    let r = get_with(&client(), p.outbound.outbound, "/", &forged).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let leaf = CertificateDer::from_pem_file(p.dir.path().join("servicea.pem")).unwrap();
    let hash = mizzen_identity::CertDetails::of(&leaf).unwrap().hash;
    assert_eq!(
        r.header("x-echo-x-forwarded-client-cert"),
        format!(
            "By=spiffe://cluster.local/ns/default/sa/serviceb;Hash={hash};Subject=\"\";\
             URI=spiffe://cluster.local/ns/default/sa/servicea"
        )
    );
    // Plaintext to the inbound port (PERMISSIVE): nobody vouches for the header, so it goes.
    let r = get_with(&client(), p.inbound_addr, "/", &forged).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-echo-x-forwarded-client-cert"), "");
}

#[tokio::test]
async fn a_client_from_another_mesh_is_refused() {
    let p = pair(PeerAuthMode::Strict).await;
    // A proxy whose certificate comes from another root cannot reach the inbound side.
    let dir = tempfile::tempdir().unwrap();
    let other = mizzen_ca::RootCa::generate("cluster.local", Duration::from_secs(86400))
        .unwrap()
        .authority(None)
        .unwrap();
    let stranger = issue(dir.path(), &other, "intruder");
    let mut ep = endpoint(p.inbound_addr, "v1");
    ep.labels
        .insert("security.istio.io/tlsMode".into(), "istio".into());
    let outsider = start_with(&config(vec![serviceb(vec![ep], vec![])]), |c| {
        c.tls = Some(stranger);
    })
    .await;
    let r = get(&client(), outsider.outbound, "/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    // The 503 is the handshake failing, not an answer from the inbound side: it served nothing.
    assert!(
        r.body.contains("connection failure"),
        "expected a connection failure, got: {}",
        r.body
    );
    let m = metrics(p.inbound.prometheus).await;
    assert_eq!(
        sample(
            &m,
            "istio_requests_total",
            &[(
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/intruder"
            )]
        ),
        None,
        "the inbound proxy served the intruder"
    );
}

const SERVICEB: &str = "spiffe://cluster.local/ns/default/sa/serviceb";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";

/// A `servicea` proxy calling the pair's inbound side (which presents `serviceb`), told that
/// the endpoint's identity is `identity` and with the DestinationRule `tls` given.
async fn caller(p: &Pair, identity: Option<&str>, tls: Option<ClientTls>) -> Proxy {
    let client_tls = issue(p.dir.path(), &p.ca, "servicea");
    start_with(&caller_config(p, identity, tls), |c| {
        c.tls = Some(client_tls)
    })
    .await
}

fn caller_config(p: &Pair, identity: Option<&str>, tls: Option<ClientTls>) -> ProxyConfig {
    let mut ep = endpoint(p.inbound_addr, "v1");
    ep.labels
        .insert("security.istio.io/tlsMode".into(), "istio".into());
    ep.identity = identity.map(str::to_string);
    let mut service = serviceb(vec![ep], vec![]);
    service.policy = tls.map(|tls| TrafficPolicy {
        tls: Some(tls),
        ..Default::default()
    });
    config(vec![service])
}

fn istio_mutual(sans: &[&str]) -> ClientTls {
    ClientTls {
        mode: ClientTlsMode::IstioMutual,
        subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The caller got a 503 from its own failed handshake (UF), and the server served nothing.
async fn assert_refused(p: &Pair, caller: &Proxy) {
    let served = || async {
        sample(
            &metrics(p.inbound.prometheus).await,
            "istio_requests_total",
            &[(
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/servicea",
            )],
        )
    };
    let before = served().await;
    let r = get(&client(), caller.outbound, "/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("connection failure"), "{}", r.body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_sample(
        &metrics(caller.prometheus).await,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("response_code", "503"),
            ("response_flags", "UF"),
        ],
    );
    assert_eq!(served().await, before, "the server must not have served it");
}

#[tokio::test]
async fn secure_naming_accepts_only_the_endpoints_service_account() {
    let p = pair(PeerAuthMode::Strict).await;
    // The endpoint's own identity: served, over one set of connectors however many requests.
    let right = caller(&p, Some(SERVICEB), None).await;
    for _ in 0..3 {
        let r = get(&client(), right.outbound, "/").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let tls = right.app.tls.as_ref().unwrap();
    assert_eq!(tls.expected_sets(), 1);
    // A server presenting another service account's certificate than the endpoint's: refused.
    let wrong = caller(&p, Some(REVIEWS), None).await;
    assert_refused(&p, &wrong).await;
}

#[tokio::test]
async fn destination_rule_subject_alt_names_override_the_endpoint_identity() {
    let p = pair(PeerAuthMode::Strict).await;
    let named = caller(&p, Some(REVIEWS), Some(istio_mutual(&[REVIEWS, SERVICEB]))).await;
    let r = get(&client(), named.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A new DestinationRule without the server's name applies to the next connection.
    let narrower = caller_config(&p, Some(SERVICEB), Some(istio_mutual(&[REVIEWS])));
    named.write_config(narrower.to_json().as_bytes());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(&client(), named.outbound, "/").await;
        if r.status == 503 {
            assert!(r.body.contains("connection failure"), "{}", r.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new names never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = caller(&p, Some(SERVICEB), Some(istio_mutual(&[REVIEWS]))).await;
    assert_refused(&p, &other).await;
}

#[tokio::test]
async fn an_endpoint_of_unknown_identity_accepts_any_workload_of_the_trust_domain() {
    let p = pair(PeerAuthMode::Strict).await;
    let any = caller(&p, None, None).await;
    let r = get(&client(), any.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(any.app.tls.as_ref().unwrap().expected_sets(), 0);
}

/// A ServiceEntry's `subjectAltNames` bound an endpoint of unknown identity to those names,
/// and add to an endpoint's own.
#[tokio::test]
async fn service_entry_subject_alt_names_bound_the_endpoints_identity() {
    let p = pair(PeerAuthMode::Strict).await;
    let with_names = |identity: Option<&str>, sans: &[&str]| {
        let mut cfg = caller_config(&p, identity, None);
        cfg.services[0].subject_alt_names = sans.iter().map(|s| s.to_string()).collect();
        cfg
    };
    let start = |cfg: ProxyConfig| {
        let tls = issue(p.dir.path(), &p.ca, "servicea");
        async move { start_with(&cfg, |c| c.tls = Some(tls)).await }
    };
    let listed = start(with_names(None, &[REVIEWS, SERVICEB])).await;
    let r = get(&client(), listed.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let joined = start(with_names(Some(REVIEWS), &[SERVICEB])).await;
    let r = get(&client(), joined.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let unlisted = start(with_names(None, &[REVIEWS])).await;
    assert_refused(&p, &unlisted).await;
}

#[tokio::test]
async fn the_server_reports_its_own_principal_on_mtls_requests() {
    let p = pair(PeerAuthMode::Permissive).await;
    let r = get(&client(), p.outbound.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(&client(), p.inbound_addr, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(p.inbound.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("destination_principal", SERVICEB),
        ],
    );
    // Plaintext: nobody proved an identity, so it stays unknown.
    assert_sample(
        &m,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "none"),
            ("destination_principal", "unknown"),
        ],
    );
}
