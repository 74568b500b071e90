//! Feeds the [`EndpointsIndex`] from one watch each of Services, EndpointSlices, Pods and Nodes
//! (cluster-wide, once per node, as kube-proxy does) and publishes a snapshot after each burst of
//! changes has been quiet for the debounce interval.
//!
//! Pods are watched whole, not as metadata only: the service account (`spec`) names the identity
//! each endpoint's proxy must present. Each Pod is cut down to a [`PodSummary`] as it arrives, so
//! the extra cost is decoding, not memory. Nodes are watched as metadata only (their topology
//! labels give the localities) and cut down to a [`NodeTopology`] as they arrive.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::endpoints::{EndpointsEvent, EndpointsIndex, NodeTopology, PodSummary};

/// One change to the index.
pub enum Change {
    /// Boxed: a Service event is twice the size of the others.
    Service(Box<watcher::Event<Service>>),
    Slice(watcher::Event<EndpointSlice>),
    Pod(watcher::Event<PodSummary>),
    Node(watcher::Event<NodeTopology>),
}

/// Objects gathered during a relist, swapped in when it is done.
#[derive(Default)]
struct Relists {
    services: Option<Vec<Service>>,
    slices: Option<Vec<EndpointSlice>>,
    pods: Option<Vec<PodSummary>>,
    nodes: Option<Vec<NodeTopology>>,
}

/// Applies one watch event of one kind; true when the index changed.
fn relist<K>(
    index: &mut EndpointsIndex,
    pending: &mut Option<Vec<K>>,
    event: watcher::Event<K>,
    ops: Ops<K>,
) -> bool {
    match event {
        watcher::Event::Init => {
            *pending = Some(Vec::new());
            false
        }
        watcher::Event::InitApply(obj) => {
            if let Some(list) = pending.as_mut() {
                list.push(obj);
            }
            false
        }
        watcher::Event::InitDone => {
            (ops.replace)(index, &pending.take().unwrap_or_default());
            true
        }
        watcher::Event::Apply(obj) => (ops.apply)(index, &obj),
        watcher::Event::Delete(obj) => {
            (ops.delete)(index, &obj);
            true
        }
    }
}

/// How one kind of object goes into the index.
struct Ops<K> {
    /// True when the index may have changed.
    apply: fn(&mut EndpointsIndex, &K) -> bool,
    delete: fn(&mut EndpointsIndex, &K),
    replace: fn(&mut EndpointsIndex, &[K]),
}

const SERVICES: Ops<Service> = Ops {
    apply: |i, s| {
        i.apply_service(s);
        true
    },
    delete: |i, s| {
        let (ns, name) = ns_name(&s.metadata);
        i.delete_service(ns, name)
    },
    replace: |i, all| i.replace_services(all),
};

const SLICES: Ops<EndpointSlice> = Ops {
    apply: |i, s| {
        i.apply_slice(s);
        true
    },
    delete: |i, s| {
        let (ns, name) = ns_name(&s.metadata);
        i.delete_slice(ns, name)
    },
    replace: |i, all| i.replace_slices(all),
};

const PODS: Ops<PodSummary> = Ops {
    apply: |i, p| {
        i.apply_pod(p);
        true
    },
    delete: |i, p| {
        let (ns, name) = ns_name(&p.meta);
        i.delete_pod(ns, name)
    },
    replace: |i, all| i.replace_pods(all),
};

const NODES: Ops<NodeTopology> = Ops {
    apply: |i, n| i.apply_node(n),
    delete: |i, n| i.delete_node(&n.name),
    replace: |i, all| i.replace_nodes(all),
};

fn ns_name(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Applies `changes` to `index` and publishes a snapshot to `out` once no change has come for
/// `debounce`, or at the latest `max_delay` after the first unpublished change (so steady churn
/// cannot hold back a removed pod), and only when the snapshot differs. Returns when `changes`
/// ends.
pub async fn run_index(
    mut index: EndpointsIndex,
    changes: impl Stream<Item = Change>,
    debounce: Duration,
    max_delay: Duration,
    out: watch::Sender<Arc<EndpointsEvent>>,
) {
    futures::pin_mut!(changes);
    let mut relists = Relists::default();
    let mut dirty_since: Option<Instant> = None;
    loop {
        let next = match dirty_since {
            Some(since) => {
                let quiet = debounce.min(max_delay.saturating_sub(since.elapsed()));
                match tokio::time::timeout(quiet, changes.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        publish(&index, &out);
                        dirty_since = None;
                        continue;
                    }
                }
            }
            None => changes.next().await,
        };
        let Some(change) = next else { return };
        let touched = match change {
            Change::Service(event) => relist(&mut index, &mut relists.services, *event, SERVICES),
            Change::Slice(event) => relist(&mut index, &mut relists.slices, event, SLICES),
            Change::Pod(event) => relist(&mut index, &mut relists.pods, event, PODS),
            Change::Node(event) => relist(&mut index, &mut relists.nodes, event, NODES),
        };
        if touched && dirty_since.is_none() {
            dirty_since = Some(Instant::now());
        }
    }
}

fn publish(index: &EndpointsIndex, out: &watch::Sender<Arc<EndpointsEvent>>) {
    let snapshot = index.snapshot();
    out.send_if_modified(|current| {
        if **current == snapshot {
            false
        } else {
            *current = Arc::new(snapshot);
            true
        }
    });
}

/// The four cluster watches, merged into one stream of changes (errors are logged; the
/// watchers retry with backoff).
pub fn cluster_changes(client: kube::Client) -> impl Stream<Item = Change> + Send {
    let services = watcher(
        kube::Api::<Service>::all(client.clone()),
        Default::default(),
    )
    .default_backoff()
    .filter_map(|e| async { log_err(e).map(|e| Change::Service(Box::new(e))) });
    let slices = watcher(
        kube::Api::<EndpointSlice>::all(client.clone()),
        Default::default(),
    )
    .default_backoff()
    .filter_map(|e| async { log_err(e).map(Change::Slice) });
    let pods = watcher(kube::Api::<Pod>::all(client.clone()), Default::default())
        .default_backoff()
        .filter_map(|e| async { log_err(e).map(|e| Change::Pod(map_event(e, PodSummary::of))) });
    // Metadata only: an `Api` of `PartialObjectMeta` asks the API server for that alone.
    let nodes = watcher(
        kube::Api::<PartialObjectMeta<Node>>::all(client),
        Default::default(),
    )
    .default_backoff()
    .filter_map(|e| async {
        log_err(e).map(|e| Change::Node(map_event(e, |n| NodeTopology::of(n.metadata))))
    });
    futures::stream::select(
        futures::stream::select(services, slices),
        futures::stream::select(pods, nodes),
    )
}

fn log_err<T>(event: Result<T, watcher::Error>) -> Option<T> {
    event
        .inspect_err(|e| tracing::warn!(error = %e, "endpoints watch"))
        .ok()
}

/// A watch event with its object cut down to what the index keeps.
fn map_event<A, B>(event: watcher::Event<A>, f: impl FnOnce(A) -> B) -> watcher::Event<B> {
    match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}))
        .unwrap()
    }

    #[tokio::test]
    async fn bursts_are_published_once_after_quiet_and_relists_swap_in_whole() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (out, mut snapshots) = watch::channel(Arc::new(EndpointsEvent::default()));
        tokio::spawn(run_index(
            EndpointsIndex::new("cluster.local"),
            rx,
            Duration::from_millis(50),
            Duration::from_secs(1),
            out,
        ));
        snapshots.mark_unchanged();
        let send = |e| tx.unbounded_send(Change::Service(Box::new(e))).unwrap();
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(service("a")));
        send(watcher::Event::InitApply(service("b")));
        send(watcher::Event::InitDone);
        send(watcher::Event::Apply(service("c")));
        tokio::time::timeout(Duration::from_secs(5), snapshots.changed())
            .await
            .unwrap()
            .unwrap();
        let hosts: Vec<String> = snapshots
            .borrow_and_update()
            .services
            .iter()
            .map(|s| s.host.clone())
            .collect();
        assert_eq!(
            hosts,
            [
                "a.shop.svc.cluster.local",
                "b.shop.svc.cluster.local",
                "c.shop.svc.cluster.local"
            ]
        );
        // A relist that no longer has `a` and `c` removes them in one step.
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(service("b")));
        send(watcher::Event::InitDone);
        tokio::time::timeout(Duration::from_secs(5), snapshots.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snapshots.borrow_and_update().services.len(), 1);
        // Deleting a service publishes; a change that alters nothing does not.
        send(watcher::Event::Apply(service("b")));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), snapshots.changed())
                .await
                .is_err()
        );
        send(watcher::Event::Delete(service("b")));
        tokio::time::timeout(Duration::from_secs(5), snapshots.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(snapshots.borrow().services.is_empty());
    }

    fn node(name: &str, zone: &str) -> NodeTopology {
        NodeTopology::of(
            serde_json::from_value(json!({"name": name,
                "labels": {"topology.kubernetes.io/zone": zone}}))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn node_relists_and_label_changes_reach_the_snapshot_and_status_updates_do_not() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (out, mut snapshots) = watch::channel(Arc::new(EndpointsEvent::default()));
        tokio::spawn(run_index(
            EndpointsIndex::new("cluster.local").on_node("n1"),
            rx,
            Duration::from_millis(50),
            Duration::from_secs(1),
            out,
        ));
        snapshots.mark_unchanged();
        let send = |e| tx.unbounded_send(Change::Node(e)).unwrap();
        let next = async |snapshots: &mut watch::Receiver<Arc<EndpointsEvent>>| {
            tokio::time::timeout(Duration::from_secs(5), snapshots.changed())
                .await
                .unwrap()
                .unwrap();
            snapshots.borrow_and_update().locality.clone()
        };
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(node("n1", "z1")));
        send(watcher::Event::InitApply(node("n2", "z2")));
        send(watcher::Event::InitDone);
        assert_eq!(next(&mut snapshots).await.as_deref(), Some("/z1/"));
        // The same labels again (a status update) publish nothing.
        send(watcher::Event::Apply(node("n1", "z1")));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), snapshots.changed())
                .await
                .is_err()
        );
        send(watcher::Event::Apply(node("n1", "z3")));
        assert_eq!(next(&mut snapshots).await.as_deref(), Some("/z3/"));
        // A relist without the agent's node drops it.
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(node("n2", "z2")));
        send(watcher::Event::InitDone);
        assert_eq!(next(&mut snapshots).await, None);
    }
}
