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

/// A problem found in one object of an input set.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub object: crate::resource::ObjectRef,
    pub origin: String,
    #[serde(flatten)]
    pub problem: Problem,
}

impl Finding {
    pub fn new(entry: &crate::inventory::Entry, problem: Problem) -> Self {
        Self {
            object: entry.object.clone(),
            origin: entry.origin.clone(),
            problem,
        }
    }
}

/// Everything wrong with an input set: each object alone, then the references between them.
pub fn analyze(inv: &crate::inventory::Inventory) -> Vec<Finding> {
    let mut out: Vec<Finding> = inv
        .mesh()
        .flat_map(|e| {
            e.resource
                .validate()
                .into_iter()
                .map(move |p| Finding::new(e, p))
        })
        .collect();
    out.extend(references::check(inv));
    out
}
