//! The canary controller's Prometheus metrics, on the operator's registry:
//! `mizzen_canary_weight{namespace,name}` (percent of traffic on the canary),
//! `mizzen_canary_phase{namespace,name,phase}` (1 for the current phase, 0 for the others) and
//! `mizzen_canary_analysis_total{namespace,name,result}` (check rounds by `passed` / `failed`,
//! and `error` for rounds that could not run). The Grafana dashboard queries the first two.

use mizzen_crds::rollouts::canary::{CanaryPhase, CanaryStatus};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::driver::analysis_result;

type Labels = Vec<(String, String)>;

/// Every phase, so the one that ends is set back to 0.
const PHASES: [CanaryPhase; 11] = [
    CanaryPhase::Initializing,
    CanaryPhase::Initialized,
    CanaryPhase::Waiting,
    CanaryPhase::Progressing,
    CanaryPhase::WaitingPromotion,
    CanaryPhase::Promoting,
    CanaryPhase::Finalising,
    CanaryPhase::Succeeded,
    CanaryPhase::Failed,
    CanaryPhase::Terminating,
    CanaryPhase::Terminated,
];

#[derive(Clone, Default)]
pub struct CanaryMetrics {
    pub weight: Family<Labels, Gauge>,
    pub phase: Family<Labels, Gauge>,
    pub analysis: Family<Labels, Counter>,
}

impl CanaryMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("mizzen_canary");
        r.register(
            "weight",
            "Percent of the service's traffic sent to the canary subset",
            m.weight.clone(),
        );
        r.register(
            "phase",
            "1 for the Canary's current phase, 0 for the others",
            m.phase.clone(),
        );
        r.register(
            "analysis",
            "Canary check rounds by result (passed, failed, error)",
            m.analysis.clone(),
        );
        m
    }

    /// Records the outcome of a round from `prev` to `next`.
    pub fn observe(&self, namespace: &str, name: &str, prev: &CanaryStatus, next: &CanaryStatus) {
        let id = |extra: Option<(&str, &str)>| {
            let mut l: Labels = vec![
                ("namespace".into(), namespace.into()),
                ("name".into(), name.into()),
            ];
            l.extend(extra.map(|(k, v)| (k.to_string(), v.to_string())));
            l
        };
        self.weight
            .get_or_create(&id(None))
            .set(i64::from(next.canary_weight));
        for phase in PHASES {
            let value = i64::from(phase == next.phase);
            self.phase
                .get_or_create(&id(Some(("phase", phase_name(phase)))))
                .set(value);
        }
        if let Some(result) = analysis_result(prev, next) {
            self.analysis
                .get_or_create(&id(Some(("result", result))))
                .inc();
        }
    }

    /// Drops every series of a Canary that is gone, so a deleted rollout does not stay on the
    /// dashboard at its last weight.
    pub fn forget(&self, namespace: &str, name: &str) {
        let id = |extra: (&str, &str)| -> Labels {
            vec![
                ("namespace".into(), namespace.into()),
                ("name".into(), name.into()),
                (extra.0.into(), extra.1.into()),
            ]
        };
        self.weight.remove(&vec![
            ("namespace".into(), namespace.into()),
            ("name".into(), name.into()),
        ]);
        for phase in PHASES {
            self.phase.remove(&id(("phase", phase_name(phase))));
        }
        for result in ["passed", "failed", "error"] {
            self.analysis.remove(&id(("result", result)));
        }
    }

    /// A round that could not run.
    pub fn error(&self, namespace: &str, name: &str) {
        self.analysis
            .get_or_create(&vec![
                ("namespace".into(), namespace.into()),
                ("name".into(), name.into()),
                ("result".into(), "error".into()),
            ])
            .inc();
    }
}

/// The phase as written in status (`WaitingPromotion`, ...).
pub fn phase_name(phase: CanaryPhase) -> &'static str {
    match phase {
        CanaryPhase::Initializing => "Initializing",
        CanaryPhase::Initialized => "Initialized",
        CanaryPhase::Waiting => "Waiting",
        CanaryPhase::Progressing => "Progressing",
        CanaryPhase::WaitingPromotion => "WaitingPromotion",
        CanaryPhase::Promoting => "Promoting",
        CanaryPhase::Finalising => "Finalising",
        CanaryPhase::Succeeded => "Succeeded",
        CanaryPhase::Failed => "Failed",
        CanaryPhase::Terminating => "Terminating",
        CanaryPhase::Terminated => "Terminated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_are_the_status_spelling() {
        for phase in PHASES {
            assert_eq!(
                serde_json::to_value(phase).unwrap(),
                phase_name(phase),
                "{phase:?}"
            );
        }
    }

    #[test]
    fn a_round_sets_weight_phase_and_counts_the_result() {
        let mut registry = Registry::default();
        let m = CanaryMetrics::new(&mut registry);
        let prev = CanaryStatus {
            phase: CanaryPhase::Progressing,
            canary_weight: 10,
            last_analysis_time: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        let next = CanaryStatus {
            canary_weight: 20,
            last_analysis_time: Some("2026-01-01T00:01:00Z".into()),
            ..prev.clone()
        };
        m.observe("shop", "reviews", &prev, &next);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "mizzen_canary_weight{namespace=\"shop\",name=\"reviews\"} 20",
            "mizzen_canary_phase{namespace=\"shop\",name=\"reviews\",phase=\"Progressing\"} 1",
            "mizzen_canary_phase{namespace=\"shop\",name=\"reviews\",phase=\"Failed\"} 0",
            "mizzen_canary_analysis_total{namespace=\"shop\",name=\"reviews\",result=\"passed\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_forgotten_canary_leaves_no_series() {
        let mut registry = Registry::default();
        let m = CanaryMetrics::new(&mut registry);
        let status = CanaryStatus {
            phase: CanaryPhase::Progressing,
            canary_weight: 30,
            ..Default::default()
        };
        m.observe("shop", "reviews", &status, &status);
        m.observe("shop", "ratings", &status, &status);
        m.error("shop", "reviews");
        m.forget("shop", "reviews");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("name=\"reviews\""), "{text}");
        assert!(
            text.contains("mizzen_canary_weight{namespace=\"shop\",name=\"ratings\"} 30"),
            "{text}"
        );
    }
}
