//! A gateway connection from accept to its handler: a port with TLS servers reads the
//! ClientHello's SNI (without consuming it) to pick the server, then passes the bytes through
//! untouched (`PASSTHROUGH`) or terminates TLS; what comes out is HTTP for the server's virtual
//! hosts or TCP for its routes. Plaintext goes to the port's HTTP site or TCP server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::HeaderValue;

use mizzen_proxy_config::{Server, ServerTlsMode};
use mizzen_route::{ConnectionInfo, L4Decision, L4Rule};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::{
    Gateway,
    plan::{PortPlan, SiteKey, TlsSite},
    request::{self, Conn},
};
use crate::{
    app::Shared,
    http::{server, xfcc},
    listener,
    proxy_protocol::Downstream,
    sni::{self, Hello},
    stream::ServerTlsStream,
    tcp,
};

/// How long a client may take to send its ClientHello, or its first bytes on a port that
/// takes both TLS and plaintext.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Accepts on the server port `port` until draining starts (through the sidecar's accept
/// loop, [`listener::serve`]).
pub async fn serve(listener: TcpListener, port: u16, shared: Arc<Shared>) {
    let Some(gateway) = shared.gateway.clone() else {
        return;
    };
    let serving = shared.clone();
    listener::serve(listener, serving, move |stream, peer| {
        let span = tracing::debug_span!("gateway", %peer, port);
        connection(stream, peer, port, gateway.clone(), shared.clone()).instrument(span)
    })
    .await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    gateway: Arc<Gateway>,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    // The connection as the client made it, for a PROXY protocol header upstream.
    let peer = Downstream {
        source: peer,
        destination: stream.local_addr().unwrap_or(peer),
    };
    let plan = gateway.plan(&shared.store.current());
    let Some(ports) = plan.ports.get(&port) else {
        tracing::debug!("no server on this port any more; closing");
        return;
    };
    let tls_first = !ports.tls.is_empty()
        && match (&ports.http, &ports.tcp) {
            (None, None) => true,
            // Both kinds on one port: a TLS record type tells them apart.
            _ => {
                let mut b = [0u8; 1];
                matches!(
                    tokio::time::timeout(HELLO_TIMEOUT, stream.peek(&mut b)).await,
                    Ok(Ok(1)) if b[0] == sni::HANDSHAKE
                )
            }
        };
    if tls_first {
        let sni = match sni::peek(&stream, HELLO_TIMEOUT).await {
            Hello::ClientHello(sni) => sni,
            _ => {
                tracing::debug!("not a TLS ClientHello on a TLS port; closing");
                return;
            }
        };
        let Some(site) = ports.tls_site(sni.as_deref()) else {
            tracing::debug!(?sni, "no server for this SNI; closing");
            return;
        };
        return tls(stream, peer, sni, site, &gateway, shared).await;
    }
    plaintext(stream, peer, port, ports, shared).await;
}

async fn plaintext(
    stream: TcpStream,
    peer: Downstream,
    port: u16,
    ports: &PortPlan,
    shared: Arc<Shared>,
) {
    if ports.http.is_some() {
        let conn = Conn::new(peer, SiteKey::Plaintext(port), "http");
        return http(stream, conn, shared).await;
    }
    match &ports.tcp {
        Some(server) => tcp_routes(stream, peer, server, &shared).await,
        None => tracing::debug!("only TLS is served on this port; closing"),
    }
}

/// A connection to a server that takes TLS: passed through by SNI, or terminated.
async fn tls(
    stream: TcpStream,
    peer: Downstream,
    sni: Option<String>,
    site: &TlsSite,
    gateway: &Gateway,
    shared: Arc<Shared>,
) {
    let server = &site.server;
    let mode = server.tls.as_ref().map(|t| t.mode).unwrap_or_default();
    if let Some(table) = &site.passthrough {
        let info = ConnectionInfo {
            destination: None,
            source: Some(peer.source.ip()),
            port: server.port,
            host: None,
            sni: sni.as_deref(),
            source_labels: &shared.workload.labels,
            source_namespace: &shared.workload.namespace,
            gateway: &server.gateway,
        };
        let dest = match table.select_l4(&info, rand::random()) {
            L4Decision::Forward {
                rule: L4Rule::Tls(_),
                destination,
                ..
            } => Some(destination.destination.clone()),
            _ => None,
        };
        return tcp::forward_to(stream, dest.as_ref(), server.port, peer, &shared).await;
    }
    let http = site.http.is_some();
    let alpn = if http { HTTP_ALPN } else { &[] };
    let acceptor = match (mode, server.tls.as_ref()) {
        (ServerTlsMode::IstioMutual, _) => {
            // The gateway's own mesh certificate; the client must present one of the mesh.
            match shared.tls.clone().filter(|t| t.ready()) {
                Some(mesh) => {
                    let Ok(Ok(accepted)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, mesh.accept(stream)).await
                    else {
                        tracing::debug!("ISTIO_MUTUAL handshake failed");
                        return;
                    };
                    let by = mesh.store.id().uri();
                    let client = xfcc::of_connection(Some(&by), accepted.stream.get_ref().1);
                    let stream = ServerTlsStream::new(accepted.stream);
                    return terminated(stream, peer, client, site, http, shared).await;
                }
                None => {
                    let server = &site.id;
                    tracing::warn!(%server, "ISTIO_MUTUAL server without a workload certificate");
                    return;
                }
            }
        }
        (_, Some(tls)) => match gateway.credentials.server_config(tls, alpn) {
            Some(config) => TlsAcceptor::from(config),
            None => return,
        },
        (_, None) => return,
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            // A MUTUAL server's client certificate; none under SIMPLE.
            let client = xfcc::of_connection(None, stream.get_ref().1);
            terminated(
                ServerTlsStream::new(stream),
                peer,
                client,
                site,
                http,
                shared,
            )
            .await
        }
        Ok(Err(e)) => tracing::debug!(error = %e, server = %site.id, "TLS handshake failed"),
        Err(_) => tracing::debug!(server = %site.id, "TLS handshake timed out"),
    }
}

/// What a terminated TLS connection carries: HTTP for the server's virtual hosts, or TCP for
/// its routes.
async fn terminated<S>(
    stream: S,
    peer: Downstream,
    client_cert: Option<HeaderValue>,
    site: &TlsSite,
    http_site: bool,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if http_site {
        let mut conn = Conn::new(
            peer,
            SiteKey::Tls(site.server.port, site.id.clone()),
            "https",
        );
        conn.client_cert = client_cert;
        http(stream, conn, shared).await;
    } else {
        tcp_routes(stream, peer, &site.server, &shared).await;
    }
}

async fn http<S>(stream: S, conn: Conn, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let settings = shared.server;
    let shutdown = shared.drain.signal();
    server::serve(
        stream,
        settings,
        move |req| request::handle(shared.clone(), conn.clone(), req),
        shutdown,
    )
    .await;
}

/// A TCP connection by the server's `tcp_routes`: the first whose match takes it (port, the
/// client's address, the gateway's labels and namespace), as the sidecar's rules are matched.
async fn tcp_routes<S>(stream: S, peer: Downstream, server: &Server, shared: &Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let info = ConnectionInfo {
        destination: None,
        source: Some(peer.source.ip()),
        host: None,
        port: server.port,
        sni: None,
        source_labels: &shared.workload.labels,
        source_namespace: &shared.workload.namespace,
        gateway: &server.gateway,
    };
    let dest = mizzen_route::select_tcp(&server.tcp_routes, &info, rand::random())
        .map(|d| d.destination.clone());
    tcp::forward_to(stream, dest.as_ref(), server.port, peer, shared).await;
}
