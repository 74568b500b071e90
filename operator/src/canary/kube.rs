//! The canary controller in a cluster: a kube-runtime `Controller` over Canaries whose
//! reconcile runs one [`driver::round`] against the API server, only while this replica leads.
//!
//! - Subsets: the DestinationRule (`spec.destinationRule`, else the one in the Canary's
//!   namespace whose host is `spec.service`) gives each subset's labels; the pods with those
//!   labels are the subset. A subset is ready when it has pods and all are Ready. The revision
//!   is `spec.revision` when set, else the subset's `pod-template-hash` labels (a Deployment's
//!   rollout changes them), else its labels.
//! - Metrics: each ready canary pod's proxy at `http://<podIP>:15090/stats/prometheus`, or
//!   Prometheus for metrics that name it.
//! - Traffic: the VirtualService `spec.virtualService` (else the Canary's name), applied
//!   whole with server-side apply and the field manager [`routes::FIELD_MANAGER`], owned by
//!   the Canary (deleting the Canary deletes it); the renderer picks it up like any other.
//! - Promotion: a JSON Patch of the DestinationRule (same field manager): the stable subset
//!   takes the canary subset's labels.
//! - Events through kube-runtime's recorder; `status` by server-side apply on the status
//!   subresource, so fields the machine clears are removed.
//! - The first time a process sees a Canary (a start, a new leader) it applies the routing the
//!   status stands for before the round, repairing drift made while no controller ran.
//! - What the driver remembers of a Canary between rounds ([`Memory`]) is dropped when the
//!   Canary is deleted ([`forget_deleted`]), and not carried over to a new Canary of the same
//!   name (a new uid).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DynamicObject, ListParams, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        controller::{self, Action as Requeue, Controller},
        events::{Event, EventType as KubeEventType, Recorder, Reporter},
        watcher,
    },
};
use mizzen_crds::rollouts::canary::{Canary, CanaryStatus};
use serde_json::json;
use tokio::sync::watch;

use super::{
    EventType, Traffic,
    driver::{self, CanaryWorld, Error, Memory, Subsets},
    fetch::Fetcher,
    metrics::CanaryMetrics,
    routes::{self, FIELD_MANAGER},
};

/// The proxies' Prometheus port (Istio's).
pub const PROXY_METRICS_PORT: u16 = 15090;
/// How soon a replica that does not lead looks again.
const FOLLOWER_RECHECK: Duration = Duration::from_secs(5);
/// Retry delay after a failed round.
const ERROR_RETRY: Duration = Duration::from_secs(15);
/// The controller name on Events.
pub const CONTROLLER_NAME: &str = "mizzen-canary";

/// The Kubernetes side of one round.
pub struct KubeWorld {
    client: Client,
    fetcher: Fetcher,
    recorder: Recorder,
}

impl KubeWorld {
    /// A world whose HTTPS calls trust the web PKI roots only; see [`KubeWorld::with_fetcher`].
    pub fn new(client: Client, recorder: Recorder) -> Self {
        Self {
            client,
            fetcher: Fetcher::new(),
            recorder,
        }
    }

    /// Makes the scrapes, queries and webhook calls through `fetcher` (e.g. one that also
    /// trusts the operator's `--canary-ca-file`).
    pub fn with_fetcher(mut self, fetcher: Fetcher) -> Self {
        self.fetcher = fetcher;
        self
    }

    fn rules(&self, ns: &str) -> Api<DynamicObject> {
        let ar = crate::status::api_resource("DestinationRule").expect("a known kind");
        Api::namespaced_with(self.client.clone(), ns, &ar)
    }

    async fn destination_rule(&self, canary: &Canary) -> Result<DynamicObject, Error> {
        let ns = namespace(canary);
        let api = self.rules(ns);
        let kube_err = |what: String| move |source| Error::Kube { what, source };
        match &canary.spec.destination_rule {
            Some(name) => api
                .get(name)
                .await
                .map_err(kube_err(format!("reading DestinationRule {ns}/{name}"))),
            None => api
                .list(&ListParams::default())
                .await
                .map_err(kube_err(format!("listing DestinationRules in {ns}")))?
                .items
                .into_iter()
                .find(|r| {
                    routes::host_matches(
                        r.data["spec"]["host"].as_str().unwrap_or_default(),
                        &canary.spec.service,
                    )
                })
                .ok_or_else(|| {
                    Error::Missing(format!(
                        "no DestinationRule in {ns} has host {}",
                        canary.spec.service
                    ))
                }),
        }
    }

    async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>, Error> {
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(selector))
            .await
            .map(|l| l.items)
            .map_err(|source| Error::Kube {
                what: format!("listing pods {selector} in {ns}"),
                source,
            })
    }
}

fn namespace(canary: &Canary) -> &str {
    canary.metadata.namespace.as_deref().unwrap_or("default")
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A subset's revision: its pods' `pod-template-hash` labels, else `fallback` (its labels).
fn revision_of(pods: &[Pod], fallback: String) -> String {
    let mut hashes: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.labels().get("pod-template-hash").map(String::as_str))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    if hashes.is_empty() {
        fallback
    } else {
        hashes.join(",")
    }
}

impl CanaryWorld for KubeWorld {
    async fn observe(&mut self, canary: &Canary) -> Result<Subsets, Error> {
        let rule = self.destination_rule(canary).await?;
        let rule_json = serde_json::to_value(&rule).unwrap_or_default();
        let spec = &canary.spec;
        let labels_of = |subset: &str| {
            routes::subset_labels(&rule_json, subset).ok_or_else(|| {
                Error::Missing(format!(
                    "DestinationRule {} has no subset {subset:?}",
                    rule.name_any()
                ))
            })
        };
        let stable = routes::selector(&labels_of(&spec.stable_subset)?);
        let canary_sel = routes::selector(&labels_of(&spec.canary_subset)?);
        let ns = namespace(canary);
        let stable_pods = self.pods(ns, &stable).await?;
        let canary_pods = self.pods(ns, &canary_sel).await?;
        let all_ready = |pods: &[Pod]| !pods.is_empty() && pods.iter().all(pod_ready);
        Ok(Subsets {
            revision: match &spec.revision {
                Some(r) => Some(r.clone()),
                None => (!canary_pods.is_empty()).then(|| revision_of(&canary_pods, canary_sel)),
            },
            stable_revision: spec
                .revision
                .is_none()
                .then(|| revision_of(&stable_pods, stable)),
            primary_ready: all_ready(&stable_pods),
            canary_ready: all_ready(&canary_pods),
            canary_scrape_urls: canary_pods
                .iter()
                .filter(|p| pod_ready(p))
                .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref())
                .map(scrape_url)
                .collect(),
        })
    }

    async fn set_traffic(&mut self, canary: &Canary, traffic: Traffic) -> Result<(), Error> {
        let mut vs = routes::virtual_service(canary, traffic);
        if let Some(owner) = canary.controller_owner_ref(&()) {
            vs["metadata"]["ownerReferences"] = json!([owner]);
        }
        let name = routes::virtual_service_name(canary);
        let ns = namespace(canary);
        let ar = crate::status::api_resource("VirtualService").expect("a known kind");
        Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&vs),
            )
            .await
            .map(drop)
            .map_err(|source| Error::Kube {
                what: format!("applying VirtualService {ns}/{name}"),
                source,
            })
    }

    async fn promote(&mut self, canary: &Canary, revision: &str) -> Result<(), Error> {
        let rule = self.destination_rule(canary).await?;
        let name = rule.name_any();
        let spec = &canary.spec;
        let rule_json = serde_json::to_value(&rule).unwrap_or_default();
        let patch = routes::promotion_patch(&rule_json, &spec.stable_subset, &spec.canary_subset)
            .ok_or_else(|| {
            Error::Missing(format!(
                "DestinationRule {name} has no subset {:?} or {:?}",
                spec.stable_subset, spec.canary_subset
            ))
        })?;
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("a valid JSON Patch");
        let ns = namespace(canary);
        tracing::info!(%name, revision, "promoting: the stable subset takes the canary labels");
        self.rules(ns)
            .patch(
                &name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Json::<()>(patch),
            )
            .await
            .map(drop)
            .map_err(|source| Error::Kube {
                what: format!("promoting in DestinationRule {ns}/{name}"),
                source,
            })
    }

    async fn record_event(
        &mut self,
        canary: &Canary,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let event = Event {
            type_: match type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: reason.to_string(),
            note: Some(truncate(message, 1024)),
            action: "Rollout".into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &canary.object_ref(&()))
            .await
            .map_err(|source| Error::Kube {
                what: format!("recording event {reason}"),
                source,
            })
    }

    async fn write_status(&mut self, canary: &Canary, status: &CanaryStatus) -> Result<(), Error> {
        let ns = namespace(canary);
        let name = canary.name_any();
        let body = json!({
            "apiVersion": Canary::api_version(&()),
            "kind": Canary::kind(&()),
            "status": status,
        });
        Api::<Canary>::namespaced(self.client.clone(), ns)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map(drop)
            .map_err(|source| Error::Kube {
                what: format!("writing the status of Canary {ns}/{name}"),
                source,
            })
    }

    fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }
}

/// The metrics URL of a pod's proxy.
pub fn scrape_url(pod_ip: &str) -> String {
    let host = if pod_ip.contains(':') {
        format!("[{pod_ip}]")
    } else {
        pod_ip.to_string()
    };
    format!("http://{host}:{PROXY_METRICS_PORT}/stats/prometheus")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub leading: watch::Receiver<bool>,
    pub metrics: CanaryMetrics,
    fetcher: Fetcher,
    /// By (namespace, name): the driver's memory of each Canary this replica has run a round
    /// of while leading.
    memory: Mutex<HashMap<(String, String), Remembered>>,
}

/// The memory of one Canary object: a Canary deleted and created again under the same name
/// (a new uid) starts afresh, with no baselines or webhook answers of its predecessor.
struct Remembered {
    uid: Option<String>,
    memory: Arc<tokio::sync::Mutex<Memory>>,
}

impl Context {
    pub fn new(
        client: Client,
        identity: String,
        leading: watch::Receiver<bool>,
        metrics: CanaryMetrics,
    ) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(identity),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            leading,
            metrics,
            fetcher: Fetcher::new(),
            memory: Mutex::default(),
        }
    }

    /// Makes every round's HTTP calls through `fetcher` (built once, so its connections and
    /// its CA bundle are shared by all rounds).
    pub fn with_fetcher(mut self, fetcher: Fetcher) -> Self {
        self.fetcher = fetcher;
        self
    }

    /// The Canaries, as (namespace, name), whose memory this replica keeps.
    pub fn remembered(&self) -> Vec<(String, String)> {
        let mut keys: Vec<_> = self
            .memory
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Drops the memory and the metric series of a Canary that is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.metrics.forget(namespace, name);
        if let Ok(mut m) = self.memory.lock()
            && m.remove(&(namespace.to_string(), name.to_string()))
                .is_some()
        {
            tracing::debug!(namespace, name, "canary gone; its memory is dropped");
        }
    }
}

/// One reconcile: a round when this replica leads, then come back when the machine says.
pub async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if !*ctx.leading.borrow() {
        return Ok(Requeue::requeue(FOLLOWER_RECHECK));
    }
    let key = (namespace(&canary).to_string(), canary.name_any());
    let uid = canary.metadata.uid.clone();
    let remembered = ctx.memory.lock().ok().and_then(|m| {
        m.get(&key)
            .filter(|r| r.uid == uid)
            .map(|r| r.memory.clone())
    });
    let mut world =
        KubeWorld::new(ctx.client.clone(), ctx.recorder.clone()).with_fetcher(ctx.fetcher.clone());
    // First sight of this Canary in this process (a start, a new leader, a new uid): put the
    // routing its status stands for back in place, in case it drifted while nobody was
    // watching; only then is it remembered, so a failed repair is tried again.
    let memory = match remembered {
        Some(m) => m,
        None => {
            let status = canary.status.clone().unwrap_or_default();
            world
                .set_traffic(&canary, super::traffic(&canary.spec, &status))
                .await?;
            let memory = Arc::new(tokio::sync::Mutex::new(Memory::default()));
            if let Ok(mut m) = ctx.memory.lock() {
                m.insert(
                    key.clone(),
                    Remembered {
                        uid,
                        memory: memory.clone(),
                    },
                );
            }
            memory
        }
    };
    // kube-runtime runs one reconcile of an object at a time: this lock is never contended.
    // It stays in the map during the round, so a `forget` meanwhile drops it for good.
    let mut memory = memory.lock().await;
    let decision = driver::round(&mut world, &mut memory, &canary, Timestamp::now()).await?;
    let prev = canary.status.clone().unwrap_or_default();
    ctx.metrics
        .observe(&key.0, &key.1, &prev, &decision.state.to_status());
    // Zero means "right after the actions": the status write triggers the next call anyway,
    // but a short requeue keeps going if that event is missed.
    Ok(Requeue::requeue(
        decision.requeue_after.max(Duration::from_millis(100)),
    ))
}

fn error_policy(canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(
        canary = %canary.name_any(),
        namespace = namespace(&canary),
        %error,
        "canary round failed; retrying"
    );
    ctx.metrics.error(namespace(&canary), &canary.name_any());
    Requeue::requeue(ERROR_RETRY)
}

/// Runs the controller over every Canary of the cluster, and drops the memory of each Canary
/// as it is deleted, until the watches end.
pub async fn run(client: Client, ctx: Arc<Context>) {
    let api: Api<Canary> = Api::all(client.clone());
    futures::join!(
        forget_deleted(client, ctx.clone()),
        run_controller(
            Controller::new(api, watcher::Config::default()),
            ctx.clone()
        ),
    );
}

/// Drops the memory of each Canary the API server reports deleted. kube-runtime's
/// `Controller` does not call `reconcile` for a deletion (it reconciles applied objects only),
/// so this watch, of the Canaries' metadata only, is where a deletion is seen at once; no
/// finalizer is needed, as the memory is this process's and the VirtualService goes with its
/// ownerReference.
pub async fn forget_deleted(client: Client, ctx: Arc<Context>) {
    let api: Api<PartialObjectMeta<Canary>> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        if let Ok(watcher::Event::Delete(gone)) = event {
            ctx.forget(
                gone.metadata.namespace.as_deref().unwrap_or("default"),
                gone.metadata.name.as_deref().unwrap_or_default(),
            );
        }
    }
}

/// Runs `controller` until it ends.
///
/// Also a backstop for [`forget_deleted`]: kube-runtime never calls `reconcile` for an object
/// its store no longer holds, and reports a due request for one as `ObjectNotFound`; every
/// reconcile leaves a requeue behind, so a Canary whose deletion the watch missed (a relist),
/// or that a first reconcile remembered just after it went, is forgotten there, one requeue
/// later.
pub async fn run_controller(controller: Controller<Canary>, ctx: Arc<Context>) {
    controller
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| {
            match r {
                Err(controller::Error::ObjectNotFound(gone)) => {
                    ctx.forget(gone.namespace.as_deref().unwrap_or("default"), &gone.name);
                }
                Err(e) => tracing::debug!(error = %e, "canary reconcile"),
                Ok(_) => {}
            }
            futures::future::ready(())
        })
        .await;
}
