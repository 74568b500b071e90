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

use std::{net::SocketAddr, sync::Arc, time::Duration};

use mizzen_proxy_config::Protocol;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

pub use detect::{Detected, classify, detect};
pub use orig_dst::original_dst;

use crate::{
    app::Shared,
    http::{inbound, outbound, server},
    tcp,
};

/// Who is on the other end of a connection, as far as TLS can tell. Plaintext for now; mTLS
/// (a later issue) fills in the peer's SPIFFE identity.
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
    pub identity: Identity,
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

/// Accepts until shutdown; each connection runs in its own task.
pub async fn serve(listener: TcpListener, role: Role, shared: Arc<Shared>) {
    let mut shutdown = shared.drain.signal();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let role = role.clone();
                    let guard = shared.drain.track();
                    let span = tracing::debug_span!("conn", %peer, role = role.name());
                    tokio::spawn(
                        async move {
                            connection(stream, peer, role, shared).await;
                            drop(guard);
                        }
                        .instrument(span),
                    );
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

async fn connection(stream: TcpStream, peer: SocketAddr, role: Role, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let snap = shared.store.current();
    let (meta, protocol) = match &role {
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
    drop(snap);
    let http = match protocol {
        p if p.is_http() => true,
        Protocol::Unknown => detect(&stream, DETECT_TIMEOUT).await == Detected::Http,
        _ => false,
    };
    let meta = Arc::new(meta);
    if !http {
        tcp::forward(stream, meta, role.is_outbound(), shared).await;
        return;
    }
    let settings = shared.server;
    let shutdown = shared.drain.signal();
    if role.is_outbound() {
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
        identity: Identity::None,
    }
}
