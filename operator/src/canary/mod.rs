//! The canary controller. Main path: a Canary names two subsets of one service's
//! DestinationRule (pods labelled e.g. `version: v1` and `version: v2`); the controller owns the
//! weights between them, moves traffic to the canary subset while the checks hold, and promotes
//! (the stable subset takes the canary subset's labels, then traffic moves back to it) or rolls
//! back to 100% stable.
//!
//! The pure part — the rollout state machine ([`state`]), the checks that judge a round
//! ([`checks`]), a reader of the proxies' metrics text ([`promtext`]) and the Istio objects the
//! controller writes ([`routes`]) — calls no Kubernetes, reads no clock and does no I/O.
//! [`driver`] runs one round of it against a [`driver::CanaryWorld`], of which there are two:
//! the cluster ([`kube`]) and a directory of Istio YAML for the local mesh ([`local`]).
//! docs/canary.md describes the model for users.

pub mod checks;
pub mod driver;
pub mod fetch;
pub mod kube;
pub mod local;
pub mod metrics;
pub mod promtext;
pub mod routes;
pub mod state;

pub use state::{
    Action, CanaryState, Decision, EventType, Observed, Traffic, WebhookAnswer, step, traffic,
    webhooks_for_round,
};
