//! The rendered config, loaded from its file, compiled, and swapped atomically. Each request
//! takes the snapshot current when it starts and keeps it to the end. The file holds JSON or,
//! for a large config, gzip-compressed JSON; [`mizzen_proxy_config::payload::decode`] reads both.

mod watch;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use mizzen_proxy_config::{ConfigError, ProxyConfig, payload};
use mizzen_resilience::retry::RetryPolicy;
use mizzen_route::RouteTable;

use crate::telemetry::Metrics;

pub use watch::watch;

/// One loaded config with its compiled route table.
pub struct Snapshot {
    /// Increases with every swap; caches keyed on it know when to rebuild.
    pub version: u64,
    /// The config's JSON (decompressed when the file is gzip), for `/config_dump`.
    pub raw: String,
    pub routes: RouteTable,
    /// The mesh's default retry policy (routes without `retries`), compiled once.
    pub default_retry: Arc<RetryPolicy>,
    /// The file's bytes when they are not `raw` itself (gzip), to recognise an unchanged file.
    file: Option<Box<[u8]>>,
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
    /// Decodes (see [`payload::decode`]), parses and compiles the bytes of the config file, for
    /// the workload with `labels` (which DestinationRules with a `workloadSelector` apply).
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        version: u64,
        labels: &BTreeMap<String, String>,
    ) -> Result<Self, LoadError> {
        let parse = |source: ConfigError| LoadError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let json = payload::decode(bytes).map_err(|e| parse(e.into()))?;
        let config = ProxyConfig::from_json(json.as_bytes())
            .map_err(parse)?
            .for_workload(labels);
        let routes = RouteTable::from_config(config).map_err(|e| LoadError::Compile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let file = (json.as_bytes() != bytes).then(|| bytes.into());
        Ok(Self {
            version,
            default_retry: Arc::new(RetryPolicy::new(&routes.config().mesh.default_retry)),
            raw: json.into_owned(),
            routes,
            file,
        })
    }

    /// Whether `bytes` are the file this snapshot was loaded from.
    fn loaded_from(&self, bytes: &[u8]) -> bool {
        self.file.as_deref().unwrap_or(self.raw.as_bytes()) == bytes
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
    /// The workload's labels, which select the DestinationRules with a `workloadSelector`.
    labels: BTreeMap<String, String>,
    current: ArcSwap<Snapshot>,
    versions: AtomicU64,
    /// The bytes last refused, so a bad file is reported and counted once, not every poll.
    rejected: std::sync::Mutex<Option<Vec<u8>>>,
    metrics: Metrics,
}

impl ConfigStore {
    /// Loads the file, for the workload with `labels`; the proxy does not start without a good
    /// config.
    pub fn load(
        path: &Path,
        metrics: Metrics,
        labels: BTreeMap<String, String>,
    ) -> Result<Arc<Self>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let snap = Snapshot::from_bytes(path, &bytes, 1, &labels)?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            labels,
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
        if self.current.load().loaded_from(&bytes) {
            return Ok(false);
        }
        if let Ok(rejected) = self.rejected.lock()
            && rejected.as_deref() == Some(bytes.as_slice())
        {
            return Ok(false);
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        match Snapshot::from_bytes(&self.path, &bytes, version, &self.labels) {
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
        let store = ConfigStore::load(&path, m, BTreeMap::new()).unwrap();
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

    /// The stored form the operator writes for a large config.
    fn gzip(config: &ProxyConfig) -> Vec<u8> {
        let json = serde_json::to_string(config).unwrap();
        match payload::Payload::encode(json, 0) {
            payload::Payload::Gzip(bytes) => bytes,
            payload::Payload::Text(_) => unreachable!("a threshold of 0 always compresses"),
        }
    }

    #[test]
    fn destination_rules_for_selected_workloads_apply_to_this_workload_on_every_load() {
        use mizzen_proxy_config::{LoadBalancer, Service, TrafficPolicy, WorkloadRule};
        let lb = |lb| {
            Some(TrafficPolicy {
                load_balancer: Some(lb),
                ..TrafficPolicy::default()
            })
        };
        let config = |selected| {
            let mut c = ProxyConfig::new("default");
            c.services.push(Service {
                host: "reviews.default.svc.cluster.local".into(),
                policy: lb(LoadBalancer::LeastRequest),
                workload_rules: vec![WorkloadRule {
                    name: "default/reviews-for-productpage".into(),
                    selector: [("app".to_string(), "productpage".to_string())].into(),
                    policy: lb(selected),
                    ..WorkloadRule::default()
                }],
                ..Service::default()
            });
            c.to_json()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, config(LoadBalancer::RoundRobin)).unwrap();
        let policy = |store: &ConfigStore| store.current().config().services[0].policy.clone();
        let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);

        let productpage = ConfigStore::load(&path, metrics().1, labels("productpage")).unwrap();
        let other = ConfigStore::load(&path, metrics().1, labels("ratings")).unwrap();
        assert_eq!(policy(&productpage), lb(LoadBalancer::RoundRobin));
        assert_eq!(policy(&other), lb(LoadBalancer::LeastRequest));
        // A new file is resolved for the workload too.
        std::fs::write(&path, config(LoadBalancer::Random)).unwrap();
        assert!(productpage.reload().unwrap() && other.reload().unwrap());
        assert_eq!(policy(&productpage), lb(LoadBalancer::Random));
        assert_eq!(policy(&other), lb(LoadBalancer::LeastRequest));
    }

    #[test]
    fn gzip_config_files_load_and_garbage_gzip_keeps_the_last_good_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, gzip(&ProxyConfig::new("a"))).unwrap();
        let (registry, m) = metrics();
        let store = ConfigStore::load(&path, m, BTreeMap::new()).unwrap();
        assert_eq!(store.current().config().namespace, "a");
        // The dump shows JSON, not the compressed bytes.
        assert!(
            store.current().raw.starts_with("{\"format\""),
            "{}",
            store.current().raw
        );
        // An unchanged compressed file is recognised as unchanged.
        assert!(!store.reload().unwrap());
        assert_eq!(store.current().version, 1);

        // Text to gzip and back, as a config crosses the operator's threshold.
        std::fs::write(&path, ProxyConfig::new("b").to_json()).unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(store.current().config().namespace, "b");
        let mut c = ProxyConfig::new("c");
        c.services.push(mizzen_proxy_config::Service {
            host: "reviews.c.svc.cluster.local".into(),
            ..Default::default()
        });
        let good = gzip(&c);
        std::fs::write(&path, &good).unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(store.current().config().services.len(), 1);
        let serving = store.current().version;

        // A truncated file (a half-written or cut-off stream) is refused by name; the last
        // good config keeps serving.
        std::fs::write(&path, &good[..good.len() - 10]).unwrap();
        let err = store.reload().unwrap_err();
        assert!(matches!(err, LoadError::Parse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("config.json") && msg.contains("gzip-compressed but does not decompress"),
            "{msg}"
        );
        assert_eq!(store.current().version, serving);
        assert_eq!(store.current().config().namespace, "c");
        // Garbage after the gzip magic, likewise.
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0xde, 0xad, 0xbe, 0xef]).unwrap();
        assert!(matches!(store.reload(), Err(LoadError::Parse { .. })));
        assert_eq!(store.current().version, serving);
        let text = crate::telemetry::metrics::encode(&registry);
        assert!(
            text.contains("mizzen_proxy_config_reloads_total{result=\"failure\"} 2"),
            "{text}"
        );
        // The good file back again is what is serving already: nothing to swap.
        std::fs::write(&path, &good).unwrap();
        assert!(!store.reload().unwrap());
        assert_eq!(store.current().version, serving);
    }

    #[test]
    fn a_garbage_gzip_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let good = gzip(&ProxyConfig::new("a"));
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let err = ConfigStore::load(&path, metrics().1, BTreeMap::new())
            .err()
            .unwrap();
        assert!(
            matches!(
                &err,
                LoadError::Parse {
                    source: ConfigError::Payload(_),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_or_garbage_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(matches!(
            ConfigStore::load(&path, metrics().1, BTreeMap::new()),
            Err(LoadError::Read { .. })
        ));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            ConfigStore::load(&path, metrics().1, BTreeMap::new()),
            Err(LoadError::Parse { .. })
        ));
    }
}
