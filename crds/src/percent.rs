//! Istio's `Percent` message: a double from 0 to 100.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A percentage, `0.0..=100.0`; range checked by validation, not by parsing, so the error can
/// name the field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    pub value: f64,
}

impl Percent {
    pub const fn new(value: f64) -> Self {
        Self { value }
    }

    pub fn is_valid(self) -> bool {
        self.value.is_finite() && (0.0..=100.0).contains(&self.value)
    }
}
