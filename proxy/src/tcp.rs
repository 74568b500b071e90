//! Raw TCP forwarding for ports that are not HTTP: to a balanced endpoint of the service (by
//! its VirtualService `tcp` rules, or `tls` rules by SNI on TLS and HTTPS ports, matched as
//! `mizzen_route` decides: port, source labels and namespace, source and destination subnets,
//! gateways; weighted), to the original destination for unknown addresses, or to the app
//! (inbound). Bytes and connections are counted with Istio's TCP metrics.

use std::{sync::Arc, time::Duration};

use mizzen_proxy_config::Destination;
use mizzen_route::{ConnectionInfo, L4Decision, MESH_GATEWAY, UnknownHostAction};
use tokio::io::{AsyncRead, AsyncWrite};

use http::uri::Authority;
use mizzen_resilience::{
    ResponseFlags,
    circuit::{ConnectionPermit, Overflow},
    outlier::Outcome,
};

use crate::{
    app::Shared,
    http::{body::BoxError, client},
    listener::ConnMeta,
    mtls::Alpn,
    proxy_protocol::{self, Downstream},
    stream::Stream,
    telemetry::{Label, LabelParts, ServiceLabels},
    tunnel,
    upstream::{EndpointState, Upstream},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn forward<S>(stream: S, meta: Arc<ConnMeta>, outbound: bool, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let local = shared.telemetry.workload.clone();
    let (reporter, mut parts) = if outbound {
        ("source", source_parts(&shared))
    } else {
        let mut parts = LabelParts {
            destination: local,
            security_policy: Label::Static("none"),
            ..Default::default()
        };
        if let Some(peer) = &meta.mtls_peer {
            parts.mtls_source(peer);
        }
        ("destination", parts)
    };
    let mut no_route = false;
    let target = if outbound {
        let snap = shared.store.current();
        let info = ConnectionInfo {
            destination: meta.service_host.is_none().then(|| meta.orig_dst.ip()),
            source: Some(meta.peer.ip()),
            host: meta.service_host.as_deref(),
            port: meta.port,
            sni: meta.sni.as_deref(),
            source_labels: &shared.workload.labels,
            source_namespace: &shared.workload.namespace,
            gateway: MESH_GATEWAY,
        };
        match snap.routes.select_l4(&info, rand::random()) {
            L4Decision::Forward { destination, .. } => {
                let dest = &destination.destination;
                pick_target(&shared, &snap, dest, meta.port, meta.peer, &mut parts)
            }
            // The service's rules all have matches and none took this connection: a sidecar
            // sends it to the service itself, as Istio adds a default route to the service's
            // cluster after a VirtualService's tcp and tls rules.
            L4Decision::NoRoute { service } => {
                let dest = Destination {
                    host: service.host.clone(),
                    subset: None,
                    port: None,
                };
                pick_target(&shared, &snap, &dest, meta.port, meta.peer, &mut parts)
            }
            // An address no service has: passed through under ALLOW_ANY, refused (NR) under
            // REGISTRY_ONLY, exactly as the HTTP path decides.
            L4Decision::UnknownHost
                if meta.service_host.is_none()
                    && snap.routes.unknown_host_action() == UnknownHostAction::Passthrough =>
            {
                parts.service = ServiceLabels::of(&meta.orig_dst.ip().to_string(), "");
                Some(Target::Address(meta.orig_dst.to_string()))
            }
            L4Decision::UnknownHost => {
                no_route = meta.service_host.is_none();
                None
            }
        }
    } else {
        Some(Target::Address(meta.orig_dst.to_string()))
    };
    let downstream = Downstream {
        source: meta.peer,
        destination: meta.orig_dst,
    };
    relay(
        stream, target, downstream, no_route, reporter, parts, &shared,
    )
    .await;
}

/// Forwards a connection into the mesh, as this proxy's outbound side does: to a balanced
/// endpoint of `dest` (reached on `port` when it names none; the caller's address is the hash
/// key), with the TLS of the hop (mesh mTLS or origination), counted with `reporter="source"`.
/// `None`: no rule matched, and the connection is closed with flag NR.
pub async fn forward_to<S>(
    stream: S,
    dest: Option<&Destination>,
    port: u16,
    peer: Downstream,
    shared: &Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut parts = source_parts(shared);
    let target = match dest {
        Some(dest) => {
            let snap = shared.store.current();
            let port = crate::http::outbound::destination_port(&snap, None, dest, port);
            pick_target(shared, &snap, dest, port, peer.source, &mut parts)
        }
        None => None,
    };
    let no_route = dest.is_none();
    relay(stream, target, peer, no_route, "source", parts, shared).await;
}

/// The labels of a connection this proxy originates.
fn source_parts(shared: &Shared) -> LabelParts {
    LabelParts {
        source: shared.telemetry.workload.clone(),
        security_policy: Label::UNKNOWN,
        ..Default::default()
    }
}

/// A balanced endpoint of `dest` on `port` (hashing the caller's address); fills in the
/// service and destination labels. `None`: no endpoint to take it.
fn pick_target(
    shared: &Shared,
    snap: &crate::config::Snapshot,
    dest: &Destination,
    port: u16,
    peer: std::net::SocketAddr,
    parts: &mut LabelParts,
) -> Option<Target> {
    let port = dest.port.unwrap_or(port);
    let up = shared.upstreams.get(
        snap,
        &*shared.endpoints,
        &dest.host,
        dest.subset.as_deref(),
        port,
    );
    parts.service = up.service.clone();
    let hash = crate::balance::hash::hash64(peer.ip().to_string().as_bytes());
    up.pick(Some(hash), None).map(|i| {
        let endpoint = up.endpoints[i].clone();
        parts.destination = endpoint.peer.clone();
        Target::Endpoint {
            upstream: up.clone(),
            endpoint,
        }
    })
}

/// Connects to `target` and copies both ways, counting the connection and its bytes; without
/// a target the connection is counted as refused (NR when `no_route`, else UH) and closed.
async fn relay<S>(
    stream: S,
    target: Option<Target>,
    downstream: Downstream,
    no_route: bool,
    reporter: &'static str,
    parts: LabelParts,
    shared: &Shared,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let m = &shared.telemetry.metrics;
    let labels = |flags| parts.labels(reporter, "tcp", flags);
    let Some(target) = target else {
        let labels = labels(if no_route {
            ResponseFlags::NR
        } else {
            ResponseFlags::UH
        });
        m.tcp_opened.get_or_create(&labels).inc();
        m.tcp_closed.get_or_create(&labels).inc();
        return;
    };
    // `maxConnections` bounds an upstream's TCP connections too; the excess is closed at once.
    let Ok(_permit) = target.admit() else {
        let labels = labels(ResponseFlags::UO);
        m.tcp_opened.get_or_create(&labels).inc();
        m.tcp_closed.get_or_create(&labels).inc();
        tracing::debug!(
            target = target.addr(),
            "tcp connection over maxConnections closed"
        );
        return;
    };
    let upstream = match target.connect(downstream).await {
        Ok(s) => s,
        Err(e) => {
            let labels = labels(ResponseFlags::UF);
            m.tcp_opened.get_or_create(&labels).inc();
            m.tcp_closed.get_or_create(&labels).inc();
            tracing::debug!(target = target.addr(), error = %e, "tcp upstream connect failed");
            return;
        }
    };
    let labels = labels(ResponseFlags::default());
    m.tcp_opened.get_or_create(&labels).inc();
    let (sent, received) = splice(stream, upstream).await;
    // As Envoy counts them on the upstream connection: bytes sent to it, received from it.
    m.tcp_sent.get_or_create(&labels).inc_by(sent);
    m.tcp_received.get_or_create(&labels).inc_by(received);
    m.tcp_closed.get_or_create(&labels).inc();
}

/// Where a TCP connection goes.
enum Target {
    /// An address no service has (passed through), or the app's port (inbound): plaintext.
    Address(String),
    /// An endpoint of an upstream: the hop's TLS (mesh mTLS, TLS origination for `SIMPLE` and
    /// `MUTUAL`, or none) and the connect timeout are the upstream's, as for HTTP.
    Endpoint {
        upstream: Arc<Upstream>,
        endpoint: Arc<EndpointState>,
    },
}

impl Target {
    fn addr(&self) -> &str {
        match self {
            Target::Address(addr) => addr,
            Target::Endpoint { endpoint, .. } => &endpoint.name,
        }
    }

    /// A place under the upstream's `maxConnections` for as long as the permit is held.
    fn admit(&self) -> Result<Option<ConnectionPermit>, Overflow> {
        match self {
            Target::Address(_) => Ok(None),
            Target::Endpoint { upstream, .. } => upstream.limits.try_connection().map(Some),
        }
    }

    /// Connects; for an endpoint, the outcome counts towards its outlier detection
    /// (connection failures and timeouts are errors for a TCP service, as in Istio), and the
    /// connection opens with the PROXY protocol header for `downstream` when asked.
    async fn connect(&self, downstream: Downstream) -> Result<Stream, BoxError> {
        match self {
            Target::Address(addr) => {
                let authority: Authority = addr.parse()?;
                Ok(Stream::Plain(
                    client::connect(&authority, client::Dial::new(CONNECT_TIMEOUT)).await?,
                ))
            }
            Target::Endpoint { upstream, endpoint } => {
                let hop = upstream.hop(endpoint)?;
                let authority = endpoint
                    .authority
                    .as_ref()
                    .ok_or_else(|| format!("`{}` is not an address", endpoint.name))?;
                let dial = upstream.dial();
                let header = upstream
                    .policy
                    .proxy_protocol
                    .map(|version| proxy_protocol::header(version, Some(downstream)));
                let opened =
                    match client::open(authority, dial, header.as_deref(), hop, Alpn::Tcp).await {
                        Ok((stream, _)) => match &upstream.policy.tunnel {
                            Some(t) => tunnel::open(stream, t, dial.timeout)
                                .await
                                .map(|io| Stream::Tunnel(Box::new(io))),
                            None => Ok(stream),
                        },
                        Err(e) => Err(e),
                    };
                upstream.record(endpoint, || match &opened {
                    Ok(_) => Outcome::Status(200),
                    Err(e) => Outcome::of_error(e.as_ref()),
                });
                opened
            }
        }
    }
}

/// Copies both ways until both sides close; returns (bytes sent upstream, bytes received from
/// upstream). A draining proxy lets these run until its drain deadline.
async fn splice<A, B>(mut down: A, mut up: B) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional(&mut down, &mut up)
        .await
        .unwrap_or((0, 0))
}
