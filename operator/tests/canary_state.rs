//! The canary state machine driven through whole rollouts on a simulated clock: every rule of
//! the rollout (steps, threshold, no data, webhooks, restarts, suspend, skipAnalysis, deadline,
//! blue/green, A/B, mirroring) and the built-in checks computed from real metrics text.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mizzen_crds::rollouts::canary::{CanaryPhase, CanarySpec, WebhookType};
use mizzen_operator::canary::{
    Action, CanaryState, Decision, Observed, Traffic, WebhookAnswer,
    checks::IstioWindow,
    promtext,
    state::{READINESS_POLL, reason},
    step,
};

const INTERVAL: Duration = Duration::from_secs(60);

fn spec(analysis: serde_json::Value) -> CanarySpec {
    spec_with(analysis, serde_json::json!({}))
}

fn spec_with(analysis: serde_json::Value, extra: serde_json::Value) -> CanarySpec {
    let mut v = serde_json::json!({
        "service": "reviews", "stableSubset": "v1", "canarySubset": "v2",
        "analysis": analysis,
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    let spec: CanarySpec = serde_json::from_value(v).unwrap();
    assert_eq!(
        mizzen_crds::validate::validate_spec(&spec),
        vec![],
        "test specs must be valid"
    );
    spec
}

fn healthy_metrics() -> serde_json::Value {
    serde_json::json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99.0}},
        {"name": "request-duration", "thresholdRange": {"max": 500.0}},
    ])
}

/// A rollout on a simulated clock. Webhooks answer as `answers` says (absent: no answer) at the
/// moment the machine asks for them, as a shell calling them right away would report.
struct Sim {
    spec: CanarySpec,
    state: CanaryState,
    now: Timestamp,
    observed: Observed,
    answers: BTreeMap<String, bool>,
    /// Every decision so far.
    log: Vec<Decision>,
}

impl Sim {
    fn new(spec: CanarySpec) -> Self {
        let mut observed = Observed {
            revision: Some("v2".into()),
            primary_ready: true,
            canary_ready: true,
            ..Default::default()
        };
        observed
            .metrics
            .insert("request-success-rate".into(), Some(99.9));
        observed
            .metrics
            .insert("request-duration".into(), Some(120.0));
        Sim {
            spec,
            state: CanaryState::default(),
            now: "2026-11-22T12:00:00Z".parse().unwrap(),
            observed,
            answers: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// Initializes and starts the analysis of revision v2 (weight 0, no round run yet).
    fn started(spec: CanarySpec) -> Self {
        let mut sim = Sim::new(spec);
        sim.tick();
        assert_eq!(sim.phase(), CanaryPhase::Initialized);
        sim.tick();
        assert!(
            matches!(sim.phase(), CanaryPhase::Progressing | CanaryPhase::Waiting),
            "{:?}",
            sim.state
        );
        sim
    }

    fn tick(&mut self) -> &Decision {
        let d = step(&self.spec, &self.state, &self.observed, self.now);
        for a in &d.actions {
            if let Action::CallWebhook { name, .. } = a
                && let Some(&passed) = self.answers.get(name)
            {
                self.observed.webhooks.insert(
                    name.clone(),
                    WebhookAnswer {
                        passed,
                        at: self.now,
                    },
                );
            }
        }
        self.state = d.state.clone();
        self.log.push(d);
        self.log.last().unwrap()
    }

    fn wait(&mut self, d: Duration) {
        self.now = self
            .now
            .checked_add(SignedDuration::try_from(d).unwrap())
            .unwrap();
    }

    /// One interval later, one step.
    fn round(&mut self) -> &Decision {
        self.wait(INTERVAL);
        self.tick()
    }

    fn phase(&self) -> CanaryPhase {
        self.state.status.phase
    }

    fn weight(&self) -> u32 {
        self.state.status.canary_weight
    }

    fn last_actions(&self) -> &[Action] {
        &self.log.last().unwrap().actions
    }

    fn last_traffic(&self) -> Option<Traffic> {
        self.log.iter().rev().find_map(|d| {
            d.actions.iter().rev().find_map(|a| match a {
                Action::SetTraffic(t) => Some(*t),
                _ => None,
            })
        })
    }

    fn promoted(&self) -> bool {
        self.last_actions()
            .iter()
            .any(|a| matches!(a, Action::Promote { .. }))
    }

    fn called(&self, kind: WebhookType) -> Vec<String> {
        self.last_actions()
            .iter()
            .filter_map(|a| match a {
                Action::CallWebhook { kind: k, name } if *k == kind => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn set_metric(&mut self, name: &str, value: Option<f64>) {
        self.observed.metrics.insert(name.into(), value);
    }

    /// Runs Promoting → Finalising → Succeeded with everything ready.
    fn finish_promotion(&mut self) {
        assert_eq!(self.phase(), CanaryPhase::Promoting);
        self.observed.stable_revision = Some("v2".into());
        while self.phase() == CanaryPhase::Promoting {
            self.round();
        }
        assert_eq!(self.phase(), CanaryPhase::Finalising);
        assert_eq!(self.log.last().unwrap().requeue_after, Duration::ZERO);
        self.tick();
        assert_eq!(self.phase(), CanaryPhase::Succeeded);
        assert_eq!(
            self.state.status.last_promoted_revision.as_deref(),
            Some("v2")
        );
        assert_eq!(self.last_traffic(), Some(Traffic::STABLE));
    }
}

fn progressive(step: u32, max: u32) -> CanarySpec {
    spec(serde_json::json!({
        "interval": "1m", "threshold": 3, "stepWeight": step, "maxWeight": max,
        "metrics": healthy_metrics(),
    }))
}

/// Runs rounds until promotion (at most `limit`), returning the weight after each round.
fn weights_until_promotion(sim: &mut Sim, limit: usize) -> Vec<u32> {
    let mut weights = Vec::new();
    for _ in 0..limit {
        sim.round();
        if sim.promoted() {
            assert_eq!(sim.phase(), CanaryPhase::Promoting);
            return weights;
        }
        weights.push(sim.weight());
        assert_eq!(sim.last_traffic(), Some(Traffic::weights(sim.weight())));
    }
    panic!("no promotion after {limit} rounds: {:?}", sim.state.status);
}

#[test]
fn initializes_with_all_traffic_on_stable_then_starts_on_the_canary_revision() {
    let mut sim = Sim::new(progressive(10, 50));
    sim.observed.primary_ready = false;
    let d = sim.tick().clone();
    assert_eq!(d.actions[0], Action::SetTraffic(Traffic::STABLE));
    assert_eq!(sim.phase(), CanaryPhase::Initializing);
    assert_eq!(d.requeue_after, READINESS_POLL);
    sim.observed.primary_ready = true;
    sim.tick();
    assert_eq!(sim.phase(), CanaryPhase::Initialized);
    sim.tick();
    assert_eq!(sim.phase(), CanaryPhase::Progressing);
    assert_eq!(
        sim.state.status.reason.as_deref(),
        Some(reason::NEW_REVISION)
    );
    assert_eq!(
        sim.state.status.last_applied_revision.as_deref(),
        Some("v2")
    );
    assert_eq!(sim.weight(), 0);
    // nothing happens before the interval has passed
    sim.wait(Duration::from_secs(59));
    let d = sim.tick().clone();
    assert_eq!(sim.weight(), 0);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.requeue_after, Duration::from_secs(1));
}

#[test]
fn healthy_canary_promotes_after_one_round_at_each_weight() {
    // (stepWeight, maxWeight, the weights the canary goes through)
    let table: &[(u32, u32, &[u32])] = &[
        (10, 50, &[10, 20, 30, 40, 50]),
        (20, 50, &[20, 40, 50]),
        (25, 100, &[25, 50, 75, 100]),
        (50, 50, &[50]),
        (1, 3, &[1, 2, 3]),
        (30, 100, &[30, 60, 90, 100]),
    ];
    for &(step_w, max, expected) in table {
        let mut sim = Sim::started(progressive(step_w, max));
        let weights = weights_until_promotion(&mut sim, 200);
        assert_eq!(weights, expected, "step {step_w} max {max}");
        // the first round opens traffic; the analysis at each weight, the max included, takes
        // one interval each: promotion comes ceil(max/step) intervals after the first step
        assert_eq!(
            weights.len() as u32,
            max.div_ceil(step_w),
            "step {step_w} max {max}"
        );
        assert_eq!(sim.state.status.failed_checks, 0);
        sim.finish_promotion();
    }
}

#[test]
fn explicit_step_weights_and_gradual_promotion() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "stepWeights": [1, 5, 20, 50], "stepWeightPromotion": 20,
        "metrics": healthy_metrics(),
    })));
    assert_eq!(weights_until_promotion(&mut sim, 20), [1, 5, 20, 50]);
    // promotion waits for the stable subset to run the canary revision
    sim.observed.stable_revision = Some("v1".into());
    sim.round();
    assert_eq!((sim.phase(), sim.weight()), (CanaryPhase::Promoting, 50));
    assert_eq!(sim.state.status.reason.as_deref(), Some(reason::NOT_READY));
    sim.observed.stable_revision = Some("v2".into());
    let mut back = Vec::new();
    while sim.phase() == CanaryPhase::Promoting {
        sim.round();
        back.push(sim.last_traffic().unwrap().canary);
    }
    assert_eq!(back, [30, 10, 0]);
    assert_eq!(sim.phase(), CanaryPhase::Finalising);
    sim.tick();
    assert_eq!(sim.phase(), CanaryPhase::Succeeded);
}

#[test]
fn rolls_back_after_threshold_failed_rounds() {
    let mut sim = Sim::started(progressive(10, 50));
    sim.round();
    sim.round();
    assert_eq!(sim.weight(), 20);
    sim.set_metric("request-success-rate", Some(80.0));
    for failed in 1..=2 {
        let d = sim.round().clone();
        assert_eq!(
            (sim.phase(), sim.weight(), sim.state.status.failed_checks),
            (CanaryPhase::Progressing, 20, failed),
            "a failed round holds the weight"
        );
        assert!(d.actions.iter().any(|a| matches!(
            a,
            Action::Event { reason: r, message, .. }
                if *r == reason::CHECKS_FAILED && message.contains("80 is below the minimum 99")
        )));
        assert!(!sim.state.status.last_metrics[0].passed);
    }
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::Failed);
    assert_eq!(sim.state.status.failed_checks, 3);
    assert_eq!(
        sim.state.status.reason.as_deref(),
        Some(reason::THRESHOLD_REACHED)
    );
    assert_eq!(sim.last_actions()[0], Action::SetTraffic(Traffic::STABLE));
    assert!(
        !sim.last_actions()
            .iter()
            .any(|a| matches!(a, Action::Promote { .. }))
    );

    // a failed revision stays failed; a new one starts over
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::Failed);
    assert!(sim.last_actions().is_empty());
    sim.observed.revision = Some("v3".into());
    sim.tick();
    assert_eq!(
        (sim.phase(), sim.state.status.failed_checks),
        (CanaryPhase::Progressing, 0)
    );
}

#[test]
fn failed_rounds_accumulate_across_passed_ones() {
    let mut sim = Sim::started(progressive(10, 100));
    sim.round();
    for healthy in [false, true, false, true] {
        sim.set_metric(
            "request-duration",
            Some(if healthy { 100.0 } else { 900.0 }),
        );
        sim.round();
    }
    assert_eq!(
        (sim.state.status.failed_checks, sim.weight()),
        (2, 30),
        "two failed, two passed rounds"
    );
    sim.set_metric("request-duration", Some(900.0));
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::Failed);
}

#[test]
fn no_data_counts_as_a_failure() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "stepWeight": 10, "maxWeight": 50, "metrics": healthy_metrics(),
    })));
    sim.round();
    assert_eq!(sim.weight(), 10);
    sim.observed.metrics.remove("request-duration");
    sim.round();
    // default threshold 1: the first failed round rolls back
    assert_eq!(sim.phase(), CanaryPhase::Failed);
    assert!(
        sim.state
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("request-duration: no data"),
        "{:?}",
        sim.state.status.message
    );
    let results = &sim.state.status.last_metrics;
    assert_eq!(results[1].value, None);
    assert!(!results[1].passed);

    // an explicit None is no data too
    let mut sim = Sim::started(progressive(10, 50));
    sim.round();
    sim.set_metric("request-success-rate", None);
    sim.round();
    assert_eq!(sim.state.status.failed_checks, 1);
}

#[test]
fn rollout_webhooks_gate_each_step() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "threshold": 5, "stepWeight": 25, "maxWeight": 50,
        "webhooks": [{"name": "load", "type": "rollout", "url": "http://tester/"}],
    })));
    sim.answers.insert("load".into(), true);
    sim.round();
    assert_eq!(sim.weight(), 25);
    assert_eq!(sim.called(WebhookType::Rollout), ["load"]);
    // a failing rollout webhook fails the round
    sim.answers.insert("load".into(), false);
    sim.round(); // judged on the passing answer asked for at weight 25
    assert_eq!(sim.weight(), 50);
    sim.round();
    assert_eq!((sim.weight(), sim.state.status.failed_checks), (50, 1));
    // no answer fails it too
    sim.answers.remove("load");
    sim.round();
    assert_eq!(sim.state.status.failed_checks, 2);
    sim.round();
    assert!(
        sim.state
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("rollout webhook \"load\" did not answer")
    );
    sim.answers.insert("load".into(), true);
    sim.round(); // still judged on the missing answer
    sim.round();
    assert!(sim.promoted());
}

#[test]
fn stale_webhook_answers_do_not_count() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "stepWeight": 50, "maxWeight": 100, "threshold": 2,
        "webhooks": [{"name": "load", "type": "rollout", "url": "http://tester/"}],
    })));
    sim.round();
    assert_eq!(sim.weight(), 50);
    // an answer from before the last round, as a shell that lost track might report
    sim.observed.webhooks.insert(
        "load".into(),
        WebhookAnswer {
            passed: true,
            at: sim.now.checked_sub(SignedDuration::from_secs(1)).unwrap(),
        },
    );
    sim.round();
    assert_eq!(sim.state.status.failed_checks, 1);
}

#[test]
fn pre_rollout_gates_the_start_and_counts_failures() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "threshold": 2, "stepWeight": 10, "maxWeight": 20,
        "metrics": healthy_metrics(),
        "webhooks": [{"name": "smoke", "type": "pre-rollout", "url": "http://tester/"}],
    })));
    // asked for when the analysis started, answered failing
    assert!(sim.log.last().unwrap().actions.iter().any(
        |a| matches!(a, Action::CallWebhook { kind: WebhookType::PreRollout, name } if name == "smoke")
    ));
    assert!(sim.observed.webhooks.is_empty());
    sim.round();
    assert_eq!((sim.weight(), sim.state.status.failed_checks), (0, 1));
    assert_eq!(sim.called(WebhookType::PreRollout), ["smoke"]);
    sim.answers.insert("smoke".into(), true);
    sim.round(); // judged on the missing answer from the previous round: second failure
    assert_eq!(sim.phase(), CanaryPhase::Failed);

    let mut sim = Sim::new(spec(serde_json::json!({
        "interval": "1m", "stepWeight": 10, "maxWeight": 20,
        "webhooks": [{"name": "smoke", "type": "pre-rollout", "url": "http://tester/"}],
    })));
    sim.answers.insert("smoke".into(), true);
    sim.tick();
    sim.tick();
    sim.round();
    assert_eq!(sim.weight(), 10);
    // pre-rollout runs once: the next round asks for no pre-rollout webhook
    assert!(sim.called(WebhookType::PreRollout).is_empty());
}

#[test]
fn confirm_webhooks_hold_without_counting_failures() {
    let mut sim = Sim::new(spec(serde_json::json!({
        "interval": "1m", "threshold": 1, "stepWeight": 50, "maxWeight": 100,
        "metrics": healthy_metrics(),
        "webhooks": [
            {"name": "go", "type": "confirm-rollout", "url": "http://gate/"},
            {"name": "more", "type": "confirm-traffic-increase", "url": "http://gate/"},
            {"name": "ship", "type": "confirm-promotion", "url": "http://gate/"},
        ],
    })));
    sim.tick();
    sim.tick();
    assert_eq!(sim.phase(), CanaryPhase::Waiting);
    let history = sim.state.status.history.len();
    for _ in 0..30 {
        sim.round();
        assert_eq!(sim.phase(), CanaryPhase::Waiting);
        assert_eq!(sim.called(WebhookType::ConfirmRollout), ["go"]);
    }
    assert_eq!(
        sim.state.status.history.len(),
        history + 1,
        "waiting is recorded once, not once per round"
    );
    sim.answers.insert("go".into(), true);
    sim.round(); // the answer arrives with this round's call
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::Progressing);
    assert_eq!(
        sim.state.status.reason.as_deref(),
        Some(reason::ROLLOUT_APPROVED)
    );

    // traffic increase held until confirmed
    for _ in 0..3 {
        sim.round();
        assert_eq!(sim.weight(), 0);
        assert_eq!(
            sim.state.status.reason.as_deref(),
            Some(reason::WAITING_TRAFFIC_INCREASE)
        );
    }
    sim.answers.insert("more".into(), true);
    sim.round();
    sim.round();
    assert_eq!(sim.weight(), 50);
    sim.round();
    assert_eq!(sim.weight(), 100);

    // promotion held; the checks keep running meanwhile
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::WaitingPromotion);
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::WaitingPromotion);
    assert_eq!(sim.called(WebhookType::ConfirmPromotion), ["ship"]);
    assert_eq!(sim.state.status.failed_checks, 0);
    sim.answers.insert("ship".into(), true);
    sim.round();
    sim.round();
    assert!(sim.promoted());
    sim.finish_promotion();
}

#[test]
fn checks_fail_while_waiting_for_promotion() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "stepWeight": 100, "maxWeight": 100, "metrics": healthy_metrics(),
        "webhooks": [{"name": "ship", "type": "confirm-promotion", "url": "http://gate/"}],
    })));
    sim.round();
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::WaitingPromotion);
    sim.set_metric("request-success-rate", Some(50.0));
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::Failed);
}

#[test]
fn a_passing_rollback_webhook_rolls_back_at_once() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "stepWeight": 10, "maxWeight": 50,
        "webhooks": [
            {"name": "abort", "type": "rollback", "url": "http://gate/"},
            {"name": "notify", "type": "post-rollout", "url": "http://chat/"},
        ],
    })));
    sim.answers.insert("abort".into(), false);
    sim.round();
    sim.round();
    assert_eq!(sim.weight(), 20);
    // the operator says roll back, between two rounds
    sim.wait(Duration::from_secs(10));
    sim.observed.webhooks.insert(
        "abort".into(),
        WebhookAnswer {
            passed: true,
            at: sim.now,
        },
    );
    sim.tick();
    assert_eq!(sim.phase(), CanaryPhase::Failed);
    assert_eq!(
        sim.state.status.reason.as_deref(),
        Some(reason::ROLLBACK_WEBHOOK)
    );
    assert_eq!(sim.last_actions()[0], Action::SetTraffic(Traffic::STABLE));
    assert_eq!(sim.called(WebhookType::PostRollout), ["notify"]);
}

#[test]
fn a_new_revision_restarts_the_analysis() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50,
        "metrics": healthy_metrics(),
    })));
    sim.round();
    sim.round();
    sim.set_metric("request-duration", Some(800.0));
    sim.round();
    assert_eq!((sim.weight(), sim.state.status.failed_checks), (20, 1));
    sim.set_metric("request-duration", Some(100.0));

    sim.observed.revision = Some("v3".into());
    sim.wait(Duration::from_secs(5));
    sim.tick();
    let s = &sim.state.status;
    assert_eq!(
        (
            s.phase,
            s.canary_weight,
            s.failed_checks,
            s.last_applied_revision.as_deref()
        ),
        (CanaryPhase::Progressing, 0, 0, Some("v3"))
    );
    assert!(s.last_metrics.is_empty());
    assert_eq!(s.reason.as_deref(), Some(reason::REVISION_CHANGED));
    assert_eq!(sim.last_actions()[0], Action::SetTraffic(Traffic::STABLE));
    // the restarted analysis waits a full interval from the restart
    sim.wait(Duration::from_secs(59));
    sim.tick();
    assert_eq!(sim.weight(), 0);
    sim.wait(Duration::from_secs(1));
    sim.tick();
    assert_eq!(sim.weight(), 10);
    let weights = weights_until_promotion(&mut sim, 20);
    assert_eq!(weights, [20, 30, 40, 50]);
    assert!(sim.last_actions().contains(&Action::Promote {
        revision: "v3".into()
    }));
}

#[test]
fn suspend_changes_nothing() {
    let mut sim = Sim::started(progressive(10, 50));
    sim.round();
    sim.spec.suspend = true;
    let frozen = sim.state.clone();
    sim.set_metric("request-success-rate", Some(0.0));
    sim.observed.revision = Some("v9".into());
    sim.observed.canary_ready = false;
    for _ in 0..20 {
        let d = sim.round().clone();
        assert!(d.actions.is_empty());
        assert_eq!(d.state, frozen);
    }
    sim.spec.suspend = false;
    sim.observed.revision = Some("v2".into());
    sim.observed.canary_ready = true;
    sim.set_metric("request-success-rate", Some(100.0));
    sim.tick();
    assert_eq!(sim.weight(), 20, "resumes where it was");
}

#[test]
fn skip_analysis_promotes_without_checks() {
    let spec = spec_with(
        serde_json::json!({
            "interval": "1m", "stepWeight": 10, "maxWeight": 50, "metrics": healthy_metrics(),
            "webhooks": [
                {"name": "smoke", "type": "pre-rollout", "url": "http://tester/"},
                {"name": "notify", "type": "post-rollout", "url": "http://chat/"},
            ],
        }),
        serde_json::json!({"skipAnalysis": true}),
    );
    let mut sim = Sim::new(spec);
    sim.observed.metrics.clear();
    sim.tick();
    sim.tick();
    assert!(sim.promoted());
    assert_eq!(sim.phase(), CanaryPhase::Promoting);
    assert_eq!(
        sim.state.status.reason.as_deref(),
        Some(reason::ANALYSIS_SKIPPED)
    );
    assert!(sim.called(WebhookType::PreRollout).is_empty());
    sim.finish_promotion();
    assert_eq!(sim.called(WebhookType::PostRollout), ["notify"]);

    // set during an analysis, it promotes at the next round
    let mut sim = Sim::started(progressive(10, 50));
    sim.round();
    sim.spec.skip_analysis = true;
    sim.set_metric("request-success-rate", None);
    sim.round();
    assert!(sim.promoted());
}

#[test]
fn progress_deadline_rolls_back_a_canary_that_never_gets_ready() {
    let spec = spec_with(
        serde_json::json!({"interval": "1m", "stepWeight": 10, "maxWeight": 50, "threshold": 2}),
        serde_json::json!({"progressDeadlineSeconds": 120}),
    );
    let mut sim = Sim::started(spec);
    sim.round();
    assert_eq!(sim.weight(), 10);
    sim.observed.canary_ready = false;
    sim.round(); // due now: blocked from here
    assert_eq!(sim.state.status.reason.as_deref(), Some(reason::NOT_READY));
    assert_eq!(sim.log.last().unwrap().requeue_after, READINESS_POLL);
    for _ in 0..24 {
        sim.wait(READINESS_POLL);
        sim.tick();
        assert_eq!(
            (sim.phase(), sim.state.status.failed_checks),
            (CanaryPhase::Progressing, 0),
            "waiting for readiness is not a failed check"
        );
    }
    sim.wait(Duration::from_secs(1));
    sim.tick();
    assert_eq!(sim.phase(), CanaryPhase::Failed);
    assert_eq!(
        sim.state.status.reason.as_deref(),
        Some(reason::PROGRESS_DEADLINE_EXCEEDED)
    );
    assert_eq!(sim.last_traffic(), Some(Traffic::STABLE));

    // readiness coming back in time resumes the analysis
    let spec = spec_with(
        serde_json::json!({"interval": "1m", "stepWeight": 10, "maxWeight": 50}),
        serde_json::json!({"progressDeadlineSeconds": 120}),
    );
    let mut sim = Sim::started(spec);
    sim.round();
    sim.observed.primary_ready = false;
    sim.round();
    sim.wait(Duration::from_secs(100));
    sim.tick();
    sim.observed.primary_ready = true;
    sim.tick();
    assert_eq!((sim.phase(), sim.weight()), (CanaryPhase::Progressing, 20));
}

#[test]
fn initialization_fails_after_the_deadline() {
    let spec = spec_with(
        serde_json::json!({"interval": "1m", "iterations": 2}),
        serde_json::json!({"progressDeadlineSeconds": 30}),
    );
    let mut sim = Sim::new(spec);
    sim.observed.primary_ready = false;
    sim.tick();
    sim.wait(Duration::from_secs(30));
    sim.tick();
    assert_eq!(sim.phase(), CanaryPhase::Initializing);
    sim.wait(Duration::from_secs(1));
    sim.tick();
    assert_eq!(sim.phase(), CanaryPhase::Failed);
}

#[test]
fn blue_green_switches_after_the_iterations() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "iterations": 3, "metrics": healthy_metrics(),
    })));
    let mut iterations = Vec::new();
    loop {
        sim.round();
        if sim.promoted() {
            break;
        }
        iterations.push(sim.state.status.iterations);
        assert_eq!(sim.weight(), 0, "no gradual weights");
        assert_eq!(sim.last_traffic(), Some(Traffic::STABLE));
        assert!(iterations.len() < 10);
    }
    // the first round starts iteration 1; iterations 1 to 3 are each analysed once
    assert_eq!(iterations, [1, 2, 3]);
    assert_eq!(
        sim.last_actions()[0],
        Action::SetTraffic(Traffic::weights(100))
    );
    sim.finish_promotion();

    // a failing iteration counts against the threshold
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "iterations": 3, "metrics": healthy_metrics(),
    })));
    sim.round();
    sim.set_metric("request-success-rate", Some(10.0));
    sim.round();
    assert_eq!(sim.phase(), CanaryPhase::Failed);
}

#[test]
fn ab_testing_routes_matched_requests_to_the_canary_for_the_iterations() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "iterations": 2, "metrics": healthy_metrics(),
        "match": [{"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}],
    })));
    sim.round();
    let ab = Traffic {
        canary_match: true,
        ..Traffic::STABLE
    };
    assert_eq!(sim.last_traffic(), Some(ab));
    sim.round();
    assert_eq!(sim.state.status.iterations, 2);
    sim.round();
    assert!(sim.promoted());
    // no switch: matched users stay on the canary until the stable subset has its revision
    assert_eq!(sim.last_traffic(), Some(ab));
    assert_eq!(sim.weight(), 0);
    sim.finish_promotion();
}

#[test]
fn blue_green_mirrors_traffic_during_the_iterations() {
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "iterations": 2, "mirror": true, "mirrorWeight": 30,
    })));
    sim.round();
    assert_eq!(
        sim.last_traffic(),
        Some(Traffic {
            mirror: Some(30),
            ..Traffic::STABLE
        })
    );
    sim.round();
    sim.round();
    assert!(sim.promoted());
    assert_eq!(sim.last_traffic(), Some(Traffic::weights(100)));
}

#[test]
fn history_and_events_record_each_step() {
    let mut sim = Sim::started(progressive(25, 50));
    while sim.phase() != CanaryPhase::Promoting {
        sim.round();
    }
    sim.finish_promotion();
    let steps: Vec<(CanaryPhase, u32, &str)> = sim
        .state
        .status
        .history
        .iter()
        .map(|h| (h.phase, h.weight, h.reason.as_deref().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            (CanaryPhase::Initializing, 0, reason::INITIALIZING),
            (CanaryPhase::Initialized, 0, reason::INITIALIZED),
            (CanaryPhase::Progressing, 0, reason::NEW_REVISION),
            (CanaryPhase::Progressing, 25, reason::STEP_WEIGHT),
            (CanaryPhase::Progressing, 50, reason::STEP_WEIGHT),
            (CanaryPhase::Promoting, 50, reason::PROMOTING),
            (CanaryPhase::Finalising, 0, reason::FINALISING),
            (CanaryPhase::Succeeded, 0, reason::SUCCEEDED),
        ]
    );
    let events = sim
        .log
        .iter()
        .flat_map(|d| &d.actions)
        .filter(|a| matches!(a, Action::Event { .. }))
        .count();
    assert_eq!(events, steps.len());
}

// ---- the built-in checks from the proxies' metrics text ----

/// A scrape of one canary pod: `requests` by response code and duration bucket counts.
fn scrape(requests: &[(&str, u64)], buckets: &[(&str, u64)]) -> String {
    let mut text = String::from("# TYPE istio_requests counter\n");
    let labels =
        r#"reporter="destination",destination_workload="reviews-v2",destination_version="v2""#;
    for (code, n) in requests {
        text.push_str(&format!(
            "istio_requests_total{{{labels},response_code=\"{code}\"}} {n}\n"
        ));
        // the pod's own outbound calls, reported by the source side, never count
        text.push_str(&format!(
            "istio_requests_total{{reporter=\"source\",destination_workload=\"ratings\",destination_version=\"v1\",response_code=\"{code}\"}} 1000\n"
        ));
    }
    text.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
    for (le, n) in buckets {
        text.push_str(&format!(
            "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
        ));
    }
    text.push_str("# EOF\n");
    text
}

const CANARY: &[(&str, &str)] = &[("destination_version", "v2")];

#[test]
fn success_rate_and_p99_from_two_scrapes() {
    let before = promtext::parse(&scrape(
        &[("200", 1000), ("503", 10)],
        &[
            ("10.0", 500),
            ("100.0", 900),
            ("1000.0", 1010),
            ("+Inf", 1010),
        ],
    ));
    // in the window: 180 OK + 20 errors; durations 100 <= 10 ms, 60 in (10,100], 40 in (100,1000]
    let after = promtext::parse(&scrape(
        &[("200", 1180), ("503", 25), ("500", 5)],
        &[
            ("10.0", 600),
            ("100.0", 1060),
            ("1000.0", 1210),
            ("+Inf", 1210),
        ],
    ));
    let w = IstioWindow::between(&before, &after, CANARY);
    assert_eq!((w.requests, w.server_errors), (200.0, 20.0));
    assert_eq!(w.success_rate(), Some(90.0));
    // rank 198 of 200: the 38th of 40 in (100, 1000] → 100 + 900 * 38/40
    assert_eq!(w.duration_quantile(0.99), Some(955.0));

    // nothing served: no data for either check
    let idle = IstioWindow::between(&after, &after, CANARY);
    assert_eq!(
        (idle.success_rate(), idle.duration_quantile(0.99)),
        (None, None)
    );
    // another version's series are not the canary's
    let other = IstioWindow::between(&before, &after, &[("destination_version", "v1")]);
    assert_eq!(other.requests, 0.0);
}

#[test]
fn a_restarted_proxy_and_several_pods() {
    let before = promtext::parse(&scrape(&[("200", 5000)], &[("5.0", 5000), ("+Inf", 5000)]));
    // the proxy restarted: its counters began again from zero
    let after = promtext::parse(&scrape(&[("200", 40)], &[("5.0", 40), ("+Inf", 40)]));
    let mut w = IstioWindow::between(&before, &after, CANARY);
    assert_eq!(w.requests, 40.0);
    // a second pod that appeared in the window, all errors
    let pod2 = promtext::parse(&scrape(&[("500", 10)], &[("+Inf", 10)]));
    w.merge(&IstioWindow::between(&[], &pod2, CANARY));
    assert_eq!((w.requests, w.server_errors), (50.0, 10.0));
    assert_eq!(w.success_rate(), Some(80.0));
    assert_eq!(w.buckets, [(5.0, 40.0), (f64::INFINITY, 50.0)]);
    // rank 49.5 lies in +Inf: the highest finite bound answers
    assert_eq!(w.duration_quantile(0.99), Some(5.0));
}

#[test]
fn a_canary_answering_20_percent_errors_is_rolled_back_on_scraped_metrics() {
    use mizzen_crds::rollouts::canary::BuiltinMetric;
    let mut sim = Sim::started(spec(serde_json::json!({
        "interval": "1m", "threshold": 2, "stepWeight": 20, "maxWeight": 60,
        "metrics": healthy_metrics(),
    })));
    let mut ok = 0;
    let mut errors = 0;
    let mut previous = scrape(&[("200", 0), ("500", 0)], &[("50.0", 0), ("+Inf", 0)]);
    for round in 0.. {
        assert!(round < 10);
        let served = 50 * sim.weight() as u64;
        ok += served * 4 / 5;
        errors += served / 5;
        let current = scrape(
            &[("200", ok), ("500", errors)],
            &[("50.0", ok + errors), ("+Inf", ok + errors)],
        );
        let w = IstioWindow::between(
            &promtext::parse(&previous),
            &promtext::parse(&current),
            CANARY,
        );
        previous = current;
        sim.set_metric(
            "request-success-rate",
            w.value(BuiltinMetric::RequestSuccessRate),
        );
        sim.set_metric("request-duration", w.value(BuiltinMetric::RequestDuration));
        sim.round();
        if sim.phase() == CanaryPhase::Failed {
            break;
        }
    }
    // round 1 opens 20%; rounds 2 and 3 see 80% success and fail
    assert_eq!(sim.state.status.last_metrics[0].value, Some(80.0));
    assert_eq!(sim.state.status.failed_checks, 2);
    assert_eq!(sim.last_traffic(), Some(Traffic::STABLE));
    assert!(
        !sim.log
            .iter()
            .flat_map(|d| &d.actions)
            .any(|a| matches!(a, Action::Promote { .. }))
    );
}
