//! Following the config file: change notifications on its directory (a mounted ConfigMap swaps
//! a `..data` symlink, which a watch on the file alone would miss) and a periodic re-read as a
//! fallback. A failed read is logged once per distinct error and the last good config stays.

use std::{sync::Arc, time::Duration};

use std::ffi::OsStr;

use notify::{
    EventKind, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode},
};
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
        let relevant = event.map_or(true, |e| is_change(&e, file_name.as_deref()));
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

/// Whether a notification may mean the config changed: an event on the file itself or on
/// kubelet's `..data`-style entries (other files in the directory come and go), and not a
/// mere read. Our own reload opens and reads the file; reacting to those access events would
/// reload in a loop.
fn is_change(event: &notify::Event, file_name: Option<&OsStr>) -> bool {
    let read_only = matches!(event.kind, EventKind::Access(kind)
        if kind != AccessKind::Close(AccessMode::Write));
    !read_only
        && event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| Some(n) == file_name || n.to_string_lossy().starts_with(".."))
        })
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind};

    use super::*;

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(path.into())
    }

    #[test]
    fn reads_of_the_file_are_not_changes() {
        let name = Some(OsStr::new("config.json"));
        for kind in [
            AccessKind::Open(AccessMode::Read),
            AccessKind::Read,
            AccessKind::Close(AccessMode::Read),
            AccessKind::Any,
        ] {
            assert!(!is_change(
                &event(EventKind::Access(kind), "/c/config.json"),
                name
            ));
        }
        assert!(is_change(
            &event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/c/config.json"
            ),
            name
        ));
        assert!(is_change(
            &event(EventKind::Modify(ModifyKind::Any), "/c/config.json"),
            name
        ));
    }

    #[test]
    fn kubelet_symlink_swaps_count_and_other_files_do_not() {
        let name = Some(OsStr::new("config.json"));
        assert!(is_change(
            &event(EventKind::Create(CreateKind::Any), "/c/..data_tmp"),
            name
        ));
        assert!(!is_change(
            &event(EventKind::Create(CreateKind::Any), "/c/other.txt"),
            name
        ));
    }
}
