//! Listeners: where connections come in, what each is addressed to, and which protocol handler
//! takes it.
//!
//! - outbound capture (15001): iptables redirects the app's outgoing connections here; the
//!   original destination comes from `SO_ORIGINAL_DST`;
//! - inbound capture (15006): connections to the pod; forwarded to the app on
//!   `127.0.0.1:<original port>`;
//! - explicit listeners (local mode): an outbound port standing for one service port, an
//!   inbound port standing for one app address.

mod detect;
mod orig_dst;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use mizzen_policy::MtlsMode;
use mizzen_proxy_config::Protocol;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tracing::Instrument;

pub use detect::{Detected, classify, detect};
pub use orig_dst::original_dst;

use crate::{
    app::Shared,
    http::{inbound, outbound, server},
    mtls,
    sni::{self, Hello},
    tcp,
    telemetry::MtlsPeer,
};

/// Who is on the other end of a connection, as far as TLS can tell: the SPIFFE id (URI) an mTLS
/// peer presented, or nothing for plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    #[default]
    None,
    Spiffe(String),
}

/// What a connection is addressed to.
#[derive(Clone, Debug)]
pub struct ConnMeta {
    pub peer: SocketAddr,
    /// Outbound: the original destination. Inbound: the app address to forward to.
    pub orig_dst: SocketAddr,
    /// The service port (outbound) or app port (inbound).
    pub port: u16,
    /// Explicit outbound listener: the service this port stands for.
    pub service_host: Option<String>,
    /// Outbound to a TLS or HTTPS port: the server name of the client's ClientHello (read
    /// without consuming it), for the VirtualService's `tls` rules.
    pub sni: Option<String>,
    pub identity: Identity,
    /// An mTLS connection's `x-forwarded-client-cert` element ([`crate::http::xfcc`]).
    pub client_cert: Option<http::HeaderValue>,
    /// An mTLS peer's metric labels, made once for all the connection's requests.
    pub mtls_peer: Option<MtlsPeer>,
}

#[derive(Clone, Debug)]
pub enum Role {
    OutboundCapture,
    InboundCapture,
    Outbound { host: String, port: u16 },
    Inbound { app: SocketAddr },
}

impl Role {
    fn name(&self) -> &'static str {
        match self {
            Role::OutboundCapture => "outbound-capture",
            Role::InboundCapture => "inbound-capture",
            Role::Outbound { .. } => "outbound",
            Role::Inbound { .. } => "inbound",
        }
    }

    fn is_outbound(&self) -> bool {
        matches!(self, Role::OutboundCapture | Role::Outbound { .. })
    }
}

/// How long to wait for a client's first bytes on a port of unknown protocol.
const DETECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an mTLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts until draining starts; each connection runs in its own task, tracked by the drain,
/// as the future `handler` makes of it. The one accept loop of the sidecar's listeners and the
/// gateway's server ports.
pub async fn serve<H, F>(listener: TcpListener, shared: Arc<Shared>, handler: H)
where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = shared.drain.signal();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let guard = shared.drain.track();
                    let conn = handler(stream, peer);
                    tokio::spawn(async move {
                        conn.await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::drain::Drain::started(&mut shutdown) => return,
        }
    }
}

/// A sidecar connection accepted on a listener of `role` (the handler [`serve`] takes): to
/// the HTTP server or TCP forwarder of its direction, through mTLS where the policy says.
pub fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    role: Role,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send + 'static {
    let span = tracing::debug_span!("conn", %peer, role = role.name());
    dispatch(stream, peer, role, shared).instrument(span)
}

async fn dispatch(stream: TcpStream, peer: SocketAddr, role: Role, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let snap = shared.store.current();
    let (mut meta, protocol) = match &role {
        Role::OutboundCapture | Role::InboundCapture => {
            let Some(orig) = original_dst(&stream).filter(|o| *o != local) else {
                // Sent straight to the capture port: forwarding would loop back here.
                tracing::debug!(%peer, "connection to a capture port without a redirect; closing");
                return;
            };
            if role.is_outbound() {
                let protocol = snap
                    .routes
                    .service_for_address(orig.ip(), orig.port())
                    .and_then(|s| s.port(orig.port()))
                    .map(|p| p.protocol)
                    .unwrap_or_default();
                (meta(peer, orig, orig.port(), None), protocol)
            } else {
                let app = SocketAddr::from(([127, 0, 0, 1], orig.port()));
                (meta(peer, app, orig.port(), None), Protocol::Unknown)
            }
        }
        Role::Outbound { host, port } => {
            let protocol = snap
                .config()
                .service(host)
                .or_else(|| snap.routes.service_for_host(host))
                .and_then(|s| s.port(*port))
                .map(|p| p.protocol)
                .unwrap_or_default();
            (meta(peer, local, *port, Some(host.clone())), protocol)
        }
        Role::Inbound { app } => (meta(peer, *app, app.port(), None), Protocol::Unknown),
    };
    let mtls_mode = (!role.is_outbound()).then(|| {
        shared
            .policy
            .get(&snap, &shared.workload)
            .mtls_mode(meta.port)
    });
    drop(snap);
    if let Some(mode) = mtls_mode
        && let Some(tls) = shared.tls.clone().filter(|t| t.ready())
    {
        let tls_first = mode != MtlsMode::Disable
            && tokio::time::timeout(DETECT_TIMEOUT, mtls::starts_with_tls(&stream))
                .await
                .unwrap_or(false);
        if tls_first {
            return inbound_mtls(stream, meta, &tls, shared).await;
        }
        if mode == MtlsMode::Strict {
            tracing::debug!(%peer, port = meta.port, "plaintext refused: mTLS is STRICT on this port");
            mtls::refuse(stream).await;
            return;
        }
    }
    if role.is_outbound()
        && matches!(protocol, Protocol::Tls | Protocol::Https)
        && let Hello::ClientHello(Some(name)) = sni::peek(&stream, DETECT_TIMEOUT).await
    {
        meta.sni = Some(name);
    }
    let http = match protocol {
        p if p.is_http() => true,
        Protocol::Unknown => detect(&stream, DETECT_TIMEOUT).await == Detected::Http,
        _ => false,
    };
    handle(stream, Arc::new(meta), http, role.is_outbound(), shared).await;
}

/// The server side of an mTLS connection from another proxy: the peer's identity goes with
/// every request; ALPN says whether it is HTTP or raw TCP.
async fn inbound_mtls(
    stream: TcpStream,
    mut meta: ConnMeta,
    tls: &mtls::MeshTls,
    shared: Arc<Shared>,
) {
    let accepted = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::debug!(peer = %meta.peer, error = %e, "mTLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %meta.peer, "mTLS handshake timed out");
            return;
        }
    };
    let uri = accepted.peer.uri();
    let served = &shared.telemetry.workload.served_identity;
    meta.mtls_peer = Some(MtlsPeer::new(&uri, served));
    meta.identity = Identity::Spiffe(uri);
    let (_, conn) = accepted.stream.get_ref();
    meta.client_cert = crate::http::xfcc::of_connection(Some(&tls.store.id().uri()), conn);
    let http = accepted.alpn != mtls::Alpn::Tcp;
    let stream = crate::stream::ServerTlsStream::new(accepted.stream);
    handle(stream, Arc::new(meta), http, false, shared).await;
}

/// Hands a connection to the HTTP server or the TCP forwarder of its direction.
async fn handle<S>(stream: S, meta: Arc<ConnMeta>, http: bool, outbound: bool, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !http {
        tcp::forward(stream, meta, outbound, shared).await;
        return;
    }
    let settings = shared.server;
    let shutdown = shared.drain.signal();
    if outbound {
        server::serve(
            stream,
            settings,
            move |req| outbound::handle(shared.clone(), meta.clone(), req),
            shutdown,
        )
        .await;
    } else {
        server::serve(
            stream,
            settings,
            move |req| inbound::handle(shared.clone(), meta.clone(), req),
            shutdown,
        )
        .await;
    }
}

fn meta(peer: SocketAddr, orig_dst: SocketAddr, port: u16, host: Option<String>) -> ConnMeta {
    ConnMeta {
        peer,
        orig_dst,
        port,
        service_host: host,
        sni: None,
        identity: Identity::None,
        client_cert: None,
        mtls_peer: None,
    }
}
