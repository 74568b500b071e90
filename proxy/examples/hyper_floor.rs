//! The floor of the proxy's HTTP stack, for the benchmarks (`bench/floor.sh`): a plain
//! HTTP/1.1 forwarder built from the same parts as `mizzen-proxy` — Tokio's current-thread
//! runtime, hyper's server and client connections, a list of idle upstream connections,
//! mimalloc — and nothing else: no routing, no resilience layers, no telemetry, no trace
//! headers. What a request costs here is what hyper and Tokio cost; what `mizzen-proxy` costs
//! above it is the proxy's own work.
//!
//! ```text
//! cargo run --profile dist -p mizzen-proxy --example hyper_floor -- 127.0.0.1:8001 127.0.0.1:8000
//! ```

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// mimalloc as `malloc`, reached through the system allocator, as in `mizzen-proxy` (see its
/// `main.rs`); naming its version is what links it in.
#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

/// Idle upstream connections: the most recently used first out.
type Idle = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

fn main() -> std::io::Result<()> {
    std::hint::black_box(mimalloc::MiMalloc.version());
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other("usage: hyper_floor LISTEN-ADDR UPSTREAM-ADDR");
    let listen: SocketAddr = args
        .next()
        .ok_or_else(usage)?
        .parse()
        .map_err(|_| usage())?;
    let upstream: SocketAddr = args
        .next()
        .ok_or_else(usage)?
        .parse()
        .map_err(|_| usage())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let idle: Idle = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let idle = idle.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| forward(req, upstream, idle.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The answer: the upstream's body, or an empty one (502 when the upstream cannot be reached).
type Body = Either<Incoming, Empty<Bytes>>;

async fn forward(
    req: Request<Incoming>,
    upstream: SocketAddr,
    idle: Idle,
) -> Result<Response<Body>, Infallible> {
    let ready = {
        let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|tx| !tx.is_closed());
        idle.iter()
            .rposition(SendRequest::is_ready)
            .map(|i| idle.swap_remove(i))
    };
    let Some(mut tx) = (match ready {
        Some(tx) => Some(tx),
        None => connect(upstream).await,
    }) else {
        return Ok(bad_gateway());
    };
    let sent = tx.send_request(req);
    idle.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
    Ok(match sent.await {
        Ok(resp) => resp.map(Either::Left),
        Err(_) => bad_gateway(),
    })
}

async fn connect(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(tx)
}

fn bad_gateway() -> Response<Body> {
    let mut r = Response::new(Either::Right(Empty::new()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
