//! Istio's `WorkloadSelector` and the label syntax Kubernetes enforces on it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Selects pods (or WorkloadEntries) by labels in the resource's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// True when every label of the selector is present on `labels` with the same value.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Why a label key or value is not one Kubernetes accepts.
pub fn label_key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label))
    {
        return Some(format!(
            "label key {key:?} has an invalid prefix: it must be a DNS subdomain"
        ));
    }
    if name.is_empty() || name.len() > 63 || !is_label_token(name) {
        return Some(format!(
            "label key {key:?} is invalid: the name must be 1-63 characters of [A-Za-z0-9_.-], starting and ending with an alphanumeric"
        ));
    }
    None
}

pub fn label_value_error(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 63 || !is_label_token(value) {
        return Some(format!(
            "label value {value:?} is invalid: at most 63 characters of [A-Za-z0-9_.-], starting and ending with an alphanumeric"
        ));
    }
    None
}

fn is_label_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An RFC 1123 label: lowercase alphanumerics and `-`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_syntax() {
        assert_eq!(label_key_error("version"), None);
        assert_eq!(label_key_error("app.kubernetes.io/name"), None);
        assert!(label_key_error("-bad").is_some());
        assert!(label_key_error("Bad_Prefix/x").is_some());
        assert!(label_key_error(&"x".repeat(64)).is_some());
        assert_eq!(label_value_error(""), None);
        assert_eq!(label_value_error("v1"), None);
        assert!(label_value_error("v1 ").is_some());
    }

    #[test]
    fn matches_subset_of_labels() {
        let sel = WorkloadSelector {
            match_labels: [("app".into(), "reviews".into())].into(),
        };
        let labels = [
            ("app".to_string(), "reviews".to_string()),
            ("version".into(), "v1".into()),
        ]
        .into();
        assert!(sel.matches(&labels));
        assert!(!sel.matches(&BTreeMap::new()));
        assert!(WorkloadSelector::default().matches(&BTreeMap::new()));
    }
}
