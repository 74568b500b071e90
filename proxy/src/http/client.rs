//! Connections to upstream endpoints, pooled per endpoint: an HTTP/1.1 connection carries one
//! request at a time and is reused once its response has ended; one HTTP/2 connection carries
//! every request to its endpoint, or, with `maxConcurrentStreams`, that many at a time each,
//! more connections opening as needed (a stream counts until its response body ends or is
//! dropped).
//!
//! The proxy keeps its own pool (over hyper's connection API) rather than a generic client's:
//! per request it costs a lock and a scan of a short list, the endpoint to connect to is given
//! apart from the request's authority (which stays the service's, as Envoy forwards it), and
//! [`connect`] is the one place where the proxy-to-proxy hop opens a stream — where mTLS wraps
//! it, per endpoint identity. Connection failures are [`UpstreamError::connect_failure`] so
//! retries and telemetry see `connect-failure` (UF).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::Either;
use http::{HeaderValue, Request, Response, Version, header, uri::Authority};
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mizzen_identity::ExpectedPeer;
use mizzen_proxy_config::TcpKeepalive;
use mizzen_resilience::UpstreamError;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::body::{self, Body, BoxError};
use crate::{
    mtls::{Alpn, MeshTls, origination::Originator},
    stream::Stream,
};

/// Settings of one upstream's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub dial: Dial,
    pub idle_timeout: Duration,
    pub h2: bool,
    /// `maxRequestsPerConnection`: a connection is retired after carrying this many requests
    /// (1 turns keep-alive off). `None`: no limit.
    pub max_requests: Option<u32>,
    /// `maxConnectionDuration`: a connection is retired this long after it was opened (it
    /// takes no new request; one in flight finishes). `None`: no limit.
    pub max_age: Option<Duration>,
    /// `maxConcurrentStreams`: streams one HTTP/2 connection carries at a time; beyond them
    /// another connection is opened. `None`: one connection takes them all.
    pub max_streams: Option<u32>,
}

impl PoolSettings {
    /// Whether a connection opened at `born` is past its maximum age at `now`.
    fn too_old(&self, born: Instant, now: Instant) -> bool {
        self.max_age
            .is_some_and(|max| now.duration_since(born) >= max)
    }
}

/// How a new upstream TCP connection is made: how long it may take, and its keepalive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dial {
    pub timeout: Duration,
    /// `tcpKeepalive`: SO_KEEPALIVE on, with the probes' timing where set.
    pub keepalive: Option<TcpKeepalive>,
}

impl Dial {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            keepalive: None,
        }
    }

    /// Turns keepalive on for `stream` as set (the system's defaults for what is not).
    fn keepalive(&self, stream: &TcpStream) -> std::io::Result<()> {
        let Some(k) = self.keepalive else {
            return Ok(());
        };
        let mut params = socket2::TcpKeepalive::new();
        if let Some(ms) = k.time_ms {
            params = params.with_time(Duration::from_millis(ms));
        }
        if let Some(ms) = k.interval_ms {
            params = params.with_interval(Duration::from_millis(ms));
        }
        if let Some(n) = k.probes {
            params = params.with_retries(n);
        }
        socket2::SockRef::from(stream).set_tcp_keepalive(&params)
    }
}

/// More idle HTTP/1.1 connections than this to one endpoint are closed rather than kept.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// How often a pool's closed and idle-expired connections, of every endpoint, are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The HTTP/1.1 connections to one endpoint, busy or idle.
struct H1Conns {
    all: Vec<Pooled>,
}

/// A pool's connections are told apart by endpoint and by whether they are TLS. (Which TLS
/// is the upstream's policy: an upstream whose `tls` changes gets a new pool.)
///
/// The endpoint's authority is compared byte for byte: endpoints come from the config in one
/// form, and `Authority`'s own comparison, which ignores case, costs a step per byte on every
/// checkout and checkin.
///
/// With a PROXY protocol header (DestinationRule `proxyProtocol`), connections are told apart
/// by it too: a connection opened for one caller's connection carries only its requests.
#[derive(Clone, Debug)]
struct Key {
    endpoint: Authority,
    tls: bool,
    proxy_header: Option<Arc<[u8]>>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.tls == other.tls
            && self.endpoint.as_str() == other.endpoint.as_str()
            && self.proxy_header == other.proxy_header
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.endpoint.as_str().hash(state);
        self.tls.hash(state);
        // Keys without a header (all but `proxyProtocol` destinations') hash as before.
        if let Some(header) = &self.proxy_header {
            header.hash(state);
        }
    }
}

type ByEndpoint<T> = Mutex<Keyed<T>>;

/// Connections by key, and when all of them were last swept. Keys come and go: endpoints
/// change, and with PROXY headers every caller's connection has its own.
struct Keyed<T> {
    conns: HashMap<Key, T, foldhash::fast::RandomState>,
    swept: Instant,
}

impl<T> Keyed<T> {
    fn new() -> Mutex<Self> {
        Mutex::new(Self {
            conns: HashMap::default(),
            swept: Instant::now(),
        })
    }

    /// At most every [`SWEEP_EVERY`]: `keep` prunes each key's connections, and keys left
    /// with none are forgotten. Not on every checkout: with many connections a sweep per
    /// request cost more than the rest of the send.
    fn sweep(&mut self, now: Instant, mut keep: impl FnMut(&mut T) -> bool) {
        if now.duration_since(self.swept) >= SWEEP_EVERY {
            self.swept = now;
            self.conns.retain(|_, conns| keep(conns));
        }
    }
}

/// Mesh mTLS for a connection: this proxy's TLS, the service it is for (SNI) and the server
/// identities it accepts (secure naming).
#[derive(Clone, Copy)]
pub struct MeshHop<'a> {
    pub tls: &'a MeshTls,
    pub host: &'a str,
    pub port: u16,
    pub expected: &'a ExpectedPeer,
}

/// TLS on the hop to an endpoint: mesh mTLS to a sidecar, or TLS originated to a destination
/// outside the mesh (DestinationRule `SIMPLE` / `MUTUAL`).
#[derive(Clone, Copy)]
pub enum Hop<'a> {
    Mesh(MeshHop<'a>),
    Originate {
        tls: &'a Originator,
        /// The destination's name (SNI unless the DestinationRule sets one).
        host: &'a str,
    },
}

/// The connections of one upstream, by endpoint.
pub struct Pool {
    settings: PoolSettings,
    h1: ByEndpoint<H1Conns>,
    h2: ByEndpoint<Vec<H2Conn>>,
}

/// An HTTP/2 connection in the pool, with its streams open when they are counted.
struct H2Conn {
    tx: http2::SendRequest<Body>,
    peer: Peer,
    age: Age,
    streams: Arc<AtomicU32>,
    /// Whether `streams` is kept (see [`Pool::stream_cap`]).
    counted: bool,
    last_used: Instant,
}

impl H2Conn {
    /// Whether it is closed, past its age, or idle past the idle timeout. Only connections
    /// whose streams are counted can be known idle: a burst under `maxConcurrentStreams` may
    /// have opened more than the steady load needs, and a caller's own connections (PROXY
    /// headers) outlive the caller. The one uncounted connection of an endpoint is kept.
    fn done(&self, settings: &PoolSettings, now: Instant) -> bool {
        let idle = || {
            self.counted
                && self.streams.load(Ordering::Acquire) == 0
                && now.duration_since(self.last_used) > settings.idle_timeout
        };
        self.tx.is_closed() || settings.too_old(self.age.born, now) || idle()
    }
}

/// One stream of a capped HTTP/2 connection; its place is free again on drop.
struct StreamSlot(Arc<AtomicU32>);

impl StreamSlot {
    /// A place among `max` on the connection counting `streams`, if one is free.
    fn take(streams: &Arc<AtomicU32>, max: u32) -> Option<Self> {
        streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(streams.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body holding its stream's slot until it ends or is dropped.
struct Streaming {
    body: Incoming,
    _slot: StreamSlot,
}

impl hyper::body::Body for Streaming {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The SPIFFE id (URI) the server of a mesh connection presented; `None` for plaintext.
pub type Peer = Option<Arc<str>>;

/// An HTTP/1.1 connection in the pool: idle, or busy until its response ends (then hyper
/// reports it ready again).
struct Pooled {
    tx: http1::SendRequest<Body>,
    peer: Peer,
    last_used: Instant,
    age: Age,
}

/// How much a connection has done: what `maxRequestsPerConnection` and
/// `maxConnectionDuration` retire it by. Goes along with it between checkout and checkin.
#[derive(Clone, Copy)]
struct Age {
    /// Requests it has carried.
    served: u32,
    /// When it was opened.
    born: Instant,
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings,
            h1: Keyed::new(),
            h2: Keyed::new(),
        }
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// Sends `req` to the endpoint at `endpoint`, over HTTP/2 or HTTP/1.1. The request's URI
    /// keeps the authority the caller asked for; it goes out as `:authority` (HTTP/2) or as
    /// the `Host` header (HTTP/1.1, in origin form). Answers with the server identity the
    /// connection presented (mesh mTLS).
    ///
    /// The protocol is chosen here and the request handed to its sender at once: a request's
    /// future holds each request it was given, and every byte of it is copied when it is
    /// boxed (an `async fn` holds its arguments twice).
    pub fn send<'a>(
        &'a self,
        endpoint: &Authority,
        h2: bool,
        hop: Option<Hop<'a>>,
        proxy_header: Option<Arc<[u8]>>,
        req: Request<Body>,
    ) -> impl Future<Output = Result<(Response<Body>, Peer), BoxError>> + Send + 'a {
        let key = Key {
            endpoint: endpoint.clone(),
            tls: hop.is_some(),
            proxy_header,
        };
        if h2 {
            Either::Left(self.send_h2(key, hop, req))
        } else {
            Either::Right(self.send_h1(key, hop, origin_form(req, endpoint)))
        }
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice (see `outbound::respond`)"
    )]
    fn send_h1<'a>(
        &'a self,
        key: Key,
        hop: Option<Hop<'a>>,
        mut req: Request<Body>,
    ) -> impl Future<Output = Result<(Response<Body>, Peer), BoxError>> + Send + 'a {
        async move {
            let target = Target { key: &key, hop };
            // A pooled connection the server closed just now may refuse the request before
            // any of it was written; it is then sent once more on a new connection, as
            // clients do.
            let mut fresh = false;
            loop {
                let (mut tx, peer, age) = match self.checkout_h1(target.key) {
                    Some(conn) => conn,
                    None => {
                        fresh = true;
                        // Boxed: connecting is rare, and its future, held inline, would make
                        // every request's future a kilobyte and more larger.
                        let (tx, peer) = Box::pin(self.connect_h1(target)).await?;
                        let born = Instant::now();
                        (tx, peer, Age { served: 0, born })
                    }
                };
                let sent = tx.try_send_request(req);
                let served = age.served + 1;
                self.checkin_h1(target.key, tx, peer.clone(), Age { served, ..age });
                match sent.await {
                    Ok(resp) => return Ok((resp.map(body::boxed), peer)),
                    Err(e) => match unsent(e) {
                        Ok(back) if !fresh => req = back,
                        Ok(_) => return Err(closed_unsent()),
                        Err(e) => return Err(e),
                    },
                }
            }
        }
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice (see `outbound::respond`)"
    )]
    fn send_h2<'a>(
        &'a self,
        key: Key,
        hop: Option<Hop<'a>>,
        req: Request<Body>,
    ) -> impl Future<Output = Result<(Response<Body>, Peer), BoxError>> + Send + 'a {
        async move {
            let target = Target { key: &key, hop };
            let open = self.checkout_h2(target.key);
            let ((mut tx, peer, slot), fresh) = match open {
                Some(conn) => (conn, false),
                // Boxed as in `send_h1`: the rare path kept out of every request's future.
                None => (Box::pin(self.connect_h2(target)).await?, true),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => Ok((h2_response(resp, slot), peer)),
                Err(e) if fresh => Err(unsent(e).map_or_else(|e| e, |_| closed_unsent())),
                // Boxed as connecting: the request given back is held only on this rare path.
                Err(e) => {
                    drop(slot);
                    Box::pin(self.resend_h2(target, e)).await
                }
            }
        }
    }

    /// A request a pooled HTTP/2 connection gave back unsent, on a new connection.
    async fn resend_h2(
        &self,
        target: Target<'_>,
        e: TrySendError<Request<Body>>,
    ) -> Result<(Response<Body>, Peer), BoxError> {
        let req = unsent(e)?;
        let (mut tx, peer, slot) = self.connect_h2(target).await?;
        Ok((h2_response(tx.send_request(req).await?, slot), peer))
    }

    /// A ready connection to `endpoint`, not idle too long. An expired one met on the way is
    /// dropped; closed and expired ones are all dropped at a sweep (at most every
    /// [`SWEEP_EVERY`]).
    fn checkout_h1(&self, key: &Key) -> Option<(http1::SendRequest<Body>, Peer, Age)> {
        let mut map = self.h1.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let idle_timeout = self.settings.idle_timeout;
        let expired = |c: &Pooled| {
            now.duration_since(c.last_used) > idle_timeout || self.settings.too_old(c.age.born, now)
        };
        map.sweep(now, |conns| {
            conns
                .all
                .retain(|c| !(c.tx.is_closed() || c.tx.is_ready() && expired(c)));
            !conns.all.is_empty()
        });
        let conns = map.conns.get_mut(key)?;
        // The most recently used ready connection; an expired one met on the way is closed.
        while let Some(i) = conns.all.iter().rposition(|c| c.tx.is_ready()) {
            let c = conns.all.swap_remove(i);
            if !expired(&c) {
                return Some((c.tx, c.peer, c.age));
            }
        }
        None
    }

    /// An open HTTP/2 connection to `key` with room for a stream (the stream's slot when
    /// streams are capped), counting the request it will carry. One closed or past its age is
    /// dropped on the way; one that reaches `maxRequestsPerConnection` is retired. Retired
    /// connections' streams in flight finish; new ones go to another connection.
    fn checkout_h2(
        &self,
        key: &Key,
    ) -> Option<(http2::SendRequest<Body>, Peer, Option<StreamSlot>)> {
        let mut map = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.sweep(now, |conns| {
            conns.retain(|c| !c.done(&self.settings, now));
            !conns.is_empty()
        });
        let conns = map.conns.get_mut(key)?;
        let mut i = 0;
        while i < conns.len() {
            let c = &mut conns[i];
            if c.done(&self.settings, now) {
                conns.swap_remove(i);
                continue;
            }
            let slot = match self.stream_cap(key) {
                None => None,
                Some(max) => match StreamSlot::take(&c.streams, max) {
                    Some(slot) => Some(slot),
                    None => {
                        i += 1;
                        continue;
                    }
                },
            };
            c.age.served += 1;
            c.last_used = now;
            let conn = (c.tx.clone(), c.peer.clone(), slot);
            if self
                .settings
                .max_requests
                .is_some_and(|max| c.age.served >= max)
            {
                conns.swap_remove(i);
            }
            return Some(conn);
        }
        None
    }

    /// How many streams one HTTP/2 connection of `key` takes at a time, when they are
    /// counted: `maxConcurrentStreams`, or without limit for a caller's own connections
    /// (PROXY headers), counted so that they close once idle.
    fn stream_cap(&self, key: &Key) -> Option<u32> {
        let per_caller = key.proxy_header.is_some().then_some(u32::MAX);
        self.settings.max_streams.or(per_caller)
    }

    /// Back in the pool right after sending: busy until the response ends, then ready.
    fn checkin_h1(&self, key: &Key, tx: http1::SendRequest<Body>, peer: Peer, age: Age) {
        let now = Instant::now();
        if self
            .settings
            .max_requests
            .is_some_and(|max| age.served >= max)
            || self.settings.too_old(age.born, now)
        {
            // Retired: dropping the sender closes the connection once its response ends.
            return;
        }
        let mut map = self.h1.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before inserting: the key is cloned only for an endpoint's first connection.
        let conns = match map.conns.get_mut(key) {
            Some(conns) => conns,
            None => map
                .conns
                .entry(key.clone())
                .or_insert_with(|| H1Conns { all: Vec::new() }),
        };
        if conns.all.len() < MAX_IDLE_PER_ENDPOINT {
            conns.all.push(Pooled {
                tx,
                peer,
                last_used: now,
                age,
            });
        }
    }

    async fn connect_h1(
        &self,
        target: Target<'_>,
    ) -> Result<(http1::SendRequest<Body>, Peer), BoxError> {
        let (io, peer) = self.open(target, Alpn::Http1).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::connect_failure)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok((tx, peer))
    }

    async fn connect_h2(
        &self,
        target: Target<'_>,
    ) -> Result<(http2::SendRequest<Body>, Peer, Option<StreamSlot>), BoxError> {
        let (io, peer) = self.open(target, Alpn::H2).await?;
        let born = Instant::now();
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(UpstreamError::connect_failure)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        // This connection carries the request being sent: share it only if it may carry more.
        let streams = Arc::new(AtomicU32::new(0));
        let cap = self.stream_cap(target.key);
        let slot = cap
            .map(|max| StreamSlot::take(&streams, max.max(1)).expect("a new connection has room"));
        if self.settings.max_requests.is_none_or(|max| max > 1) {
            let conn = H2Conn {
                tx: tx.clone(),
                peer: peer.clone(),
                age: Age { served: 1, born },
                streams,
                counted: cap.is_some(),
                last_used: born,
            };
            let mut map = self.h2.lock().unwrap_or_else(|e| e.into_inner());
            let conns = map.conns.entry(target.key.clone()).or_default();
            if self.settings.max_streams.is_none() {
                // Uncapped, one connection takes every stream: it replaces the one it found
                // closed or retired.
                conns.clear();
            }
            conns.push(conn);
        }
        Ok((tx, peer, slot))
    }

    async fn open(
        &self,
        target: Target<'_>,
        alpn: Alpn,
    ) -> Result<(TokioIo<Stream>, Peer), BoxError> {
        let key = target.key;
        let header = key.proxy_header.as_deref();
        let (stream, peer) =
            open(&key.endpoint, self.settings.dial, header, target.hop, alpn).await?;
        Ok((TokioIo::new(stream), peer))
    }
}

/// A new stream to `endpoint`: TCP, then mesh mTLS or originated TLS when the hop is one, with
/// the server's SPIFFE identity for a mesh hop. A server that fails verification (another
/// identity than the expected ones, an unknown CA) is a connection failure, as in Envoy (503
/// UF). The HTTP pool's connections and the TCP forwarder's are opened here.
pub async fn open(
    endpoint: &Authority,
    dial: Dial,
    proxy_header: Option<&[u8]>,
    hop: Option<Hop<'_>>,
    alpn: Alpn,
) -> Result<(Stream, Peer), BoxError> {
    let mut tcp = connect(endpoint, dial).await?;
    if let Some(header) = proxy_header {
        // First on the connection, before any TLS: the PROXY protocol header.
        tcp.write_all(header)
            .await
            .map_err(UpstreamError::connect_failure)?;
    }
    Ok(match hop {
        None => (Stream::Plain(tcp), None),
        Some(Hop::Mesh(hop)) => {
            let tls = hop
                .tls
                .connect_expecting(tcp, hop.host, hop.port, alpn, hop.expected)
                .await
                .map_err(UpstreamError::connect_failure)?;
            let peer =
                mizzen_identity::tls::peer_identity(tls.get_ref().1).map(|id| Arc::from(id.uri()));
            (Stream::Mtls(Box::new(tls)), peer)
        }
        Some(Hop::Originate { tls, host }) => {
            let tls = tls
                .connect(tcp, host, alpn)
                .await
                .map_err(UpstreamError::connect_failure)?;
            (Stream::Mtls(Box::new(tls)), None)
        }
    })
}

/// Where one request goes: the pool key and the TLS of its hop, if any.
#[derive(Clone, Copy)]
struct Target<'a> {
    key: &'a Key,
    hop: Option<Hop<'a>>,
}

/// An HTTP/2 response, its body holding the stream's slot (if counted) until it is done.
fn h2_response(resp: Response<Incoming>, slot: Option<StreamSlot>) -> Response<Body> {
    match slot {
        Some(_slot) => resp.map(|body| body::boxed(Streaming { body, _slot })),
        None => resp.map(body::boxed),
    }
}

/// A request a new connection closed on before any of it was written.
fn closed_unsent() -> BoxError {
    UpstreamError::reset("connection closed before the request was sent").into()
}

/// The request back when it was never written, else the error.
fn unsent(e: TrySendError<Request<Body>>) -> Result<Request<Body>, BoxError> {
    let mut e = e;
    match e.take_message() {
        Some(req) => Ok(req),
        None => Err(e.into_error().into()),
    }
}

/// HTTP/1.1 sends the target in origin form with the authority in `Host`: the caller's, else
/// the request URI's, else the endpoint's (as Envoy forwards it). A request already in that
/// form (the usual one) costs a lookup.
fn origin_form(mut req: Request<Body>, endpoint: &Authority) -> Request<Body> {
    if !req.headers().contains_key(header::HOST) {
        let authority = req.uri().authority().unwrap_or(endpoint);
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;
    req
}

/// Opens the stream to an endpoint: TCP with `TCP_NODELAY`, bounded by the connect timeout.
pub async fn connect(endpoint: &Authority, dial: Dial) -> Result<TcpStream, UpstreamError> {
    let timeout = dial.timeout;
    let port = endpoint.port_u16().unwrap_or(80);
    let host = endpoint
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamError::connect_failure(e)),
        Err(_) => {
            return Err(UpstreamError::connect_failure(format!(
                "connect to {endpoint} timed out after {timeout:?}"
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    if let Err(e) = dial.keepalive(&stream) {
        tracing::debug!(%endpoint, error = %e, "TCP keepalive not set");
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_keepalive_is_set_on_upstream_sockets_as_asked() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let plain = connect(&endpoint, Dial::new(Duration::from_secs(1)))
            .await
            .unwrap();
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap());
        let dial = Dial {
            timeout: Duration::from_secs(1),
            keepalive: Some(TcpKeepalive {
                probes: Some(4),
                time_ms: Some(30_000),
                interval_ms: Some(5_000),
            }),
        };
        let kept = connect(&endpoint, dial).await.unwrap();
        let sock = socket2::SockRef::from(&kept);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        // Unset timings keep the system's.
        let dial = Dial {
            keepalive: Some(TcpKeepalive::default()),
            ..dial
        };
        let defaults = connect(&endpoint, dial).await.unwrap();
        let sock = socket2::SockRef::from(&defaults);
        assert!(sock.keepalive().unwrap());
        assert_eq!(
            sock.tcp_keepalive_time().unwrap(),
            socket2::SockRef::from(&plain).tcp_keepalive_time().unwrap()
        );
    }

    #[test]
    fn http1_requests_go_in_origin_form_with_the_callers_authority_as_host() {
        let req = Request::builder()
            .uri("http://reviews.default.svc.cluster.local:9080/r?x=1")
            .version(Version::HTTP_2)
            .body(crate::http::body::empty())
            .unwrap();
        let endpoint: Authority = "10.0.0.1:9080".parse().unwrap();
        let req = origin_form(req, &endpoint);
        assert_eq!(req.uri(), "/r?x=1");
        assert_eq!(
            req.headers()[header::HOST],
            "reviews.default.svc.cluster.local:9080"
        );
        assert_eq!(req.version(), Version::HTTP_11);
        // A Host the caller sent is kept.
        let req = Request::builder()
            .uri("http://10.0.0.1:80/")
            .header(header::HOST, "reviews")
            .body(crate::http::body::empty())
            .unwrap();
        assert_eq!(
            origin_form(req, &endpoint).headers()[header::HOST],
            "reviews"
        );
        // A request with neither names the endpoint.
        let req = Request::builder()
            .uri("/p")
            .body(crate::http::body::empty())
            .unwrap();
        assert_eq!(
            origin_form(req, &endpoint).headers()[header::HOST],
            "10.0.0.1:9080"
        );
    }
}
