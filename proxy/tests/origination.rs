//! TLS origination (DestinationRule `tls.mode` SIMPLE and MUTUAL) to an HTTPS backend on
//! loopback that is not in the mesh: the app speaks plaintext to its proxy, the proxy speaks TLS
//! to the backend, verifying it against the DestinationRule's CA file (and presenting the
//! client certificate files for MUTUAL). Files are re-read when they change. The same for a
//! TCP port: the bytes the app writes in plaintext reach the backend over TLS.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mizzen_proxy_config::{ClientTls, ClientTlsMode, Protocol, TrafficPolicy};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

type Ca = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A leaf for `names` signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    numbered_leaf(ca, names, None)
}

/// [`leaf`] with the serial number given (random when `None`).
fn numbered_leaf(ca: &Ca, names: &[&str], serial: Option<u64>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.serial_number = serial.map(rcgen::SerialNumber::from);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server config for `HOST` with a certificate from `server_ca`; with `client_ca` it
/// requires a client certificate from that CA.
fn acceptor(server_ca: &Ca, client_ca: Option<&Ca>) -> TlsAcceptor {
    serving(leaf(server_ca, &[HOST]), client_ca)
}

/// A TLS server config presenting `(cert, key)` (PEM); see [`acceptor`].
fn serving((cert, key): (String, String), client_ca: Option<&Ca>) -> TlsAcceptor {
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// A TLS server (see [`acceptor`]): each connection handed to `serve` once its handshake is
/// done, with whether the client presented a certificate.
async fn tls_server<F, Fut>(server_ca: &Ca, client_ca: Option<&Ca>, serve: F) -> SocketAddr
where
    F: Fn(TlsStream<TcpStream>, bool) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tls_server_with(acceptor(server_ca, client_ca), serve).await
}

async fn tls_server_with<F, Fut>(acceptor: TlsAcceptor, serve: F) -> SocketAddr
where
    F: Fn(TlsStream<TcpStream>, bool) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, serve) = (acceptor.clone(), serve.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let client_cert = tls.get_ref().1.peer_certificates().is_some();
                    serve(tls, client_cert).await;
                }
            });
        }
    });
    addr
}

/// An HTTPS backend that answers with whether the client presented a certificate.
async fn https_backend(server_ca: &Ca, client_ca: Option<&Ca>) -> SocketAddr {
    https_backend_with(acceptor(server_ca, client_ca)).await
}

async fn https_backend_with(acceptor: TlsAcceptor) -> SocketAddr {
    tls_server_with(acceptor, |tls, client_cert| async move {
        let service = service_fn(move |_req| async move {
            let body = format!("tls backend; client certificate: {client_cert}");
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .await;
    })
    .await
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// A proxy whose route to `HOST` goes to `backend` with the DestinationRule `tls` given.
async fn proxy_to(backend: SocketAddr, tls: ClientTls) -> Proxy {
    let mut service = serviceb(vec![endpoint(backend, "v1")], vec![]);
    service.policy = Some(TrafficPolicy {
        tls: Some(tls),
        ..Default::default()
    });
    start(&config(vec![service])).await
}

/// MUTUAL with a client certificate from `client_ca` (files written in `dir`), verifying the
/// server against `ca_file`.
fn mutual(dir: &Path, client_ca: &Ca, ca_file: &Path) -> ClientTls {
    let (cert, key) = leaf(client_ca, &["sleep.default"]);
    ClientTls {
        mode: ClientTlsMode::Mutual,
        client_certificate: Some(write(dir, "client.pem", &cert).display().to_string()),
        private_key: Some(write(dir, "client.key", &key).display().to_string()),
        ..simple(ca_file)
    }
}

fn simple(ca_file: &Path) -> ClientTls {
    ClientTls {
        mode: ClientTlsMode::Simple,
        ca_certificates: Some(ca_file.display().to_string()),
        ..Default::default()
    }
}

async fn assert_uf(proxy: &Proxy) {
    let r = get(&client(), proxy.outbound, "/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_sample(
        &metrics(proxy.prometheus).await,
        "istio_requests_total",
        &[("response_code", "503"), ("response_flags", "UF")],
    );
}

#[tokio::test]
async fn simple_verifies_the_server_against_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("backend-ca");
    let backend = https_backend(&server_ca, None).await;
    let ca_file = write(dir.path(), "ca.pem", &server_ca.pem());
    let proxy = proxy_to(backend, simple(&ca_file)).await;
    let r = get(&client(), proxy.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "tls backend; client certificate: false");

    // Another CA: the handshake fails, a connection failure.
    let other = write(dir.path(), "other.pem", &ca("other-ca").pem());
    assert_uf(&proxy_to(backend, simple(&other)).await).await;

    // subjectAltNames replace the SNI check: a name the certificate lacks is refused, its own
    // name passes; `sni` picks what is sent and checked without them.
    let wrong_name = ClientTls {
        subject_alt_names: vec!["api.example.com".into()],
        ..simple(&ca_file)
    };
    assert_uf(&proxy_to(backend, wrong_name).await).await;
    let right_name = ClientTls {
        subject_alt_names: vec!["api.example.com".into(), HOST.into()],
        ..simple(&ca_file)
    };
    let r = get(&client(), proxy_to(backend, right_name).await.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let wrong_sni = ClientTls {
        sni: Some("api.example.com".into()),
        ..simple(&ca_file)
    };
    assert_uf(&proxy_to(backend, wrong_sni).await).await;

    // insecureSkipVerify: any certificate will do.
    let skip = ClientTls {
        insecure_skip_verify: true,
        ..simple(&other)
    };
    let r = get(&client(), proxy_to(backend, skip).await.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `caCrl`: the server's chain is checked against the lists, as Envoy checks it. A revoked
/// certificate, an issuer without a list, or a list past its next update fail the handshake
/// (503 UF); a current list that does not name the certificate lets it through.
#[tokio::test]
async fn ca_crl_refuses_a_revoked_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("backend-ca");
    let backend =
        https_backend_with(serving(numbered_leaf(&server_ca, &[HOST], Some(7)), None)).await;
    let ca_file = write(dir.path(), "ca.pem", &server_ca.pem());
    let with_crl = |name: &str, pem: String| ClientTls {
        ca_crl: Some(write(dir.path(), name, &pem).display().to_string()),
        ..simple(&ca_file)
    };
    let good = with_crl("good.pem", crl(&server_ca, &[3, 9], 2099));
    let r = get(&client(), proxy_to(backend, good).await.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let revoked = crl(&server_ca, &[3, 7], 2099);
    assert_uf(&proxy_to(backend, with_crl("revoked.pem", revoked)).await).await;
    let elsewhere = crl(&ca("other-ca"), &[], 2099);
    assert_uf(&proxy_to(backend, with_crl("elsewhere.pem", elsewhere)).await).await;
    let stale = crl(&server_ca, &[], 2026);
    assert_uf(&proxy_to(backend, with_crl("stale.pem", stale)).await).await;
}

#[tokio::test]
async fn mutual_presents_the_client_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("backend-ca");
    let client_ca = ca("client-ca");
    let backend = https_backend(&server_ca, Some(&client_ca)).await;
    let ca_file = write(dir.path(), "ca.pem", &server_ca.pem());
    let mutual = mutual(dir.path(), &client_ca, &ca_file);
    let r = get(&client(), proxy_to(backend, mutual).await.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "tls backend; client certificate: true");
    // Without the client certificate, the backend refuses it. Under TLS 1.3 the client's side
    // of the handshake is done before the server says so, so the refusal may arrive as a reset
    // of the request (UR) rather than a connection failure (UF): a 503 either way.
    let r = get(
        &client(),
        proxy_to(backend, simple(&ca_file)).await.outbound,
        "/",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    // credentialName is for gateways: a sidecar refuses it rather than go without a cert.
    let credential = ClientTls {
        mode: ClientTlsMode::Mutual,
        credential_name: Some("client-credential".into()),
        ..simple(&ca_file)
    };
    assert_uf(&proxy_to(backend, credential).await).await;
}

#[tokio::test]
async fn a_changed_ca_file_is_read_again_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("backend-ca");
    let backend = https_backend(&server_ca, None).await;
    let ca_file = write(dir.path(), "ca.pem", &ca("old-ca").pem());
    let proxy = proxy_to(backend, simple(&ca_file)).await;
    assert_uf(&proxy).await;
    // The mounted CA is replaced (given a later modification time, whatever the clock's
    // granularity): the next connection verifies against the new one.
    std::fs::write(&ca_file, server_ca.pem()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&ca_file)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let r = get(&client(), proxy.outbound, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A TLS server speaking no HTTP: it writes whether the client presented a certificate, then
/// echoes what it reads.
async fn tls_echo(server_ca: &Ca, client_ca: Option<&Ca>) -> SocketAddr {
    tls_server(server_ca, client_ca, |tls, client_cert| async move {
        let (mut r, mut w) = tokio::io::split(tls);
        let hello = format!("client certificate: {client_cert}\n");
        if w.write_all(hello.as_bytes()).await.is_ok() {
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    })
    .await
}

/// A proxy whose TCP service `HOST` goes to `backend` with the DestinationRule `tls` given.
async fn tcp_proxy_to(backend: SocketAddr, tls: ClientTls) -> Proxy {
    let mut service = serviceb(vec![endpoint(backend, "v1")], vec![]);
    service.ports[0].protocol = Protocol::Tcp;
    service.policy = Some(TrafficPolicy {
        tls: Some(tls),
        ..Default::default()
    });
    start(&config(vec![service])).await
}

/// Writes `ping` through the proxy's TCP port; what comes back before the connection closes
/// (or 5 s pass).
async fn tcp_exchange(proxy: &Proxy) -> String {
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(b"ping\n").await.unwrap();
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 256];
        while !got.ends_with(b"ping\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_tcp_port_originates_tls_simple_and_mutual() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("backend-ca");
    let client_ca = ca("client-ca");
    let ca_file = write(dir.path(), "ca.pem", &server_ca.pem());

    let backend = tls_echo(&server_ca, None).await;
    let proxy = tcp_proxy_to(backend, simple(&ca_file)).await;
    assert_eq!(
        tcp_exchange(&proxy).await,
        "client certificate: false\nping\n"
    );
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_tcp_connections_opened_total",
        &[("destination_service", HOST), ("response_flags", "-")],
    );

    let backend = tls_echo(&server_ca, Some(&client_ca)).await;
    let mutual = mutual(dir.path(), &client_ca, &ca_file);
    let proxy = tcp_proxy_to(backend, mutual).await;
    assert_eq!(
        tcp_exchange(&proxy).await,
        "client certificate: true\nping\n"
    );
}

#[tokio::test]
async fn a_tcp_port_refuses_a_server_its_ca_file_does_not_vouch_for() {
    let dir = tempfile::tempdir().unwrap();
    let backend = tls_echo(&ca("backend-ca"), None).await;
    let other = write(dir.path(), "other.pem", &ca("other-ca").pem());
    let proxy = tcp_proxy_to(backend, simple(&other)).await;
    // Closed without a byte: never sent in plaintext, never to an unverified server.
    assert_eq!(tcp_exchange(&proxy).await, "");
    let closed = [("destination_service", HOST), ("response_flags", "UF")];
    let m = "istio_tcp_connections_closed_total";
    assert!(
        sample_becomes(proxy.prometheus, m, &closed, 1.0).await,
        "{}",
        metrics(proxy.prometheus).await
    );
}
