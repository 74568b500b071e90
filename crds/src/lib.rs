//! Mizzen's API: the Istio-compatible resources (`networking.istio.io`, `security.istio.io`),
//! Mizzen's own `rollouts.mizzen.io`, their CRDs, and the validation that the CLI, the webhook
//! and the operator share.
//!
//! Layout: one module per resource kind under its API group; small value types that several
//! kinds use ([`duration`], [`percent`], [`string_match`], [`selector`], [`status`]) beside them;
//! [`validate`] for checks.

pub mod document;
pub mod duration;
pub mod inventory;
pub mod networking;
pub mod percent;
pub mod resource;

pub mod rollouts;
pub mod security;
pub mod selector;
pub mod status;
pub mod string_match;
pub mod validate;

#[cfg(test)]
mod testing;

pub use duration::Duration;
pub use percent::Percent;
pub use selector::WorkloadSelector;
pub use status::{Condition, MeshStatus};
pub use string_match::StringMatch;

/// Rewrites older field spellings into their current form (`percent` → `percentage.value`,
/// `consecutiveErrors` → `consecutive5xxErrors`, `mirrorPercent` → `mirrorPercentage`), so the
/// rest of Mizzen reads one spelling. Kinds with no older spellings keep the default.
pub trait Normalize {
    fn normalize(&mut self) {}
}
