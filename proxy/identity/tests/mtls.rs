//! mTLS between two stores over real sockets on 127.0.0.1, with certificates from the mesh CA.

use std::sync::Arc;
use std::time::Duration;

use mizzen_ca::{
    Authority, DEFAULT_NODE_CA_TTL, DEFAULT_ROOT_VALIDITY, DEFAULT_WORKLOAD_TTL, RootCa,
    node_ca_request,
};
use mizzen_identity::tls::{self, TlsError};
use mizzen_identity::{CertStore, CertificateRequest, ExpectedPeer, SpiffeId, TrustBundle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LIMIT: Duration = Duration::from_secs(10);

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn server_id() -> SpiffeId {
    id("spiffe://cluster.local/ns/shop/sa/cart")
}

fn client_id() -> SpiffeId {
    id("spiffe://cluster.local/ns/web/sa/frontend")
}

/// A root and one node CA under it.
fn node_ca(root: &RootCa, roots: Option<TrustBundle>) -> Authority {
    let parent = root.authority(roots).unwrap();
    let request = node_ca_request("node-1").unwrap();
    let issued = parent
        .sign_node_ca(&request.csr_pem, "node-1", DEFAULT_NODE_CA_TTL)
        .unwrap();
    Authority::from_node_ca(&issued.chain_pem, request.key, parent.roots().clone()).unwrap()
}

/// Issues a fresh certificate for the store's identity and installs it with `bundle` (or the
/// authority's roots). Returns the new leaf, DER.
fn renew(store: &CertStore, ca: &Authority, bundle: Option<TrustBundle>) -> Vec<u8> {
    let request = CertificateRequest::for_workload(store.id()).unwrap();
    let issued = ca
        .sign_workload(&request.csr_pem, store.id(), DEFAULT_WORKLOAD_TTL)
        .unwrap();
    let bundle = bundle.unwrap_or_else(|| ca.roots().clone());
    store
        .update(&issued.chain_pem, request.key, bundle)
        .unwrap();
    store.certified_key().unwrap().cert[0].to_vec()
}

fn store(ca: &Authority, who: SpiffeId) -> Arc<CertStore> {
    let store = CertStore::new(who);
    renew(&store, ca, None);
    store
}

/// What the server saw of one accepted connection.
#[derive(Debug)]
struct Accepted {
    peer: Option<SpiffeId>,
    alpn: Option<Vec<u8>>,
}

/// An echo server: reports each handshake's outcome, then echoes until the client closes.
async fn serve(
    store: Arc<CertStore>,
    require_client_cert: bool,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<Accepted, String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(
        tls::server_config(&store, require_client_cert).unwrap(),
    ));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let (_, conn) = tls.get_ref();
                        let _ = tx.send(Ok(Accepted {
                            peer: tls::peer_identity(conn),
                            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                        }));
                        let mut buf = [0u8; 1024];
                        loop {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if tls.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(
    addr: std::net::SocketAddr,
    store: &Arc<CertStore>,
    expected: ExpectedPeer,
) -> std::io::Result<ClientStream> {
    let connector = TlsConnector::from(Arc::new(tls::client_config(store, expected).unwrap()));
    let tcp = TcpStream::connect(addr).await?;
    let sni = tls::outbound_sni(8080, "v1", "cart.shop.svc.cluster.local").unwrap();
    let mut stream = connector.connect(sni, tcp).await?;
    // TLS 1.3: the server checks the client certificate after the client's handshake is done;
    // a round trip makes its verdict visible to the client.
    echo(&mut stream, b"ping").await?;
    Ok(stream)
}

async fn echo(stream: &mut ClientStream, msg: &[u8]) -> std::io::Result<()> {
    stream.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await?;
    assert_eq!(back, msg);
    Ok(())
}

#[tokio::test]
async fn mutual_tls_both_sides_see_the_spiffe_ids() {
    timeout(LIMIT, async {
        let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
        let ca = node_ca(&root, None);
        let server = store(&ca, server_id());
        let client = store(&ca, client_id());
        let (addr, mut accepted) = serve(server, true).await;

        let stream = connect(addr, &client, ExpectedPeer::OneOf(vec![server_id()]))
            .await
            .unwrap();
        let (_, conn) = stream.get_ref();
        assert_eq!(tls::peer_identity(conn), Some(server_id()));
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));

        let seen = accepted.recv().await.unwrap().unwrap();
        assert_eq!(seen.peer, Some(client_id()));
        assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn client_from_another_root_is_refused() {
    timeout(LIMIT, async {
        let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
        let stranger = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
        let ca = node_ca(&root, None);
        let stranger_ca = node_ca(&stranger, None);
        let server = store(&ca, server_id());
        // The client trusts our root (so it accepts the server) but holds a foreign cert.
        let client = CertStore::new(client_id());
        renew(&client, &stranger_ca, Some(root_and(&stranger, &root)));
        let (addr, mut accepted) = serve(server, true).await;

        let result = connect(addr, &client, ExpectedPeer::Any).await;
        assert!(result.is_err(), "a foreign client certificate was accepted");
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    })
    .await
    .unwrap();
}

fn root_and(a: &RootCa, b: &RootCa) -> TrustBundle {
    TrustBundle::from_der([a.cert_der().clone(), b.cert_der().clone()]).unwrap()
}

#[tokio::test]
async fn server_with_an_unexpected_identity_is_refused() {
    timeout(LIMIT, async {
        let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
        let ca = node_ca(&root, None);
        let server = store(&ca, server_id());
        let client = store(&ca, client_id());
        let (addr, _accepted) = serve(server, true).await;

        let expected = ExpectedPeer::OneOf(vec![id("spiffe://cluster.local/ns/shop/sa/payments")]);
        let err = connect(addr, &client, expected).await.unwrap_err();
        assert!(
            err.to_string().contains(
                "server identity `spiffe://cluster.local/ns/shop/sa/cart` is not one of \
                 [`spiffe://cluster.local/ns/shop/sa/payments`]"
            ),
            "{err}"
        );

        // A server of another trust domain fails the trust-domain-only check.
        let foreign = store(&ca, id("spiffe://other.mesh/ns/shop/sa/cart"));
        let (foreign_addr, _foreign_accepted) = serve(foreign, true).await;
        let err = connect(foreign_addr, &client, ExpectedPeer::Any)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "server identity `spiffe://other.mesh/ns/shop/sa/cart` is not in trust domain \
                 `cluster.local`"
            ),
            "{err}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rotation_applies_to_the_next_handshake_and_keeps_open_connections() {
    timeout(LIMIT, async {
        let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
        let ca = node_ca(&root, None);
        let server = store(&ca, server_id());
        let client = store(&ca, client_id());
        let first_leaf = server.certified_key().unwrap().cert[0].to_vec();
        let (addr, _accepted) = serve(server.clone(), true).await;
        let expected = ExpectedPeer::OneOf(vec![server_id()]);

        let mut open = connect(addr, &client, expected.clone()).await.unwrap();
        assert_eq!(
            open.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
            first_leaf
        );

        let second_leaf = renew(&server, &ca, None);
        renew(&client, &ca, None);
        assert_ne!(first_leaf, second_leaf);

        let fresh = connect(addr, &client, expected).await.unwrap();
        assert_eq!(
            fresh.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
            second_leaf
        );
        // The connection made before the rotation still carries traffic.
        echo(&mut open, b"still here").await.unwrap();
        assert_eq!(
            open.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
            first_leaf
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn two_roots_in_the_bundle_both_verify() {
    timeout(LIMIT, async {
        let old = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
        let new = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
        let both = root_and(&old, &new);
        let old_ca = node_ca(&old, Some(both.clone()));
        let new_ca = node_ca(&new, Some(both.clone()));
        let server = store(&old_ca, server_id());
        let client = store(&new_ca, client_id());
        let (addr, mut accepted) = serve(server.clone(), true).await;

        connect(addr, &client, ExpectedPeer::Any).await.unwrap();
        assert_eq!(
            accepted.recv().await.unwrap().unwrap().peer,
            Some(client_id())
        );

        // And the other way round, after the server moved to the new root.
        renew(&server, &new_ca, None);
        renew(&client, &old_ca, None);
        connect(addr, &client, ExpectedPeer::Any).await.unwrap();
        assert_eq!(
            accepted.recv().await.unwrap().unwrap().peer,
            Some(client_id())
        );

        // Once the old root is retired, a chain to it is refused.
        server.set_bundle(TrustBundle::from_der([new.cert_der().clone()]).unwrap());
        assert!(connect(addr, &client, ExpectedPeer::Any).await.is_err());
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn client_without_a_certificate_needs_optional_client_auth() {
    timeout(LIMIT, async {
        let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
        let ca = node_ca(&root, None);
        let server = store(&ca, server_id());
        // A client store with roots but no certificate of its own yet.
        let bare = CertStore::new(client_id());
        bare.set_bundle(ca.roots().clone());

        let (strict, mut strict_seen) = serve(server.clone(), true).await;
        assert!(connect(strict, &bare, ExpectedPeer::Any).await.is_err());
        let err = strict_seen.recv().await.unwrap().unwrap_err();
        assert!(
            err.contains("NoCertificatesPresented") || err.contains("certificate"),
            "{err}"
        );

        let (optional, mut optional_seen) = serve(server, false).await;
        connect(optional, &bare, ExpectedPeer::Any).await.unwrap();
        assert_eq!(optional_seen.recv().await.unwrap().unwrap().peer, None);
    })
    .await
    .unwrap();
}

#[test]
fn store_refuses_material_for_another_identity_or_key() {
    let root = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let ca = node_ca(&root, None);
    let store = store(&ca, server_id());
    let before = store.certified_key().unwrap().cert[0].to_vec();

    // A certificate for someone else.
    let other = client_id();
    let request = CertificateRequest::for_workload(&other).unwrap();
    let issued = ca
        .sign_workload(&request.csr_pem, &other, DEFAULT_WORKLOAD_TTL)
        .unwrap();
    let err = store
        .update(&issued.chain_pem, request.key, ca.roots().clone())
        .unwrap_err();
    assert!(matches!(err, TlsError::WrongIdentity { .. }), "{err}");

    // The right certificate with the wrong key.
    let request = CertificateRequest::for_workload(store.id()).unwrap();
    let issued = ca
        .sign_workload(&request.csr_pem, store.id(), DEFAULT_WORKLOAD_TTL)
        .unwrap();
    let wrong_key = CertificateRequest::for_workload(store.id()).unwrap().key;
    let err = store
        .update(&issued.chain_pem, wrong_key, ca.roots().clone())
        .unwrap_err();
    assert!(matches!(err, TlsError::Key(_)), "{err}");

    // The right certificate with a bundle it does not chain to.
    let stranger = RootCa::generate("cluster.local", DEFAULT_ROOT_VALIDITY).unwrap();
    let foreign = TrustBundle::from_der([stranger.cert_der().clone()]).unwrap();
    let err = store
        .update(&issued.chain_pem, request.key, foreign)
        .unwrap_err();
    assert!(matches!(err, TlsError::Untrusted(_)), "{err}");

    // Nothing changed.
    assert_eq!(store.certified_key().unwrap().cert[0].to_vec(), before);
    assert_eq!(store.bundle().unwrap().as_ref(), ca.roots());
}
