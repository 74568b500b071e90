//! Validation shared by `mizzenctl analyze`, the validating webhook and the operator.
//!
//! Two layers: [`Validate`] checks one object on its own (what the webhook can decide), and
//! [`references`] checks a set of objects against each other (hosts, subsets, gateways).
//! Every problem carries its field path and a [`Code`].

mod checker;
mod problem;
pub mod references;

pub use checker::{Checker, compile_full_match, grpc_status_code, host_error};
pub use problem::{Code, Problem, Severity};

/// A spec that can check itself. Implementations report under the path the checker is at.
pub trait Validate {
    fn validate(&self, c: &mut Checker);
}

/// Validates `spec` with paths rooted at `spec`.
pub fn validate_spec<T: Validate>(spec: &T) -> Vec<Problem> {
    let mut c = Checker::new("spec");
    spec.validate(&mut c);
    c.into_problems()
}
