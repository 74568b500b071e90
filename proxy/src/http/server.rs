//! The server side of a connection: HTTP/1.1 with keep-alive and h2c (prior knowledge) on the
//! same port, with upgrades, and Envoy's answers to bad clients: 400 for a malformed request,
//! 431 for oversized headers, and a closed connection for one that never finishes its headers
//! ([`super::head_wait`]) or stays idle past the idle timeout (HTTP/1: [`super::head_wait`];
//! HTTP/2 and the wait for a first request: [`super::idle`]).

use std::{convert::Infallible, future::Future, time::Duration};

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

use super::{
    body::Body,
    head_wait::HeadClock,
    idle::{Carrying, InFlight, Streams},
};

/// How long an idle HTTP/2 connection has to close after its GOAWAY (Envoy's `drain_timeout`).
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

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
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + Unpin + 'static,
{
    let clock = HeadClock::new(settings.header_read_timeout, settings.idle_timeout);
    let stream = clock.count_reads(stream);
    let streams = Streams::new(settings.idle_timeout);
    let idle = streams.clone().idle();
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
    let svc = Service {
        handler,
        streams: streams.clone(),
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        }
        () = idle => {
            tracing::debug!("closing an idle connection");
            conn.as_mut().graceful_shutdown();
            // HTTP/2 waits for the client to acknowledge the GOAWAY; bounded as Envoy's
            // drain timeout bounds it.
            let _ = tokio::time::timeout(GOAWAY_GRACE, conn).await;
        }
        _ = crate::drain::Drain::watch(&shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The connection's service: the handler's response, and for an HTTP/2 request its stream
/// counted in flight until the response body is done with.
struct Service<F> {
    handler: F,
    streams: Streams,
}

impl<F, Fut, B, E> hyper::service::Service<Request<Incoming>> for Service<F>
where
    F: Fn(Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<Response<B>, E>> + Unpin,
{
    type Response = Response<Carrying<B>>;
    type Error = E;
    type Future = InFlight<Fut>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let h2 = req.version() == Version::HTTP_2;
        let response = (self.handler)(req);
        if h2 {
            self.streams.track(response)
        } else {
            self.streams.untracked(response)
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
        connect_to(|_| Box::pin(async { Ok(Response::new(super::super::body::full("ok"))) }))
    }

    /// A connection to a server that answers with `handler`.
    fn connect_to<F>(handler: F) -> (DuplexStream, watch::Sender<bool>)
    where
        F: Fn(
                Request<Incoming>,
            )
                -> futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>
            + Send
            + Sync
            + 'static,
    {
        let (client, server) = tokio::io::duplex(4096);
        let (shutdown, rx) = watch::channel(false);
        let settings = ServerSettings {
            header_read_timeout: HEADER_READ,
            idle_timeout: IDLE,
            max_header_bytes: 8192,
        };
        tokio::spawn(serve(server, settings, handler, rx));
        (client, shutdown)
    }

    /// An HTTP/2 client on `io`, and its connection's task (done when the server closes).
    async fn h2_client(
        io: DuplexStream,
    ) -> (
        hyper::client::conn::http2::SendRequest<Body>,
        tokio::task::JoinHandle<()>,
    ) {
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (send, task)
    }

    async fn h2_get(
        send: &mut hyper::client::conn::http2::SendRequest<Body>,
    ) -> Response<Incoming> {
        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://a/")
            .body(super::super::body::empty())
            .unwrap();
        send.send_request(req).await.unwrap()
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

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_closes_after_the_idle_timeout_since_its_last_stream() {
        use http_body_util::BodyExt;

        let (io, _shutdown) = connect();
        let (mut send, conn) = h2_client(io).await;
        // Requests for twice the idle timeout, each well within it of the last.
        for _ in 0..4 {
            let body = h2_get(&mut send).await.into_body().collect().await.unwrap();
            assert_eq!(body.to_bytes(), "ok");
            tokio::time::sleep(IDLE / 2).await;
        }
        assert!(!conn.is_finished());
        let last = tokio::time::Instant::now() - IDLE / 2;
        tokio::time::sleep_until(last + IDLE - Duration::from_secs(1)).await;
        assert!(!conn.is_finished());
        tokio::time::timeout(Duration::from_secs(2) + GOAWAY_GRACE, conn)
            .await
            .expect("an idle HTTP/2 connection is closed")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_response_still_streaming_holds_its_connection_past_the_idle_timeout() {
        use http_body_util::BodyExt;

        // Each response streams until the test sends on its channel.
        let (more, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
        let rx = std::sync::Mutex::new(Some(rx));
        let (io, _shutdown) = connect_to(move |_| {
            let rx = rx.lock().unwrap().take().expect("one request");
            Box::pin(async move {
                let frames = futures::stream::unfold(rx, |mut rx| async move {
                    let data = rx.recv().await?;
                    Some((
                        Ok::<_, std::convert::Infallible>(http_body::Frame::data(data)),
                        rx,
                    ))
                });
                Ok(Response::new(super::super::body::boxed(
                    http_body_util::StreamBody::new(frames),
                )))
            })
        });
        let (mut send, conn) = h2_client(io).await;
        let mut body = h2_get(&mut send).await.into_body();
        tokio::time::sleep(3 * IDLE).await;
        assert!(!conn.is_finished(), "closed under a stream in flight");
        more.send("late".into()).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "late");
        // The stream ends; a timeout later the connection goes.
        drop(more);
        while let Some(frame) = body.frame().await {
            assert!(frame.unwrap().into_data().unwrap().is_empty());
        }
        tokio::time::timeout(IDLE + Duration::from_secs(1) + GOAWAY_GRACE, conn)
            .await
            .expect("closed once idle")
            .unwrap();
    }
}
