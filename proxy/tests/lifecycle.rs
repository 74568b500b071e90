//! Config reload, admin and health ports, metrics, inbound, TCP, upgrades, bad clients and
//! draining, through the proxy on loopback.

mod support;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use mizzen_proxy::env::InboundListener;
use mizzen_proxy_config::*;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

fn to_v(subset: &str) -> HttpAction {
    HttpAction::Route(vec![weighted(Some(subset), 100)])
}

#[tokio::test]
async fn config_reload_swaps_routes_and_garbage_keeps_the_last_good_config() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let eps = vec![endpoint(v1.addr, "v1"), endpoint(v2.addr, "v2")];
    let proxy = start(&config(vec![serviceb(
        eps.clone(),
        vec![route("r", to_v("v1"))],
    )]))
    .await;
    let c = client();
    assert_eq!(get(&c, proxy.outbound, "/").await.header("x-backend"), "v1");

    proxy.write_config(
        config(vec![serviceb(eps.clone(), vec![route("r", to_v("v2"))])])
            .to_json()
            .as_bytes(),
    );
    assert!(
        wait_for(async || get(&c, proxy.outbound, "/").await.header("x-backend") == "v2").await,
        "new routes never applied"
    );

    proxy.write_config(b"{ this is not a config");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(&c, proxy.outbound, "/").await.header("x-backend"), "v2");
    let m = metrics(proxy.prometheus).await;
    assert_eq!(
        sample(
            &m,
            "mizzen_proxy_config_reloads_total",
            &[("result", "failure")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "mizzen_proxy_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0),
        "{m}"
    );
    // The dump still shows the good config.
    let dump = get(&c, proxy.admin, "/config_dump").await;
    let parsed = ProxyConfig::from_json(dump.body.as_bytes()).unwrap();
    assert!(
        matches!(&parsed.services[0].http_routes[0].action, HttpAction::Route(d) if d[0].destination.subset.as_deref() == Some("v2"))
    );
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let eps = vec![endpoint(v1.addr, "v1"), endpoint(v2.addr, "v2")];
    // Kubelet's layout: config.json -> ..data/config.json, ..data -> ..<timestamp>.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(
        d.join("..v1/config.json"),
        config(vec![serviceb(eps.clone(), vec![route("r", to_v("v1"))])]).to_json(),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.json", d.join("config.json")).unwrap();
    let proxy = start_with(&config(vec![]), |c| {
        c.config_path = d.join("config.json");
        c.poll_interval = Duration::from_secs(60);
    })
    .await;
    let c = client();
    assert_eq!(get(&c, proxy.outbound, "/").await.header("x-backend"), "v1");
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(
        d.join("..v2/config.json"),
        config(vec![serviceb(eps, vec![route("r", to_v("v2"))])]).to_json(),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    // Poll interval is a minute: only the directory watch can see this in time.
    assert!(
        wait_for(async || get(&c, proxy.outbound, "/").await.header("x-backend") == "v2").await
    );
}

#[tokio::test]
async fn metrics_carry_istio_names_and_labels() {
    let v1 = backend("v1").await;
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v1.addr, "v1")],
        vec![route("r", to_v("v1"))],
    )]))
    .await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, proxy.outbound, "/").await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(proxy.prometheus).await;
    let labels = [
        ("reporter", "source"),
        ("source_workload", "servicea-v1"),
        ("source_workload_namespace", "default"),
        ("source_app", "servicea"),
        ("source_version", "v1"),
        ("destination_service", HOST),
        ("destination_service_name", "serviceb"),
        ("destination_service_namespace", "default"),
        ("destination_app", "serviceb"),
        ("destination_version", "v1"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ];
    assert_eq!(
        sample(&m, "istio_requests_total", &labels),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "istio_request_duration_milliseconds_count", &labels),
        Some(3.0),
        "{m}"
    );
    assert!(
        m.contains("istio_request_duration_milliseconds_bucket{"),
        "{m}"
    );
    assert!(
        m.contains("le=\"0.5\"") && m.contains("le=\"3600000.0\""),
        "{m}"
    );
    assert_eq!(sample(&m, "istio_request_bytes_count", &labels), Some(3.0));
    assert_eq!(
        sample(&m, "istio_response_bytes_sum", &labels),
        Some(6.0),
        "{m}"
    );
    for label in [
        "destination_workload",
        "destination_principal",
        "source_principal",
        "grpc_response_status",
    ] {
        assert!(m.contains(&format!("{label}=")), "{label}");
    }
    // The admin port serves them too.
    assert!(
        get(&c, proxy.admin, "/stats/prometheus")
            .await
            .body
            .contains("istio_requests_total")
    );
}

#[tokio::test]
async fn inbound_forwards_to_the_app_and_reports_as_destination() {
    let app = backend("app").await;
    let proxy = start_with(&config(vec![]), |c| {
        c.inbound = vec![InboundListener {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            app: app.addr,
        }];
        c.workload.name = "serviceb-v1".into();
    })
    .await;
    let c = client();
    let r = get(&c, proxy.inbound[0], "/hello").await;
    assert_eq!(
        (r.status, r.header("x-backend"), r.header("x-echo-path")),
        (200, "app", "/hello")
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = metrics(proxy.prometheus).await;
    assert_sample(
        &m,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("destination_workload", "serviceb-v1"),
            ("connection_security_policy", "none"),
        ],
    );
}

#[tokio::test]
async fn tcp_ports_are_forwarded_byte_for_byte() {
    let echo_addr = tcp_echo().await;
    let mut svc = serviceb(vec![endpoint(echo_addr, "v1")], vec![]);
    svc.ports[0].protocol = Protocol::Tcp;
    let proxy = start(&config(vec![svc])).await;
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(b"\x00\x01binary, not http\n").await.unwrap();
    let mut buf = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"\x00\x01binary, not http\n");
    drop(s);
    let m = metrics(proxy.prometheus).await;
    assert!(
        sample_becomes(
            proxy.prometheus,
            "istio_tcp_connections_closed_total",
            &[("destination_service", HOST)],
            1.0
        )
        .await,
        "{m}"
    );
    let m = metrics(proxy.prometheus).await;
    assert_eq!(
        sample(&m, "istio_tcp_sent_bytes_total", &[("reporter", "source")]),
        Some(19.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "istio_tcp_connections_opened_total",
            &[("reporter", "source")]
        ),
        Some(1.0)
    );

    // A port of undeclared protocol: the first bytes are not HTTP, so it is TCP too.
    let mut svc = serviceb(vec![endpoint(echo_addr, "v1")], vec![]);
    svc.ports[0].protocol = Protocol::Unknown;
    let proxy = start(&config(vec![svc])).await;
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(b"\x16\x03\x01 not http").await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"\x16\x03\x01 not http");
}

#[tokio::test]
async fn websocket_style_upgrades_are_joined() {
    // An upstream that accepts any upgrade and then echoes.
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = up.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    n += s.read(&mut buf[n..]).await.unwrap();
                }
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n").await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(up_addr, "v1")],
        vec![],
    )]))
    .await;
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nhost: serviceb\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    let read_head = async {
        while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            n += s.read(&mut buf[n..]).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"ping");
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bad_clients_get_envoys_answers_and_never_crash_the_proxy() {
    let v1 = backend("v1").await;
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v1.addr, "v1")],
        vec![],
    )]))
    .await;
    // Malformed request line.
    let r = raw(proxy.outbound, b"GET /\x01bad HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Oversized headers.
    let mut big = b"GET / HTTP/1.1\r\nhost: serviceb\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend(b"\r\n\r\n");
    let r = raw(proxy.outbound, &big).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // Slowloris: half a request, then nothing. The proxy closes within the header timeout.
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: serv").await.unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok() && t.elapsed() < Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    // Still serving.
    assert_eq!(get(&client(), proxy.outbound, "/").await.status, 200);
}

/// Envoy keeps an idle client connection for its idle timeout (1 h); the header timeout (500 ms
/// in these tests) counts only from a request head's first byte, so a pooled connection that
/// waits between requests is not closed under its client.
#[tokio::test]
async fn a_keep_alive_connection_idle_past_the_header_timeout_still_serves() {
    let v1 = backend("v1").await;
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(v1.addr, "v1")],
        vec![],
    )]))
    .await;
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    for round in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nhost: serviceb\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "round {round}: the proxy closed the connection");
            head.extend_from_slice(&buf[..n]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "round {round}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

#[tokio::test]
async fn health_and_quitquitquit_drain_in_flight_requests() {
    let slow = backend_with("slow", Arc::new(|_, _| (200, Duration::from_millis(400)))).await;
    let proxy = start(&config(vec![serviceb(
        vec![endpoint(slow.addr, "v1")],
        vec![],
    )]))
    .await;
    let c = client();
    assert_eq!(get(&c, proxy.health, "/healthz/ready").await.status, 200);
    assert_eq!(get(&c, proxy.admin, "/ready").await.status, 200);
    let in_flight = tokio::spawn({
        let c = c.clone();
        let addr = proxy.outbound;
        async move { get(&c, addr, "/").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quit = Request::post(format!("http://{}/quitquitquit", proxy.admin))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&client(), quit).await.status, 200);
    // The request that was in flight finishes.
    assert_eq!(in_flight.await.unwrap().status, 200);
    assert_eq!(
        get(&client(), proxy.health, "/healthz/ready").await.status,
        503
    );
    // New connections are refused once the listener has stopped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(proxy.outbound).await.is_err());
}
