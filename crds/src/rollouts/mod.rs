//! `rollouts.mizzen.io`: Mizzen's progressive delivery resources.

pub mod canary;

pub use canary::{Canary, CanaryPhase, CanarySpec, CanaryStatus};
