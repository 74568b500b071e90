//! The traffic driver: `GET /productpage` at a steady rate through its own sidecar, counting
//! what came back (the live view's "driver" line and `--duration`'s exit code).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use crate::mesh::Entry;

/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the driver saw, shared with the view.
#[derive(Debug, Default)]
pub struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Other answers, connection failures and timeouts.
    pub failed: u64,
}

impl Counters {
    pub fn get(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Sends `rps` requests a second for `path` to `entry` until `stop` turns true, then waits for
/// the ones in flight (each bounded by [`REQUEST_TIMEOUT`]).
pub async fn drive(
    entry: Entry,
    path: &'static str,
    rps: u32,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{}{path}", entry.listener);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        while in_flight.try_join_next().is_some() {}
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let request = http::Request::get(&uri)
            .header(http::header::HOST, &entry.authority)
            .body(Empty::new())
            .expect("a valid request");
        let (client, counters) = (client.clone(), counters.clone());
        in_flight.spawn(async move {
            let call = async {
                let response = client.request(request).await.ok()?;
                let ok = response.status().is_success();
                // Read the body so the connection goes back to the pool.
                response.into_body().collect().await.ok()?;
                Some(ok)
            };
            let ok = tokio::time::timeout(REQUEST_TIMEOUT, call)
                .await
                .ok()
                .flatten();
            let counter = if ok == Some(true) {
                &counters.ok
            } else {
                &counters.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
    while in_flight.join_next().await.is_some() {}
}
