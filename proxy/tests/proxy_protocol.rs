//! DestinationRule `proxyProtocol`, on loopback: every upstream connection opens with the
//! PROXY protocol header of the caller's connection, HTTP connections are pooled per caller's
//! connection, and TCP connections carry it too.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mizzen_proxy_config::*;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The header at the start of `s`, read exactly (v1: up to its CRLF; v2: its fixed part and
/// the length it gives), so that what follows is the connection's own bytes.
async fn read_header(s: &mut TcpStream) -> Vec<u8> {
    let mut head = vec![0u8; 16];
    s.read_exact(&mut head).await.unwrap();
    if head.starts_with(b"PROXY ") {
        while !head.ends_with(b"\r\n") {
            head.push(s.read_u8().await.unwrap());
        }
    } else {
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        let mut rest = vec![0u8; len];
        s.read_exact(&mut rest).await.unwrap();
        head.extend(rest);
    }
    head
}

/// A server that notes the header each connection opens with, then serves HTTP (answering
/// 200) or, with `echo`, echoes bytes.
struct HeaderServer {
    addr: SocketAddr,
    headers: Arc<Mutex<Vec<Vec<u8>>>>,
    /// HTTP connections that have closed.
    closed: Arc<AtomicUsize>,
}

async fn header_server(echo: bool) -> HeaderServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let headers = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(AtomicUsize::new(0));
    let (seen, done) = (headers.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (seen, done) = (seen.clone(), done.clone());
            tokio::spawn(async move {
                let header = read_header(&mut s).await;
                seen.lock().unwrap().push(header);
                if echo {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    return;
                }
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    HeaderServer {
        addr,
        headers,
        closed,
    }
}

fn with_proxy_protocol(
    backend: SocketAddr,
    version: ProxyProtocol,
    protocol: Protocol,
) -> ProxyConfig {
    let mut svc = serviceb(vec![endpoint(backend, "v1")], vec![]);
    svc.ports[0].protocol = protocol;
    svc.policy = Some(TrafficPolicy {
        proxy_protocol: Some(version),
        connection_pool: Some(ConnectionPool {
            idle_timeout_ms: Some(300),
            ..Default::default()
        }),
        ..Default::default()
    });
    config(vec![svc])
}

/// One request on a connection of its own: (status, the client's address).
async fn get_on_own_connection(proxy: SocketAddr) -> (u16, SocketAddr) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: serviceb:8080\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, me)
}

#[tokio::test]
async fn http_connections_open_with_the_callers_v1_header_one_pool_per_caller() {
    let server = header_server(false).await;
    let headers = &server.headers;
    let proxy = start(&with_proxy_protocol(
        server.addr,
        ProxyProtocol::V1,
        Protocol::Http,
    ))
    .await;
    // Two requests on one client connection share one upstream connection.
    let c = client();
    for _ in 0..2 {
        assert_eq!(get(&c, proxy.outbound, "/").await.status, 200);
    }
    assert_eq!(headers.lock().unwrap().len(), 1);
    // Another client connection gets its own upstream connection, with its own address.
    let (status, me) = get_on_own_connection(proxy.outbound).await;
    assert_eq!(status, 200);
    let seen = headers.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let line = String::from_utf8(seen[1].clone()).unwrap();
    let fields: Vec<&str> = line.trim_end().split(' ').collect();
    assert_eq!(fields[..3], ["PROXY", "TCP4", "127.0.0.1"], "{line:?}");
    assert_eq!(
        fields[4].parse::<u16>().unwrap(),
        me.port(),
        "{line:?}: the caller's port"
    );
    assert_ne!(seen[0], seen[1]);
    // Callers come and go; their connections upstream are not kept past the idle timeout
    // (swept at the next request, whoever makes it).
    assert_eq!(server.closed.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(get_on_own_connection(proxy.outbound).await.0, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.closed.load(Ordering::SeqCst),
        2,
        "the idle callers' connections closed"
    );
}

#[tokio::test]
async fn tcp_connections_open_with_the_callers_v2_header() {
    let server = header_server(true).await;
    let headers = &server.headers;
    let proxy = start(&with_proxy_protocol(
        server.addr,
        ProxyProtocol::V2,
        Protocol::Tcp,
    ))
    .await;
    let (conn, echoed) = tcp_echoed(proxy.outbound, b"after the header").await;
    assert_eq!(echoed.as_deref(), Some(&b"after the header"[..]));
    let seen = headers.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let header = ppp::v2::Header::try_from(&seen[0][..]).unwrap();
    let ppp::v2::Addresses::IPv4(a) = header.addresses else {
        panic!("{:?}", header.addresses)
    };
    let me = conn.local_addr().unwrap();
    assert_eq!(SocketAddr::from((a.source_address, a.source_port)), me);
}
