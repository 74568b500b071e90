//! Draining: one signal tells every listener to stop accepting and every HTTP connection to
//! finish its requests; a count of open connections says when everything is done.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
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
}
