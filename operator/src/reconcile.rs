//! One reconcile pass: render the index (incrementally), and, only while leading, write what
//! differs: ConfigMaps, status conditions, Events. All decisions are made by pure functions
//! (`render`, `apply::plan`, `status::next_status`); this module sequences the calls.

use std::{collections::BTreeMap, time::Instant};

use kube::Client;
use mizzen_crds::{MeshStatus, resource::ObjectRef};
use tokio::sync::watch;

use crate::{
    apply::{self, ApplyError, ConfigMapWriter},
    index::Index,
    metrics::Metrics,
    render::{RenderSettings, Rendered, Renderer},
    status::{self, StatusError, StatusWriter},
};

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub leading: bool,
    pub config_maps_applied: usize,
    pub config_maps_deleted: usize,
    pub config_maps_unchanged: usize,
    pub statuses_written: usize,
    pub events: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Status(#[from] StatusError),
}

impl ReconcileError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Apply(e) => e.reason(),
            Self::Status(_) => "patch_status",
        }
    }
}

/// Owns the index and the renderer; writes through the API when leading.
pub struct Reconciler {
    index: Index,
    renderer: Renderer,
    last: Rendered,
    configs: ConfigMapWriter,
    statuses: StatusWriter,
    /// Statuses written by this replica, so a status is not rewritten before the watch has
    /// brought the object back with it.
    written: BTreeMap<ObjectRef, MeshStatus>,
    leading: watch::Receiver<bool>,
    metrics: Metrics,
}

impl Reconciler {
    pub fn new(
        client: Client,
        settings: RenderSettings,
        identity: Option<String>,
        leading: watch::Receiver<bool>,
        metrics: Metrics,
    ) -> Self {
        Self {
            index: Index::new(settings.root_namespace.clone()),
            renderer: Renderer::new(settings),
            last: Rendered::default(),
            configs: ConfigMapWriter::new(client.clone()),
            statuses: StatusWriter::new(client, identity),
            written: BTreeMap::new(),
            leading,
            metrics,
        }
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    pub fn rendered(&self) -> &Rendered {
        &self.last
    }

    /// Renders what changed since the last pass.
    pub fn render(&mut self) -> &Rendered {
        let changes = self.index.take_changes();
        if !changes.is_empty() || self.last.meshed.is_empty() {
            let start = Instant::now();
            self.last = self.renderer.render(&self.index, &changes);
            self.metrics
                .render_duration
                .observe(start.elapsed().as_secs_f64());
            for (ns, c) in &self.last.configs {
                let labels = vec![("namespace".into(), ns.clone())];
                let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                self.metrics
                    .configmap_bytes
                    .get_or_create(&labels)
                    .set(gauge(c.stored_bytes));
                self.metrics
                    .config_json_bytes
                    .get_or_create(&labels)
                    .set(gauge(c.bytes));
            }
            let invalid = self.last.statuses.values().filter(|s| !s.accepted).count();
            let accepted = self.last.statuses.len() - invalid;
            for (verdict, n) in [("Accepted", accepted), ("Invalid", invalid)] {
                self.metrics
                    .objects
                    .get_or_create(&vec![("verdict".into(), verdict.into())])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            for (ns, problems) in &self.last.problems {
                for p in problems {
                    tracing::error!(namespace = %ns, problem = %p, "proxy config refused");
                }
            }
        }
        &self.last
    }

    /// Renders, then writes when this replica leads. A follower writes nothing.
    pub async fn reconcile(&mut self) -> Result<Outcome, ReconcileError> {
        self.metrics.reconciles.inc();
        self.render();
        let leading = *self.leading.borrow();
        self.metrics.leader.set(i64::from(leading));
        if !leading {
            return Ok(Outcome::default());
        }
        let result = self.write().await;
        if let Err(e) = &result {
            self.metrics.error(e.reason());
        }
        result
    }

    async fn write(&mut self) -> Result<Outcome, ReconcileError> {
        let mut out = Outcome {
            leading: true,
            ..Outcome::default()
        };
        let existing = self.configs.existing().await?;
        let root = self
            .configs
            .root_certificate(self.index.root_namespace())
            .await?;
        let mut desired = apply::desired_config_maps(&self.last, &self.index);
        desired.extend(apply::desired_trust_bundles(
            &self.last,
            &self.index,
            root.as_deref(),
        ));
        let plan = apply::plan(desired, &existing, &self.last.meshed);
        let report = self.configs.execute(&plan).await?;
        out.config_maps_applied = report.applied;
        out.config_maps_deleted = report.deleted;
        out.config_maps_unchanged = report.unchanged;

        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for (object, verdict) in &self.last.statuses {
            let Some(stored) = self.index.resource(object) else {
                continue;
            };
            let current = self
                .written
                .get(object)
                .cloned()
                .or_else(|| status::current_status(stored));
            let Some(next) = status::next_status(current.as_ref(), verdict, &now) else {
                continue;
            };
            let was_invalid = current
                .as_ref()
                .and_then(|c| c.conditions.iter().find(|c| c.type_ == status::CONDITION))
                .is_some_and(|c| {
                    c.status == "False" && c.message.as_deref() == Some(verdict.message.as_str())
                });
            self.statuses.write(object, &next).await?;
            out.statuses_written += 1;
            if !verdict.accepted && !was_invalid {
                self.statuses.rejected(stored, &verdict.message).await;
                out.events += 1;
            }
            self.written.insert(object.clone(), next);
        }
        // Forget what the watch has caught up with, and objects that are gone.
        self.written.retain(|o, w| {
            self.index
                .resource(o)
                .is_some_and(|s| status::current_status(s).as_ref() != Some(w))
        });
        Ok(out)
    }
}
