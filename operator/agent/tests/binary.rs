//! The `mizzen-agent` binary as a real process in local mode: it creates the local CA, opens its
//! socket, signs for a token from the identities file, and reports ready and its metrics on the
//! admin port (127.0.0.1).

mod common;

use std::time::{Duration, Instant};

use common::{ask, send_on};
use http::StatusCode;
use mizzen_identity::workload_api::Event;
use mizzen_identity::{CertificateRequest, SpiffeId};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn admin_get(port: u16, path: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut lines = send_on(stream, "GET", path, Vec::new()).await;
    let mut text = String::new();
    while let Some(line) = lines.next_line().await {
        text.push_str(&line);
    }
    (lines.status, text)
}

#[tokio::test]
async fn local_mode_process_serves_certificates_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let identities = dir.path().join("identities.json");
    std::fs::write(
        &identities,
        r#"{"v":1,"tokens":{"web-secret":"spiffe://cluster.local/ns/default/sa/web"}}"#,
    )
    .unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mizzen-agent"))
        .arg("--socket")
        .arg(&socket)
        .arg("--local-ca")
        .arg(dir.path().join("ca"))
        .arg("--local-identities")
        .arg(&identities)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--workload-cert-ttl")
        .arg("1h")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !socket.exists()
        || tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "agent did not open its socket and port"
        );
        assert!(child.try_wait().unwrap().is_none(), "agent exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dir.path().join("ca/root-cert.pem").exists());

    let web = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let csr = CertificateRequest::for_workload(&web).unwrap();
    let mut lines = ask(&socket, &csr.csr_pem, "web-secret").await;
    assert_eq!(lines.status, StatusCode::OK);
    assert!(matches!(
        lines.next(Duration::from_secs(10)).await,
        Some(Event::Certificate { .. })
    ));
    let refused = ask(&socket, &csr.csr_pem, "not-a-token").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    assert_eq!(admin_get(port, "/healthz").await.0, StatusCode::OK);
    assert_eq!(admin_get(port, "/readyz").await.0, StatusCode::OK);
    let (status, metrics) = admin_get(port, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains(r#"mizzen_agent_certificates_issued_total{result="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"mizzen_agent_certificates_issued_total{result="unknown_local_token"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("mizzen_agent_node_ca_expiry_timestamp_seconds "),
        "{metrics}"
    );
    assert!(
        metrics.contains("mizzen_agent_certificate_streams 1"),
        "{metrics}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn cluster_mode_needs_a_node_name() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mizzen-agent"))
        .arg("--socket")
        .arg("/nonexistent/agent.sock")
        .env_remove("NODE_NAME")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--node-name (or NODE_NAME) is required"),
        "{stderr}"
    );
}
