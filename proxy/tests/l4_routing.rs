//! The sidecar's routing of TCP and TLS connections by a VirtualService's `tcp` and `tls`
//! rules, on loopback: matches on source labels, source namespace and gateways (a rule for a
//! gateway is not the sidecar's), and TLS passed through by the SNI of the client's
//! ClientHello.

mod support;

use std::{net::SocketAddr, sync::Arc};

use mizzen_proxy_config::*;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const REPLICA: &str = "replica.default.svc.cluster.local";

/// A TCP server that reads what the client sends first, then writes its name and closes.
async fn named(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if s.read(&mut buf).await.is_ok() {
                    let _ = s.write_all(name.as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// `serviceb` (the main backend) and `replica` (the other), both on `protocol`.
fn services(protocol: Protocol, main: SocketAddr, replica: SocketAddr) -> (Service, Service) {
    let mut svc = serviceb(vec![endpoint(main, "v1")], vec![]);
    svc.ports[0].protocol = protocol;
    let mut other = svc.clone();
    other.host = REPLICA.into();
    other.aliases = vec!["replica".into()];
    other.endpoints = vec![endpoint(replica, "v1")];
    (svc, other)
}

fn to_replica() -> Vec<WeightedDestination> {
    vec![WeightedDestination {
        destination: Destination {
            host: REPLICA.into(),
            subset: None,
            port: None,
        },
        weight: 100,
        headers: HeaderOps::default(),
    }]
}

/// Which backend a connection that first sends `hello` reaches.
async fn reached(proxy: &Proxy, hello: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut got = String::new();
    let read = s.read_to_string(&mut got);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
    got
}

#[tokio::test]
async fn tcp_rules_match_source_labels_and_leave_gateway_rules_to_gateways() {
    let (main, replica) = (named("main").await, named("replica").await);
    // This proxy's workload is `app: servicea`. Neither rule is for it: one is for another
    // app, one for a gateway. The connection goes to the service itself.
    let (mut svc, other) = services(Protocol::Tcp, main, replica);
    svc.tcp_routes = vec![
        TcpRoute {
            matches: vec![L4Match {
                source_labels: [("app".to_string(), "reports".to_string())].into(),
                ..L4Match::default()
            }],
            destinations: to_replica(),
        },
        TcpRoute {
            matches: vec![L4Match {
                gateways: vec!["istio-system/edge".into()],
                ..L4Match::default()
            }],
            destinations: to_replica(),
        },
    ];
    let proxy = start(&config(vec![svc.clone(), other.clone()])).await;
    assert_eq!(reached(&proxy, b"hello").await, "main");

    // A rule for this app takes it, and one for this namespace (the proxy's is `default`).
    svc.tcp_routes[0].matches[0].source_labels =
        [("app".to_string(), "servicea".to_string())].into();
    let proxy = start(&config(vec![svc.clone(), other.clone()])).await;
    assert_eq!(reached(&proxy, b"hello").await, "replica");
    svc.tcp_routes[0].matches[0] = L4Match {
        source_namespace: Some("default".into()),
        ..L4Match::default()
    };
    let proxy = start(&config(vec![svc.clone(), other.clone()])).await;
    assert_eq!(reached(&proxy, b"hello").await, "replica");
    svc.tcp_routes[0].matches[0].source_namespace = Some("reports".into());
    let proxy = start(&config(vec![svc, other])).await;
    assert_eq!(reached(&proxy, b"hello").await, "main");
}

/// The first bytes of a TLS connection to `server_name`: a ClientHello with that SNI.
fn client_hello(server_name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test]
async fn tls_rules_route_a_tls_port_by_sni_and_pass_the_bytes_through() {
    let (main, replica) = (named("main").await, named("replica").await);
    let (mut svc, other) = services(Protocol::Tls, main, replica);
    svc.tls_routes = vec![TlsRoute {
        matches: vec![TlsMatch {
            sni_hosts: vec!["*.reports.example.com".into()],
            ..TlsMatch::default()
        }],
        destinations: to_replica(),
    }];
    let proxy = start(&config(vec![svc, other])).await;
    assert_eq!(
        reached(&proxy, &client_hello("eu.reports.example.com")).await,
        "replica"
    );
    // Another name matches no rule: the service itself.
    assert_eq!(
        reached(&proxy, &client_hello("shop.example.com")).await,
        "main"
    );
    // Not TLS at all on a TLS port: no SNI, the service itself.
    assert_eq!(reached(&proxy, b"plain bytes").await, "main");
}
