//! Helpers the kinds' unit tests share: parse a spec from YAML, assert the
//! single problem expected, and check a round trip.

use std::fmt::Debug;

use serde::{Serialize, de::DeserializeOwned};

use crate::validate::{Code, Problem, Severity};

#[track_caller]
pub(crate) fn parse<T: DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("test YAML does not parse: {e}\n{yaml}"))
}

/// `(path, code)` of each problem, for compact assertions.
pub(crate) fn codes(p: &[Problem]) -> Vec<(&str, Code)> {
    p.iter().map(|p| (p.path.as_str(), p.code)).collect()
}

/// `(path, severity, code)` of each problem, where warnings and errors both matter.
pub(crate) fn verdicts(p: &[Problem]) -> Vec<(&str, Severity, Code)> {
    p.iter()
        .map(|p| (p.path.as_str(), p.severity, p.code))
        .collect()
}

/// Asserts that `problems` is exactly one problem, at `path` with `code`, and returns it.
#[track_caller]
pub(crate) fn only(problems: Vec<Problem>, path: &str, code: Code) -> Problem {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = problems.into_iter().next().expect("one problem");
    assert_eq!((p.path.as_str(), p.code), (path, code), "{p}");
    p
}

/// Serialising to JSON and reading it back gives the same value.
#[track_caller]
pub(crate) fn assert_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_value(value).expect("serialises");
    let back: T = serde_json::from_value(json).expect("reads back");
    assert_eq!(&back, value);
}
