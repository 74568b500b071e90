//! `PeerAuthentication`: which mutual TLS mode a workload's inbound side accepts.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Normalize, WorkloadSelector,
    validate::{Checker, Code, Validate},
};

/// Mutual TLS policy for the inbound traffic of the selected workloads (the whole namespace
/// when there is no selector; the whole mesh when the policy sits in the root namespace).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    plural = "peerauthentications",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "pa",
    doc = "Mutual TLS mode of the inbound side of workloads (Istio PeerAuthentication).",
    category = "istio-io",
    category = "security-istio-io",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mtls.mode",
        description = "The mutual TLS mode of the selected workloads."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads the policy applies to; absent means every workload of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode for all ports; absent inherits from the namespace or mesh policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port overrides, keyed by the workload's container port as a decimal string
    /// (`"8080"`). Only allowed together with a selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// Mutual TLS settings of a workload or of one of its ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// What an inbound connection must look like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Take the mode of the enclosing policy (namespace, then mesh); PERMISSIVE at the top.
    #[default]
    Unset,
    /// Plain text only: the proxy does not terminate mutual TLS.
    Disable,
    /// Both mutual TLS and plain text are accepted.
    Permissive,
    /// Only mutual TLS with a client certificate is accepted.
    Strict,
}

impl PeerAuthenticationSpec {
    /// The per-port overrides with their keys parsed; keys that are not ports are skipped
    /// (validation reports them).
    pub fn port_modes(&self) -> impl Iterator<Item = (u16, MtlsMode)> + '_ {
        self.port_level_mtls.iter().filter_map(|(port, mtls)| {
            let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
            Some((port, mtls.mode))
        })
    }
}

impl Normalize for PeerAuthenticationSpec {}

impl Validate for PeerAuthenticationSpec {
    fn validate(&self, c: &mut Checker) {
        c.opt("selector", self.selector.as_ref(), |c, s| c.selector(s));

        let selects_workloads = self
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if !self.port_level_mtls.is_empty() && !selects_workloads {
            c.field("selector", |c| {
                c.error(
                    Code::MissingField,
                    "a selector with matchLabels is required when portLevelMtls is set: \
                     port-level modes apply only to the workloads a policy selects",
                )
            });
        }

        c.field("portLevelMtls", |c| {
            for port in self.port_level_mtls.keys() {
                c.key(port, |c| match port.parse::<i64>() {
                    Ok(n) => c.port(n),
                    Err(_) => c.error(
                        Code::InvalidPort,
                        format!("port keys must be numbers between 1 and 65535 (got {port:?})"),
                    ),
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, validate_spec};

    fn parse(yaml: &str) -> PeerAuthenticationSpec {
        crate::testing::parse(yaml)
    }

    fn only(problems: &[Problem]) -> &Problem {
        assert_eq!(problems.len(), 1, "{problems:#?}");
        &problems[0]
    }

    const FINANCE: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: finance
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
    "9090":
      mode: PERMISSIVE
"#;

    #[test]
    fn parses_a_whole_resource_and_round_trips() {
        let pa: PeerAuthentication = serde_saphyr::from_str(FINANCE).unwrap();
        assert_eq!(pa.metadata.name.as_deref(), Some("finance"));
        let spec = &pa.spec;
        assert_eq!(spec.mtls.as_ref().unwrap().mode, MtlsMode::Strict);
        assert_eq!(
            spec.port_modes().collect::<Vec<_>>(),
            vec![(8080, MtlsMode::Disable), (9090, MtlsMode::Permissive)]
        );

        let json = serde_json::to_value(&pa).unwrap();
        assert_eq!(json["spec"]["portLevelMtls"]["8080"]["mode"], "DISABLE");
        let back: PeerAuthentication = serde_json::from_value(json).unwrap();
        assert_eq!(back, pa);
        assert!(validate_spec(spec).is_empty());
    }

    #[test]
    fn crd_names_and_columns() {
        use kube::CustomResourceExt;
        let crd = PeerAuthentication::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("peerauthentications.security.istio.io")
        );
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["pa".to_string()][..])
        );
        let cols = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap();
        let cols: Vec<(&str, &str)> = cols
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Mode", ".spec.mtls.mode"),
                ("Age", ".metadata.creationTimestamp")
            ]
        );
    }

    #[test]
    fn namespace_wide_and_empty_policies_are_valid() {
        let spec = parse("mtls:\n  mode: PERMISSIVE\n");
        assert!(validate_spec(&spec).is_empty());
        let spec = parse("{}");
        assert_eq!(spec, PeerAuthenticationSpec::default());
        assert!(validate_spec(&spec).is_empty());
        // An absent mode is UNSET, Istio's default.
        assert_eq!(parse("mtls: {}").mtls.unwrap().mode, MtlsMode::Unset);
    }

    #[test]
    fn schema_refuses_unknown_modes_and_fields() {
        assert!(
            serde_saphyr::from_str::<PeerAuthenticationSpec>("mtls:\n  mode: strict\n").is_err()
        );
        assert!(
            serde_saphyr::from_str::<PeerAuthenticationSpec>("mtls:\n  mdoe: STRICT\n").is_err()
        );
    }

    #[test]
    fn port_level_mtls_requires_a_selector() {
        let spec = parse("mtls:\n  mode: STRICT\nportLevelMtls:\n  8080:\n    mode: DISABLE\n");
        let p = only(&validate_spec(&spec)).clone();
        assert_eq!(p.path, "spec.selector");
        assert_eq!(p.code, Code::MissingField);
        assert!(p.message.contains("portLevelMtls"), "{p}");

        // An empty selector selects nothing in particular either.
        let spec = parse("selector: {}\nportLevelMtls:\n  8080:\n    mode: DISABLE\n");
        assert_eq!(only(&validate_spec(&spec)).path, "spec.selector");
    }

    #[test]
    fn port_keys_must_be_ports() {
        for (key, shown) in [("0", "got 0"), ("70000", "got 70000"), ("http", "\"http\"")] {
            let spec = parse(&format!(
                "selector:\n  matchLabels:\n    app: a\nportLevelMtls:\n  {key}:\n    mode: DISABLE\n"
            ));
            let p = only(&validate_spec(&spec)).clone();
            assert_eq!(p.path, format!("spec.portLevelMtls[{key}]"));
            assert_eq!(p.code, Code::InvalidPort);
            assert!(p.message.contains(shown), "{p}");
        }
    }

    #[test]
    fn selector_labels_are_checked() {
        let spec = parse("selector:\n  matchLabels:\n    app: \"fin*\"\n");
        let p = only(&validate_spec(&spec)).clone();
        assert_eq!(p.path, "spec.selector.matchLabels[app]");
        assert_eq!(p.code, Code::InvalidSelector);
    }
}
