//! The pods of this node, as the authorizer needs them: uid, node, service account, whether the
//! pod has finished.
//!
//! [`NodePods`] is an in-memory map with a change signal; [`watch_node_pods`] feeds it from one
//! watch of the Pods with `spec.nodeName=<node>` (a relist replaces the map in one step, so a
//! reconnecting watch never makes every pod look gone). Tests feed it directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::sync::watch;

/// What the agent knows about one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `spec.serviceAccountName` (`default` when unset, as the API server fills it in).
    pub service_account: String,
    /// The pod has finished (phase Succeeded or Failed): nothing in it needs a certificate.
    pub terminated: bool,
}

impl PodInfo {
    /// The facts of a Pod object; `None` for an object without a name or namespace.
    pub fn of(pod: &Pod) -> Option<((String, String), PodInfo)> {
        let namespace = pod.metadata.namespace.clone()?;
        let name = pod.metadata.name.clone()?;
        let spec = pod.spec.as_ref();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        Some((
            (namespace, name),
            PodInfo {
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
                service_account: spec
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into()),
                terminated: matches!(phase, Some("Succeeded" | "Failed")),
            },
        ))
    }
}

/// Looks pods up by namespace and name.
pub trait PodDirectory: Send + Sync + 'static {
    fn get(&self, namespace: &str, name: &str) -> Option<PodInfo>;
    /// Ticks after every change.
    fn changes(&self) -> watch::Receiver<()>;
}

/// The pods of this node, in memory.
pub struct NodePods {
    pods: Mutex<HashMap<(String, String), PodInfo>>,
    changed: watch::Sender<()>,
}

impl Default for NodePods {
    fn default() -> Self {
        NodePods {
            pods: Mutex::new(HashMap::new()),
            changed: watch::channel(()).0,
        }
    }
}

impl NodePods {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn insert(&self, namespace: &str, name: &str, info: PodInfo) {
        self.lock()
            .insert((namespace.to_string(), name.to_string()), info);
        self.changed.send_replace(());
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.lock()
            .remove(&(namespace.to_string(), name.to_string()));
        self.changed.send_replace(());
    }

    /// Replaces every pod at once (after a relist).
    pub fn replace(&self, pods: HashMap<(String, String), PodInfo>) {
        *self.lock() = pods;
        self.changed.send_replace(());
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PodInfo>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PodDirectory for NodePods {
    fn get(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        self.lock()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn changes(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

/// Keeps `pods` in step with the Pods scheduled to `node` until the watch ends (it does not: the
/// watcher retries with backoff, logging each error).
pub async fn watch_node_pods(client: kube::Client, node: String, pods: Arc<NodePods>) {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut relist: Option<HashMap<(String, String), PodInfo>> = None;
    let stream = kube::runtime::WatchStreamExt::default_backoff(watcher(api, config));
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => relist = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(pod)) => {
                if let (Some(map), Some((key, info))) = (relist.as_mut(), PodInfo::of(&pod)) {
                    map.insert(key, info);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(map) = relist.take() {
                    tracing::info!(node = %node, pods = map.len(), "node pods listed");
                    pods.replace(map);
                }
            }
            Ok(watcher::Event::Apply(pod)) => {
                if let Some(((ns, name), info)) = PodInfo::of(&pod) {
                    pods.insert(&ns, &name, info);
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(((ns, name), _)) = PodInfo::of(&pod) {
                    pods.remove(&ns, &name);
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching this node's pods"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_facts_with_api_defaults() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cart-0", "namespace": "shop", "uid": "u1"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let ((ns, name), info) = PodInfo::of(&pod).unwrap();
        assert_eq!((ns.as_str(), name.as_str()), ("shop", "cart-0"));
        assert_eq!(
            info,
            PodInfo {
                uid: "u1".into(),
                node: "n1".into(),
                service_account: "default".into(),
                terminated: false
            }
        );
        let done: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "job", "namespace": "shop"},
            "status": {"phase": "Succeeded"}
        }))
        .unwrap();
        assert!(PodInfo::of(&done).unwrap().1.terminated);
    }

    #[test]
    fn changes_tick_on_every_update() {
        let pods = NodePods::new();
        let mut rx = pods.changes();
        rx.mark_unchanged();
        let info = PodInfo {
            uid: "u".into(),
            node: "n".into(),
            service_account: "sa".into(),
            terminated: false,
        };
        pods.insert("a", "b", info.clone());
        assert!(rx.has_changed().unwrap());
        assert_eq!(pods.get("a", "b"), Some(info));
        rx.mark_unchanged();
        pods.remove("a", "b");
        assert!(rx.has_changed().unwrap());
        assert!(pods.is_empty());
    }
}
