//! The canary controller's HTTPS calls against a real rustls server on 127.0.0.1 whose
//! certificate a fresh rcgen CA signed: trusted through the extra CA file, the call is answered;
//! without that file (web PKI roots only), or for a name the certificate does not carry, it is
//! refused with an error that names the URL and the certificate problem.

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use mizzen_operator::canary::fetch::{FetchError, Fetcher};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;

/// A CA and a serving certificate for `names`, as PEM.
struct Issued {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn issue(names: &[&str]) -> Issued {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "canary webhook test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf = rcgen::CertificateParams::new(names).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Issued {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// An HTTPS server on 127.0.0.1 answering every request 200 with `METHOD PATH BODY`.
async fn serve(issued: &Issued) -> SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|req: Request<Incoming>| async move {
                    let head = format!("{} {}", req.method(), req.uri().path());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let text = format!("{head} {}", String::from_utf8_lossy(&body));
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn ca_file(issued: &Issued, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("canary-fetch-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, &issued.ca_pem).unwrap();
    path
}

/// Every call here is answered or refused well within this.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_server_signed_by_the_ca_file_is_answered() {
    let issued = issue(&["127.0.0.1", "localhost"]);
    let addr = serve(&issued).await;
    let fetcher = Fetcher::with_ca_file(&ca_file(&issued, "trusted.pem")).unwrap();

    let url = format!("https://{addr}/stats/prometheus");
    let text = tokio::time::timeout(BOUND, fetcher.get_text(&url))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text, "GET /stats/prometheus ");

    // By name as well as by address, and a webhook's POST.
    let hook = format!("https://localhost:{}/gate", addr.port());
    let status = tokio::time::timeout(
        BOUND,
        fetcher.post_json(&hook, &serde_json::json!({"name": "reviews"}), BOUND),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_server_of_an_unknown_ca_is_refused_naming_the_url_and_the_problem() {
    let issued = issue(&["127.0.0.1"]);
    let addr = serve(&issued).await;
    let url = format!("https://{addr}/stats/prometheus");

    // The web PKI roots alone do not know the test CA.
    let err = tokio::time::timeout(BOUND, Fetcher::new().get_text(&url))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, FetchError::Certificate { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{url}: ")), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");

    // Another CA's file does not help either (one of the same name: its signature is wrong).
    let other = issue(&["127.0.0.1"]);
    let fetcher = Fetcher::with_ca_file(&ca_file(&other, "other.pem")).unwrap();
    let err = tokio::time::timeout(BOUND, fetcher.get_text(&url))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, FetchError::Certificate { .. }), "{err:?}");
    assert!(err.to_string().contains("BadSignature"), "{err}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let issued = issue(&["webhook.example"]);
    let addr = serve(&issued).await;
    let fetcher = Fetcher::with_ca_file(&ca_file(&issued, "named.pem")).unwrap();
    let url = format!("https://{addr}/gate");
    let err = tokio::time::timeout(
        BOUND,
        fetcher.post_json(&url, &serde_json::json!({}), BOUND),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, FetchError::Certificate { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("not valid for name \"127.0.0.1\""),
        "{text}"
    );
}
