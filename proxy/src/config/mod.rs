//! The rendered config, loaded from its file, compiled, and swapped atomically. Each request
//! takes the snapshot current when it starts and keeps it to the end.

mod watch;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use mizzen_proxy_config::{ConfigError, ProxyConfig};
use mizzen_route::RouteTable;

use crate::telemetry::Metrics;

pub use watch::watch;

/// One loaded config with its compiled route table.
pub struct Snapshot {
    /// Increases with every swap; caches keyed on it know when to rebuild.
    pub version: u64,
    /// The file's bytes, for `/config_dump`.
    pub raw: String,
    pub routes: RouteTable,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ConfigError },
    #[error("{path}: routes do not compile: {message}")]
    Compile { path: PathBuf, message: String },
}

impl Snapshot {
    pub fn from_bytes(path: &Path, bytes: &[u8], version: u64) -> Result<Self, LoadError> {
        let config = ProxyConfig::from_json(bytes).map_err(|source| LoadError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let routes = RouteTable::from_config(config).map_err(|e| LoadError::Compile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            version,
            raw: String::from_utf8_lossy(bytes).into_owned(),
            routes,
        })
    }
}

impl Snapshot {
    pub fn config(&self) -> &ProxyConfig {
        self.routes.config()
    }
}

/// The current snapshot and how to replace it.
pub struct ConfigStore {
    path: PathBuf,
    current: ArcSwap<Snapshot>,
    versions: AtomicU64,
    /// The bytes last refused, so a bad file is reported and counted once, not every poll.
    rejected: std::sync::Mutex<Option<Vec<u8>>>,
    metrics: Metrics,
}

impl ConfigStore {
    /// Loads the file; the proxy does not start without a good config.
    pub fn load(path: &Path, metrics: Metrics) -> Result<Arc<Self>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let snap = Snapshot::from_bytes(path, &bytes, 1)?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(snap),
            versions: AtomicU64::new(1),
            rejected: std::sync::Mutex::new(None),
            metrics,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshot a new request should use.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads the file. `Ok(true)`: a new config is in place; `Ok(false)`: unchanged; an
    /// error leaves the last good config in place (and is counted).
    pub fn reload(&self) -> Result<bool, LoadError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(source) => {
                self.metrics.config_reload(false);
                return Err(LoadError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        if self.current.load().raw.as_bytes() == bytes.as_slice() {
            return Ok(false);
        }
        if let Ok(rejected) = self.rejected.lock()
            && rejected.as_deref() == Some(bytes.as_slice())
        {
            return Ok(false);
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        match Snapshot::from_bytes(&self.path, &bytes, version) {
            Ok(snap) => {
                self.current.store(Arc::new(snap));
                self.metrics.config_reload(true);
                Ok(true)
            }
            Err(e) => {
                self.metrics.config_reload(false);
                if let Ok(mut rejected) = self.rejected.lock() {
                    *rejected = Some(bytes);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn metrics() -> (Registry, Metrics) {
        let mut r = Registry::default();
        let m = Metrics::register(&mut r);
        (r, m)
    }

    #[test]
    fn reload_swaps_good_configs_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, ProxyConfig::new("a").to_json()).unwrap();
        let (registry, m) = metrics();
        let store = ConfigStore::load(&path, m).unwrap();
        let first = store.current();
        assert_eq!(first.config().namespace, "a");
        // Unchanged file: nothing to do.
        assert!(!store.reload().unwrap());
        std::fs::write(&path, ProxyConfig::new("b").to_json()).unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(store.current().config().namespace, "b");
        assert!(store.current().version > first.version);
        // A snapshot taken before the swap is unchanged.
        assert_eq!(first.config().namespace, "a");
        std::fs::write(&path, b"{\"format\": 7}").unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        assert_eq!(store.current().config().namespace, "b");
        // The same bad bytes are reported and counted once.
        assert!(!store.reload().unwrap());
        let text = crate::telemetry::metrics::encode(&registry);
        assert!(
            text.contains("mizzen_proxy_config_reloads_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mizzen_proxy_config_reloads_total{result=\"success\"} 1"),
            "{text}"
        );
        // A config whose routes do not compile is refused too.
        let mut bad = ProxyConfig::new("c");
        bad.services.push(mizzen_proxy_config::Service {
            host: "x".into(),
            addresses: vec!["not-an-ip".into()],
            ..Default::default()
        });
        std::fs::write(&path, bad.to_json()).unwrap();
        assert!(matches!(store.reload(), Err(LoadError::Compile { .. })));
        assert_eq!(store.current().config().namespace, "b");
    }

    #[test]
    fn a_missing_or_garbage_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(matches!(
            ConfigStore::load(&path, metrics().1),
            Err(LoadError::Read { .. })
        ));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            ConfigStore::load(&path, metrics().1),
            Err(LoadError::Parse { .. })
        ));
    }
}
