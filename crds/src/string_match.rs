//! Istio's `StringMatch`: exactly one of `exact`, `prefix` or `regex`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a string (a URI, header or query value) is matched. Istio's `oneof` is kept as three
/// optional fields so the schema stays structural; validation requires exactly one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2-style regular expression, matched against the whole string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The one matcher a valid [`StringMatch`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matcher<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

impl StringMatch {
    pub fn exact(s: impl Into<String>) -> Self {
        Self {
            exact: Some(s.into()),
            ..Self::default()
        }
    }

    pub fn prefix(s: impl Into<String>) -> Self {
        Self {
            prefix: Some(s.into()),
            ..Self::default()
        }
    }

    pub fn regex(s: impl Into<String>) -> Self {
        Self {
            regex: Some(s.into()),
            ..Self::default()
        }
    }

    /// The matcher, or `None` when zero or several are set (validation reports that).
    pub fn matcher(&self) -> Option<Matcher<'_>> {
        match (&self.exact, &self.prefix, &self.regex) {
            (Some(e), None, None) => Some(Matcher::Exact(e)),
            (None, Some(p), None) => Some(Matcher::Prefix(p)),
            (None, None, Some(r)) => Some(Matcher::Regex(r)),
            _ => None,
        }
    }

    pub fn set_count(&self) -> usize {
        [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.regex.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count()
    }
}
