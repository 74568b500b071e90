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

use crate::{app::Shared, http::report::service_name, listener::ConnMeta, telemetry::TcpLabels};

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
    let w = &shared.workload;
    let mut labels = TcpLabels {
        reporter: if outbound { "source" } else { "destination" }.into(),
        request_protocol: "tcp".into(),
        connection_security_policy: if outbound { "unknown" } else { "none" }.into(),
        ..Default::default()
    };
    let unknown = || "unknown".to_string();
    let mut no_route = false;
    let target = if outbound {
        labels.source_workload = w.name.clone();
        labels.source_workload_namespace = w.namespace.clone();
        labels.source_app = w.app.clone();
        labels.source_version = w.version.clone();
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
                labels.destination_service = dest.host.clone();
                labels.destination_service_name = service_name(&dest.host);
                labels.destination_service_namespace = service.namespace.clone();
                let up = shared.upstreams.get(
                    &snap,
                    &*shared.endpoints,
                    &dest.host,
                    dest.subset.as_deref(),
                    port,
                );
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
                    if let Some(v) = e.endpoint.labels.get("version") {
                        labels.destination_version = v.clone();
                    }
                    if let Some(a) = e.endpoint.labels.get("app") {
                        labels.destination_app = a.clone();
                    }
                    e.name.clone()
                })
            }
            // An address no service has: passed through under ALLOW_ANY, refused (NR) under
            // REGISTRY_ONLY, exactly as the HTTP path decides.
            None if meta.service_host.is_none()
                && snap.routes.unknown_host_action() == UnknownHostAction::Passthrough =>
            {
                labels.destination_service = meta.orig_dst.ip().to_string();
                Some(meta.orig_dst.to_string())
            }
            None => {
                no_route = meta.service_host.is_none();
                None
            }
        }
    } else {
        labels.destination_workload = w.name.clone();
        labels.destination_workload_namespace = w.namespace.clone();
        labels.destination_app = w.app.clone();
        labels.destination_version = w.version.clone();
        Some(meta.orig_dst.to_string())
    };
    for l in [
        &mut labels.source_workload,
        &mut labels.source_workload_namespace,
        &mut labels.source_principal,
        &mut labels.source_app,
        &mut labels.source_version,
        &mut labels.destination_workload,
        &mut labels.destination_workload_namespace,
        &mut labels.destination_principal,
        &mut labels.destination_app,
        &mut labels.destination_version,
        &mut labels.destination_service,
        &mut labels.destination_service_name,
        &mut labels.destination_service_namespace,
    ] {
        if l.is_empty() {
            *l = unknown();
        }
    }
    let m = &shared.telemetry.metrics;
    let Some(target) = target else {
        labels.response_flags = if no_route { "NR" } else { "UH" }.into();
        m.tcp_opened.get_or_create(&labels).inc();
        m.tcp_closed.get_or_create(&labels).inc();
        return;
    };
    let upstream =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&target)).await {
            Ok(Ok(s)) => s,
            _ => {
                labels.response_flags = "UF".into();
                m.tcp_opened.get_or_create(&labels).inc();
                m.tcp_closed.get_or_create(&labels).inc();
                tracing::debug!(%target, "tcp upstream connect failed");
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    labels.response_flags = "-".into();
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
