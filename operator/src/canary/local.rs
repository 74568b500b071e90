//! The canary controller over a directory of Istio YAML, for the local mesh and tests: the same
//! [`driver::round`] as in a cluster, with the directory as the API server.
//!
//! - The subsets are read from the DestinationRule in the directory (`spec.destinationRule`, or
//!   the one whose host is `spec.service`); a subset is ready when a WorkloadEntry or a
//!   ServiceEntry endpoint in the Canary's namespace carries its labels.
//! - The revision is `spec.revision` when set, else the canary subset's labels (`version=v2`).
//! - Traffic is written as the canary's VirtualService in Istio YAML: into the file that already
//!   holds a VirtualService of that name (the canary takes it over), else into
//!   `canary-<name>.yaml`. The file-mode renderer ([`crate::files`]) then turns it into proxy
//!   config like any other VirtualService.
//! - Promotion rewrites the DestinationRule's file: the stable subset takes the canary subset's
//!   labels.
//! - Metrics are scraped from the URLs given (the canary workloads' proxies'
//!   `/stats/prometheus`); Events are kept in memory ([`LocalCanary::events`]) and logged.
//!
//! The directory is written to: point it at a working copy, not at examples in a repository.
//! Files are replaced by rename, so a renderer never reads half of one.
//!
//! ```no_run
//! # async fn demo(canary: mizzen_crds::rollouts::canary::Canary) -> Result<(), mizzen_operator::canary::driver::Error> {
//! use mizzen_operator::canary::local::LocalCanary;
//! let mut rollout = LocalCanary::new("mesh/", canary, vec!["http://127.0.0.1:15090/stats/prometheus".into()]);
//! loop {
//!     let decision = rollout.round(k8s_openapi::jiff::Timestamp::now()).await?;
//!     println!("{:?} at {}%", rollout.status().phase, rollout.status().canary_weight);
//!     tokio::time::sleep(decision.requeue_after.max(std::time::Duration::from_millis(100))).await;
//! }
//! # }
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::jiff::Timestamp;
use mizzen_crds::{
    document::parse_stream,
    rollouts::canary::{Canary, CanaryStatus},
};
use serde_json::Value;

use super::{
    Decision, EventType, Traffic,
    driver::{self, CanaryWorld, Error, Memory, Subsets},
    fetch::Fetcher,
    routes,
};

/// An Event the file driver recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEvent {
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

/// One Canary run against a directory of Istio YAML.
pub struct LocalCanary {
    canary: Canary,
    memory: Memory,
    world: FileWorld,
}

impl LocalCanary {
    /// A rollout of `canary` over the Istio YAML in `dir`, judging the canary by the proxies
    /// at `scrape_urls`. A Canary without a namespace is in `default`, as the renderer's
    /// objects are.
    pub fn new(dir: impl Into<PathBuf>, mut canary: Canary, scrape_urls: Vec<String>) -> Self {
        canary
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        Self {
            world: FileWorld {
                dir: dir.into(),
                scrape_urls,
                fetcher: Fetcher::new(),
                events: Vec::new(),
                status: canary.status.clone(),
            },
            canary,
            memory: Memory::default(),
        }
    }

    /// Runs one round at `now` (see [`driver::round`]); call again after the decision's
    /// `requeue_after`.
    pub async fn round(&mut self, now: Timestamp) -> Result<Decision, Error> {
        let decision = driver::round(&mut self.world, &mut self.memory, &self.canary, now).await;
        self.canary.status = self.world.status.clone();
        decision
    }

    /// The Canary with its latest status.
    pub fn canary(&self) -> &Canary {
        &self.canary
    }

    /// The latest status (empty before the first round).
    pub fn status(&self) -> CanaryStatus {
        self.canary.status.clone().unwrap_or_default()
    }

    /// Every Event so far, oldest first.
    pub fn events(&self) -> &[LocalEvent] {
        &self.world.events
    }
}

struct FileWorld {
    dir: PathBuf,
    scrape_urls: Vec<String>,
    fetcher: Fetcher,
    events: Vec<LocalEvent>,
    status: Option<CanaryStatus>,
}

/// One YAML document of the directory, where it came from.
struct Doc {
    path: PathBuf,
    index: usize,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    }
}

impl FileWorld {
    fn docs(&self) -> Result<Vec<Doc>, Error> {
        let files = crate::files::yaml_files(&self.dir).map_err(|e| Error::Document {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        let mut out = Vec::new();
        for path in files {
            for (index, value) in read_docs(&path)?.into_iter().enumerate() {
                out.push(Doc {
                    path: path.clone(),
                    index,
                    value,
                });
            }
        }
        Ok(out)
    }

    fn destination_rule<'a>(&self, canary: &Canary, docs: &'a [Doc]) -> Result<&'a Doc, Error> {
        let ns = namespace(canary);
        let spec = &canary.spec;
        docs.iter()
            .filter(|d| d.kind() == "DestinationRule" && d.namespace() == ns)
            .find(|d| match &spec.destination_rule {
                Some(name) => d.name() == name,
                None => routes::host_matches(
                    d.value["spec"]["host"].as_str().unwrap_or(""),
                    &spec.service,
                ),
            })
            .ok_or_else(|| {
                Error::Missing(format!(
                    "no DestinationRule {} in namespace {ns} under {}",
                    spec.destination_rule.as_deref().map_or_else(
                        || format!("for host {}", spec.service),
                        |n| format!("named {n}")
                    ),
                    self.dir.display()
                ))
            })
    }
}

fn namespace(canary: &Canary) -> &str {
    canary.metadata.namespace.as_deref().unwrap_or("default")
}

fn read_docs(path: &Path) -> Result<Vec<Value>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_stream(&text).map_err(|e| Error::Document {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `docs` as a YAML stream to `path`, through a temporary file and a rename.
fn write_docs(path: &Path, docs: &[Value]) -> Result<(), Error> {
    let mut text = String::from("# Written by the Mizzen canary controller (file mode).\n");
    for doc in docs {
        let yaml = serde_saphyr::to_string(doc).map_err(|e| Error::Document {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        text.push_str("---\n");
        text.push_str(&yaml);
    }
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // A name the renderer skips (not .yaml) while it is being written.
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Replaces document `index` of `path` with `value`, keeping the others.
fn replace_doc(path: &Path, index: usize, value: Value) -> Result<(), Error> {
    let mut docs = read_docs(path)?;
    if index >= docs.len() {
        docs.push(value);
    } else {
        docs[index] = value;
    }
    write_docs(path, &docs)
}

/// Whether a workload's labels include every label of the subset.
fn selects(subset: &BTreeMap<String, String>, labels: &Value) -> bool {
    subset
        .iter()
        .all(|(k, v)| labels.get(k).and_then(Value::as_str) == Some(v.as_str()))
}

impl CanaryWorld for FileWorld {
    async fn observe(&mut self, canary: &Canary) -> Result<Subsets, Error> {
        let docs = self.docs()?;
        let rule = self.destination_rule(canary, &docs)?;
        let spec = &canary.spec;
        let labels_of = |subset: &str| {
            routes::subset_labels(&rule.value, subset).ok_or_else(|| {
                Error::Missing(format!(
                    "DestinationRule {} ({}) has no subset {subset:?}",
                    rule.name(),
                    rule.path.display()
                ))
            })
        };
        let stable = labels_of(&spec.stable_subset)?;
        let canary_labels = labels_of(&spec.canary_subset)?;
        let ns = namespace(canary);
        let workload_labels: Vec<&Value> = docs
            .iter()
            .filter(|d| d.namespace() == ns)
            .flat_map(|d| match d.kind() {
                "WorkloadEntry" => vec![&d.value["spec"]["labels"]],
                "ServiceEntry" => d.value["spec"]["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| &e["labels"])
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let ready =
            |subset: &BTreeMap<String, String>| workload_labels.iter().any(|l| selects(subset, l));
        Ok(Subsets {
            revision: Some(
                spec.revision
                    .clone()
                    .unwrap_or_else(|| routes::selector(&canary_labels)),
            ),
            stable_revision: spec.revision.is_none().then(|| routes::selector(&stable)),
            primary_ready: ready(&stable),
            canary_ready: ready(&canary_labels),
            canary_scrape_urls: self.scrape_urls.clone(),
        })
    }

    async fn set_traffic(&mut self, canary: &Canary, traffic: Traffic) -> Result<(), Error> {
        let vs = routes::virtual_service(canary, traffic);
        let name = routes::virtual_service_name(canary);
        let ns = namespace(canary);
        let docs = self.docs()?;
        let existing = docs
            .iter()
            .find(|d| d.kind() == "VirtualService" && d.name() == name && d.namespace() == ns);
        match existing {
            Some(doc) => replace_doc(&doc.path, doc.index, vs),
            None => write_docs(&self.dir.join(format!("canary-{name}.yaml")), &[vs]),
        }
    }

    async fn promote(&mut self, canary: &Canary, revision: &str) -> Result<(), Error> {
        let docs = self.docs()?;
        let rule = self.destination_rule(canary, &docs)?;
        let spec = &canary.spec;
        let labels = routes::subset_labels(&rule.value, &spec.canary_subset);
        let mut value = rule.value.clone();
        let subset = value["spec"]["subsets"].as_array_mut().and_then(|s| {
            s.iter_mut()
                .find(|s| s["name"].as_str() == Some(spec.stable_subset.as_str()))
        });
        let (Some(subset), Some(labels)) = (subset, labels) else {
            return Err(Error::Missing(format!(
                "DestinationRule {} lost subset {:?} or {:?}",
                rule.name(),
                spec.stable_subset,
                spec.canary_subset
            )));
        };
        subset["labels"] = serde_json::json!(labels);
        tracing::info!(
            revision,
            rule = rule.name(),
            "promoting: the stable subset takes the canary labels"
        );
        replace_doc(&rule.path, rule.index, value)
    }

    async fn record_event(
        &mut self,
        canary: &Canary,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        tracing::info!(
            canary = canary.metadata.name.as_deref().unwrap_or_default(),
            ?type_,
            reason,
            message,
            "canary event"
        );
        self.events.push(LocalEvent {
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
        });
        Ok(())
    }

    async fn write_status(&mut self, _canary: &Canary, status: &CanaryStatus) -> Result<(), Error> {
        self.status = Some(status.clone());
        Ok(())
    }

    fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_crds::rollouts::canary::CanaryPhase;

    const MESH: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: 1}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 2}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

    const SPLIT: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
"#;

    fn canary(virtual_service: Option<&str>) -> Canary {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollouts.mizzen.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews-rollout"},
            "spec": {"service": "reviews.default.svc.cluster.local", "stableSubset": "v1",
              "canarySubset": "v2", "virtualService": virtual_service,
              "analysis": {"interval": "1s", "stepWeight": 50, "maxWeight": 100}},
        }))
        .unwrap()
    }

    fn docs_of(path: &Path) -> Vec<Value> {
        read_docs(path).unwrap()
    }

    #[tokio::test]
    async fn takes_over_the_named_virtual_service_in_its_file_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
        std::fs::write(dir.path().join("split.yaml"), SPLIT).unwrap();
        let mut rollout = LocalCanary::new(dir.path(), canary(Some("reviews")), Vec::new());
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        rollout.round(now).await.unwrap();
        assert_eq!(rollout.status().phase, CanaryPhase::Initialized);
        let docs = docs_of(&dir.path().join("split.yaml"));
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["spec"]["http"][0]["name"], "canary");
        assert_eq!(docs[0]["spec"]["http"][0]["route"][0]["weight"], 100);
        assert_eq!(docs[1]["metadata"]["name"], "ratings", "other objects stay");
        assert!(!dir.path().join("canary-reviews.yaml").exists());

        // Initialized sees the canary revision (its labels) and starts; the next round steps.
        rollout.round(now).await.unwrap();
        assert_eq!(rollout.status().phase, CanaryPhase::Progressing);
        rollout
            .round(
                now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(rollout.status().canary_weight, 50);
        let docs = docs_of(&dir.path().join("split.yaml"));
        assert_eq!(docs[0]["spec"]["http"][0]["route"][1]["weight"], 50);
        let reasons: Vec<&str> = rollout.events().iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["Initializing", "Initialized", "NewRevision", "StepWeight"]
        );
    }

    #[tokio::test]
    async fn writes_its_own_file_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
        let mut rollout = LocalCanary::new(dir.path(), canary(None), Vec::new());
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        rollout.round(now).await.unwrap();
        let own = docs_of(&dir.path().join("canary-reviews-rollout.yaml"));
        assert_eq!(own[0]["metadata"]["name"], "reviews-rollout");

        let mut missing = canary(None);
        missing.spec.canary_subset = "v3".into();
        let err = LocalCanary::new(dir.path(), missing, Vec::new())
            .round(now)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no subset \"v3\""), "{err}");
    }
}
