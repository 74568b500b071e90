//! The canary controller's pure core: the rollout state machine ([`state`]), the checks that
//! judge a round ([`checks`]), and a reader of the proxies' metrics text ([`promtext`]).
//!
//! Main path: a Canary names two subsets of one service's DestinationRule (pods labelled e.g.
//! `version: v1` and `version: v2`); the controller owns the weights between them, moves traffic
//! to the canary subset while the checks hold, and promotes (the stable subset takes the canary
//! revision, then traffic moves back to it) or rolls back to 100% stable. Nothing here calls
//! Kubernetes, reads a clock or does I/O: the shell around it does, and tests drive it directly.

pub mod checks;
pub mod promtext;
pub mod state;

pub use state::{
    Action, CanaryState, Decision, EventType, Observed, Traffic, WebhookAnswer, step, traffic,
    webhooks_for_round,
};
