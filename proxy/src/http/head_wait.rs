//! How long a server connection may wait for a request head.
//!
//! hyper's HTTP/1 server starts its header-read timer as soon as it waits for the next request,
//! so on its own it closes a keep-alive connection that sits idle for the header-read timeout
//! (10 s), and a client that sends its next request just then loses it. Envoy, whose behaviour
//! a sidecar's clients expect, closes an idle connection after its idle timeout (1 h) and gives a
//! request head the header-read timeout from the head's first byte (slowloris protection).
//! [`HeadClock`] is the timer hyper is given for that: while no byte of the next head has come
//! its deadline is the idle one; from the first byte it is the header-read one.
//!
//! One Tokio timer per connection serves all its heads. Moving an idle deadline later is one
//! atomic store in Tokio, where a timer per head is registered and removed each time.

use std::{
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// The timer of one server connection's HTTP/1 side (see the module's documentation).
pub struct HeadClock(Arc<Conn>);

struct Conn {
    header_read: Duration,
    idle: Duration,
    /// Bytes read from the connection so far ([`CountReads`] counts them).
    read: AtomicU64,
    /// Made on the first wait, then moved from deadline to deadline.
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl HeadClock {
    pub fn new(header_read: Duration, idle: Duration) -> Self {
        Self(Arc::new(Conn {
            header_read,
            idle,
            read: AtomicU64::new(0),
            timer: Mutex::new(None),
        }))
    }

    /// `io`, its reads counted for this clock: the connection hyper serves with it.
    pub fn count_reads<S>(&self, io: S) -> CountReads<S> {
        CountReads {
            io,
            conn: self.0.clone(),
        }
    }
}

impl hyper::rt::Timer for HeadClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::from(Instant::now()) + duration)
    }

    /// hyper asks for `now() + header_read` when it starts to wait for a head.
    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let conn = &self.0;
        let deadline = Instant::from_std(deadline);
        let waiting_since = deadline.checked_sub(conn.header_read).unwrap_or(deadline);
        Box::pin(HeadWait {
            idle_until: waiting_since + conn.idle,
            read_before: conn.read.load(Ordering::Relaxed),
            head_until: None,
            conn: conn.clone(),
        })
    }

    /// Tokio's clock, so that the deadlines hyper computes move with paused time in tests.
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// One wait for a request head.
struct HeadWait {
    conn: Arc<Conn>,
    idle_until: Instant,
    /// The connection's read count when the wait began: any more is a head begun.
    read_before: u64,
    /// Set when the first byte of the head is seen.
    head_until: Option<Instant>,
}

impl HeadWait {
    fn deadline(&mut self) -> Instant {
        if self.conn.read.load(Ordering::Relaxed) == self.read_before {
            return self.idle_until;
        }
        // hyper looks at its timer right after a read that left the head incomplete, so the
        // first look that sees more bytes is when the head began.
        let header_read = self.conn.header_read;
        *self
            .head_until
            .get_or_insert_with(|| Instant::now() + header_read)
    }
}

impl Future for HeadWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let deadline = this.deadline();
        let mut timer = this
            .conn
            .timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadWait {}

/// A connection whose reads are counted for its [`HeadClock`].
pub struct CountReads<S> {
    io: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountReads<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            // One reader: a plain add, no locked instruction.
            let read = &self.conn.read;
            read.store(read.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountReads<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
