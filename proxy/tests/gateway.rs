//! Gateway mode with real sockets on loopback: the bookinfo Gateway and its cookie-matching
//! VirtualService (fixture `gateway-and-cookie-match.yaml`), selectors, httpsRedirect, TLS at
//! the edge (SIMPLE, MUTUAL, PASSTHROUGH, cipherSuites, an RSA and an ECDSA credential), a
//! certificate rotated under load, and the gateway's metrics.

mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mizzen_proxy::{
    app::App,
    env::{Config, GatewaySettings, Workload, WorkloadFlags},
};
use mizzen_proxy_config::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const PRODUCTPAGE: &str = "productpage.default.svc.cluster.local";
const SECURE: &str = "secure.default.svc.cluster.local";
const GATEWAY: &str = "default/bookinfo-gateway";

// ---- config ------------------------------------------------------------------------------

fn ingress_selector() -> BTreeMap<String, String> {
    [("istio".to_string(), "ingressgateway".to_string())].into()
}

fn service(host: &str, port: u16, protocol: Protocol, backend: SocketAddr) -> Service {
    let name = if protocol == Protocol::Tls {
        "tls"
    } else {
        "http"
    };
    Service {
        host: host.into(),
        namespace: "default".into(),
        ports: vec![ServicePort {
            number: port,
            name: name.into(),
            protocol,
            target_port: None,
        }],
        endpoints: vec![Endpoint {
            address: backend.ip().to_string(),
            ports: [(name.to_string(), backend.port())].into(),
            labels: [("app".to_string(), "productpage".to_string())].into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn to_productpage(name: &str, matches: Vec<HttpMatch>) -> HttpRoute {
    HttpRoute {
        name: name.into(),
        matches,
        action: HttpAction::Route(vec![WeightedDestination {
            destination: Destination {
                host: PRODUCTPAGE.into(),
                subset: None,
                port: Some(9080),
            },
            weight: 100,
            headers: HeaderOps::default(),
        }]),
        retry: Some(Retry::disabled()),
        ..Default::default()
    }
}

/// What the fixture renders to: Gateway `bookinfo-gateway` (port 80, HTTP, hosts `*`) and
/// VirtualService `bookinfo` (host test.techup.xy, cookie `user=b-nova` to productpage:9080).
fn bookinfo_server() -> Server {
    Server {
        gateway: GATEWAY.into(),
        selector: ingress_selector(),
        port: 80,
        name: "http".into(),
        protocol: ServerProtocol::Http,
        hosts: vec!["*".into()],
        virtual_hosts: vec![VirtualHost {
            virtual_service: "default/bookinfo".into(),
            hosts: vec!["test.techup.xy".into()],
            routes: vec![to_productpage(
                "bookinfo",
                vec![HttpMatch {
                    headers: vec![HeaderMatch {
                        name: "cookie".into(),
                        value: Some(StringMatcher::Regex("^(.*;?)?(user=b-nova)(;.*)?".into())),
                        invert: false,
                    }],
                    ..Default::default()
                }],
            )],
        }],
        ..Default::default()
    }
}

fn tls_server(port: u16, hosts: &[&str], mode: ServerTlsMode, credential: &str) -> Server {
    let passthrough = mode == ServerTlsMode::Passthrough;
    Server {
        gateway: GATEWAY.into(),
        selector: ingress_selector(),
        port,
        name: format!("tls-{port}"),
        protocol: if passthrough {
            ServerProtocol::Tls
        } else {
            ServerProtocol::Https
        },
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        tls: Some(ServerTls {
            mode,
            credential_name: (!passthrough).then(|| credential.to_string()),
            ..Default::default()
        }),
        virtual_hosts: if passthrough {
            vec![]
        } else {
            vec![VirtualHost {
                virtual_service: "default/shop".into(),
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                routes: vec![to_productpage("shop", vec![])],
            }]
        },
        ..Default::default()
    }
}

fn gateway_config(servers: Vec<Server>, services: Vec<Service>) -> ProxyConfig {
    let mut c = ProxyConfig::new("istio-system");
    c.services = services;
    c.gateway = Some(GatewayConfig { servers });
    c
}

// ---- the gateway in-process ----------------------------------------------------------------

struct Gateway {
    ports: BTreeMap<u16, SocketAddr>,
    prometheus: SocketAddr,
    credentials: tempfile::TempDir,
    shared: Arc<mizzen_proxy::app::Shared>,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn addr(&self, port: u16) -> SocketAddr {
        self.ports[&port]
    }

    /// Where the gateway listens for `port` now.
    fn bound(&self, port: u16) -> Option<SocketAddr> {
        self.shared
            .gateway
            .as_ref()
            .unwrap()
            .bound()
            .get(&port)
            .copied()
    }

    /// Replaces the config file, as a ConfigMap update would.
    fn write_config(&self, cfg: &ProxyConfig) {
        let tmp = self.dir.path().join("config.json.tmp");
        std::fs::write(&tmp, cfg.to_json()).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }
}

/// Starts a gateway labelled `istio=ingressgateway` with every server port of `cfg` (and
/// `more` ports, for later configs) mapped to a free loopback port; `credentials` prepares the
/// credentials directory first.
async fn start_gateway(
    cfg: &ProxyConfig,
    more: &[u16],
    credentials: impl FnOnce(&Path),
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    credentials(creds.path());
    let path = dir.path().join("config.json");
    std::fs::write(&path, cfg.to_json()).unwrap();
    let labels: BTreeMap<String, String> = [
        ("istio".to_string(), "ingressgateway".to_string()),
        ("app".to_string(), "istio-ingressgateway".to_string()),
    ]
    .into();
    let workload = Workload::for_gateway(
        &BTreeMap::new(),
        &WorkloadFlags {
            name: Some("mizzen-ingressgateway".into()),
            namespace: Some("istio-system".into()),
            ..Default::default()
        },
        &labels,
    );
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let port_map = cfg
        .gateway
        .iter()
        .flat_map(|g| &g.servers)
        .map(|s| s.port)
        .chain(more.iter().copied())
        .map(|p| (p, any))
        .collect();
    let settings = GatewaySettings {
        labels,
        credentials_dir: creds.path().to_path_buf(),
        bind: any.ip(),
        port_map,
    };
    let mut c = Config::gateway(path.clone(), workload, settings);
    c.admin = Some(any);
    c.health = Some(any);
    c.prometheus = Some(any);
    c.poll_interval = Duration::from_millis(200);
    c.drain = Duration::from_secs(1);
    c.access_log = false;
    let app = App::bind(c, None).await.unwrap();
    let bound = app.bound.clone();
    let shared = app.shared.clone();
    tokio::spawn(app.run());
    Gateway {
        ports: bound.gateway,
        prometheus: bound.prometheus.unwrap(),
        credentials: creds,
        shared,
        config: path,
        dir,
    }
}

async fn request(
    client: &TestClient,
    addr: SocketAddr,
    host: &str,
    path: &str,
    cookie: Option<&str>,
) -> Reply {
    let mut b = http::Request::get(format!("http://{addr}{path}")).header("host", host);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    send(client, b.body(Full::new(Bytes::new())).unwrap()).await
}

// ---- TLS material --------------------------------------------------------------------------

type Ca = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// An ECDSA P-256 leaf for `names` signed by `ca`: (certificate PEM, key PEM, certificate DER).
fn leaf(ca: &Ca, names: &[&str]) -> (String, String, CertificateDer<'static>) {
    leaf_of(rcgen::KeyPair::generate().unwrap(), ca, names)
}

/// An RSA leaf (ring cannot generate RSA keys: the key the JWT tests sign with).
fn rsa_leaf(ca: &Ca, names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::from_pem(include_str!("../policy/testdata/rsa.pem")).unwrap();
    leaf_of(key, ca, names)
}

/// A leaf of `key` for `names` signed by `ca`.
fn leaf_of(
    key: rcgen::KeyPair,
    ca: &Ca,
    names: &[&str],
) -> (String, String, CertificateDer<'static>) {
    numbered_leaf_of(key, ca, names, None)
}

/// [`leaf_of`] with the serial number given (random when `None`).
fn numbered_leaf_of(
    key: rcgen::KeyPair,
    ca: &Ca,
    names: &[&str],
    serial: Option<u64>,
) -> (String, String, CertificateDer<'static>) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.serial_number = serial.map(rcgen::SerialNumber::from);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

fn write_credential(dir: &Path, name: &str, cert: &str, key: &str) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tls.crt"), cert).unwrap();
    std::fs::write(d.join("tls.key"), key).unwrap();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Ca) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    Arc::new(roots)
}

/// A client trusting `ca`, presenting `client` (certificate PEM, key PEM) if given.
fn connector(ca: &Ca, client: Option<(&str, &str)>, alpn: &[&[u8]]) -> TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    let mut config = match client {
        Some((cert, key)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

use rustls::pki_types::pem::PemObject;

/// A client trusting `ca` that speaks only `version` with only `suites`, and offers only the
/// signature schemes `schemes` keeps (so only certificates with those key types are usable).
fn narrow_connector(
    ca: &Ca,
    version: &'static rustls::SupportedProtocolVersion,
    suites: &[rustls::SupportedCipherSuite],
    schemes: fn(rustls::SignatureScheme) -> bool,
) -> TlsConnector {
    let mut provider = rustls::crypto::ring::default_provider();
    if !suites.is_empty() {
        provider.cipher_suites = suites.to_vec();
    }
    let provider = Arc::new(provider);
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca), provider.clone())
            .build()
            .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(OnlySchemes { inner, schemes }))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// WebPKI verification that advertises only some signature schemes.
#[derive(Debug)]
struct OnlySchemes {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    schemes: fn(rustls::SignatureScheme) -> bool,
}

impl rustls::client::danger::ServerCertVerifier for OnlySchemes {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        let mut schemes = self.inner.supported_verify_schemes();
        schemes.retain(|s| (self.schemes)(*s));
        schemes
    }
}

fn ecdsa_schemes(s: rustls::SignatureScheme) -> bool {
    use rustls::SignatureScheme::*;
    matches!(
        s,
        ECDSA_NISTP256_SHA256 | ECDSA_NISTP384_SHA384 | ECDSA_NISTP521_SHA512
    )
}

fn rsa_schemes(s: rustls::SignatureScheme) -> bool {
    use rustls::SignatureScheme::*;
    matches!(
        s,
        RSA_PKCS1_SHA256
            | RSA_PKCS1_SHA384
            | RSA_PKCS1_SHA512
            | RSA_PSS_SHA256
            | RSA_PSS_SHA384
            | RSA_PSS_SHA512
    )
}

fn any_scheme(_: rustls::SignatureScheme) -> bool {
    true
}

/// A handshake alone: (version, cipher suite, the server's certificate).
async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> Result<
    (
        rustls::ProtocolVersion,
        rustls::CipherSuite,
        CertificateDer<'static>,
    ),
    String,
> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tls.get_ref().1;
    Ok((
        conn.protocol_version().unwrap(),
        conn.negotiated_cipher_suite().unwrap().suite(),
        conn.peer_certificates().unwrap()[0].clone(),
    ))
}

/// One HTTPS GET on a new connection: (status, x-backend, the server's certificate).
async fn https_get(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> Result<(u16, String, CertificateDer<'static>), String> {
    let got = https_send(connector, addr, sni, &[]).await?;
    let backend = got
        .headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((got.status, backend, got.cert))
}

struct Got {
    status: u16,
    headers: http::HeaderMap,
    /// The server's certificate.
    cert: CertificateDer<'static>,
}

/// One HTTPS GET of `/productpage` with `headers` on a new connection.
async fn https_send(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
    headers: &[(&str, &str)],
) -> Result<Got, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get("/productpage").header("host", sni);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(Got {
        status,
        headers,
        cert,
    })
}

const FORGED_XFCC: (&str, &str) = ("x-forwarded-client-cert", "By=spiffe://forged;Hash=0");

// ---- tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_routes_by_host_and_cookie_and_refuses_others_with_nr() {
    let backend = backend("productpage").await;
    let mut other = bookinfo_server();
    other.selector = [("istio".to_string(), "egressgateway".to_string())].into();
    other.port = 8081;
    let cfg = gateway_config(
        vec![bookinfo_server(), other],
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend.addr)],
    );
    let gw = start_gateway(&cfg, &[], |_| {}).await;
    // The server selecting other gateways is not served: no listener for its port.
    assert_eq!(gw.ports.keys().copied().collect::<Vec<_>>(), vec![80]);

    let c = client();
    let at = gw.addr(80);
    let r = request(
        &c,
        at,
        "test.techup.xy",
        "/productpage",
        Some("session=1; user=b-nova"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-backend"), "productpage");
    // The caller's Host goes upstream, with the port stripped nowhere.
    assert_eq!(r.header("x-echo-host"), "test.techup.xy");
    let r = request(&c, at, "test.techup.xy:80", "/", Some("user=b-nova")).await;
    assert_eq!(r.status, 200);

    // No cookie, another user, another host: no route.
    for (host, cookie) in [
        ("test.techup.xy", None),
        ("test.techup.xy", Some("user=someone")),
        ("other.example.com", Some("user=b-nova")),
    ] {
        let r = request(&c, at, host, "/", cookie).await;
        assert_eq!(r.status, 404, "{host} {cookie:?}");
    }
    assert_eq!(backend.hits(), 2);

    let text = metrics(gw.prometheus).await;
    assert_sample(
        &text,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("source_workload", "mizzen-ingressgateway"),
            ("source_workload_namespace", "istio-system"),
            ("source_app", "istio-ingressgateway"),
            ("destination_service", PRODUCTPAGE),
            ("destination_app", "productpage"),
            ("response_code", "200"),
            ("response_flags", "-"),
        ],
    );
    assert_eq!(
        sample(
            &text,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("response_code", "404"),
                ("response_flags", "NR")
            ]
        ),
        Some(3.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirect_answers_301_to_https() {
    let mut redirect = bookinfo_server();
    redirect.hosts = vec!["secure.example.com".into()];
    redirect.https_redirect = true;
    redirect.virtual_hosts.clear();
    let cfg = gateway_config(vec![redirect], vec![]);
    let gw = start_gateway(&cfg, &[], |_| {}).await;
    let r = request(
        &client(),
        gw.addr(80),
        "secure.example.com:80",
        "/cart?id=7",
        None,
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), "https://secure.example.com/cart?id=7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_terminates_with_the_credential_and_routes_by_host() {
    let backend = backend("productpage").await;
    let root = ca("edge-ca");
    let (cert, key, der) = leaf(&root, &["shop.example.com"]);
    let cfg = gateway_config(
        vec![tls_server(
            443,
            &["shop.example.com"],
            ServerTlsMode::Simple,
            "shop-cert",
        )],
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend.addr)],
    );
    let gw = start_gateway(&cfg, &[], |d| write_credential(d, "shop-cert", &cert, &key)).await;
    let tls = connector(&root, None, &[b"http/1.1"]);
    let (status, from, served) = https_get(&tls, gw.addr(443), "shop.example.com")
        .await
        .unwrap();
    assert_eq!((status, from.as_str()), (200, "productpage"));
    assert_eq!(served, der);
    // No client certificate: an x-forwarded-client-cert the client wrote does not pass.
    let got = https_send(&tls, gw.addr(443), "shop.example.com", &[FORGED_XFCC])
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert!(!got.headers.contains_key("x-echo-x-forwarded-client-cert"));
    // HTTP/2 when the client offers it (ALPN).
    let h2 = connector(&root, None, &[b"h2", b"http/1.1"]);
    let tcp = TcpStream::connect(gw.addr(443)).await.unwrap();
    let stream = h2
        .connect(ServerName::try_from("shop.example.com").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://shop.example.com/h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-backend"], "productpage");
    // A name no server of the port has: no handshake.
    assert!(
        https_get(&tls, gw.addr(443), "other.example.com")
            .await
            .is_err()
    );
}

/// A gateway serving `mtls.example.com` on 443 with MUTUAL TLS (its certificate from
/// `server_ca`, Secret `mtls-cert`) in front of `backend`; `client_ca` writes the client CA
/// files.
async fn mutual_gateway(
    backend: SocketAddr,
    server_ca: &Ca,
    client_ca: impl FnOnce(&Path),
) -> Gateway {
    let (cert, key, _) = leaf(server_ca, &["mtls.example.com"]);
    let cfg = gateway_config(
        vec![tls_server(
            443,
            &["mtls.example.com"],
            ServerTlsMode::Mutual,
            "mtls-cert",
        )],
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend)],
    );
    start_gateway(&cfg, &[], |d| {
        write_credential(d, "mtls-cert", &cert, &key);
        client_ca(d);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_of_the_ca() {
    let backend = backend("productpage").await;
    let server_ca = ca("edge-ca");
    let client_ca = ca("client-ca");
    let stranger_ca = ca("stranger-ca");
    let client_ca_pem = client_ca.pem();
    let gw = mutual_gateway(backend.addr, &server_ca, |d| {
        // The CA in the separate `-cacert` Secret.
        std::fs::create_dir_all(d.join("mtls-cert-cacert")).unwrap();
        std::fs::write(d.join("mtls-cert-cacert/ca.crt"), &client_ca_pem).unwrap();
    })
    .await;
    let at = gw.addr(443);
    let anonymous = connector(&server_ca, None, &[]);
    let refused = https_get(&anonymous, at, "mtls.example.com").await;
    assert!(refused.is_err(), "{refused:?}");
    let (c_cert, c_key, _) = leaf(&stranger_ca, &["client.example.com"]);
    let stranger = connector(&server_ca, Some((&c_cert, &c_key)), &[]);
    assert!(https_get(&stranger, at, "mtls.example.com").await.is_err());
    let (c_cert, c_key, c_der) = leaf(&client_ca, &["client.example.com"]);
    let known = connector(&server_ca, Some((&c_cert, &c_key)), &[]);
    let (status, from, _) = https_get(&known, at, "mtls.example.com").await.unwrap();
    assert_eq!((status, from.as_str()), (200, "productpage"));
    assert_eq!(backend.hits(), 1);
    // The app learns the client certificate from x-forwarded-client-cert, which replaces what
    // the client wrote (Istio's SANITIZE_SET at the gateway).
    let got = https_send(&known, at, "mtls.example.com", &[FORGED_XFCC])
        .await
        .unwrap();
    let hash = mizzen_identity::CertDetails::of(&c_der).unwrap().hash;
    assert_eq!(
        got.headers["x-echo-x-forwarded-client-cert"],
        format!("Hash={hash};Subject=\"CN=rcgen self signed cert\";URI=;DNS=client.example.com")
    );
}

/// MUTUAL with Istio's `ca.crl` in the Secret: a client certificate the list revokes is
/// refused, another of the same CA served, and a new list is read without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_client_certificates_the_secrets_crl_revokes() {
    let backend = backend("productpage").await;
    let server_ca = ca("edge-ca");
    let client_ca = ca("client-ca");
    let (client_ca_pem, revoking) = (client_ca.pem(), crl(&client_ca, &[7], 2099));
    let gw = mutual_gateway(backend.addr, &server_ca, |d| {
        std::fs::write(d.join("mtls-cert/ca.crt"), &client_ca_pem).unwrap();
        std::fs::write(d.join("mtls-cert/ca.crl"), &revoking).unwrap();
    })
    .await;
    let at = gw.addr(443);
    let client = |serial| {
        let key = rcgen::KeyPair::generate().unwrap();
        let (c, k, _) = numbered_leaf_of(key, &client_ca, &["client.example.com"], Some(serial));
        connector(&server_ca, Some((&c, &k)), &[])
    };
    let (revoked, kept) = (client(7), client(8));
    assert!(https_get(&revoked, at, "mtls.example.com").await.is_err());
    let (status, _, _) = https_get(&kept, at, "mtls.example.com").await.unwrap();
    assert_eq!(status, 200);
    // The list no longer names 7: the next handshake takes it.
    let unrevoked = crl(&client_ca, &[], 2099);
    std::fs::write(gw.credentials.path().join("mtls-cert/ca.crl"), unrevoked).unwrap();
    let (status, _, _) = https_get(&revoked, at, "mtls.example.com").await.unwrap();
    assert_eq!(status, 200);
}

/// A TLS echo server: terminates with its own certificate and echoes what it reads.
async fn tls_echo(cert: &str, key: &str) -> SocketAddr {
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 256];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    let _ = tls.flush().await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_forwards_by_sni_untouched() {
    let backend_ca = ca("backend-ca");
    let (cert, key, der) = leaf(&backend_ca, &["db.example.com"]);
    let echo = tls_echo(&cert, &key).await;
    let mut server = tls_server(
        443,
        &["db.example.com", "other.example.com"],
        ServerTlsMode::Passthrough,
        "",
    );
    server.tls_routes = vec![TlsRoute {
        matches: vec![TlsMatch {
            sni_hosts: vec!["db.example.com".into()],
            ..Default::default()
        }],
        destinations: vec![WeightedDestination {
            destination: Destination {
                host: SECURE.into(),
                subset: None,
                port: Some(8443),
            },
            weight: 100,
            headers: HeaderOps::default(),
        }],
    }];
    let cfg = gateway_config(
        vec![server],
        vec![service(SECURE, 8443, Protocol::Tls, echo)],
    );
    let gw = start_gateway(&cfg, &[], |_| {}).await;
    // The backend's own certificate reaches the client: the gateway did not terminate.
    let tls = connector(&backend_ca, None, &[]);
    let tcp = TcpStream::connect(gw.addr(443)).await.unwrap();
    let mut stream = tls
        .connect(ServerName::try_from("db.example.com").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap()[0], der);
    stream.write_all(b"ping over passthrough").await.unwrap();
    let mut buf = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping over passthrough");
    // A host of the server that no TLS route takes: the connection is closed.
    let tcp = TcpStream::connect(gw.addr(443)).await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tls.connect(ServerName::try_from("other.example.com").unwrap(), tcp),
    )
    .await
    .unwrap();
    assert!(refused.is_err());
    let text = metrics(gw.prometheus).await;
    assert_sample(
        &text,
        "istio_tcp_connections_opened_total",
        &[("reporter", "source"), ("destination_service", SECURE)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_mid_run_serves_new_handshakes_without_a_failed_request() {
    let backend = backend("productpage").await;
    let root = ca("edge-ca");
    let (cert1, key1, der1) = leaf(&root, &["shop.example.com"]);
    let (cert2, key2, der2) = leaf(&root, &["shop.example.com"]);
    let cfg = gateway_config(
        vec![tls_server(
            443,
            &["shop.example.com"],
            ServerTlsMode::Simple,
            "shop-cert",
        )],
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend.addr)],
    );
    let gw = start_gateway(&cfg, &[], |d| {
        write_credential(d, "shop-cert", &cert1, &key1)
    })
    .await;
    let at = gw.addr(443);
    let tls = connector(&root, None, &[b"http/1.1"]);
    let (_, _, first) = https_get(&tls, at, "shop.example.com").await.unwrap();
    assert_eq!(first, der1);

    // One client keeps one connection open and requests on it; others handshake anew for
    // every request, all through the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let kept = {
        let (stop, failures, ok, tls) = (stop.clone(), failures.clone(), ok.clone(), tls.clone());
        tokio::spawn(async move {
            let tcp = TcpStream::connect(at).await.unwrap();
            let stream = tls
                .connect(ServerName::try_from("shop.example.com").unwrap(), tcp)
                .await
                .unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::SeqCst) {
                let req = http::Request::get("/")
                    .header("host", "shop.example.com")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match sender.send_request(req).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.into_body().collect().await;
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let fresh = {
        let (stop, failures, tls, der2) =
            (stop.clone(), failures.clone(), tls.clone(), der2.clone());
        tokio::spawn(async move {
            let mut seen_new = false;
            while !stop.load(Ordering::SeqCst) {
                match https_get(&tls, at, "shop.example.com").await {
                    Ok((200, _, cert)) => seen_new |= cert == der2,
                    other => {
                        eprintln!("failed: {other:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            seen_new
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Rewritten in place, one file after the other: a handshake in between sees a partial
    // file or a key that does not fit, and keeps the old certificate.
    let d = gw.credentials.path().join("shop-cert");
    std::fs::write(d.join("tls.crt"), &cert2).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(d.join("tls.key"), &key2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, served) = https_get(&tls, at, "shop.example.com").await.unwrap();
        if served == der2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    assert!(
        fresh.await.unwrap(),
        "new handshakes never saw the new certificate"
    );
    kept.await.unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert!(
        ok.load(Ordering::SeqCst) > 0,
        "the open connection made no request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cipher_suites_restrict_the_tls12_suites_and_leave_tls13_alone() {
    use rustls::crypto::ring::cipher_suite as suite;
    let backend = backend("productpage").await;
    let root = ca("edge-ca");
    let (cert, key, _) = leaf(&root, &["shop.example.com"]);
    let mut server = tls_server(
        443,
        &["shop.example.com"],
        ServerTlsMode::Simple,
        "shop-cert",
    );
    server.tls.as_mut().unwrap().cipher_suites = vec![CipherSuite::EcdheEcdsaAes256GcmSha384];
    let cfg = gateway_config(
        vec![server],
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend.addr)],
    );
    let gw = start_gateway(&cfg, &[], |d| write_credential(d, "shop-cert", &cert, &key)).await;
    let at = gw.addr(443);
    let tls12 = |suites: &[rustls::SupportedCipherSuite]| {
        narrow_connector(&root, &rustls::version::TLS12, suites, any_scheme)
    };

    // A TLS 1.2 client offering only a suite outside the list: no handshake.
    let outside = tls12(&[suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]);
    let refused = handshake(&outside, at, "shop.example.com").await;
    assert!(refused.is_err(), "{refused:?}");
    // One offering the listed suite, or several with it: that suite, and the request is served.
    let inside = tls12(&[suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]);
    let several = tls12(&[
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ]);
    for c in [&inside, &several] {
        let (version, negotiated, _) = handshake(c, at, "shop.example.com").await.unwrap();
        assert_eq!(
            (version, negotiated),
            (
                rustls::ProtocolVersion::TLSv1_2,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            )
        );
    }
    let (status, from, _) = https_get(&inside, at, "shop.example.com").await.unwrap();
    assert_eq!((status, from.as_str()), (200, "productpage"));
    // TLS 1.3 is not restricted: a suite the list does not name is negotiated.
    let tls13 = narrow_connector(
        &root,
        &rustls::version::TLS13,
        &[suite::TLS13_CHACHA20_POLY1305_SHA256],
        any_scheme,
    );
    let (version, negotiated, _) = handshake(&tls13, at, "shop.example.com").await.unwrap();
    assert_eq!(
        (version, negotiated),
        (
            rustls::ProtocolVersion::TLSv1_3,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_names_serve_each_client_the_key_type_it_verifies_and_rotate() {
    let backend = backend("productpage").await;
    let root = ca("edge-ca");
    let (rsa_cert, rsa_key, rsa_der) = rsa_leaf(&root, &["shop.example.com"]);
    let (ec_cert, ec_key, ec_der) = leaf(&root, &["shop.example.com"]);
    let mut server = tls_server(443, &["shop.example.com"], ServerTlsMode::Simple, "unused");
    let tls = server.tls.as_mut().unwrap();
    tls.credential_name = None;
    tls.credential_names = vec!["shop-rsa".into(), "shop-ecdsa".into()];
    let cfg = gateway_config(
        vec![server],
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend.addr)],
    );
    let gw = start_gateway(&cfg, &[], |d| {
        write_credential(d, "shop-rsa", &rsa_cert, &rsa_key);
        write_credential(d, "shop-ecdsa", &ec_cert, &ec_key);
    })
    .await;
    let at = gw.addr(443);
    let served = async |schemes: fn(rustls::SignatureScheme) -> bool,
                        version: &'static rustls::SupportedProtocolVersion| {
        let c = narrow_connector(&root, version, &[], schemes);
        handshake(&c, at, "shop.example.com").await.unwrap().2
    };
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        assert_eq!(served(ecdsa_schemes, version).await, ec_der);
        assert_eq!(served(rsa_schemes, version).await, rsa_der);
        // Both fit: ECDSA.
        assert_eq!(served(any_scheme, version).await, ec_der);
    }
    let rsa_only = narrow_connector(&root, &rustls::version::TLS13, &[], rsa_schemes);
    let (status, from, _) = https_get(&rsa_only, at, "shop.example.com").await.unwrap();
    assert_eq!((status, from.as_str()), (200, "productpage"));

    // The ECDSA Secret is rotated: new handshakes get the new certificate, the RSA one stays.
    let (ec_cert2, ec_key2, ec_der2) = leaf(&root, &["shop.example.com"]);
    let d = gw.credentials.path().join("shop-ecdsa");
    std::fs::write(d.join("tls.crt"), &ec_cert2).unwrap();
    std::fs::write(d.join("tls.key"), &ec_key2).unwrap();
    assert!(
        wait_for(async || served(ecdsa_schemes, &rustls::version::TLS13).await == ec_der2).await,
        "the rotated ECDSA certificate was never served"
    );
    assert_eq!(served(rsa_schemes, &rustls::version::TLS13).await, rsa_der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_config_opens_and_closes_server_ports_without_a_restart() {
    let backend = backend("productpage").await;
    let services = vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend.addr)];
    let cfg = gateway_config(vec![bookinfo_server()], services.clone());
    let gw = start_gateway(&cfg, &[8080], |_| {}).await;
    assert_eq!(gw.bound(8080), None);
    let first = gw.addr(80);

    // A second Gateway on port 8080 is applied: the port opens.
    let mut second = bookinfo_server();
    second.gateway = "default/second-gateway".into();
    second.port = 8080;
    gw.write_config(&gateway_config(
        vec![bookinfo_server(), second.clone()],
        services.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let added = loop {
        if let Some(a) = gw.bound(8080) {
            break a;
        }
        assert!(Instant::now() < deadline, "port 8080 never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let c = client();
    let r = request(&c, added, "test.techup.xy", "/", Some("user=b-nova")).await;
    assert_eq!((r.status, r.header("x-backend")), (200, "productpage"));

    // The first Gateway is deleted: port 80 stops accepting.
    gw.write_config(&gateway_config(vec![second], services));
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.bound(80).is_some() {
        assert!(Instant::now() < deadline, "port 80 never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(first).await.is_err(),
        "port 80 still accepts"
    );
    let r = request(&c, added, "test.techup.xy", "/", Some("user=b-nova")).await;
    assert_eq!(r.status, 200);
}

/// The binary: `mizzen-proxy gateway` with the downward API's labels file and a port map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_subcommand_reads_its_labels_file_and_serves() {
    let backend = backend("productpage").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let cfg = gateway_config(
        vec![bookinfo_server()],
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend.addr)],
    );
    std::fs::write(&config, cfg.to_json()).unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(
        &labels,
        "app=\"istio-ingressgateway\"\nistio=\"ingressgateway\"\n",
    )
    .unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, admin, health, prometheus) = (free(), free(), free(), free());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_mizzen-proxy"))
            .arg("gateway")
            .arg("--config")
            .arg(&config)
            .arg("--labels-file")
            .arg(&labels)
            .args(["--port-map", &format!("80={listen}")])
            .args(["--admin", &admin.to_string()])
            .args(["--health", &health.to_string()])
            .args(["--prometheus", &prometheus.to_string()])
            .args(["--concurrency", "1", "--no-access-log"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).await.is_err() {
        assert!(Instant::now() < deadline, "the gateway never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = request(&c, listen, "test.techup.xy", "/", Some("user=b-nova")).await;
    assert_eq!((r.status, r.header("x-backend")), (200, "productpage"));
    let text = metrics(prometheus).await;
    assert_sample(
        &text,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("source_app", "istio-ingressgateway"),
        ],
    );
}

/// A gateway with `servers` in front of `backend`, their Secret `edge` holding `pair` and
/// `client_ca`'s certificate as `ca.crt`.
async fn edge_gateway(
    servers: Vec<Server>,
    backend: SocketAddr,
    pair: (&str, &str),
    client_ca: &Ca,
) -> Gateway {
    let cfg = gateway_config(
        servers,
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, backend)],
    );
    let client_ca_pem = client_ca.pem();
    start_gateway(&cfg, &[], |d| {
        write_credential(d, "edge", pair.0, pair.1);
        std::fs::write(d.join("edge/ca.crt"), &client_ca_pem).unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_names_optional_client_certificates_and_protocol_bounds() {
    let backend = backend("productpage").await;
    let server_ca = ca("edge-ca");
    let client_ca = ca("client-ca");
    let (cert, key, _) = leaf(&server_ca, &["a.example.com", "b.example.com"]);
    // Port 443: MUTUAL, and only the client name `trusted.example.com`, TLS 1.2 at most.
    let mut named = tls_server(443, &["a.example.com"], ServerTlsMode::Mutual, "edge");
    let tls = named.tls.as_mut().unwrap();
    tls.subject_alt_names = vec!["trusted.example.com".into()];
    tls.max_protocol_version = Some(TlsVersion::V1_2);
    // Port 8443: OPTIONAL_MUTUAL.
    let optional = tls_server(
        8443,
        &["b.example.com"],
        ServerTlsMode::OptionalMutual,
        "edge",
    );
    let gw = edge_gateway(
        vec![named, optional],
        backend.addr,
        (&cert, &key),
        &client_ca,
    )
    .await;

    let (c_cert, c_key, _) = leaf(&client_ca, &["someone.example.com"]);
    let unnamed = connector(&server_ca, Some((&c_cert, &c_key)), &[]);
    assert!(
        https_get(&unnamed, gw.addr(443), "a.example.com")
            .await
            .is_err()
    );
    let (c_cert, c_key, _) = leaf(&client_ca, &["trusted.example.com"]);
    let trusted = connector(&server_ca, Some((&c_cert, &c_key)), &[]);
    let tcp = TcpStream::connect(gw.addr(443)).await.unwrap();
    let stream = trusted
        .connect(ServerName::try_from("a.example.com").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    drop(stream);
    let (status, _, _) = https_get(&trusted, gw.addr(443), "a.example.com")
        .await
        .unwrap();
    assert_eq!(status, 200);

    // OPTIONAL_MUTUAL: with or without a client certificate.
    let anonymous = connector(&server_ca, None, &[]);
    for c in [&anonymous, &unnamed] {
        let (status, _, _) = https_get(c, gw.addr(8443), "b.example.com").await.unwrap();
        assert_eq!(status, 200);
    }
}

/// MUTUAL with `verifyCertificateHash` and `verifyCertificateSpki`: of three clients of the
/// same CA, the one whose certificate is pinned and the one whose key is pinned (also with a
/// certificate reissued for that key) are served; the third is refused in the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_pinned_client_certificates() {
    use mizzen_identity::details::{cert_sha256, spki_sha256};
    let backend = backend("productpage").await;
    let server_ca = ca("edge-ca");
    let client_ca = ca("client-ca");
    let (cert, key, _) = leaf(&server_ca, &["a.example.com"]);
    let (a_cert, a_key, a_der) = leaf(&client_ca, &["a.client"]);
    let (b_cert, b_key, b_der) = leaf(&client_ca, &["b.client"]);
    let (c_cert, c_key, _) = leaf(&client_ca, &["c.client"]);
    let b_again = rcgen::KeyPair::from_pem(&b_key).unwrap();
    let (b2_cert, b2_key, b2_der) = leaf_of(b_again, &client_ca, &["b-renewed.client"]);
    assert_ne!(b_der, b2_der);

    let mut pinned = tls_server(443, &["a.example.com"], ServerTlsMode::Mutual, "edge");
    let tls = pinned.tls.as_mut().unwrap();
    tls.client_cert_sha256 = vec![Sha256(cert_sha256(&a_der))];
    tls.client_spki_sha256 = vec![Sha256(spki_sha256(&b_der).unwrap())];
    let gw = edge_gateway(vec![pinned], backend.addr, (&cert, &key), &client_ca).await;
    let at = gw.addr(443);
    for (name, c, k) in [
        ("pinned certificate", &a_cert, &a_key),
        ("pinned key", &b_cert, &b_key),
        ("pinned key, reissued", &b2_cert, &b2_key),
    ] {
        let client = connector(&server_ca, Some((c, k)), &[]);
        let got = https_get(&client, at, "a.example.com").await;
        assert_eq!(got.map(|(status, _, _)| status).ok(), Some(200), "{name}");
    }
    let unpinned = connector(&server_ca, Some((&c_cert, &c_key)), &[]);
    assert!(https_get(&unpinned, at, "a.example.com").await.is_err());
    assert_eq!(backend.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_and_scheme_go_upstream() {
    let echo = header_echo().await;
    let cfg = gateway_config(
        vec![bookinfo_server()],
        vec![service(PRODUCTPAGE, 9080, Protocol::Http, echo.addr)],
    );
    let gw = start_gateway(&cfg, &[], |_| {}).await;
    let r = request(
        &client(),
        gw.addr(80),
        "test.techup.xy",
        "/",
        Some("user=b-nova"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("x-forwarded-for: 127.0.0.1\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("x-forwarded-proto: http\n"), "{}", r.body);
    assert!(r.body.contains("x-request-id: "), "{}", r.body);
}

/// The contract with the operator: the gateway config it renders from the fixture (its golden
/// file) loads and routes as the fixture says. Endpoints come from the node agent in a
/// cluster; here the config carries them, as in local mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_rendering_of_the_fixture_routes_as_the_fixture_says() {
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../operator/tests/golden/gateway/fixture/expected/gateway-mizzen-ingress.json"
    );
    let mut cfg = ProxyConfig::from_json(&std::fs::read(golden).unwrap()).unwrap();
    let backend = backend("productpage").await;
    let productpage = cfg
        .services
        .iter_mut()
        .find(|s| s.host == PRODUCTPAGE)
        .expect("the rendering has productpage");
    productpage.endpoints = service(PRODUCTPAGE, 9080, Protocol::Http, backend.addr).endpoints;
    let gw = start_gateway(&cfg, &[], |_| {}).await;
    let c = client();
    let r = request(&c, gw.addr(80), "test.techup.xy", "/", Some("user=b-nova")).await;
    assert_eq!((r.status, r.header("x-backend")), (200, "productpage"));
    let r = request(&c, gw.addr(80), "test.techup.xy", "/", None).await;
    assert_eq!(r.status, 404);

    // Every gateway config the operator's goldens hold compiles whole for this gateway.
    let goldens = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../operator/tests/golden/gateway"
    );
    let labels = ingress_selector();
    for case in std::fs::read_dir(goldens).unwrap() {
        let path = case
            .unwrap()
            .path()
            .join("expected/gateway-mizzen-ingress.json");
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let cfg = ProxyConfig::from_json(&bytes).unwrap();
        let (plan, errors) = mizzen_proxy::gateway::Plan::compile(&cfg, &labels);
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        assert!(!plan.ports.is_empty(), "{}", path.display());
    }
}
