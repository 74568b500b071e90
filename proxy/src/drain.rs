//! Draining: one signal tells every listener to stop accepting and every HTTP connection to
//! finish its requests; a count of open connections says when everything is done.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Poll, Waker},
    time::Duration,
};

use tokio::sync::{Notify, watch};

#[derive(Clone)]
pub struct Drain {
    tx: Arc<watch::Sender<bool>>,
    open: Arc<(AtomicUsize, Notify)>,
}

/// Held by each open connection.
pub struct Tracked(Arc<(AtomicUsize, Notify)>);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.1.notify_waiters();
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
            open: Arc::new((AtomicUsize::new(0), Notify::new())),
        }
    }

    /// Turns true when draining starts.
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Resolves once draining has started.
    pub async fn started(rx: &mut watch::Receiver<bool>) {
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Resolves once draining has started, like [`Drain::started`], for a future polled on
    /// every wake of a busy task (a connection's): after the first poll it reads one atomic
    /// (the channel's version) per poll, and polls the channel's own future (which takes
    /// the channel's lock) only when the signal changed or the task's waker did.
    pub fn watch(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        let check = rx.clone();
        let mut wait = rx.clone();
        let mut started = Box::pin(async move { Drain::started(&mut wait).await });
        let mut waker: Option<Waker> = None;
        std::future::poll_fn(move |cx| {
            let same_waker = waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            if same_waker && !check.has_changed().unwrap_or(true) {
                return Poll::Pending;
            }
            waker = Some(cx.waker().clone());
            started.as_mut().poll(cx)
        })
    }

    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn track(&self) -> Tracked {
        self.open.0.fetch_add(1, Ordering::AcqRel);
        Tracked(self.open.clone())
    }

    pub fn open_connections(&self) -> usize {
        self.open.0.load(Ordering::Acquire)
    }

    /// Waits until every tracked connection has closed, at most `limit`. True when all did.
    pub async fn wait(&self, limit: Duration) -> bool {
        let all_closed = async {
            loop {
                let notified = self.open.1.notified();
                if self.open_connections() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, all_closed).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_open_connections_up_to_the_limit() {
        let drain = Drain::new();
        let mut signal = drain.signal();
        let conn = drain.track();
        assert!(!drain.is_draining());
        drain.start();
        Drain::started(&mut signal).await;
        assert!(drain.is_draining());
        // Still open at the deadline: not clean.
        assert!(!drain.wait(Duration::from_secs(5)).await);
        // Closed half-way through: clean, without waiting the whole limit.
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(conn);
        });
        let t = tokio::time::Instant::now();
        assert!(drain.wait(Duration::from_secs(5)).await);
        assert_eq!(t.elapsed(), Duration::from_secs(1));
        closer.await.unwrap();
    }

    #[tokio::test]
    async fn a_watch_resolves_when_draining_starts_whichever_waker_polled_it_first() {
        let drain = Drain::new();
        let rx = drain.signal();
        let mut watch = Box::pin(Drain::watch(&rx));
        // First polled by another waker (one that wakes nothing), then by this task's.
        let noop = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&noop);
        assert!(watch.as_mut().poll(&mut cx).is_pending());
        for _ in 0..3 {
            assert!(futures::poll!(watch.as_mut()).is_pending());
        }
        let starter = drain.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            starter.start();
        });
        // Woken by the signal, not found ready by a later poll for another reason.
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_secs(2)) => panic!("the watch was not woken"),
            _ = watch => {}
        }
        // Already draining: at once.
        Drain::watch(&drain.signal()).await;
    }
}
