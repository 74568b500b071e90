//! The server side of a connection: HTTP/1.1 with keep-alive and h2c (prior knowledge) on the
//! same port, with upgrades, and Envoy's answers to bad clients: 400 for a malformed request,
//! 431 for oversized headers, and a closed connection for one that never finishes its headers
//! or stays idle past the idle timeout ([`super::head_wait`]).

use std::{future::Future, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

use super::{body::Body, head_wait::HeadClock};

#[derive(Clone, Copy, Debug)]
pub struct ServerSettings {
    /// From the first byte of a request head to its end.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

pub async fn serve<S, F, Fut>(
    stream: S,
    settings: ServerSettings,
    handler: F,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let clock = HeadClock::new(settings.header_read_timeout, settings.idle_timeout);
    let stream = clock.count_reads(stream);
    let silence = clock.silence();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(clock)
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32)
        .adaptive_window(true);
    // The handler's future is the service's: no wrapper future moved per request.
    let svc = hyper::service::service_fn(handler);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        }
        () = silence => tracing::debug!("closing a connection that sent nothing"),
        _ = crate::drain::Drain::watch(&shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const HEADER_READ: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    /// A connection to a server that answers every request with `ok`.
    fn connect() -> (DuplexStream, watch::Sender<bool>) {
        let (client, server) = tokio::io::duplex(4096);
        let (shutdown, rx) = watch::channel(false);
        let settings = ServerSettings {
            header_read_timeout: HEADER_READ,
            idle_timeout: IDLE,
            max_header_bytes: 8192,
        };
        let handler = |_| async { Ok(Response::new(super::super::body::full("ok"))) };
        tokio::spawn(serve(server, settings, handler, rx));
        (client, shutdown)
    }

    /// Sends a request and reads its answer; `None` when the server closed the connection.
    async fn exchange(io: &mut DuplexStream) -> Option<String> {
        io.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        let mut buf = [0; 1024];
        while !answer.ends_with(b"\r\n\r\nok") {
            let n = io.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        Some(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Whether the server closes the connection within `within` (reading nothing from it).
    async fn closed_within(io: &mut DuplexStream, within: Duration) -> bool {
        let mut buf = [0; 64];
        matches!(
            tokio::time::timeout(within, io.read(&mut buf)).await,
            Ok(Ok(0))
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_connection_idle_past_the_header_timeout_still_serves() {
        let (mut io, _shutdown) = connect();
        assert!(exchange(&mut io).await.unwrap().starts_with("HTTP/1.1 200"));
        // Idle three times as long as a head may take: still open, and serves the next one.
        tokio::time::sleep(3 * HEADER_READ).await;
        assert!(exchange(&mut io).await.unwrap().starts_with("HTTP/1.1 200"));
        // Idle past the idle timeout: closed.
        assert!(closed_within(&mut io, IDLE + Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_gets_the_header_timeout_from_its_first_byte() {
        let (mut io, _shutdown) = connect();
        assert!(exchange(&mut io).await.unwrap().starts_with("HTTP/1.1 200"));
        // A long idle first, so a deadline counted from the start of the wait would have
        // passed; then half a head, and nothing more.
        tokio::time::sleep(IDLE / 2).await;
        io.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap();
        let start = tokio::time::Instant::now();
        assert!(closed_within(&mut io, HEADER_READ + Duration::from_secs(1)).await);
        assert!(start.elapsed() >= HEADER_READ, "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_that_sends_nothing_is_closed_at_the_idle_timeout() {
        let (mut io, _shutdown) = connect();
        assert!(!closed_within(&mut io, 2 * HEADER_READ).await);
        assert!(closed_within(&mut io, IDLE).await);
    }
}
