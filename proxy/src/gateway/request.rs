//! One HTTP request at the gateway: its Host (without port) picks a virtual host of the site
//! the connection came in on, the virtual host's first matching rule decides, and the decision
//! is carried out by the sidecar's own outbound path ([`outbound::respond`]). No virtual host
//! or no rule: 404 with response flag NR, as Envoy answers. A host served with
//! `httpsRedirect`: 301 to `https://<host><path>`. As Envoy at the edge, the client's address
//! is appended to `x-forwarded-for` and its scheme set in `x-forwarded-proto`.

use std::{convert::Infallible, future::Future, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header::Entry};
use hyper::body::Incoming;
use mizzen_resilience::{ResponseFlags, reply::local_reply};
use mizzen_route::{RequestInfo, authority_host};

use super::plan::{HttpSite, SiteKey};
use crate::{
    app::Shared,
    http::{
        body::Body,
        headers::RequestAuthority,
        outbound::{self, Routed},
        report::Exchange,
        xfcc,
    },
    proxy_protocol::Downstream,
    telemetry::ServiceLabels,
};

/// What the requests of one connection share.
#[derive(Debug)]
pub struct Conn {
    /// The client's connection: its address, and the gateway's it was made to.
    pub peer: Downstream,
    /// The site the connection belongs to, found again in the current plan per request.
    pub site: SiteKey,
    /// `http`, or `https` once TLS is terminated.
    pub scheme: &'static str,
    /// The client's address as `x-forwarded-for` carries it, formatted once per connection.
    client: HeaderValue,
    /// The `x-forwarded-client-cert` element of a TLS client's certificate.
    pub client_cert: Option<HeaderValue>,
}

impl Conn {
    pub fn new(peer: Downstream, site: SiteKey, scheme: &'static str) -> Self {
        let client = HeaderValue::from_str(&peer.source.ip().to_string())
            .expect("an IP address is a valid header value");
        Self {
            peer,
            site,
            scheme,
            client,
            client_cert: None,
        }
    }
}

pub fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
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
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    async move {
        let Some(gateway) = shared.gateway.clone() else {
            return Ok(local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NR));
        };
        let snap = shared.store.current();
        let plan = gateway.plan(&snap);
        let (mut parts, body) = req.into_parts();
        let authority = RequestAuthority::of(&parts);
        let authority = authority.as_ref().map_or("", RequestAuthority::as_str);
        let (mut ex, body, target) = Exchange::start(
            shared.telemetry.clone(),
            "source",
            &mut parts,
            body,
            authority,
            conn.peer.source,
        );
        let path_and_query = target.as_str();
        forwarded(&mut parts.headers, &conn.client, conn.scheme);
        xfcc::set(&mut parts.headers, conn.client_cert.as_ref());
        let host = authority_host(authority);
        let response = match plan.http_site(&conn.site) {
            Some(site) if site.redirects(host) => {
                ex.destination_service(ServiceLabels::of(host, ""));
                outbound::redirect(301, &format!("https://{host}{path_and_query}"))
            }
            Some(site) => {
                let info = RequestInfo {
                    authority: host,
                    port: site.port,
                    method: &parts.method,
                    scheme: conn.scheme,
                    path_and_query,
                    headers: &parts.headers,
                    source_labels: &shared.workload.labels,
                    source_namespace: &shared.workload.namespace,
                    gateway: &site.gateway,
                };
                let decision = HttpSite::gateway_decision(site.table.select(&info, rand::random()));
                let at = Routed {
                    shared: &shared,
                    snap: &snap,
                    peer: conn.peer,
                    port: site.port,
                };
                outbound::respond(at, decision, parts, body, &mut ex).await
            }
            None => local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NR),
        };
        Ok(ex.finish(response))
    }
}

// Named once: a header inserted by a `&str` name is parsed every time.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// What Envoy does at the edge (`use_remote_address`): the client's address (`client`, as a
/// header value) is appended to `x-forwarded-for` (where a destination's `remoteIpBlocks` finds
/// it) and the scheme it used replaces `x-forwarded-proto`.
fn forwarded(headers: &mut HeaderMap, client: &HeaderValue, scheme: &'static str) {
    // One lookup for the common case of a client that sent none.
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(slot) => {
            slot.insert(client.clone());
        }
        Entry::Occupied(mut slot) => {
            let mut joined = String::new();
            for earlier in slot.iter().filter_map(|v| v.to_str().ok()) {
                joined.push_str(earlier);
                joined.push_str(", ");
            }
            joined.push_str(client.to_str().unwrap_or_default());
            if let Ok(v) = HeaderValue::from_str(&joined) {
                slot.insert(v);
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_the_client_to_x_forwarded_for_and_sets_the_scheme() {
        let client = HeaderValue::from_static("203.0.113.7");
        let mut h = HeaderMap::new();
        forwarded(&mut h, &client, "https");
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        forwarded(&mut h, &client, "http");
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 203.0.113.7");
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_PROTO], "http");
    }
}
