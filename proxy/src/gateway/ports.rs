//! One listener per server port of the current config. The ports of the config the gateway
//! starts with are bound before it reports ready (a port that cannot be bound fails the
//! start); afterwards a new config that adds a port gets a listener, and one that drops a port
//! stops accepting on it while its open connections finish — a Gateway applied or deleted
//! needs no restart.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::Instrument;

use super::conn::serve;
use crate::app::Shared;

/// Stops accepting on a port when dropped.
struct Accepting(JoinHandle<()>);

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn accept(listener: TcpListener, port: u16, shared: &Arc<Shared>) -> Accepting {
    Accepting(tokio::spawn(
        serve(listener, port, shared.clone()).instrument(tracing::info_span!("gateway_port", port)),
    ))
}

/// Serves `initial` (bound at start), then follows the config: every `every`, when the config
/// changed (or a port could not be bound yet), binds the ports it adds and closes those it
/// drops. Returns when draining starts or `stop` is set.
pub async fn follow(
    shared: Arc<Shared>,
    initial: Vec<(u16, TcpListener)>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let Some(gateway) = shared.gateway.clone() else {
        return;
    };
    let mut serving: BTreeMap<u16, Accepting> = initial
        .into_iter()
        .map(|(port, l)| (port, accept(l, port, &shared)))
        .collect();
    let mut seen = shared.store.current().version;
    let mut incomplete = false;
    let mut drain = shared.drain.signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::drain::Drain::started(&mut drain) => return,
            _ = stop.changed() => return,
        }
        let snap = shared.store.current();
        if snap.version == seen && !incomplete {
            continue;
        }
        seen = snap.version;
        let wanted = super::ports(snap.config(), &gateway.settings.labels);
        drop(snap);
        serving.retain(|port, _| {
            let keep = wanted.contains(port);
            if !keep {
                tracing::info!(port, "no Gateway server on this port any more: closing it");
                gateway.set_bound(*port, None);
            }
            keep
        });
        incomplete = false;
        let missing: BTreeSet<u16> = wanted
            .into_iter()
            .filter(|p| !serving.contains_key(p))
            .collect();
        for port in missing {
            let addr = gateway.settings.listen_addr(port);
            match bind(addr).await {
                Ok((listener, bound)) => {
                    tracing::info!(port, %bound, "new Gateway server port");
                    gateway.set_bound(port, Some(bound));
                    serving.insert(port, accept(listener, port, &shared));
                }
                Err(error) => {
                    // Tried again on the next tick.
                    tracing::error!(port, %addr, %error, "cannot listen for a Gateway server");
                    incomplete = true;
                }
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
