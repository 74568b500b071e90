//! `Canary`: a progressive rollout between two subsets of one service, driven by live metrics.
//!
//! Modelled on Flagger's Canary, reduced to Mizzen's main path: the service already has a
//! DestinationRule with a stable and a canary subset (pods labelled e.g. `version: v1` and
//! `version: v2`). The canary controller owns the weights of a VirtualService for the service,
//! moves traffic to the canary subset step by step while the metrics hold, then promotes it or
//! rolls back, and records every step in `status`.

use std::collections::{BTreeMap, HashMap};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Condition, Duration, Normalize, StringMatch,
    security::request_authentication::{http_token_error, http_url_error},
    selector::is_dns_label,
    validate::{Checker, Code, Validate},
};

/// The built-in metric: percentage of non-5xx responses of the canary subset
/// (`thresholdRange.min`, 0 to 100).
pub const REQUEST_SUCCESS_RATE: &str = "request-success-rate";
/// The built-in metric: 99th percentile request duration of the canary subset in milliseconds
/// (`thresholdRange.max`).
pub const REQUEST_DURATION: &str = "request-duration";
/// Default of `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u32 = 600;
/// Default of `analysis.threshold`.
pub const DEFAULT_THRESHOLD: u32 = 1;
/// Default of a metric's `interval`: the window its query looks back over.
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(60);
/// How many entries `status.history` keeps.
pub const HISTORY_LIMIT: usize = 50;

/// A canary rollout of one service from its stable subset to its canary subset.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rollouts.mizzen.io",
    version = "v1alpha1",
    kind = "Canary",
    plural = "canaries",
    namespaced,
    status = "CanaryStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "cn",
    doc = "A progressive rollout between the stable and canary subsets of a service.",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Phase of the rollout."
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.canaryWeight",
        description = "Percentage of traffic sent to the canary subset."
    ),
    // Raw form: a second `type_ = "string"` trips clippy's duplicated_attributes.
    printcolumn = r#"{"name":"LastTransitionTime","type":"string","jsonPath":".status.lastTransitionTime","description":"Time of the last phase change."}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanarySpec {
    /// Host name of the Service being rolled out (`reviews` or
    /// `reviews.prod.svc.cluster.local`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Subset of the DestinationRule that serves the current version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stable_subset: String,
    /// Subset of the DestinationRule that serves the new version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canary_subset: String,
    /// Name of the DestinationRule that defines both subsets; by default the one whose host
    /// is `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<String>,
    /// Name of the VirtualService whose route weights the controller owns; by default it
    /// creates one named after the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
    /// The canary subset's version label or pod template hash observed. A change restarts
    /// the analysis from the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Seconds a rollout may go without progress before it is rolled back (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u32>,
    /// Pause the rollout where it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Promote without running the analysis.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_analysis: bool,
    /// How traffic moves and what decides whether it may move further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,
}

/// The schedule of the rollout and the checks run at every step.
///
/// Exactly one strategy: `stepWeight` with `maxWeight` (raise the canary weight by a fixed
/// step), `stepWeights` (an explicit list of weights), or `iterations` (blue/green: run the
/// checks this many times against the canary, with `match` for A/B tests, then switch).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryAnalysis {
    /// Time between two steps (at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Failed checks tolerated before rolling back (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Highest canary weight before promotion, 1 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<u32>,
    /// Weight added at each step, 1 to `maxWeight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<u32>,
    /// Explicit canary weights, strictly increasing, each 1 to 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_weights: Vec<u32>,
    /// Weight moved back to the promoted stable subset per step during promotion; by default
    /// all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight_promotion: Option<u32>,
    /// Number of check rounds for blue/green and A/B rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Requests sent to the canary during the analysis (A/B by header or cookie).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<CanaryMatch>,
    /// Mirror traffic to the canary instead of shifting it (blue/green only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<bool>,
    /// Percentage of requests mirrored, 1 to 100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<u32>,
    /// Checks that must pass at every step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<CanaryMetric>,
    /// HTTP calls made at the stages of the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<CanaryWebhook>,
}

/// Which requests reach the canary during an A/B analysis. All that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryMatch {
    /// Request headers by name (lowercase); match a cookie through the `cookie` header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Labels of the calling workloads.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
}

/// One check: a metric of the canary subset and the range it must stay in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryMetric {
    /// `request-success-rate`, `request-duration`, or a name of your own with a `query`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Window the metric is computed over (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// PromQL returning one number, for metrics other than the built-in ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Where the value comes from (default: the proxies' own metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<MetricProvider>,
}

/// Bounds a metric value must stay within (inclusive); at least one is required.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl ThresholdRange {
    /// True when `value` lies within the bounds that are set.
    pub fn contains(&self, value: f64) -> bool {
        self.min.is_none_or(|min| value >= min) && self.max.is_none_or(|max| value <= max)
    }
}

/// The source of a metric value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricProvider {
    #[serde(rename = "type", default)]
    pub type_: MetricProviderType,
    /// Base URL of the Prometheus server (`prometheus` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricProviderType {
    /// Scrape the proxies of the canary subset directly: built-in metrics only.
    #[default]
    Proxy,
    /// Ask a Prometheus server, with the built-in queries or your own.
    Prometheus,
}

/// An HTTP call at one stage of the rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryWebhook {
    /// Unique within the canary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "type", default)]
    pub type_: WebhookType,
    /// http(s) URL that receives a POST with the canary's name, namespace, phase and metadata.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Time to wait for the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Passed to the webhook as is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// When a webhook is called, with Flagger's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookType {
    /// Once before any traffic goes to the canary; a failure counts as a failed check.
    PreRollout,
    /// At every step, as a check: anything but a 2xx answer counts as a failed check.
    #[default]
    Rollout,
    /// Before the rollout starts: it waits until the webhook answers 2xx.
    ConfirmRollout,
    /// Before each weight increase: it waits until the webhook answers 2xx.
    ConfirmTrafficIncrease,
    /// Before promotion: it waits until the webhook answers 2xx.
    ConfirmPromotion,
    /// Once after promotion or rollback.
    PostRollout,
    /// Polled during the analysis: a 2xx answer rolls the canary back.
    Rollback,
    /// Receives every event of the rollout.
    Event,
}

/// How traffic moves during the analysis, read from a valid [`CanaryAnalysis`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy<'a> {
    /// Add `step` percent per interval up to `max`.
    Progressive { step: u32, max: u32 },
    /// Go through these weights.
    Steps(&'a [u32]),
    /// Check the canary `iterations` times (with the matched or mirrored requests), then
    /// switch all traffic.
    BlueGreen { iterations: u32 },
}

/// The built-in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinMetric {
    RequestSuccessRate,
    RequestDuration,
}

impl CanarySpec {
    pub fn progress_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.progress_deadline_seconds
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS),
        ))
    }
}

impl CanaryAnalysis {
    pub fn threshold_or_default(&self) -> u32 {
        self.threshold.unwrap_or(DEFAULT_THRESHOLD)
    }

    /// The strategy, or `None` when the fields do not name exactly one (validation says why).
    pub fn strategy(&self) -> Option<Strategy<'_>> {
        match (
            self.step_weight.or(self.max_weight),
            self.step_weights.is_empty(),
            self.iterations,
        ) {
            (Some(_), true, None) => Some(Strategy::Progressive {
                step: self.step_weight?,
                max: self.max_weight?,
            }),
            (None, false, None) => Some(Strategy::Steps(&self.step_weights)),
            (None, true, Some(iterations)) => Some(Strategy::BlueGreen { iterations }),
            _ => None,
        }
    }

    /// Whether traffic is mirrored to the canary rather than shifted.
    pub fn mirrors(&self) -> bool {
        self.mirror == Some(true)
    }
}

impl CanaryMetric {
    pub fn builtin(&self) -> Option<BuiltinMetric> {
        match self.name.as_str() {
            REQUEST_SUCCESS_RATE => Some(BuiltinMetric::RequestSuccessRate),
            REQUEST_DURATION => Some(BuiltinMetric::RequestDuration),
            _ => None,
        }
    }

    pub fn interval_or_default(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_METRIC_INTERVAL)
    }
}

/// `status` of a Canary, written by the canary controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    #[serde(default)]
    pub phase: CanaryPhase,
    /// Percentage of traffic currently sent to the canary subset.
    #[serde(default)]
    pub canary_weight: u32,
    /// Failed checks since the analysis (re)started.
    #[serde(default)]
    pub failed_checks: u32,
    /// Check rounds done (blue/green and A/B).
    #[serde(default)]
    pub iterations: u32,
    /// The `spec.revision` the running analysis is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The last revision promoted to stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_revision: Option<String>,
    /// RFC 3339 time of the last phase change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// RFC 3339 time of the last analysis round (or of the analysis start). The next round is
    /// due one `analysis.interval` later, and webhook answers older than it are stale; kept in
    /// status so a restarted or newly elected controller keeps the rollout's pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_time: Option<String>,
    /// Why the last transition happened (`MetricsFailed`, `Promoted`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The values of the last check round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_metrics: Vec<MetricResult>,
    /// The steps taken, oldest first, at most [`HISTORY_LIMIT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<CanaryStep>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl CanaryStatus {
    /// Appends a step, dropping the oldest ones beyond [`HISTORY_LIMIT`].
    pub fn record(&mut self, step: CanaryStep) {
        self.history.push(step);
        let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
        self.history.drain(..excess);
    }
}

/// Phase of a rollout, with Flagger's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CanaryPhase {
    /// The controller is setting up the routes.
    #[default]
    Initializing,
    /// Routes are in place; all traffic goes to the stable subset.
    Initialized,
    /// Paused, waiting for a confirm webhook.
    Waiting,
    /// The analysis is running.
    Progressing,
    /// Analysis done, waiting for the confirm-promotion webhook.
    WaitingPromotion,
    /// Moving traffic to the promoted version.
    Promoting,
    /// Promotion done, tidying up the routes.
    Finalising,
    /// The canary was promoted.
    Succeeded,
    /// The canary was rolled back.
    Failed,
    /// The Canary is being deleted and its routes restored.
    Terminating,
    /// The Canary was deleted and its routes restored.
    Terminated,
}

/// The value of one metric in a check round.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    /// `None` when there was no data (no requests in the window, unreachable provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub passed: bool,
}

/// One entry of the rollout's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// RFC 3339 time of the step.
    pub time: String,
    pub phase: CanaryPhase,
    /// Canary weight after the step.
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Normalize for CanarySpec {}

impl Validate for CanarySpec {
    fn validate(&self, c: &mut Checker) {
        if self.service.is_empty() {
            c.require("service", false);
        } else {
            c.field("service", |c| {
                c.host(&self.service);
                if self.service.contains('*') {
                    c.error(
                        Code::InvalidHost,
                        format!(
                            "a canary rolls out one Service: the host cannot be a wildcard (got {:?})",
                            self.service
                        ),
                    );
                }
            });
        }

        for (name, subset) in [
            ("stableSubset", &self.stable_subset),
            ("canarySubset", &self.canary_subset),
        ] {
            if subset.is_empty() {
                c.require(name, false);
            } else if !is_dns_label(subset) {
                c.field(name, |c| {
                    c.error(
                        Code::InvalidValue,
                        format!("subset name {subset:?} must be a DNS label (lowercase letters, digits and -)"),
                    )
                });
            }
        }
        if !self.canary_subset.is_empty() && self.canary_subset == self.stable_subset {
            c.field("canarySubset", |c| {
                c.error(
                    Code::ConflictingFields,
                    format!(
                        "canarySubset must differ from stableSubset (both are {:?})",
                        self.canary_subset
                    ),
                )
            });
        }

        for (name, value) in [
            ("destinationRule", &self.destination_rule),
            ("virtualService", &self.virtual_service),
        ] {
            c.opt(name, value.as_ref(), |c, v| {
                if !is_dns_subdomain(v) {
                    c.error(
                        Code::InvalidValue,
                        format!("{v:?} is not a valid resource name (a DNS subdomain)"),
                    );
                }
            });
        }

        if self.progress_deadline_seconds == Some(0) {
            c.field("progressDeadlineSeconds", |c| {
                c.error(
                    Code::InvalidValue,
                    "progressDeadlineSeconds must be at least 1 (got 0)",
                )
            });
        }

        match &self.analysis {
            None => c.require("analysis", false),
            Some(a) => c.field("analysis", |c| a.validate(c)),
        }
    }
}

impl Validate for CanaryAnalysis {
    fn validate(&self, c: &mut Checker) {
        match self.interval {
            None => c.require("interval", false),
            Some(i) if i.get() < std::time::Duration::from_secs(1) => c.field("interval", |c| {
                c.error(
                    Code::InvalidDuration,
                    format!("interval must be at least 1s (got {i})"),
                )
            }),
            Some(_) => {}
        }
        if self.threshold == Some(0) {
            c.field("threshold", |c| {
                c.error(Code::InvalidValue, "threshold must be at least 1 (got 0)")
            });
        }

        self.validate_strategy(c);

        if self.mirrors() && self.iterations.is_none() {
            c.field("mirror", |c| {
                c.error(
                    Code::ConflictingFields,
                    "mirror is only available with iterations (blue/green): shifted traffic cannot also be mirrored",
                )
            });
        }
        if let Some(w) = self.mirror_weight {
            c.field("mirrorWeight", |c| {
                if !self.mirrors() {
                    c.error(
                        Code::ConflictingFields,
                        "mirrorWeight requires mirror: true",
                    );
                }
                weight_in(c, "mirrorWeight", w, 100);
            });
        }

        c.each("match", &self.r#match, |c, m| m.validate(c));

        each_named(c, "metrics", &self.metrics, |m| &m.name);
        each_named(c, "webhooks", &self.webhooks, |w| &w.name);
    }
}

/// Validates each item of the list field `field` and reports names used twice.
fn each_named<T: Validate>(c: &mut Checker, field: &str, items: &[T], name_of: fn(&T) -> &str) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    c.field(field, |c| {
        for (i, item) in items.iter().enumerate() {
            c.index(i, |c| {
                item.validate(c);
                let name = name_of(item);
                if name.is_empty() {
                    return;
                }
                match first.get(name) {
                    Some(&j) => c.field("name", |c| {
                        c.error(
                            Code::InvalidValue,
                            format!("name {name:?} is already used by {field}[{j}]"),
                        )
                    }),
                    None => {
                        first.insert(name, i);
                    }
                }
            });
        }
    });
}

impl CanaryAnalysis {
    fn validate_strategy(&self, c: &mut Checker) {
        let progressive = self.step_weight.is_some() || self.max_weight.is_some();
        let chosen: Vec<&str> = [
            ("stepWeight/maxWeight", progressive),
            ("stepWeights", !self.step_weights.is_empty()),
            ("iterations", self.iterations.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        match chosen.len() {
            0 => c.error(
                Code::MissingField,
                "a strategy is required: stepWeight with maxWeight, stepWeights, or iterations (blue/green)",
            ),
            1 => {}
            _ => c.error(
                Code::ConflictingFields,
                format!(
                    "only one strategy may be set: stepWeight with maxWeight, stepWeights, or iterations (got {})",
                    chosen.join(" and ")
                ),
            ),
        }

        if progressive {
            match (self.step_weight, self.max_weight) {
                (Some(_), None) => c.field("maxWeight", |c| {
                    c.error(Code::MissingField, "is required with stepWeight")
                }),
                (None, Some(_)) => c.field("stepWeight", |c| {
                    c.error(Code::MissingField, "is required with maxWeight")
                }),
                _ => {}
            }
            if let Some(max) = self.max_weight {
                c.field("maxWeight", |c| weight_in(c, "maxWeight", max, 100));
            }
            if let Some(step) = self.step_weight {
                let max = self
                    .max_weight
                    .filter(|m| (1..=100).contains(m))
                    .unwrap_or(100);
                c.field("stepWeight", |c| weight_in(c, "stepWeight", step, max));
            }
        }

        c.field("stepWeights", |c| {
            let mut previous = 0;
            for (i, &w) in self.step_weights.iter().enumerate() {
                c.index(i, |c| {
                    if !(1..=100).contains(&w) {
                        c.error(
                            Code::InvalidWeight,
                            format!("step weights must be between 1 and 100 (got {w})"),
                        );
                    } else if w <= previous {
                        c.error(
                            Code::InvalidWeight,
                            format!(
                                "step weights must increase strictly (got {w} after {previous})"
                            ),
                        );
                    }
                });
                previous = previous.max(w);
            }
        });

        if let Some(w) = self.step_weight_promotion {
            c.field("stepWeightPromotion", |c| {
                weight_in(c, "stepWeightPromotion", w, 100)
            });
        }
        if self.iterations == Some(0) {
            c.field("iterations", |c| {
                c.error(Code::InvalidValue, "iterations must be at least 1 (got 0)")
            });
        }
    }
}

fn weight_in(c: &mut Checker, name: &str, weight: u32, max: u32) {
    if !(1..=max).contains(&weight) {
        c.error(
            Code::InvalidWeight,
            format!("{name} must be between 1 and {max} (got {weight})"),
        );
    }
}

impl Validate for CanaryMatch {
    fn validate(&self, c: &mut Checker) {
        if self.headers.is_empty() && self.source_labels.is_empty() {
            c.error(Code::MissingField, "a match needs headers or sourceLabels");
        }
        c.field("headers", |c| {
            for (name, m) in &self.headers {
                c.key(name, |c| {
                    if let Some(msg) = http_token_error(name) {
                        c.error(Code::InvalidValue, msg);
                    }
                    c.string_match(m);
                });
            }
        });
        c.field("sourceLabels", |c| c.labels(&self.source_labels));
    }
}

impl Validate for CanaryMetric {
    fn validate(&self, c: &mut Checker) {
        c.require("name", !self.name.is_empty());
        let builtin = self.builtin();

        match &self.threshold_range {
            None => c.require("thresholdRange", false),
            Some(range) => c.field("thresholdRange", |c| {
                if range.min.is_none() && range.max.is_none() {
                    c.error(Code::MissingField, "thresholdRange needs min, max or both");
                }
                for (name, v) in [("min", range.min), ("max", range.max)] {
                    if let Some(v) = v.filter(|v| !v.is_finite()) {
                        c.field(name, |c| {
                            c.error(Code::InvalidValue, format!("must be a finite number (got {v})"))
                        });
                    }
                }
                if let (Some(min), Some(max)) = (range.min, range.max)
                    && min > max
                {
                    c.error(
                        Code::InvalidValue,
                        format!("min must not exceed max (got min {min}, max {max})"),
                    );
                }
                match builtin {
                    Some(BuiltinMetric::RequestSuccessRate) => {
                        for (name, v) in [("min", range.min), ("max", range.max)] {
                            if let Some(v) = v.filter(|v| !(0.0..=100.0).contains(v)) {
                                c.field(name, |c| {
                                    c.error(
                                        Code::InvalidPercentage,
                                        format!("{REQUEST_SUCCESS_RATE} is a percentage: {name} must be between 0 and 100 (got {v})"),
                                    )
                                });
                            }
                        }
                        if range.min.is_none() && range.max.is_some() {
                            c.warn(
                                Code::InvalidValue,
                                format!("{REQUEST_SUCCESS_RATE} is checked against min (the lowest acceptable percentage); min is not set"),
                            );
                        }
                    }
                    Some(BuiltinMetric::RequestDuration) => {
                        if let Some(v) = range.max.filter(|v| *v < 0.0) {
                            c.field("max", |c| {
                                c.error(
                                    Code::InvalidValue,
                                    format!("{REQUEST_DURATION} is in milliseconds: max must not be negative (got {v})"),
                                )
                            });
                        }
                        if range.max.is_none() && range.min.is_some() {
                            c.warn(
                                Code::InvalidValue,
                                format!("{REQUEST_DURATION} is checked against max (the highest acceptable p99 in milliseconds); max is not set"),
                            );
                        }
                    }
                    None => {}
                }
            }),
        }

        c.opt("interval", self.interval.as_ref(), |c, i| {
            if i.get() < std::time::Duration::from_secs(1) {
                c.error(
                    Code::InvalidDuration,
                    format!("a metric interval must be at least 1s (got {i})"),
                );
            }
        });

        match (builtin, &self.query) {
            (Some(_), Some(_)) => c.field("query", |c| {
                c.error(
                    Code::ConflictingFields,
                    format!(
                        "{:?} is a built-in metric and takes no query; give a custom metric another name",
                        self.name
                    ),
                )
            }),
            (None, None) if !self.name.is_empty() => c.field("query", |c| {
                c.error(
                    Code::MissingField,
                    format!(
                        "metric {:?} is not built in ({REQUEST_SUCCESS_RATE}, {REQUEST_DURATION}): a query is required",
                        self.name
                    ),
                )
            }),
            (None, Some(q)) => {
                if q.trim().is_empty() {
                    c.field("query", |c| c.error(Code::InvalidValue, "query must not be empty"));
                }
                let provider = self.provider.as_ref().map(|p| p.type_).unwrap_or_default();
                if provider != MetricProviderType::Prometheus {
                    c.field("provider", |c| {
                        c.error(
                            Code::NotSupported,
                            "a custom query needs provider.type prometheus with an address: the \
                             proxies' own metrics answer only request-success-rate and request-duration",
                        )
                    });
                }
            }
            _ => {}
        }

        c.opt("provider", self.provider.as_ref(), |c, p| match (p.type_, &p.address) {
            (MetricProviderType::Prometheus, None) => c.require("address", false),
            (MetricProviderType::Prometheus, Some(a)) => c.field("address", |c| {
                if let Some(msg) = http_url_error(a) {
                    c.error(Code::InvalidValue, msg);
                }
            }),
            (MetricProviderType::Proxy, Some(_)) => c.field("address", |c| {
                c.warn(
                    Code::InvalidValue,
                    "address is ignored with provider type proxy: the proxies are found through the service",
                )
            }),
            (MetricProviderType::Proxy, None) => {}
        });
    }
}

impl Validate for CanaryWebhook {
    fn validate(&self, c: &mut Checker) {
        c.require("name", !self.name.is_empty());
        if self.url.is_empty() {
            c.require("url", false);
        } else if let Some(msg) = http_url_error(&self.url) {
            c.field("url", |c| c.error(Code::InvalidValue, msg));
        }
        c.opt("timeout", self.timeout.as_ref(), |c, t| {
            if t.get().is_zero() {
                c.error(
                    Code::InvalidDuration,
                    "timeout must be greater than 0 (got 0s)",
                );
            }
        });
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    const REVIEWS: &str = r#"
apiVersion: rollouts.mizzen.io/v1alpha1
kind: Canary
metadata:
  name: reviews
  namespace: bookinfo
spec:
  service: reviews.bookinfo.svc.cluster.local
  stableSubset: v1
  canarySubset: v2
  destinationRule: reviews
  virtualService: reviews-canary
  revision: v2
  progressDeadlineSeconds: 300
  analysis:
    interval: 30s
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    stepWeightPromotion: 25
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 1m
    - name: request-duration
      thresholdRange:
        max: 500
      interval: 30s
    - name: error-budget
      thresholdRange:
        max: 0.01
      query: |
        sum(rate(istio_requests_total{destination_version="v2",response_code=~"5.."}[1m]))
      provider:
        type: prometheus
        address: http://prometheus.istio-system:9090
    webhooks:
    - name: acceptance-test
      type: pre-rollout
      url: http://loadtester.test/
      timeout: 30s
      metadata:
        type: bash
        cmd: "curl -s http://reviews-canary:9080/health"
    - name: load-test
      url: http://loadtester.test/
      timeout: 5s
      metadata:
        cmd: "hey -z 1m -q 10 -c 2 http://reviews.bookinfo:9080/"
    - name: gate
      type: confirm-promotion
      url: https://gate.example.com/approve
status:
  phase: Progressing
  canaryWeight: 20
  failedChecks: 1
  iterations: 0
  lastAppliedRevision: v2
  lastPromotedRevision: v1
  lastTransitionTime: "2025-01-02T03:04:05Z"
  lastMetrics:
  - name: request-success-rate
    value: 99.5
    passed: true
  - name: request-duration
    passed: false
  history:
  - time: "2025-01-02T03:03:35Z"
    phase: Progressing
    weight: 10
  - time: "2025-01-02T03:04:05Z"
    phase: Progressing
    weight: 20
    reason: StepWeight
"#;

    fn canary() -> Canary {
        serde_saphyr::from_str(REVIEWS).unwrap()
    }

    fn spec(yaml: &str) -> CanarySpec {
        crate::testing::parse(yaml)
    }

    const BASE: &str = "service: reviews\nstableSubset: v1\ncanarySubset: v2\n";

    /// Problems of BASE plus an `analysis` block given as YAML lines (indented by two).
    fn problems(analysis: &str) -> Vec<Problem> {
        validate_spec(&spec(&format!("{BASE}analysis:\n{analysis}")))
    }

    fn one(analysis: &str, path: &str, code: Code) -> Problem {
        crate::testing::only(problems(analysis), path, code)
    }

    #[test]
    fn parses_a_flagger_like_canary_and_round_trips() {
        let cn = canary();
        let a = cn.spec.analysis.as_ref().unwrap();
        assert_eq!(a.interval, Some(Duration::from_secs(30)));
        assert_eq!(
            a.strategy(),
            Some(Strategy::Progressive { step: 10, max: 50 })
        );
        assert_eq!(a.threshold_or_default(), 5);
        assert_eq!(
            a.metrics[0].builtin(),
            Some(BuiltinMetric::RequestSuccessRate)
        );
        assert_eq!(a.metrics[2].builtin(), None);
        assert_eq!(
            a.metrics[2].provider.as_ref().unwrap().type_,
            MetricProviderType::Prometheus
        );
        assert_eq!(a.webhooks[0].type_, WebhookType::PreRollout);
        assert_eq!(
            a.webhooks[1].type_,
            WebhookType::Rollout,
            "type defaults to rollout"
        );
        assert_eq!(
            cn.spec.progress_deadline(),
            std::time::Duration::from_secs(300)
        );

        let status = cn.status.as_ref().unwrap();
        assert_eq!(status.phase, CanaryPhase::Progressing);
        assert_eq!(status.last_metrics[1].value, None);
        assert_eq!(status.history[1].reason.as_deref(), Some("StepWeight"));

        let json = serde_json::to_value(&cn).unwrap();
        assert_eq!(json["apiVersion"], "rollouts.mizzen.io/v1alpha1");
        assert_eq!(
            json["spec"]["analysis"]["webhooks"][2]["type"],
            "confirm-promotion"
        );
        assert_eq!(json["status"]["phase"], "Progressing");
        let back: Canary = serde_json::from_value(json).unwrap();
        assert_eq!(back, cn);

        assert_eq!(validate_spec(&cn.spec), vec![]);
    }

    #[test]
    fn crd_names_and_columns() {
        use kube::CustomResourceExt;
        let crd = Canary::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("canaries.rollouts.mizzen.io")
        );
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["cn".to_string()][..])
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        let cols: Vec<(String, String)> = v
            .additional_printer_columns
            .clone()
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.json_path))
            .collect();
        assert_eq!(
            cols,
            [
                ("Status".to_string(), ".status.phase".to_string()),
                ("Weight".into(), ".status.canaryWeight".into()),
                (
                    "LastTransitionTime".into(),
                    ".status.lastTransitionTime".into()
                ),
            ]
        );
        assert!(v.subresources.as_ref().unwrap().status.is_some());
    }

    #[test]
    fn phases_use_flaggers_names() {
        for (phase, name) in [
            (CanaryPhase::Initializing, "Initializing"),
            (CanaryPhase::WaitingPromotion, "WaitingPromotion"),
            (CanaryPhase::Finalising, "Finalising"),
            (CanaryPhase::Terminating, "Terminating"),
        ] {
            assert_eq!(serde_json::to_value(phase).unwrap(), name);
        }
        assert_eq!(
            serde_json::to_value(WebhookType::ConfirmTrafficIncrease).unwrap(),
            "confirm-traffic-increase"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut status = CanaryStatus::default();
        for w in 0..60 {
            status.record(CanaryStep {
                time: format!("t{w}"),
                phase: CanaryPhase::Progressing,
                weight: w,
                reason: None,
            });
        }
        assert_eq!(status.history.len(), HISTORY_LIMIT);
        assert_eq!(status.history[0].weight, 10);
        assert_eq!(status.history.last().unwrap().weight, 59);
    }

    #[test]
    fn blue_green_with_ab_match_and_mirroring() {
        let p = problems(
            "  interval: 1m\n  iterations: 10\n  mirror: true\n  mirrorWeight: 50\n  match:\n  - headers:\n      x-canary:\n        exact: insider\n  - headers:\n      cookie:\n        regex: \"^(.*?;)?(canary=always)(;.*)?$\"\n  - sourceLabels:\n      app: frontend\n  metrics:\n  - name: request-success-rate\n    thresholdRange:\n      min: 99\n",
        );
        assert_eq!(p, vec![]);
        let a = spec(&format!(
            "{BASE}analysis:\n  interval: 1m\n  iterations: 10\n"
        ))
        .analysis
        .unwrap();
        assert_eq!(a.strategy(), Some(Strategy::BlueGreen { iterations: 10 }));
        let a = spec(&format!(
            "{BASE}analysis:\n  interval: 1m\n  stepWeights: [1, 5, 20, 50]\n"
        ))
        .analysis
        .unwrap();
        assert_eq!(a.strategy(), Some(Strategy::Steps(&[1, 5, 20, 50])));
    }

    #[test]
    fn service_and_subsets() {
        let analysis = "analysis:\n  interval: 1m\n  iterations: 1\n";
        let p = validate_spec(&spec(analysis));
        let got: Vec<(&str, Code)> = p.iter().map(|p| (p.path.as_str(), p.code)).collect();
        assert_eq!(
            got,
            [
                ("spec.service", Code::MissingField),
                ("spec.stableSubset", Code::MissingField),
                ("spec.canarySubset", Code::MissingField),
            ]
        );

        let p = validate_spec(&spec(&format!(
            "service: \"*.example.com\"\nstableSubset: v1\ncanarySubset: v2\n{analysis}"
        )));
        assert_eq!(
            (p[0].path.as_str(), p[0].code),
            ("spec.service", Code::InvalidHost)
        );
        let p = validate_spec(&spec(&format!(
            "service: bad_host\nstableSubset: v1\ncanarySubset: v2\n{analysis}"
        )));
        assert_eq!(
            (p[0].path.as_str(), p[0].code),
            ("spec.service", Code::InvalidHost)
        );

        let p = validate_spec(&spec(&format!(
            "service: reviews\nstableSubset: v1\ncanarySubset: v1\n{analysis}"
        )));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(
            (p[0].path.as_str(), p[0].code),
            ("spec.canarySubset", Code::ConflictingFields)
        );

        let p = validate_spec(&spec(&format!(
            "service: reviews\nstableSubset: V1\ncanarySubset: v2\n{analysis}"
        )));
        assert_eq!(
            (p[0].path.as_str(), p[0].code),
            ("spec.stableSubset", Code::InvalidValue)
        );

        let p = validate_spec(&spec(&format!(
            "{BASE}virtualService: Reviews\nprogressDeadlineSeconds: 0\n{analysis}"
        )));
        let got: Vec<(&str, Code)> = p.iter().map(|p| (p.path.as_str(), p.code)).collect();
        assert_eq!(
            got,
            [
                ("spec.virtualService", Code::InvalidValue),
                ("spec.progressDeadlineSeconds", Code::InvalidValue),
            ]
        );

        let p = validate_spec(&spec(BASE));
        assert_eq!(
            (p[0].path.as_str(), p[0].code),
            ("spec.analysis", Code::MissingField)
        );
    }

    #[test]
    fn interval_and_threshold() {
        one(
            "  iterations: 1\n",
            "spec.analysis.interval",
            Code::MissingField,
        );
        let p = one(
            "  interval: 500ms\n  iterations: 1\n",
            "spec.analysis.interval",
            Code::InvalidDuration,
        );
        assert!(p.message.contains("500ms"), "{p}");
        one(
            "  interval: 1m\n  iterations: 1\n  threshold: 0\n",
            "spec.analysis.threshold",
            Code::InvalidValue,
        );
    }

    #[test]
    fn exactly_one_strategy() {
        one("  interval: 1m\n", "spec.analysis", Code::MissingField);
        let p = one(
            "  interval: 1m\n  iterations: 5\n  stepWeights: [10, 20]\n",
            "spec.analysis",
            Code::ConflictingFields,
        );
        assert!(p.message.contains("stepWeights and iterations"), "{p}");
        one(
            "  interval: 1m\n  stepWeight: 10\n  maxWeight: 50\n  stepWeights: [10, 20]\n",
            "spec.analysis",
            Code::ConflictingFields,
        );
        one(
            "  interval: 1m\n  stepWeight: 10\n",
            "spec.analysis.maxWeight",
            Code::MissingField,
        );
        one(
            "  interval: 1m\n  maxWeight: 50\n",
            "spec.analysis.stepWeight",
            Code::MissingField,
        );
        one(
            "  interval: 1m\n  iterations: 0\n",
            "spec.analysis.iterations",
            Code::InvalidValue,
        );
    }

    #[test]
    fn weights_in_range() {
        let p = one(
            "  interval: 1m\n  stepWeight: 10\n  maxWeight: 120\n",
            "spec.analysis.maxWeight",
            Code::InvalidWeight,
        );
        assert!(p.message.contains("got 120"), "{p}");
        let p = one(
            "  interval: 1m\n  stepWeight: 60\n  maxWeight: 50\n",
            "spec.analysis.stepWeight",
            Code::InvalidWeight,
        );
        assert!(p.message.contains("between 1 and 50 (got 60)"), "{p}");
        one(
            "  interval: 1m\n  stepWeight: 0\n  maxWeight: 50\n",
            "spec.analysis.stepWeight",
            Code::InvalidWeight,
        );
        let p = one(
            "  interval: 1m\n  stepWeights: [10, 30, 30]\n",
            "spec.analysis.stepWeights[2]",
            Code::InvalidWeight,
        );
        assert!(p.message.contains("30 after 30"), "{p}");
        one(
            "  interval: 1m\n  stepWeights: [0, 30]\n",
            "spec.analysis.stepWeights[0]",
            Code::InvalidWeight,
        );
        one(
            "  interval: 1m\n  stepWeights: [10, 101]\n",
            "spec.analysis.stepWeights[1]",
            Code::InvalidWeight,
        );
        one(
            "  interval: 1m\n  stepWeights: [10]\n  stepWeightPromotion: 0\n",
            "spec.analysis.stepWeightPromotion",
            Code::InvalidWeight,
        );
    }

    #[test]
    fn mirroring_only_with_iterations() {
        one(
            "  interval: 1m\n  stepWeights: [10]\n  mirror: true\n",
            "spec.analysis.mirror",
            Code::ConflictingFields,
        );
        one(
            "  interval: 1m\n  iterations: 3\n  mirrorWeight: 20\n",
            "spec.analysis.mirrorWeight",
            Code::ConflictingFields,
        );
        one(
            "  interval: 1m\n  iterations: 3\n  mirror: true\n  mirrorWeight: 0\n",
            "spec.analysis.mirrorWeight",
            Code::InvalidWeight,
        );
    }

    #[test]
    fn matches_are_checked() {
        one(
            "  interval: 1m\n  iterations: 3\n  match:\n  - {}\n",
            "spec.analysis.match[0]",
            Code::MissingField,
        );
        one(
            "  interval: 1m\n  iterations: 3\n  match:\n  - headers:\n      x-user:\n        exact: a\n        prefix: b\n",
            "spec.analysis.match[0].headers[x-user]",
            Code::ConflictingFields,
        );
        one(
            "  interval: 1m\n  iterations: 3\n  match:\n  - headers:\n      cookie:\n        regex: \"(unclosed\"\n",
            "spec.analysis.match[0].headers[cookie].regex",
            Code::InvalidRegex,
        );
        one(
            "  interval: 1m\n  iterations: 3\n  match:\n  - headers:\n      \"x user\":\n        exact: a\n",
            "spec.analysis.match[0].headers[x user]",
            Code::InvalidValue,
        );
        one(
            "  interval: 1m\n  iterations: 3\n  match:\n  - sourceLabels:\n      app: \"a b\"\n",
            "spec.analysis.match[0].sourceLabels[app]",
            Code::InvalidSelector,
        );
    }

    const STEPS: &str = "  interval: 1m\n  stepWeights: [10, 50]\n";

    #[test]
    fn metric_thresholds() {
        one(
            &format!("{STEPS}  metrics:\n  - name: request-success-rate\n"),
            "spec.analysis.metrics[0].thresholdRange",
            Code::MissingField,
        );
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-success-rate\n    thresholdRange: {{}}\n"
            ),
            "spec.analysis.metrics[0].thresholdRange",
            Code::MissingField,
        );
        let w = one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-success-rate\n    thresholdRange:\n      max: 100\n"
            ),
            "spec.analysis.metrics[0].thresholdRange",
            Code::InvalidValue,
        );
        assert_eq!(w.severity, Severity::Warn);
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-success-rate\n    thresholdRange:\n      min: 120\n"
            ),
            "spec.analysis.metrics[0].thresholdRange.min",
            Code::InvalidPercentage,
        );
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-duration\n    thresholdRange:\n      max: -1\n"
            ),
            "spec.analysis.metrics[0].thresholdRange.max",
            Code::InvalidValue,
        );
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-duration\n    thresholdRange:\n      min: 10\n      max: 5\n"
            ),
            "spec.analysis.metrics[0].thresholdRange",
            Code::InvalidValue,
        );
        let w = one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-duration\n    thresholdRange:\n      min: 10\n"
            ),
            "spec.analysis.metrics[0].thresholdRange",
            Code::InvalidValue,
        );
        assert_eq!(w.severity, Severity::Warn);
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-duration\n    interval: 0s\n    thresholdRange:\n      max: 5\n"
            ),
            "spec.analysis.metrics[0].interval",
            Code::InvalidDuration,
        );
        assert!(
            ThresholdRange {
                min: Some(99.0),
                max: None
            }
            .contains(99.5)
        );
        assert!(
            !ThresholdRange {
                min: None,
                max: Some(500.0)
            }
            .contains(501.0)
        );
    }

    #[test]
    fn builtin_and_custom_queries() {
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-duration\n    thresholdRange:\n      max: 5\n    query: up\n"
            ),
            "spec.analysis.metrics[0].query",
            Code::ConflictingFields,
        );
        let p = one(
            &format!("{STEPS}  metrics:\n  - name: cpu\n    thresholdRange:\n      max: 5\n"),
            "spec.analysis.metrics[0].query",
            Code::MissingField,
        );
        assert!(p.message.contains("\"cpu\""), "{p}");
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: cpu\n    thresholdRange:\n      max: 5\n    query: up\n"
            ),
            "spec.analysis.metrics[0].provider",
            Code::NotSupported,
        );
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: cpu\n    thresholdRange:\n      max: 5\n    query: up\n    provider:\n      type: prometheus\n"
            ),
            "spec.analysis.metrics[0].provider.address",
            Code::MissingField,
        );
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: cpu\n    thresholdRange:\n      max: 5\n    query: up\n    provider:\n      type: prometheus\n      address: prometheus:9090\n"
            ),
            "spec.analysis.metrics[0].provider.address",
            Code::InvalidValue,
        );
        one(
            &format!("{STEPS}  metrics:\n  - thresholdRange:\n      max: 5\n"),
            "spec.analysis.metrics[0].name",
            Code::MissingField,
        );
        one(
            &format!(
                "{STEPS}  metrics:\n  - name: request-duration\n    thresholdRange:\n      max: 5\n  - name: request-duration\n    thresholdRange:\n      max: 9\n"
            ),
            "spec.analysis.metrics[1].name",
            Code::InvalidValue,
        );
        assert!(
            serde_saphyr::from_str::<CanaryMetric>("name: x\nprovider:\n  type: datadog\n")
                .is_err()
        );
    }

    #[test]
    fn webhooks() {
        one(
            &format!("{STEPS}  webhooks:\n  - name: a\n    url: loadtester/\n"),
            "spec.analysis.webhooks[0].url",
            Code::InvalidValue,
        );
        one(
            &format!("{STEPS}  webhooks:\n  - name: a\n"),
            "spec.analysis.webhooks[0].url",
            Code::MissingField,
        );
        one(
            &format!("{STEPS}  webhooks:\n  - url: http://a/\n"),
            "spec.analysis.webhooks[0].name",
            Code::MissingField,
        );
        let p = one(
            &format!(
                "{STEPS}  webhooks:\n  - name: a\n    url: http://a/\n  - name: a\n    type: rollback\n    url: http://b/\n"
            ),
            "spec.analysis.webhooks[1].name",
            Code::InvalidValue,
        );
        assert!(p.message.contains("webhooks[0]"), "{p}");
        one(
            &format!("{STEPS}  webhooks:\n  - name: a\n    url: http://a/\n    timeout: 0s\n"),
            "spec.analysis.webhooks[0].timeout",
            Code::InvalidDuration,
        );
        assert!(
            serde_saphyr::from_str::<CanaryWebhook>("name: a\ntype: pre_rollout\nurl: http://a/\n")
                .is_err()
        );
    }

    #[test]
    fn schema_refuses_unknown_fields() {
        assert!(serde_saphyr::from_str::<CanarySpec>("service: a\ntargetRef: {}\n").is_err());
        assert!(serde_saphyr::from_str::<CanarySpec>("analysis:\n  intervall: 1m\n").is_err());
    }
}
