//! Mesh mTLS between two proxies on loopback: the outbound proxy originates mTLS to a meshed
//! endpoint, the inbound proxy terminates it per PeerAuthentication, learns the caller's SPIFFE
//! identity and reports it; STRICT refuses plaintext, PERMISSIVE serves both.

mod support;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use mizzen_identity::{CertificateRequest, SpiffeId};
use mizzen_proxy::{env::InboundListener, mtls::MeshTls};
use mizzen_proxy_config::{InboundConfig, PeerAuthMode, PeerAuthentication, ProxyConfig};
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
