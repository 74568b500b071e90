//! The binary as a real process: a sidecar pair (outbound proxy → inbound proxy → app) in
//! local mode, the access log on stdout, and a clean drain on SIGTERM.

mod support;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mizzen_proxy_config::*;
use support::*;

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Sidecar {
    child: Child,
    admin: SocketAddr,
    health: SocketAddr,
    prometheus: SocketAddr,
    /// Its config, and its log (`stderr`).
    dir: tempfile::TempDir,
}

impl Sidecar {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sidecar(cfg: &ProxyConfig, args: &[String]) -> Sidecar {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, cfg.to_json()).unwrap();
    let (admin, health, prometheus) = (free_port(), free_port(), free_port());
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mizzen-proxy"))
        .arg("sidecar")
        .arg("--config")
        .arg(&path)
        .arg("--no-capture")
        .args(["--admin", &admin.to_string()])
        .args(["--health", &health.to_string()])
        .args(["--prometheus", &prometheus.to_string()])
        .args(["--drain-duration", "2", "--concurrency", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    Sidecar {
        child,
        admin,
        health,
        prometheus,
        dir,
    }
}

/// Waits until the sidecar is ready. `Err` with its log when it exited instead (a port it was
/// given may have been taken after the test chose it: ports come free from the kernel's
/// ephemeral range, which the connections of tests running alongside draw from too).
async fn ready(s: &mut Sidecar) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = client();
    loop {
        let uri = format!("http://{}/healthz/ready", s.health);
        let req = http::Request::get(uri)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(500), c.request(req)).await
            && r.status() == 200
        {
            return Ok(());
        }
        if let Some(status) = s.child.try_wait().unwrap() {
            return Err(format!("sidecar exited ({status}):\n{}", s.log()));
        }
        assert!(
            Instant::now() < deadline,
            "sidecar never became ready:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a sidecar listening on a free port (given to `args`) and waits until it is ready;
/// starts it again on fresh ports when one was taken before it could bind it.
async fn started(
    cfg: &ProxyConfig,
    args: impl Fn(SocketAddr) -> Vec<String>,
) -> (Sidecar, SocketAddr) {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let mut s = sidecar(cfg, &args(port));
        match ready(&mut s).await {
            Ok(()) => return (s, port),
            Err(log) if log.contains("in use") => last = log,
            Err(log) => panic!("{log}"),
        }
    }
    panic!("no free ports after three tries: {last}");
}

fn terminate(s: &mut Sidecar) -> String {
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    use std::io::Read;
    s.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_pair_serves_logs_and_drains_on_sigterm() {
    let app = backend("app").await;
    let (mut inbound, inbound_port) = started(&config(vec![]), |port| {
        vec![
            "--inbound".into(),
            format!("{port}={}", app.addr),
            "--workload-name".into(),
            "serviceb-v1".into(),
            "--app".into(),
            "serviceb".into(),
            "--version".into(),
            "v1".into(),
        ]
    })
    .await;
    let outbound_config = config(vec![serviceb(vec![endpoint(inbound_port, "v1")], vec![])]);
    let (mut outbound, outbound_port) = started(&outbound_config, |port| {
        vec![
            "--outbound".into(),
            format!("{port}={HOST}:{PORT}"),
            "--workload-name".into(),
            "servicea-v1".into(),
            "--app".into(),
            "servicea".into(),
        ]
    })
    .await;
    let c = client();
    for i in 0..5 {
        let r = get(&c, outbound_port, &format!("/item/{i}")).await;
        assert_eq!((r.status, r.header("x-backend")), (200, "app"));
    }
    let m = metrics(inbound.prometheus).await;
    assert_eq!(
        sample(
            &m,
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("destination_workload", "serviceb-v1")
            ]
        ),
        Some(5.0),
        "{m}"
    );
    let m = metrics(outbound.prometheus).await;
    assert_eq!(
        sample(
            &m,
            "istio_requests_total",
            &[("reporter", "source"), ("source_workload", "servicea-v1")]
        ),
        Some(5.0),
        "{m}"
    );
    // The log level can be changed at run time through the admin port.
    let set = |level: &str| {
        http::Request::post(format!("http://{}/logging?level={level}", outbound.admin))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    assert_eq!(send(&c, set("debug")).await.status, 200);
    assert_eq!(send(&c, set("not==a[filter")).await.status, 400);
    let dump = get(&c, outbound.admin, "/config_dump").await;
    assert!(ProxyConfig::from_json(dump.body.as_bytes()).is_ok());
    drop(c);
    let log = terminate(&mut outbound);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    let first = &lines[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/item/0");
    assert_eq!(first["response_code"], 200);
    assert_eq!(first["response_flags"], "-");
    assert_eq!(first["upstream_host"], inbound_port.to_string());
    assert_eq!(first["route_name"], "default");
    assert_eq!(
        first["upstream_cluster"],
        format!("outbound|{PORT}||{HOST}")
    );
    assert_eq!(first["x_request_id"].as_str().unwrap().len(), 36);
    let _ = terminate(&mut inbound);
}
