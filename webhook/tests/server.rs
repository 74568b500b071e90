//! The HTTPS server on loopback: concurrent reviews, certificate rotation under load, bodies that
//! are not reviews, validation, HTTP/2. Every loop is bounded in count and time.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{client::Conn, *};
use mizzen_webhook::inject::InjectSettings;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sample_pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-6d4cf56db6-",
            "namespace": "shop",
            "labels": {"app": "web", "version": "v1", "pod-template-hash": "6d4cf56db6"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d4cf56db6", "uid": format!("rs-{i}"), "controller": true}]
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"containerPort": 8080, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}
            }]
        }
    })
}

fn review_body(i: usize) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&pod_review(&format!("uid-{i}"), "shop", &sample_pod(i))).unwrap(),
    )
}

/// Checks one answer to [`review_body`]`(i)`.
fn check_injected(i: usize, status: u16, body: &[u8]) -> Result<(), String> {
    if status != 200 {
        return Err(format!(
            "review {i}: HTTP {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("review {i}: {e}"))?;
    let r = &v["response"];
    if r["uid"] != format!("uid-{i}").as_str() || r["allowed"] != true || patch_of(r).is_none() {
        return Err(format!("review {i}: unexpected answer {r}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_every_review_under_concurrent_load() {
    let dir = scratch("server-load");
    let issued = issue();
    write_pair(&dir, &issued);
    let (server, metrics) = start_server(&dir, InjectSettings::default()).await;
    let config = client::client_config(&[&issued.ca_pem]);

    const CONNECTIONS: usize = 20;
    const PER_CONNECTION: usize = 10;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let config = config.clone();
            let addr = server.addr;
            tokio::spawn(async move {
                let mut conn = Conn::connect(addr, SERVER_NAME, config).await.unwrap();
                let mut ok = 0;
                for n in 0..PER_CONNECTION {
                    let i = c * PER_CONNECTION + n;
                    let (status, body) = conn.post_json("/inject", review_body(i)).await.unwrap();
                    check_injected(i, status, &body).unwrap();
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let answered: usize =
        tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
            .await
            .expect("the load finishes in time")
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
    assert_eq!(answered, CONNECTIONS * PER_CONNECTION);
    let text = metrics.render();
    assert!(
        text.contains("mizzen_webhook_admissions_total{webhook=\"inject\",operation=\"CREATE\",result=\"injected\"} 200"),
        "{text}"
    );
    assert!(
        text.contains("mizzen_webhook_admission_duration_seconds_count{webhook=\"inject\"} 200"),
        "{text}"
    );
    server.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_its_certificate_under_load_without_a_failed_request() {
    let dir = scratch("server-rotation");
    let first = issue();
    let second = issue();
    write_pair(&dir, &first);
    let (server, metrics) = start_server(&dir, InjectSettings::default()).await;
    // The API server's caBundle holds both CAs during a rotation (see bootstrap).
    let config = client::client_config(&[&first.ca_pem, &second.ca_pem]);
    let first_der = rustls_der(&first.cert_pem);
    let second_der = rustls_der(&second.cert_pem);

    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rotated = Arc::new(AtomicBool::new(false));
    // A connection opened before the rotation, used again after it.
    let mut early = Conn::connect(server.addr, SERVER_NAME, config.clone())
        .await
        .unwrap();
    assert_eq!(early.peer_cert, first_der);

    const WORKERS: usize = 10;
    const MAX_PER_WORKER: usize = 200;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (config, answered, stop, rotated) = (
                config.clone(),
                answered.clone(),
                stop.clone(),
                rotated.clone(),
            );
            let (addr, first_der, second_der) =
                (server.addr, first_der.clone(), second_der.clone());
            tokio::spawn(async move {
                let mut seen = (0usize, 0usize);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < MAX_PER_WORKER {
                    // A new handshake every 5 reviews, so handshakes span the rotation.
                    let rotated_before = rotated.load(Ordering::SeqCst);
                    let mut conn = Conn::connect(addr, SERVER_NAME, config.clone())
                        .await
                        .map_err(|e| format!("worker {w}: handshake failed: {e}"))?;
                    if conn.peer_cert == first_der {
                        if rotated_before {
                            return Err(format!(
                                "worker {w}: a handshake after the rotation got the old certificate"
                            ));
                        }
                        seen.0 += 1;
                    } else if conn.peer_cert == second_der {
                        seen.1 += 1;
                    } else {
                        return Err(format!("worker {w}: an unknown certificate"));
                    }
                    for _ in 0..5 {
                        let i = w * MAX_PER_WORKER + n;
                        let (status, body) = conn
                            .post_json("/inject", review_body(i))
                            .await
                            .map_err(|e| format!("worker {w}: request failed: {e}"))?;
                        check_injected(i, status, &body)?;
                        answered.fetch_add(1, Ordering::SeqCst);
                        n += 1;
                    }
                }
                Ok::<_, String>(seen)
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < 150 {
        assert!(Instant::now() < deadline, "no progress before the rotation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    write_pair(&dir, &second);
    // Wait (bounded) until a new handshake presents the new certificate.
    loop {
        let probe = Conn::connect(server.addr, SERVER_NAME, config.clone())
            .await
            .unwrap();
        if probe.peer_cert == second_der {
            rotated.store(true, Ordering::SeqCst);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_rotation = answered.load(Ordering::SeqCst);
    while answered.load(Ordering::SeqCst) < at_rotation + 150 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);

    let mut before = 0;
    let mut after = 0;
    for w in workers {
        let (a, b) = w.await.unwrap().unwrap();
        before += a;
        after += b;
    }
    assert!(
        before > 0 && after > 0,
        "handshakes before ({before}) and after ({after}) the rotation"
    );
    assert!(
        answered.load(Ordering::SeqCst) >= at_rotation + 100,
        "load went on after the rotation"
    );

    // The connection opened before the rotation still works on its old session.
    let (status, body) = early
        .post_json("/inject", review_body(99_999))
        .await
        .unwrap();
    check_injected(99_999, status, &body).unwrap();
    assert!(
        metrics
            .render()
            .contains("mizzen_webhook_certificate_reloads_total{result=\"ok\"} 1")
    );
    server.shutdown(Duration::from_secs(1)).await.unwrap();
}

fn rustls_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Sends raw bytes on a new TLS connection and returns the status line of the answer.
async fn raw_status(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    text.lines().next().unwrap().to_string()
}

/// Path, content type, body, expected status, expected start of the answer.
type BadRequest = (
    &'static str,
    Option<&'static str>,
    &'static [u8],
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_what_is_not_a_review_and_keeps_serving() {
    let dir = scratch("server-garbage");
    let issued = issue();
    write_pair(&dir, &issued);
    let (server, metrics) = start_server(&dir, InjectSettings::default()).await;
    let config = client::client_config(&[&issued.ca_pem]);
    let addr = server.addr;
    let fresh = || async {
        Conn::connect(addr, SERVER_NAME, config.clone())
            .await
            .unwrap()
    };

    let cases: [BadRequest; 6] = [
        (
            "/inject",
            Some("text/plain"),
            b"{}",
            415,
            "Content-Type must be application/json (got \"text/plain\")",
        ),
        (
            "/validate",
            None,
            b"{}",
            415,
            "Content-Type must be application/json (none given)",
        ),
        (
            "/inject",
            Some("application/json"),
            b"\x00\xffgarbage",
            400,
            "the body is not JSON",
        ),
        (
            "/validate",
            Some("application/json; charset=utf-8"),
            b"{\"kind\":\"Pod\"}",
            400,
            "the body is not an AdmissionReview",
        ),
        (
            "/inject",
            Some("application/json"),
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
            400,
            "malformed AdmissionReview at request.uid",
        ),
        (
            "/inject",
            Some("application/json"),
            b"",
            400,
            "the body is not JSON: EOF while parsing",
        ),
    ];
    for (path, content_type, body, want, message) in cases {
        let mut conn = fresh().await;
        let (status, answer) = conn
            .request("POST", path, content_type, Bytes::from_static(body))
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, want, "{path} {content_type:?}: {answer}");
        assert!(
            answer.starts_with(message),
            "{path}: {answer:?} should start with {message:?}"
        );
    }

    // Too large: refused from the declared length, before the body is sent.
    let status = raw_status(
        addr,
        config.clone(),
        b"POST /inject HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\nContent-Length: 3145728\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");

    let mut conn = fresh().await;
    let (status, _) = conn
        .request("GET", "/inject", None, Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, 405);

    // Still serving.
    let mut conn = fresh().await;
    assert_eq!(
        conn.request("GET", "/healthz", None, Bytes::new())
            .await
            .unwrap(),
        (200, Bytes::from_static(b"ok"))
    );
    assert_eq!(
        conn.request("GET", "/readyz", None, Bytes::new())
            .await
            .unwrap()
            .0,
        200
    );
    let (status, body) = conn.post_json("/inject", review_body(1)).await.unwrap();
    check_injected(1, status, &body).unwrap();
    let (status, body) = conn
        .request("GET", "/metrics", None, Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("mizzen_webhook_admissions_total{webhook=\"inject\",operation=\"unknown\",result=\"malformed\"} 5"), "{text}");
    assert!(text.contains("mizzen_webhook_admissions_total{webhook=\"validate\",operation=\"unknown\",result=\"malformed\"} 2"), "{text}");
    assert_eq!(
        metrics
            .admissions
            .get_or_create(&mizzen_webhook::metrics::AdmissionLabels {
                webhook: "inject",
                operation: "CREATE",
                result: "injected"
            })
            .get(),
        1
    );
    server.shutdown(Duration::from_secs(1)).await.unwrap();
}

fn vs_review(uid: &str, weights: [u32; 2]) -> Bytes {
    let object = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": weights[0]},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": weights[1]}
            ]}]
        }
    });
    Bytes::from(
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
                "name": "reviews",
                "namespace": "bookinfo",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": object,
                "dryRun": false
            }
        }))
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validates_virtual_services_over_https() {
    let dir = scratch("server-validate");
    let issued = issue();
    write_pair(&dir, &issued);
    let (server, _) = start_server(&dir, InjectSettings::default()).await;
    let mut conn = Conn::connect(
        server.addr,
        SERVER_NAME,
        client::client_config(&[&issued.ca_pem]),
    )
    .await
    .unwrap();

    let (status, body) = conn
        .post_json("/validate", vs_review("bad", [80, 30]))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["uid"], "bad");
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["reason"], "Invalid");
    assert_eq!(v["response"]["status"]["code"], 422);
    assert_eq!(
        v["response"]["status"]["message"],
        "spec.http[0].route: weights of a route must add up to 100 (got 110)"
    );

    let (status, body) = conn
        .post_json("/validate", vs_review("good", [80, 20]))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["uid"], "good");
    assert_eq!(v["response"]["allowed"], true);
    server.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_http2_and_tls12() {
    let dir = scratch("server-h2");
    let issued = issue();
    write_pair(&dir, &issued);
    let (server, _) = start_server(&dir, InjectSettings::default()).await;

    // HTTP/2 by ALPN, as the API server's client uses it.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_der(&issued.ca_pem).into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut h2 = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(h2))
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post("https://mizzen-webhook/inject")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(review_body(5)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    check_injected(5, status, &body).unwrap();

    // TLS 1.2 alone is accepted too.
    let tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls12))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    server.shutdown(Duration::from_secs(1)).await.unwrap();
}
