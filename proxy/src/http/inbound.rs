//! The inbound request path: what arrives for the local app. Reported with
//! `reporter="destination"` and forwarded to the app's port on loopback.

use std::{convert::Infallible, future::Future, sync::Arc};

use http::{Request, Response};
use hyper::body::Incoming;

use crate::{
    app::Shared,
    http::{
        body::Body,
        headers::{RequestAuthority, is_upgrade, strip_hop_by_hop},
        outbound::call,
        report::Exchange,
        upgrade, xfcc,
    },
    listener::ConnMeta,
    telemetry::ServiceLabels,
    upstream::UpstreamService,
};

pub fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnMeta>,
    req: Request<Incoming>,
) -> futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>> {
    Box::pin(handle_inner(shared, conn, req))
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice (see `outbound::respond`)"
)]
fn handle_inner(
    shared: Arc<Shared>,
    conn: Arc<ConnMeta>,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    async move {
        let snap = shared.store.current();
        let (mut parts, body) = req.into_parts();
        let authority = RequestAuthority::of(&parts);
        let authority = authority.as_ref().map_or("", RequestAuthority::as_str);
        let (mut ex, body, _target) = Exchange::start(
            shared.telemetry.clone(),
            "destination",
            &mut parts,
            body,
            authority,
            conn.peer,
        );
        if let Some(peer) = &conn.mtls_peer {
            ex.parts.mtls_source(peer);
        }
        let service = shared.host_labels.get(snap.version, authority, || {
            match snap.routes.service_for_host(authority) {
                Some(s) => ServiceLabels::of(&s.host, &s.namespace),
                None => ServiceLabels::of(
                    mizzen_route::authority_host(authority),
                    &shared.workload.namespace,
                ),
            }
        });
        ex.destination_service(service);
        let policy = shared.policy.get(&snap, &shared.workload);
        if let Err(resp) = policy.check(&mut parts, &conn) {
            return Ok(ex.finish(resp));
        }
        xfcc::append(&mut parts.headers, conn.client_cert.as_ref());
        let upstream = shared.inbound.passthrough(conn.orig_dst);
        ex.log(|e| e.upstream_cluster = format!("inbound|{}||", conn.orig_dst.port()));
        let upgrade = is_upgrade(&parts.headers);
        if !upgrade {
            strip_hop_by_hop(&mut parts.headers);
        }
        let req = Request::from_parts(parts, body);
        let upstream = UpstreamService::new(upstream, Some(ex.origin()));
        let resp = if upgrade {
            upgrade::forward(upstream, req).await
        } else {
            call(upstream, req).await
        };
        Ok(ex.finish(resp))
    }
}
