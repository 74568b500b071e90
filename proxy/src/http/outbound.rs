//! The outbound request path: what the app sends out. Route with the config's route table,
//! then through the route's resilience layers to a balanced endpoint of the chosen upstream.

use std::{borrow::Cow, convert::Infallible, future::Future, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use mizzen_proxy_config::{Destination, Service};
use mizzen_resilience::{
    ResponseFlags, UpstreamError, circuit::CircuitLayer, fault::FaultLayer, reply::local_reply,
    retry::RetryLayer, timeout::TimeoutLayer,
};
use mizzen_route::{
    Decision, MESH_GATEWAY, RequestInfo, UnknownHostAction, authority_host, cors::Preflight,
};
use tower::{ServiceBuilder, ServiceExt};

use crate::{
    app::Shared,
    config::Snapshot,
    http::{
        body::{self, Body},
        headers::{RequestAuthority, is_upgrade, strip_hop_by_hop},
        mirror,
        report::Exchange,
        upgrade, xfcc,
    },
    listener::ConnMeta,
    proxy_protocol::Downstream,
    telemetry::ServiceLabels,
    upstream::{ClientAddr, UpstreamService},
};

/// Handles one request from the local app.
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
        let named = conn
            .service_host
            .is_none()
            .then(|| RequestAuthority::of(&parts))
            .flatten();
        let authority: Cow<'_, str> = match (&conn.service_host, &named) {
            (Some(h), _) => Cow::Borrowed(h),
            (None, Some(a)) => Cow::Borrowed(a.as_str()),
            (None, None) => Cow::Owned(conn.orig_dst.ip().to_string()),
        };
        let (mut ex, body, target) = Exchange::start(
            shared.telemetry.clone(),
            "source",
            &mut parts,
            body,
            &authority,
            conn.peer,
        );
        let path_and_query = target.as_str();
        xfcc::sanitize(&mut parts.headers);

        let info = RequestInfo {
            authority: &authority,
            port: conn.port,
            method: &parts.method,
            scheme: "http",
            path_and_query,
            headers: &parts.headers,
            source_labels: &shared.workload.labels,
            source_namespace: &shared.workload.namespace,
            gateway: MESH_GATEWAY,
        };
        let decision = snap.routes.select(&info, rand::random());
        let response = match decision {
            Decision::UnknownHost => match snap.routes.unknown_host_action() {
                // An explicit listener has no original destination to pass through to.
                UnknownHostAction::Passthrough if conn.service_host.is_none() => {
                    let upstream = shared.upstreams.passthrough(conn.orig_dst);
                    ex.log(|e| e.upstream_cluster = upstream.cluster.clone());
                    ex.destination_service(ServiceLabels::of(authority_host(&authority), ""));
                    let req = Request::from_parts(parts, body);
                    let upstream = UpstreamService::new(upstream, Some(ex.origin()));
                    if is_upgrade(req.headers()) {
                        upgrade::forward(upstream, req).await
                    } else {
                        call(upstream, strip(req)).await
                    }
                }
                _ => {
                    ex.log(|e| e.upstream_cluster = "BlackHoleCluster".into());
                    ex.destination_service(ServiceLabels::of(authority_host(&authority), ""));
                    local_reply(StatusCode::BAD_GATEWAY, "", ResponseFlags::NR)
                }
            },
            decision => {
                let at = Routed {
                    shared: &shared,
                    snap: &snap,
                    peer: Downstream {
                        source: conn.peer,
                        destination: conn.orig_dst,
                    },
                    port: conn.port,
                };
                respond(at, decision, parts, body, &mut ex).await
            }
        };
        Ok(ex.finish(response))
    }
}

/// Where a routed request came in: what [`respond`] needs besides the decision.
#[derive(Clone, Copy)]
pub struct Routed<'a> {
    pub shared: &'a Arc<Shared>,
    /// The config the upstreams are built from (services, policies, endpoints).
    pub snap: &'a Arc<Snapshot>,
    /// The caller's connection: its address for source-IP hashing and the hash cookie made
    /// for a request without one, both ends for a PROXY protocol header upstream.
    pub peer: Downstream,
    /// The port the request arrived for: the destination port when the route names none.
    pub port: u16,
}

/// Carries out a routing decision: answers a CORS preflight, forwards through the route's
/// resilience stack to a balanced endpoint, redirects, or answers directly. The one request
/// path behind a route decision, for the sidecar's outbound side and the ingress gateway alike.
///
/// [`Decision::UnknownHost`] is answered 404 with flag NR (a gateway's answer); the sidecar
/// decides unknown hosts itself before calling this.
///
/// An `async` block rather than an `async fn`, here and in the handlers: an `async fn` holds
/// its arguments twice, and a request's future is copied whole when it is boxed.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice (see `outbound::respond`)"
)]
pub fn respond<'a>(
    at: Routed<'a>,
    decision: Decision<'a>,
    mut parts: http::request::Parts,
    body: Body,
    ex: &'a mut Exchange,
) -> impl Future<Output = Response<Body>> + Send + 'a {
    async move {
        let Routed {
            shared,
            snap,
            peer,
            port: in_port,
        } = at;
        let upgrade = is_upgrade(&parts.headers);
        let cors = decision.cors();
        let origin = cors.and_then(|_| {
            let origin = parts.headers.get(header::ORIGIN)?;
            origin.to_str().ok().map(str::to_string)
        });
        if let Some(policy) = cors
            && let Preflight::Respond(head) = policy.preflight(&parts.method, &parts.headers)
        {
            if let Some(route) = decision.route() {
                ex.log(|e| e.route_name = route.name.clone());
            }
            if let Some(service) = decision.service() {
                ex.destination_service(ServiceLabels::of(&service.host, &service.namespace));
            }
            return Response::from_parts(head, body::empty());
        }
        let mut response = match decision {
            Decision::Forward {
                service,
                route,
                destination,
                rewrite,
                matched,
                retry,
                fault,
                mirrors,
                ..
            } => {
                ex.log(|e| e.route_name = route.name.clone());
                let mut skipped = Vec::new();
                if let Some(rw) = rewrite {
                    skipped.extend(rw.apply(matched.and_then(|m| m.uri.as_ref()), &mut parts));
                }
                skipped.extend(mizzen_route::apply_request_header_ops(
                    route,
                    destination,
                    &mut parts.headers,
                ));
                log_skipped(&route.name, &skipped);
                let dest = &destination.destination;
                let port = destination_port(snap, Some(service), dest, in_port);
                let upstream = shared.upstreams.get(
                    snap,
                    &*shared.endpoints,
                    &dest.host,
                    dest.subset.as_deref(),
                    port,
                );
                ex.destination_service(upstream.service.clone());
                ex.log(|e| e.upstream_cluster = upstream.cluster.clone());
                if upstream.balancer.hash_key().is_some() {
                    parts.extensions.insert(ClientAddr(peer.source));
                }
                if upstream.policy.proxy_protocol.is_some() {
                    parts.extensions.insert(peer);
                }
                let req = Request::from_parts(parts, body);
                let origin = Some(ex.origin());
                let mut resp = if upgrade {
                    upgrade::forward(UpstreamService::new(upstream, origin), req).await
                } else {
                    let budget = upstream.limits.retry_budget();
                    let policy = retry.unwrap_or(&snap.default_retry);
                    let retry = RetryLayer::from_policy(policy.clone(), budget);
                    // Mirrors sit under fault injection: an aborted request is not copied.
                    let stack = ServiceBuilder::new()
                        .option_layer(fault.map(|f| FaultLayer::shared(Some(f.clone()))))
                        .option_layer(mirror::MirrorLayer::for_route(shared, snap, mirrors, port))
                        .layer(TimeoutLayer::from_ms(route.timeout_ms))
                        .layer(retry)
                        .layer(CircuitLayer::new(upstream.limits.clone()))
                        .service(UpstreamService::new(upstream.clone(), origin));
                    call(stack, strip(req)).await
                };
                let skipped =
                    mizzen_route::apply_response_header_ops(route, destination, resp.headers_mut());
                log_skipped(&route.name, &skipped);
                resp
            }
            Decision::Redirect {
                route,
                location,
                code,
                service,
                ..
            } => {
                ex.log(|e| e.route_name = route.name.clone());
                ex.destination_service(ServiceLabels::of(&service.host, &service.namespace));
                redirect(code, &location)
            }
            Decision::DirectResponse {
                route,
                status,
                body,
                service,
                ..
            } => {
                ex.log(|e| e.route_name = route.name.clone());
                ex.destination_service(ServiceLabels::of(&service.host, &service.namespace));
                text(status, body.unwrap_or(""))
            }
            Decision::NoRoute { service } => {
                ex.destination_service(ServiceLabels::of(&service.host, &service.namespace));
                local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NR)
            }
            Decision::UnknownHost => local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NR),
        };
        if let Some(policy) = cors {
            policy.response_headers(origin.as_deref(), response.headers_mut());
        }
        response
    }
}

/// The port a destination is reached on: its own, else the port the request came in on when
/// the service serves it (or declares none), else the service's only port (a gateway's
/// listening port is rarely the service's).
///
/// `known`: a service already at hand (the one the request was routed by), looked up again
/// only when the destination is another.
pub fn destination_port(
    snap: &Snapshot,
    known: Option<&Service>,
    dest: &Destination,
    in_port: u16,
) -> u16 {
    if let Some(p) = dest.port {
        return p;
    }
    let service = match known {
        Some(s) if s.host == dest.host => Some(s),
        _ => snap.config().service(&dest.host),
    };
    match service {
        Some(s) if !s.ports.is_empty() && s.port(in_port).is_none() && s.ports.len() == 1 => {
            s.ports[0].number
        }
        _ => in_port,
    }
}

/// A redirect to `location` with `code`.
pub fn redirect(code: u16, location: &str) -> Response<Body> {
    let mut r = text(code, "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn strip(mut req: Request<Body>) -> Request<Body> {
    strip_hop_by_hop(req.headers_mut());
    req
}

/// Runs a request through a stack; an error becomes Envoy's local reply for it. The stack's
/// future is boxed once: awaited in place, its `Send` would have to hold for every lifetime
/// of the boxed error type, which the compiler cannot show; the error is mapped by a plain
/// combinator, not a second boxed `async` block.
pub fn call<S>(svc: S, req: Request<Body>) -> Call
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = body::BoxError>
        + Send
        + 'static,
    S::Future: Send,
{
    use futures::FutureExt;
    let fut: futures::future::BoxFuture<'static, Outcome> = Box::pin(svc.oneshot(req));
    fut.map(reply_to_error as fn(Outcome) -> Response<Body>)
}

/// What a stack answers: a response, or an error that becomes a local reply.
type Outcome = Result<Response<Body>, body::BoxError>;

/// The future of [`call`].
pub type Call = futures::future::Map<
    futures::future::BoxFuture<'static, Outcome>,
    fn(Outcome) -> Response<Body>,
>;

fn reply_to_error(result: Outcome) -> Response<Body> {
    result.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "upstream call failed");
        UpstreamError::classify(e.as_ref()).local_reply()
    })
}

pub fn text(status: u16, text: &str) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::copy_from_slice(text.as_bytes())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !text.is_empty() {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// A rewrite or header operation the config asked for but that could not be applied (an
/// invalid header name or value): the request goes on without it, and the log says so.
fn log_skipped(route: &str, skipped: &[String]) {
    for warning in skipped {
        tracing::warn!(route, %warning, "route change skipped");
    }
}
