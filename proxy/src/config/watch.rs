//! Following the config file: change notifications on its directory (a mounted ConfigMap swaps
//! a `..data` symlink, which a watch on the file alone would miss) and a periodic re-read as a
//! fallback. A failed read is logged once per distinct error and the last good config stays.

use std::{sync::Arc, time::Duration};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch as signal};

use super::ConfigStore;

/// Runs until `shutdown` turns true.
pub async fn watch(store: Arc<ConfigStore>, poll: Duration, mut shutdown: signal::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let dir = store
        .path()
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ".".into());
    let file_name = store.path().file_name().map(|n| n.to_os_string());
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only the file itself and kubelet's `..data`-style entries matter; other files in
        // the directory come and go without a reload.
        let relevant = event.map_or(true, |e| {
            e.paths.iter().any(|p| {
                p.file_name().is_some_and(|n| {
                    Some(n) == file_name.as_deref() || n.to_string_lossy().starts_with("..")
                })
            })
        });
        if relevant {
            // Coalesce bursts: one pending wake-up is enough.
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; polling only");
            None
        }
    };
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = rx.recv() => {
                // Let the writer finish (a ConfigMap update is several renames).
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = shutdown.changed() => return,
        }
        match store.reload() {
            Ok(true) => {
                last_error.clear();
                let snap = store.current();
                tracing::info!(
                    version = snap.version,
                    services = snap.config().services.len(),
                    "config reloaded"
                );
            }
            Ok(false) => {}
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    tracing::error!(error = %msg, "config rejected; keeping the last good config");
                    last_error = msg;
                }
            }
        }
    }
}
