//! When a server connection has been idle too long: no request in flight for the idle timeout.
//!
//! Envoy closes a downstream connection that has had no active stream for its idle timeout
//! (1 h), on HTTP/1 and HTTP/2 alike. hyper's HTTP/1 server has a timer for the wait between
//! requests ([`super::head_wait`] gives it the idle deadline); its HTTP/2 server has none, so
//! an h2 client that opens a connection and leaves it would hold it, and its task, forever.
//! [`Streams`] counts a connection's HTTP/2 requests from their arrival to the end (or drop)
//! of their response body; [`Streams::idle`] completes once that count has stayed at zero for
//! the idle timeout, and the server then sends GOAWAY and closes.
//!
//! It also covers the wait before the first request, when hyper does not yet know which
//! protocol the connection speaks and no timer of hyper's runs. Once an HTTP/1 request is seen
//! the connection is hyper's to judge, and the idle future never completes.
//!
//! No timer is touched per request: a stream's end records the time, and the one sleep of the
//! connection, when it wakes, looks at what was recorded.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 requests in flight on one server connection.
#[derive(Clone)]
pub struct Streams(Arc<State>);

struct State {
    timeout: Duration,
    opened: Instant,
    active: AtomicUsize,
    /// Nanoseconds from `opened` to the end of the last stream.
    last_end: AtomicU64,
    http1: AtomicBool,
}

impl Streams {
    pub fn new(timeout: Duration) -> Self {
        Self(Arc::new(State {
            timeout,
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            http1: AtomicBool::new(false),
        }))
    }

    /// An HTTP/1 request arrived: the connection's idle time is hyper's to judge from now on.
    pub fn saw_http1(&self) {
        if !self.0.http1.load(Ordering::Relaxed) {
            self.0.http1.store(true, Ordering::Relaxed);
        }
    }

    /// An HTTP/2 request arrived; it is in flight until the returned guard is dropped.
    pub fn start(&self) -> Stream {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        Stream(self.0.clone())
    }

    /// An HTTP/2 request's `response`, its stream in flight until the response body ends.
    pub fn track<F>(&self, response: F) -> InFlight<F> {
        InFlight {
            response,
            stream: Some(self.start()),
        }
    }

    /// An HTTP/1 request's `response`: not counted (see [`Self::saw_http1`]).
    pub fn untracked<F>(&self, response: F) -> InFlight<F> {
        self.saw_http1();
        InFlight {
            response,
            stream: None,
        }
    }

    /// Completes when no request has been in flight for the idle timeout (never, once an
    /// HTTP/1 request has been seen).
    pub fn idle(self) -> Idle {
        let deadline = self.0.opened + self.0.timeout;
        Idle {
            streams: self,
            timer: Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

/// See [`Streams::idle`]. Polled with its connection at every wake, so on an HTTP/1 connection
/// it is one load of a flag and drops its timer; on HTTP/2 a look at the timer.
pub struct Idle {
    streams: Streams,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for Idle {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let state = &this.streams.0;
        if state.http1.load(Ordering::Relaxed) {
            this.timer = None;
            return Poll::Pending;
        }
        let Some(timer) = &mut this.timer else {
            return Poll::Pending;
        };
        loop {
            ready!(timer.as_mut().poll(cx));
            let now = Instant::now();
            if state.active.load(Ordering::Acquire) > 0 {
                // A stream that ends later records its end; look again a timeout from now.
                timer.as_mut().reset(now + state.timeout);
                continue;
            }
            let last_end = Duration::from_nanos(state.last_end.load(Ordering::Acquire));
            let due = state.opened + last_end + state.timeout;
            if now >= due {
                this.timer = None;
                return Poll::Ready(());
            }
            timer.as_mut().reset(due);
        }
    }
}

/// One HTTP/2 request in flight; dropping it ends it.
pub struct Stream(Arc<State>);

impl Drop for Stream {
    fn drop(&mut self) {
        let state = &self.0;
        // The end is recorded before the count drops, so a look that sees no stream in flight
        // also sees when the last one ended.
        let since_open = state.opened.elapsed().as_nanos() as u64;
        state.last_end.fetch_max(since_open, Ordering::AcqRel);
        state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response on its way; then its body carries the stream (`None` on HTTP/1).
pub struct InFlight<F> {
    response: F,
    stream: Option<Stream>,
}

// Generic over the body and error, and with no box: a bound or a conversion that names the
// proxy's boxed body (its `dyn` error type) trips rustc's `Send` check of the connection's
// future ("one type is more general than the other").
impl<F, B, E> Future for InFlight<F>
where
    F: Future<Output = Result<Response<B>, E>> + Unpin,
{
    type Output = Result<Response<Carrying<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(Pin::new(&mut self.response).poll(cx))?;
        let stream = self.stream.take();
        Poll::Ready(Ok(response.map(|body| Carrying {
            body,
            _stream: stream,
        })))
    }
}

/// A response body and the stream it ends: dropped with it, when the server has sent it all
/// (or the client reset the stream).
pub struct Carrying<B> {
    body: B,
    _stream: Option<Stream>,
}

impl<B: HttpBody + Unpin> HttpBody for Carrying<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    fn done(fut: std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        fut.poll(&mut Context::from_waker(std::task::Waker::noop())) == Poll::Ready(())
    }

    /// Lets paused time run to `at` from the connection's opening.
    async fn advance_to(opened: Instant, at: Duration) {
        tokio::time::sleep_until(opened + at).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_idle_after_the_timeout() {
        let streams = Streams::new(IDLE);
        let opened = Instant::now();
        let mut idle = pin!(streams.idle());
        advance_to(opened, IDLE - Duration::from_secs(1)).await;
        assert!(!done(idle.as_mut()));
        advance_to(opened, IDLE).await;
        assert!(done(idle.as_mut()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_in_flight_holds_the_connection_and_its_end_starts_the_count() {
        let streams = Streams::new(IDLE);
        let opened = Instant::now();
        let mut idle = pin!(streams.clone().idle());
        let stream = streams.start();
        // A long stream: far past the timeout, the connection is not idle.
        advance_to(opened, 3 * IDLE).await;
        assert!(!done(idle.as_mut()));
        drop(stream);
        let ended = Instant::now();
        // Idle a timeout after the stream's end, not before.
        tokio::time::sleep_until(ended + IDLE - Duration::from_secs(1)).await;
        assert!(!done(idle.as_mut()));
        tokio::time::sleep_until(ended + IDLE).await;
        assert!(done(idle.as_mut()));
    }

    #[tokio::test(start_paused = true)]
    async fn streams_that_keep_coming_keep_the_connection() {
        let streams = Streams::new(IDLE);
        let opened = Instant::now();
        let mut idle = pin!(streams.clone().idle());
        for minute in 1..=5 {
            advance_to(opened, IDLE * minute - Duration::from_secs(10)).await;
            drop(streams.start());
            assert!(!done(idle.as_mut()), "minute {minute}");
        }
        let last = Instant::now();
        tokio::time::sleep_until(last + IDLE).await;
        assert!(done(idle.as_mut()));
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_http1_request_the_connection_is_never_idle_here() {
        let streams = Streams::new(IDLE);
        let mut idle = pin!(streams.clone().idle());
        streams.saw_http1();
        tokio::time::sleep(10 * IDLE).await;
        assert!(!done(idle.as_mut()));
    }
}
