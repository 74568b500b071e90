//! Raw TCP forwarding for ports that are not HTTP: to a balanced endpoint of the service (by
//! its TCP routes, weighted), to the original destination for unknown addresses, or to the app
//! (inbound). Bytes and connections are counted with Istio's TCP metrics.

use std::{sync::Arc, time::Duration};

use mizzen_proxy_config::{Destination, Service};
use mizzen_route::UnknownHostAction;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use mizzen_resilience::ResponseFlags;

use crate::{
    app::Shared,
    listener::ConnMeta,
    telemetry::{Label, LabelParts, ServiceLabels},
};

/// The destination of a TCP connection to `service` on `port`: its first TCP route that
/// applies, picked by weight, else the service itself.
fn tcp_destination(service: &Service, port: u16, random: u32) -> Destination {
    service
        .tcp_routes
        .iter()
        .find(|r| {
            r.matches.is_empty() || r.matches.iter().any(|m| m.port.is_none_or(|p| p == port))
        })
        .and_then(|r| mizzen_route::pick_weighted(&r.destinations, random))
        .map(|d| d.destination.clone())
        .unwrap_or_else(|| Destination {
            host: service.host.clone(),
            subset: None,
            port: None,
        })
}

pub async fn forward(stream: TcpStream, meta: Arc<ConnMeta>, outbound: bool, shared: Arc<Shared>) {
    let local = shared.telemetry.workload.clone();
    let (reporter, mut parts) = if outbound {
        let parts = LabelParts {
            source: local,
            security_policy: Label::UNKNOWN,
            ..Default::default()
        };
        ("source", parts)
    } else {
        let parts = LabelParts {
            destination: local,
            security_policy: Label::Static("none"),
            ..Default::default()
        };
        ("destination", parts)
    };
    let mut no_route = false;
    let target = if outbound {
        let snap = shared.store.current();
        let service = match &meta.service_host {
            Some(h) => snap.routes.service_for_host(h),
            None => snap
                .routes
                .service_for_address(meta.orig_dst.ip(), meta.port),
        };
        match service {
            Some(service) => {
                let dest = tcp_destination(service, meta.port, rand::random());
                let port = dest.port.unwrap_or(meta.port);
                let up = shared.upstreams.get(
                    &snap,
                    &*shared.endpoints,
                    &dest.host,
                    dest.subset.as_deref(),
                    port,
                );
                parts.service = up.service.clone();
                let ip = meta.peer.ip();
                let picked = up.balancer.pick(
                    up.endpoints.len(),
                    Some(crate::balance::hash::hash64(ip.to_string().as_bytes())),
                    rand::random::<u32>,
                    |i| {
                        up.endpoints[i]
                            .active
                            .load(std::sync::atomic::Ordering::Relaxed)
                    },
                    |_| true,
                );
                picked.map(|i| {
                    let e = &up.endpoints[i];
                    parts.destination = e.peer.clone();
                    e.name.clone()
                })
            }
            // An address no service has: passed through under ALLOW_ANY, refused (NR) under
            // REGISTRY_ONLY, exactly as the HTTP path decides.
            None if meta.service_host.is_none()
                && snap.routes.unknown_host_action() == UnknownHostAction::Passthrough =>
            {
                parts.service = ServiceLabels::of(&meta.orig_dst.ip().to_string(), "");
                Some(meta.orig_dst.to_string())
            }
            None => {
                no_route = meta.service_host.is_none();
                None
            }
        }
    } else {
        Some(meta.orig_dst.to_string())
    };
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
    let upstream =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&target)).await {
            Ok(Ok(s)) => s,
            _ => {
                let labels = labels(ResponseFlags::UF);
                m.tcp_opened.get_or_create(&labels).inc();
                m.tcp_closed.get_or_create(&labels).inc();
                tracing::debug!(%target, "tcp upstream connect failed");
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    let labels = labels(ResponseFlags::default());
    m.tcp_opened.get_or_create(&labels).inc();
    let (sent, received) = splice(stream, upstream).await;
    // As Envoy counts them on the upstream connection: bytes sent to it, received from it.
    m.tcp_sent.get_or_create(&labels).inc_by(sent);
    m.tcp_received.get_or_create(&labels).inc_by(received);
    m.tcp_closed.get_or_create(&labels).inc();
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
