//! The canary state machine: one pure [`step`] from what the Canary says, what it has done and
//! what is observed now to its next status and the actions that get it there.
//!
//! The caller (the controller's thin shell) owns every side effect and every clock read: it
//! computes the canary revision, scrapes the metrics, calls the webhooks the machine asks for and
//! reports their answers, applies the traffic, promotes, and writes `status`. It calls [`step`]
//! again after [`Decision::requeue_after`], or sooner on a watch event: a call before the next
//! round is due changes nothing but what must react at once (a new revision, a rollback webhook,
//! a progress deadline).
//!
//! # Rounds
//! Work happens in rounds, one per `analysis.interval`, counted from
//! [`CanaryState::last_analysis_time`]. A round that finds the primary or canary not ready does
//! not run (it is retried every [`READINESS_POLL`]); after `progressDeadlineSeconds` of that the
//! canary is rolled back.
//!
//! # Phases (Flagger's)
//! - `Initializing`: all traffic to the stable subset; `Initialized` once the stable pods are
//!   ready.
//! - A canary revision that is neither the last analysed nor the last promoted one starts an
//!   analysis: `Waiting` while `confirm-rollout` webhooks have not all answered 2xx, then
//!   `Progressing`. The same revision change during an analysis restarts it from weight 0 with
//!   the counters reset.
//! - `Progressing`, first round: the `pre-rollout` webhooks must pass (a failure counts against
//!   `threshold`), then traffic starts: the first weight step, or for blue/green (`iterations`)
//!   the first iteration with the `match` (A/B) or mirror routes.
//! - Each later round checks the metrics and `rollout` webhooks. A failed check or a check with
//!   no data fails the round; `threshold` failed rounds roll back to 100% stable (`Failed`). A
//!   passed round takes the next weight (`stepWeight` up to `maxWeight`, or the next of
//!   `stepWeights`) once `confirm-traffic-increase` webhooks pass, or the next iteration.
//! - A passed round at the last weight or iteration promotes once the `confirm-promotion`
//!   webhooks pass (`WaitingPromotion` until then, with the checks still running). Blue/green
//!   without `match` first switches all traffic to the canary.
//! - `Promoting`: the stable subset takes the canary revision (the [`Action::Promote`] the shell
//!   carries out); once it is ready, traffic moves back to it, all at once or by
//!   `stepWeightPromotion` per round, then `Finalising` and `Succeeded`, with the `post-rollout`
//!   webhooks called. A rollback calls them too.
//! - A `rollback` webhook that answers 2xx rolls back at once in `Waiting`, `Progressing` and
//!   `WaitingPromotion`. `skipAnalysis` promotes without checks or webhooks: at once when an
//!   analysis starts, at the next round of one already running.
//!   `suspend` freezes everything.
//!
//! # Webhooks
//! The machine never waits on a call. At the end of a round it asks ([`Action::CallWebhook`])
//! for every webhook the next round will judge (see [`webhooks_for_round`]); the shell calls them
//! and reports the latest answer of each, with the time it came, in [`Observed::webhooks`]. A
//! round counts only answers that came after the previous round. A missing answer fails a
//! `pre-rollout` or `rollout` check and keeps a confirm gate closed.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mizzen_crds::rollouts::canary::{
    CanaryAnalysis, CanaryPhase, CanarySpec, CanaryStatus, CanaryStep, CanaryWebhook, Strategy,
    WebhookType,
};

use super::checks;

/// How often a round blocked on readiness is retried.
pub const READINESS_POLL: Duration = Duration::from_secs(5);
/// `analysis.interval` when unset (validation requires it; Flagger's default).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The reasons the machine writes to `status.reason`, the history and Events.
pub mod reason {
    pub const INITIALIZING: &str = "Initializing";
    pub const INITIALIZED: &str = "Initialized";
    pub const NEW_REVISION: &str = "NewRevision";
    pub const REVISION_CHANGED: &str = "RevisionChanged";
    pub const WAITING_ROLLOUT: &str = "WaitingRolloutApproval";
    pub const ROLLOUT_APPROVED: &str = "RolloutApproved";
    pub const NOT_READY: &str = "NotReady";
    pub const CHECKS_FAILED: &str = "ChecksFailed";
    pub const STEP_WEIGHT: &str = "StepWeight";
    pub const ITERATION: &str = "Iteration";
    pub const WAITING_TRAFFIC_INCREASE: &str = "WaitingTrafficIncrease";
    pub const WAITING_PROMOTION: &str = "WaitingPromotion";
    pub const PROMOTING: &str = "Promoting";
    pub const ANALYSIS_SKIPPED: &str = "AnalysisSkipped";
    pub const PROMOTION_STEP: &str = "PromotionStep";
    pub const FINALISING: &str = "Finalising";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const THRESHOLD_REACHED: &str = "ThresholdReached";
    pub const ROLLBACK_WEBHOOK: &str = "RollbackWebhook";
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// What the machine reads and writes: the CRD's status, with the time of the last round parsed
/// (it is kept in `status.lastAnalysisTime` as RFC 3339; [`CanaryState::from_status`] and
/// [`CanaryState::to_status`] convert, and the machine itself reads only this field).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CanaryState {
    pub status: CanaryStatus,
    /// When the last round ran (or the analysis started): the next round is due one
    /// `analysis.interval` later, and webhook answers older than this are stale.
    pub last_analysis_time: Option<Timestamp>,
}

impl CanaryState {
    /// The state a stored status stands for. An unreadable `lastAnalysisTime` counts as none:
    /// the next round is due at once.
    pub fn from_status(status: CanaryStatus) -> Self {
        let last_analysis_time = parse_time(status.last_analysis_time.as_deref());
        Self {
            status,
            last_analysis_time,
        }
    }

    /// The status to store, `lastAnalysisTime` included.
    pub fn to_status(&self) -> CanaryStatus {
        CanaryStatus {
            last_analysis_time: self.last_analysis_time.map(|t| t.to_string()),
            ..self.status.clone()
        }
    }
}

/// What the shell observed just before the call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The canary subset's revision (its pod template hash or version label, or
    /// `spec.revision`); `None` while no canary pods exist.
    pub revision: Option<String>,
    /// The revision the stable subset runs, when the shell can tell; promotion waits for it to
    /// equal the promoted revision.
    pub stable_revision: Option<String>,
    /// All pods of the stable subset are ready.
    pub primary_ready: bool,
    /// All pods of the canary subset are ready.
    pub canary_ready: bool,
    /// Each check's value over its window by metric name; `None` or absent = no data.
    pub metrics: BTreeMap<String, Option<f64>>,
    /// The latest answer of each webhook by name.
    pub webhooks: BTreeMap<String, WebhookAnswer>,
}

/// One webhook answer: 2xx or not, and when it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookAnswer {
    pub passed: bool,
    pub at: Timestamp,
}

/// Where the service's requests go: the whole routing the controller owns, so the shell renders
/// it as is (idempotent) rather than patching a previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// Percent of requests to the stable subset.
    pub primary: u32,
    /// Percent of requests to the canary subset.
    pub canary: u32,
    /// Requests that match `analysis.match` go to the canary (A/B), ahead of the weights.
    pub canary_match: bool,
    /// Percent of the requests mirrored to the canary (blue/green with mirroring).
    pub mirror: Option<u32>,
}

impl Traffic {
    /// Everything to the stable subset.
    pub const STABLE: Traffic = Traffic::weights(0);

    /// A plain split with `canary` percent to the canary.
    pub const fn weights(canary: u32) -> Traffic {
        Traffic {
            primary: 100 - canary,
            canary,
            canary_match: false,
            mirror: None,
        }
    }
}

/// Normal or Warning, as Kubernetes Events have it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A side effect for the shell, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Route the service this way.
    SetTraffic(Traffic),
    /// Make the stable subset serve `revision` (the canary's).
    Promote { revision: String },
    /// Call the webhook and report its answer in [`Observed::webhooks`].
    CallWebhook { kind: WebhookType, name: String },
    /// Record an Event on the Canary (and send it to the `event` webhooks).
    Event {
        type_: EventType,
        reason: &'static str,
        message: String,
    },
}

/// The outcome of one [`step`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub state: CanaryState,
    pub actions: Vec<Action>,
    /// When to call again if nothing happens before: zero means right after the actions.
    pub requeue_after: Duration,
}

/// One step of the machine. Pure: the same inputs give the same decision.
pub fn step(
    spec: &CanarySpec,
    state: &CanaryState,
    observed: &Observed,
    now: Timestamp,
) -> Decision {
    let interval = spec
        .analysis
        .as_ref()
        .and_then(|a| a.interval)
        .map_or(DEFAULT_INTERVAL, |i| i.get());
    if spec.suspend {
        return Decision {
            state: state.clone(),
            actions: Vec::new(),
            requeue_after: interval,
        };
    }
    let Some((analysis, strategy)) = plan(spec) else {
        return invalid(state, interval);
    };

    let mut m = Machine {
        spec,
        analysis,
        strategy,
        interval,
        observed,
        now,
        prev: state,
        next: state.clone(),
        actions: Vec::new(),
        requeue_after: interval,
    };
    match state.status.phase {
        CanaryPhase::Initializing => m.initialize(),
        CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed => m.idle(),
        CanaryPhase::Waiting => m.wait_for_rollout(),
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion => m.analyse(),
        CanaryPhase::Promoting => m.promoting(),
        CanaryPhase::Finalising => m.finalise(),
        CanaryPhase::Terminating | CanaryPhase::Terminated => {}
    }
    m.finish()
}

/// The routing a status stands for. The machine emits [`Action::SetTraffic`] whenever this
/// changes; the shell may also apply it on start to repair drift.
pub fn traffic(spec: &CanarySpec, status: &CanaryStatus) -> Traffic {
    let Some((analysis, strategy)) = plan(spec) else {
        return Traffic::STABLE;
    };
    let blue_green = matches!(strategy, Strategy::BlueGreen { .. });
    let weight = status.canary_weight.min(100);
    match status.phase {
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
            if blue_green && status.iterations > 0 =>
        {
            Traffic {
                canary_match: !analysis.r#match.is_empty(),
                mirror: analysis
                    .mirrors()
                    .then(|| analysis.mirror_weight.unwrap_or(100).min(100)),
                ..Traffic::weights(weight)
            }
        }
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion => Traffic::weights(weight),
        CanaryPhase::Promoting => Traffic {
            canary_match: blue_green && !analysis.r#match.is_empty(),
            ..Traffic::weights(weight)
        },
        _ => Traffic::STABLE,
    }
}

/// The webhooks the next round of this status judges, which the machine asks the shell to call
/// at the end of each round. A shell that restarted mid-round may call them again at once.
pub fn webhooks_for_round<'a>(
    spec: &'a CanarySpec,
    status: &CanaryStatus,
) -> Vec<&'a CanaryWebhook> {
    let Some((analysis, strategy)) = plan(spec) else {
        return Vec::new();
    };
    if spec.skip_analysis {
        return Vec::new();
    }
    let kinds: &[WebhookType] = match status.phase {
        CanaryPhase::Waiting => &[WebhookType::ConfirmRollout, WebhookType::Rollback],
        CanaryPhase::Progressing if starting(strategy, status) => &[
            WebhookType::PreRollout,
            WebhookType::Rollback,
            WebhookType::ConfirmTrafficIncrease,
        ],
        CanaryPhase::Progressing if next_weight(strategy, status).is_some() => &[
            WebhookType::Rollout,
            WebhookType::Rollback,
            WebhookType::ConfirmTrafficIncrease,
        ],
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
            if at_last_step(strategy, status) =>
        {
            &[
                WebhookType::Rollout,
                WebhookType::Rollback,
                WebhookType::ConfirmPromotion,
            ]
        }
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion => {
            &[WebhookType::Rollout, WebhookType::Rollback]
        }
        _ => &[],
    };
    let blue_green = matches!(strategy, Strategy::BlueGreen { .. });
    analysis
        .webhooks
        .iter()
        .filter(|w| kinds.contains(&w.type_))
        // blue/green has no traffic increase to confirm
        .filter(|w| !(blue_green && w.type_ == WebhookType::ConfirmTrafficIncrease))
        .collect()
}

/// The analysis and its strategy; `None` for a spec that validation refuses.
fn plan(spec: &CanarySpec) -> Option<(&CanaryAnalysis, Strategy<'_>)> {
    let analysis = spec.analysis.as_ref()?;
    Some((analysis, analysis.strategy()?))
}

/// The first round of an analysis: no traffic on the canary yet.
fn starting(strategy: Strategy<'_>, status: &CanaryStatus) -> bool {
    match strategy {
        Strategy::BlueGreen { .. } => status.iterations == 0,
        _ => status.canary_weight == 0,
    }
}

/// The canary weight after the current one, for weighted strategies; `None` at the last.
fn next_weight(strategy: Strategy<'_>, status: &CanaryStatus) -> Option<u32> {
    let current = status.canary_weight;
    match strategy {
        Strategy::Progressive { step, max } => {
            (current < max).then(|| current.saturating_add(step.max(1)).min(max))
        }
        Strategy::Steps(weights) => weights.iter().copied().find(|&w| w > current),
        Strategy::BlueGreen { .. } => None,
    }
}

/// Traffic is at the last weight or the last iteration: a passed round promotes.
fn at_last_step(strategy: Strategy<'_>, status: &CanaryStatus) -> bool {
    match strategy {
        Strategy::BlueGreen { iterations } => status.iterations >= iterations.max(1),
        _ => !starting(strategy, status) && next_weight(strategy, status).is_none(),
    }
}

fn invalid(state: &CanaryState, interval: Duration) -> Decision {
    let mut next = state.clone();
    let mut actions = Vec::new();
    if next.status.reason.as_deref() != Some(reason::INVALID_SPEC) {
        let message =
            "spec.analysis has no valid strategy: nothing changes until the spec is fixed"
                .to_string();
        next.status.reason = Some(reason::INVALID_SPEC.to_string());
        next.status.message = Some(message.clone());
        actions.push(Action::Event {
            type_: EventType::Warning,
            reason: reason::INVALID_SPEC,
            message,
        });
    }
    Decision {
        state: next,
        actions,
        requeue_after: interval,
    }
}

struct Machine<'a> {
    spec: &'a CanarySpec,
    analysis: &'a CanaryAnalysis,
    strategy: Strategy<'a>,
    interval: Duration,
    observed: &'a Observed,
    now: Timestamp,
    prev: &'a CanaryState,
    next: CanaryState,
    actions: Vec<Action>,
    requeue_after: Duration,
}

impl Machine<'_> {
    fn finish(mut self) -> Decision {
        let before = traffic(self.spec, &self.prev.status);
        let after = traffic(self.spec, &self.next.status);
        let first_call = self.prev.status.last_transition_time.is_none();
        if before != after || first_call {
            self.actions.insert(0, Action::SetTraffic(after));
        }
        Decision {
            state: self.next,
            actions: self.actions,
            requeue_after: self.requeue_after,
        }
    }

    // ---- phases ----

    fn initialize(&mut self) {
        if self.next.status.last_transition_time.is_none() {
            self.next.status.last_transition_time = Some(self.now.to_string());
            self.note(
                reason::INITIALIZING,
                format!(
                    "routing all traffic of {} to the stable subset",
                    self.spec.service
                ),
                EventType::Normal,
            );
        }
        if !self.observed.primary_ready {
            let since = parse_time(self.next.status.last_transition_time.as_deref());
            self.blocked("the stable subset is not ready", since);
            return;
        }
        self.transition(
            CanaryPhase::Initialized,
            reason::INITIALIZED,
            "initialization done: all traffic goes to the stable subset".to_string(),
            EventType::Normal,
        );
        self.requeue_after = Duration::ZERO;
    }

    fn idle(&mut self) {
        let Some(revision) = self.new_revision() else {
            return;
        };
        let first = self.prev.status.last_applied_revision.is_none()
            && self.prev.status.last_promoted_revision.is_none();
        let message = if first {
            format!("revision {revision} detected: starting the analysis")
        } else {
            format!("new revision {revision} detected: starting the analysis")
        };
        self.start(revision, reason::NEW_REVISION, message);
    }

    fn wait_for_rollout(&mut self) {
        if self.restart_on_new_revision() || self.rollback_on_webhook() || !self.round_due() {
            return;
        }
        if self.gate_open(WebhookType::ConfirmRollout) {
            self.next.last_analysis_time = Some(self.now);
            self.transition(
                CanaryPhase::Progressing,
                reason::ROLLOUT_APPROVED,
                "confirm-rollout webhooks passed: starting the analysis".to_string(),
                EventType::Normal,
            );
        } else {
            self.next.last_analysis_time = Some(self.now);
            self.note(
                reason::WAITING_ROLLOUT,
                "waiting for the confirm-rollout webhooks to approve".to_string(),
                EventType::Normal,
            );
        }
        self.call_round_webhooks();
    }

    fn analyse(&mut self) {
        if self.restart_on_new_revision() || self.rollback_on_webhook() || !self.round_due() {
            return;
        }
        if self.spec.skip_analysis {
            self.promote(
                reason::ANALYSIS_SKIPPED,
                "analysis skipped: promoting".to_string(),
            );
            return;
        }
        if !self.ready_or_blocked() {
            return;
        }

        let starting = starting(self.strategy, &self.next.status);
        let failures = self.run_checks(starting);
        self.next.last_analysis_time = Some(self.now);
        if !failures.is_empty() {
            self.fail_round(failures);
            return;
        }
        self.advance();
    }

    fn promoting(&mut self) {
        if !self.round_due() {
            return;
        }
        let promoted = self.prev.status.last_applied_revision.clone();
        let stable_behind = matches!(
            (&self.observed.stable_revision, &promoted),
            (Some(stable), Some(p)) if stable != p
        );
        if !self.observed.primary_ready || stable_behind {
            let since = self.round_due_at();
            self.blocked(
                "the stable subset has not rolled out the promoted revision",
                since,
            );
            return;
        }
        self.next.last_analysis_time = Some(self.now);
        let weight = self.next.status.canary_weight;
        let remaining = match self.analysis.step_weight_promotion {
            Some(step) if weight > 0 => weight.saturating_sub(step.max(1)),
            _ => 0,
        };
        self.next.status.canary_weight = remaining;
        if remaining > 0 {
            self.note(
                reason::PROMOTION_STEP,
                format!("moving traffic back to the stable subset: canary weight {remaining}"),
                EventType::Normal,
            );
            self.call_round_webhooks();
            return;
        }
        self.transition(
            CanaryPhase::Finalising,
            reason::FINALISING,
            "all traffic is back on the promoted stable subset".to_string(),
            EventType::Normal,
        );
        self.requeue_after = Duration::ZERO;
    }

    fn finalise(&mut self) {
        let revision = self.next.status.last_applied_revision.clone();
        self.next.status.last_promoted_revision = revision.clone();
        self.transition(
            CanaryPhase::Succeeded,
            reason::SUCCEEDED,
            format!(
                "promotion of revision {} completed",
                revision.as_deref().unwrap_or("(unknown)")
            ),
            EventType::Normal,
        );
        self.call_webhooks(WebhookType::PostRollout);
    }

    // ---- transitions ----

    /// Starts (or restarts) the analysis of `revision` from nothing.
    fn start(&mut self, revision: String, why: &'static str, message: String) {
        let status = &mut self.next.status;
        status.canary_weight = 0;
        status.failed_checks = 0;
        status.iterations = 0;
        status.last_metrics.clear();
        status.last_applied_revision = Some(revision);
        self.next.last_analysis_time = Some(self.now);
        if self.spec.skip_analysis {
            self.next.status.phase = CanaryPhase::Progressing;
            self.note(why, message, EventType::Normal);
            self.promote(
                reason::ANALYSIS_SKIPPED,
                "analysis skipped: promoting".to_string(),
            );
            return;
        }
        let phase = if self.has_webhooks(WebhookType::ConfirmRollout) {
            CanaryPhase::Waiting
        } else {
            CanaryPhase::Progressing
        };
        self.transition(phase, why, message, EventType::Normal);
        self.call_round_webhooks();
    }

    /// A passed round: the next weight or iteration, or promotion.
    fn advance(&mut self) {
        let total = match self.strategy {
            Strategy::BlueGreen { iterations } => Some(iterations.max(1)),
            _ => None,
        };
        if let Some(total) = total {
            if self.next.status.iterations < total {
                let i = self.next.status.iterations + 1;
                self.next.status.iterations = i;
                self.note(
                    reason::ITERATION,
                    format!("checks passed: iteration {i} of {total}"),
                    EventType::Normal,
                );
                self.call_round_webhooks();
                return;
            }
        } else if let Some(weight) = next_weight(self.strategy, &self.next.status) {
            if !self.gate_open(WebhookType::ConfirmTrafficIncrease) {
                self.note(
                    reason::WAITING_TRAFFIC_INCREASE,
                    format!(
                        "checks passed at weight {}: waiting for the confirm-traffic-increase webhooks",
                        self.next.status.canary_weight
                    ),
                    EventType::Normal,
                );
                self.call_round_webhooks();
                return;
            }
            self.next.status.canary_weight = weight;
            self.note(
                reason::STEP_WEIGHT,
                format!("checks passed: canary weight {weight}"),
                EventType::Normal,
            );
            self.call_round_webhooks();
            return;
        }

        if !self.gate_open(WebhookType::ConfirmPromotion) {
            self.transition(
                CanaryPhase::WaitingPromotion,
                reason::WAITING_PROMOTION,
                "analysis passed: waiting for the confirm-promotion webhooks".to_string(),
                EventType::Normal,
            );
            self.call_round_webhooks();
            return;
        }
        // Blue/green without A/B routes switches all traffic to the canary while the stable
        // subset takes its revision.
        if total.is_some() && self.analysis.r#match.is_empty() {
            self.next.status.canary_weight = 100;
        }
        self.promote(
            reason::PROMOTING,
            "analysis passed: promoting the canary".to_string(),
        );
    }

    /// Hands the canary revision to the stable subset and enters `Promoting`.
    fn promote(&mut self, why: &'static str, message: String) {
        self.next.last_analysis_time = Some(self.now);
        if let Some(revision) = self.next.status.last_applied_revision.clone() {
            self.actions.push(Action::Promote { revision });
        }
        self.transition(CanaryPhase::Promoting, why, message, EventType::Normal);
    }

    /// A failed round: count it, and roll back at `threshold`.
    fn fail_round(&mut self, failures: Vec<String>) {
        let failed = self.next.status.failed_checks + 1;
        self.next.status.failed_checks = failed;
        let threshold = self.analysis.threshold_or_default();
        let detail = failures.join("; ");
        if failed >= threshold {
            self.rollback(
                reason::THRESHOLD_REACHED,
                format!(
                    "rolling back after {failed} failed checks (threshold {threshold}): {detail}"
                ),
            );
            return;
        }
        self.note(
            reason::CHECKS_FAILED,
            format!("checks failed ({failed} of {threshold}): {detail}"),
            EventType::Warning,
        );
        self.call_round_webhooks();
    }

    /// All traffic back to the stable subset; `Failed` until a new revision comes.
    fn rollback(&mut self, why: &'static str, message: String) {
        self.next.status.canary_weight = 0;
        self.next.last_analysis_time = Some(self.now);
        self.transition(CanaryPhase::Failed, why, message, EventType::Warning);
        self.call_webhooks(WebhookType::PostRollout);
    }

    fn restart_on_new_revision(&mut self) -> bool {
        let Some(revision) = self.observed.revision.clone() else {
            return false;
        };
        if self.prev.status.last_applied_revision.as_deref() == Some(revision.as_str()) {
            return false;
        }
        let message = format!(
            "revision {revision} replaced {} during the analysis: restarting it",
            self.prev
                .status
                .last_applied_revision
                .as_deref()
                .unwrap_or("(none)")
        );
        self.start(revision, reason::REVISION_CHANGED, message);
        true
    }

    fn rollback_on_webhook(&mut self) -> bool {
        let Some(hook) = self
            .webhooks(WebhookType::Rollback)
            .find(|w| self.fresh_answer(&w.name) == Some(true))
        else {
            return false;
        };
        let message = format!("rollback webhook {:?} approved a rollback", hook.name);
        self.rollback(reason::ROLLBACK_WEBHOOK, message);
        true
    }

    // ---- rounds ----

    fn round_due_at(&self) -> Option<Timestamp> {
        let last = self.next.last_analysis_time?;
        let interval = SignedDuration::try_from(self.interval).unwrap_or(SignedDuration::MAX);
        Some(last.checked_add(interval).unwrap_or(Timestamp::MAX))
    }

    /// True when a round may run now; otherwise sets the requeue to when it will.
    fn round_due(&mut self) -> bool {
        match self.round_due_at() {
            Some(due) if due > self.now => {
                self.requeue_after = until(self.now, due);
                false
            }
            _ => true,
        }
    }

    /// Readiness of both subsets; when not, records why and checks the progress deadline.
    fn ready_or_blocked(&mut self) -> bool {
        let what = match (self.observed.primary_ready, self.observed.canary_ready) {
            (true, true) => return true,
            (false, true) => "the stable subset is not ready",
            (true, false) => "the canary subset is not ready",
            (false, false) => "neither subset is ready",
        };
        let since = self.round_due_at();
        self.blocked(what, since);
        false
    }

    /// A round that cannot run: wait and poll, or roll back once the deadline has passed
    /// since `since` (when the work became due).
    fn blocked(&mut self, what: &str, since: Option<Timestamp>) {
        let deadline = self.spec.progress_deadline();
        let waited = since.map_or(Duration::ZERO, |s| until(s, self.now));
        if waited > deadline {
            let message = format!(
                "no progress for {}s (progressDeadlineSeconds {}): {what}",
                waited.as_secs(),
                deadline.as_secs()
            );
            if self.prev.status.phase == CanaryPhase::Initializing {
                self.next.status.canary_weight = 0;
                self.transition(
                    CanaryPhase::Failed,
                    reason::PROGRESS_DEADLINE_EXCEEDED,
                    message,
                    EventType::Warning,
                );
            } else {
                self.rollback(reason::PROGRESS_DEADLINE_EXCEEDED, message);
            }
            return;
        }
        let message = format!("waiting: {what}");
        if self.next.status.reason.as_deref() != Some(reason::NOT_READY)
            || self.next.status.message.as_deref() != Some(message.as_str())
        {
            self.next.status.reason = Some(reason::NOT_READY.to_string());
            self.next.status.message = Some(message.clone());
            self.event(EventType::Normal, reason::NOT_READY, message);
        }
        self.requeue_after = READINESS_POLL.min(self.interval);
    }

    /// The checks of this round: `pre-rollout` webhooks before traffic starts, then the
    /// metrics and `rollout` webhooks. Returns what failed, one line each.
    fn run_checks(&mut self, starting: bool) -> Vec<String> {
        let mut failures = Vec::new();
        let kind = if starting {
            WebhookType::PreRollout
        } else {
            WebhookType::Rollout
        };
        for hook in self.webhooks(kind) {
            match self.fresh_answer(&hook.name) {
                Some(true) => {}
                Some(false) => failures.push(format!(
                    "{} webhook {:?} failed",
                    kind_name(kind),
                    hook.name
                )),
                None => failures.push(format!(
                    "{} webhook {:?} did not answer",
                    kind_name(kind),
                    hook.name
                )),
            }
        }
        // Metrics need traffic on the canary; blue/green gets it from its first iteration.
        if !starting {
            let results = checks::check_all(&self.analysis.metrics, &self.observed.metrics);
            for (metric, result) in self.analysis.metrics.iter().zip(&results) {
                if !result.passed {
                    failures.push(checks::describe_failure(metric, result));
                }
            }
            self.next.status.last_metrics = results;
        }
        failures
    }

    // ---- webhooks ----

    fn webhooks(&self, kind: WebhookType) -> impl Iterator<Item = &CanaryWebhook> + '_ {
        self.analysis
            .webhooks
            .iter()
            .filter(move |w| w.type_ == kind)
    }

    fn has_webhooks(&self, kind: WebhookType) -> bool {
        self.webhooks(kind).next().is_some()
    }

    /// The webhook's answer if it came since the last round.
    fn fresh_answer(&self, name: &str) -> Option<bool> {
        let since = self.prev.last_analysis_time;
        self.observed
            .webhooks
            .get(name)
            .filter(|a| since.is_none_or(|t| a.at >= t))
            .map(|a| a.passed)
    }

    /// Every webhook of `kind` answered 2xx since the last round (true when there are none).
    fn gate_open(&self, kind: WebhookType) -> bool {
        self.webhooks(kind)
            .all(|w| self.fresh_answer(&w.name) == Some(true))
    }

    fn call_webhooks(&mut self, kind: WebhookType) {
        let calls: Vec<Action> = self
            .webhooks(kind)
            .map(|w| Action::CallWebhook {
                kind,
                name: w.name.clone(),
            })
            .collect();
        self.actions.extend(calls);
    }

    /// Asks for the webhooks the next round judges.
    fn call_round_webhooks(&mut self) {
        let calls: Vec<Action> = webhooks_for_round(self.spec, &self.next.status)
            .into_iter()
            .map(|w| Action::CallWebhook {
                kind: w.type_,
                name: w.name.clone(),
            })
            .collect();
        self.actions.extend(calls);
    }

    // ---- status ----

    fn new_revision(&self) -> Option<String> {
        let revision = self.observed.revision.as_deref()?;
        let status = &self.prev.status;
        let seen = |r: &Option<String>| r.as_deref() == Some(revision);
        (!seen(&status.last_applied_revision) && !seen(&status.last_promoted_revision))
            .then(|| revision.to_string())
    }

    /// A phase change: time, reason, message, history and an Event.
    fn transition(
        &mut self,
        phase: CanaryPhase,
        why: &'static str,
        message: String,
        type_: EventType,
    ) {
        if self.next.status.phase != phase {
            self.next.status.phase = phase;
            self.next.status.last_transition_time = Some(self.now.to_string());
        }
        self.note(why, message, type_);
    }

    /// A step within the phase: reason, message, history and an Event.
    ///
    /// The same note again in the same phase at the same weight (a gate still closed, round
    /// after round) is not repeated: a day of waiting for an approval must not push the
    /// rollout's real steps out of the bounded history, nor flood the Events.
    fn note(&mut self, why: &'static str, message: String, type_: EventType) {
        let status = &self.next.status;
        let repeated = status.reason.as_deref() == Some(why)
            && status.message.as_deref() == Some(message.as_str())
            && status.history.last().is_some_and(|h| {
                h.phase == status.phase
                    && h.weight == status.canary_weight
                    && h.reason.as_deref() == Some(why)
            });
        if repeated {
            return;
        }
        self.next.status.reason = Some(why.to_string());
        self.next.status.message = Some(message.clone());
        self.record_round(why);
        self.event(type_, why, message);
    }

    fn record_round(&mut self, why: &'static str) {
        let step = CanaryStep {
            time: self.now.to_string(),
            phase: self.next.status.phase,
            weight: self.next.status.canary_weight,
            reason: Some(why.to_string()),
        };
        self.next.status.record(step);
    }

    fn event(&mut self, type_: EventType, why: &'static str, message: String) {
        self.actions.push(Action::Event {
            type_,
            reason: why,
            message,
        });
    }
}

fn kind_name(kind: WebhookType) -> &'static str {
    match kind {
        WebhookType::PreRollout => "pre-rollout",
        WebhookType::Rollout => "rollout",
        WebhookType::ConfirmRollout => "confirm-rollout",
        WebhookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
        WebhookType::ConfirmPromotion => "confirm-promotion",
        WebhookType::PostRollout => "post-rollout",
        WebhookType::Rollback => "rollback",
        WebhookType::Event => "event",
    }
}

fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s?.parse().ok()
}

/// Time from `from` to `to`, zero when `to` is not later.
fn until(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(json: serde_json::Value) -> CanarySpec {
        serde_json::from_value(serde_json::json!({
            "service": "reviews", "stableSubset": "v1", "canarySubset": "v2",
            "analysis": json,
        }))
        .unwrap()
    }

    #[test]
    fn weights_follow_the_strategy() {
        let status = |w| CanaryStatus {
            canary_weight: w,
            ..Default::default()
        };
        let p = Strategy::Progressive { step: 30, max: 50 };
        assert_eq!(next_weight(p, &status(0)), Some(30));
        assert_eq!(next_weight(p, &status(30)), Some(50));
        assert_eq!(next_weight(p, &status(50)), None);
        assert!(at_last_step(p, &status(50)));
        assert!(!at_last_step(p, &status(0)));
        let s = Strategy::Steps(&[1, 5, 20]);
        assert_eq!(next_weight(s, &status(0)), Some(1));
        assert_eq!(next_weight(s, &status(5)), Some(20));
        assert_eq!(next_weight(s, &status(20)), None);
    }

    #[test]
    fn traffic_of_each_strategy() {
        let progressive =
            analysis(serde_json::json!({"interval": "1m", "stepWeight": 10, "maxWeight": 50}));
        let st = |phase, w, i| CanaryStatus {
            phase,
            canary_weight: w,
            iterations: i,
            ..Default::default()
        };
        assert_eq!(
            traffic(&progressive, &st(CanaryPhase::Progressing, 30, 0)),
            Traffic::weights(30)
        );
        assert_eq!(
            traffic(&progressive, &st(CanaryPhase::Failed, 30, 0)),
            Traffic::STABLE
        );
        let ab = analysis(serde_json::json!({"interval": "1m", "iterations": 3,
            "match": [{"headers": {"x-canary": {"exact": "yes"}}}]}));
        assert_eq!(
            traffic(&ab, &st(CanaryPhase::Progressing, 0, 0)),
            Traffic::STABLE
        );
        assert!(traffic(&ab, &st(CanaryPhase::Progressing, 0, 1)).canary_match);
        assert!(traffic(&ab, &st(CanaryPhase::Promoting, 0, 3)).canary_match);
        let mirror = analysis(
            serde_json::json!({"interval": "1m", "iterations": 3, "mirror": true, "mirrorWeight": 40}),
        );
        assert_eq!(
            traffic(&mirror, &st(CanaryPhase::Progressing, 0, 2)).mirror,
            Some(40)
        );
        assert_eq!(
            traffic(&mirror, &st(CanaryPhase::Promoting, 100, 3)),
            Traffic::weights(100)
        );
    }

    #[test]
    fn a_spec_without_a_strategy_changes_nothing_and_says_so_once() {
        let spec = analysis(serde_json::json!({"interval": "1m"}));
        let state = CanaryState {
            status: CanaryStatus {
                phase: CanaryPhase::Progressing,
                canary_weight: 30,
                ..Default::default()
            },
            ..Default::default()
        };
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let d = step(&spec, &state, &Observed::default(), now);
        assert_eq!(d.actions.len(), 1, "{:?}", d.actions);
        assert!(matches!(
            d.actions[0],
            Action::Event {
                type_: EventType::Warning,
                ..
            }
        ));
        assert_eq!(d.state.status.canary_weight, 30, "traffic is left as it is");
        assert_eq!(d.state.status.reason.as_deref(), Some(reason::INVALID_SPEC));
        let again = step(&spec, &d.state, &Observed::default(), now);
        assert!(again.actions.is_empty());
        assert_eq!(again.state, d.state);
    }

    #[test]
    fn each_round_asks_for_the_webhooks_it_judges() {
        let spec = analysis(
            serde_json::json!({"interval": "1m", "stepWeight": 50, "maxWeight": 100,
            "webhooks": [
                {"name": "pre", "type": "pre-rollout", "url": "http://a/"},
                {"name": "load", "type": "rollout", "url": "http://a/"},
                {"name": "more", "type": "confirm-traffic-increase", "url": "http://a/"},
                {"name": "ship", "type": "confirm-promotion", "url": "http://a/"},
                {"name": "abort", "type": "rollback", "url": "http://a/"},
                {"name": "done", "type": "post-rollout", "url": "http://a/"},
            ]}),
        );
        let names = |phase, w| {
            let status = CanaryStatus {
                phase,
                canary_weight: w,
                ..Default::default()
            };
            webhooks_for_round(&spec, &status)
                .into_iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(CanaryPhase::Progressing, 0), ["pre", "more", "abort"]);
        assert_eq!(
            names(CanaryPhase::Progressing, 50),
            ["load", "more", "abort"]
        );
        assert_eq!(
            names(CanaryPhase::Progressing, 100),
            ["load", "ship", "abort"]
        );
        assert_eq!(
            names(CanaryPhase::WaitingPromotion, 100),
            ["load", "ship", "abort"]
        );
        assert!(names(CanaryPhase::Succeeded, 0).is_empty());
    }
}
