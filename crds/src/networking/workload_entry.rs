//! `WorkloadEntry`: one workload outside Kubernetes (a VM, a bare-metal host) that joins the
//! mesh. Its spec is also the shape of a `ServiceEntry` endpoint.

use std::{collections::BTreeMap, net::IpAddr};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Normalize,
    selector::is_dns_label,
    validate::{Checker, Code, Validate},
};

/// Prefix of a Unix domain socket address (`unix:///var/run/app.sock`, `unix://@abstract`).
pub const UNIX_PREFIX: &str = "unix://";

/// A workload's address, port map, labels and identity.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    plural = "workloadentries",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "we",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    /// IP address, DNS name (only with DNS resolution) or `unix://` socket path, without a
    /// port. May be empty when `network` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Service port name → port on this endpoint. Not allowed for `unix://` addresses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The L3 network the endpoint lives in; endpoints of one network reach each other directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Failure domain as `region/zone/subzone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load-balancing weight relative to the other endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account of the workload's sidecar, in the resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// What an endpoint address names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    Ip(IpAddr),
    /// A DNS name, resolved by the proxy.
    Dns,
    /// A Unix domain socket path (or `@abstract` name) after `unix://`.
    Unix,
}

impl WorkloadEntrySpec {
    /// What the address is, or `None` when it is absent or malformed.
    pub fn address_kind(&self) -> Option<AddressKind> {
        let addr = self.address.as_deref().filter(|a| !a.is_empty())?;
        address_error(addr).is_none().then(|| classify(addr))
    }
}

fn classify(addr: &str) -> AddressKind {
    if addr.starts_with(UNIX_PREFIX) {
        AddressKind::Unix
    } else if let Ok(ip) = addr.parse() {
        AddressKind::Ip(ip)
    } else {
        AddressKind::Dns
    }
}

/// Why `addr` is not an IP, a DNS name or a `unix://` socket, if it is not.
fn address_error(addr: &str) -> Option<String> {
    if addr.len() > 256 {
        return Some(format!(
            "address is longer than 256 characters (got {})",
            addr.len()
        ));
    }
    if addr.starts_with(UNIX_PREFIX) {
        return unix_socket_error(addr);
    }
    if addr.parse::<IpAddr>().is_ok() {
        return None;
    }
    if addr.contains('*') {
        return Some(format!(
            "address {addr:?} must be an IP, a fully qualified DNS name without wildcards, or unix:///path"
        ));
    }
    if !is_dns_name(addr) {
        return Some(format!(
            "address {addr:?} is not an IP address, a DNS name or a unix:// socket path"
        ));
    }
    None
}

/// Why `addr` (starting with `unix://`) is not a usable socket address, if it is not.
pub(crate) fn unix_socket_error(addr: &str) -> Option<String> {
    let path = addr.strip_prefix(UNIX_PREFIX).unwrap_or(addr);
    if !(path.starts_with('/') || path.starts_with('@')) {
        return Some(format!(
            "unix socket address {addr:?} must be an absolute path (unix:///path) or an abstract name (unix://@name)"
        ));
    }
    if path.ends_with('/') || path.len() < 2 {
        return Some(format!(
            "unix socket address {addr:?} names a directory, not a socket"
        ));
    }
    None
}

/// A DNS name: dot-separated RFC 1123 labels (case-insensitive), at most 253 characters.
pub(crate) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty() && name.len() <= 253 && name.to_ascii_lowercase().split('.').all(is_dns_label)
}

/// A Kubernetes port name in a WorkloadEntry port map: alphanumerics and `-`, at most 62.
fn port_name_error(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() < 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
    (!ok).then(|| {
        format!(
            "port name {name:?} is invalid: 1-62 letters, digits or '-', starting and ending with a letter or digit"
        )
    })
}

impl Validate for WorkloadEntrySpec {
    fn validate(&self, c: &mut Checker) {
        let address = self.address.as_deref().unwrap_or("");
        let network = self.network.as_deref().unwrap_or("");
        if address.is_empty() {
            if network.is_empty() {
                c.field("address", |c| {
                    c.error(
                        Code::MissingField,
                        "is required unless network is set (got neither)",
                    )
                });
            }
        } else {
            c.field("address", |c| {
                if let Some(msg) = address_error(address) {
                    let code = if address.starts_with(UNIX_PREFIX) {
                        Code::InvalidValue
                    } else {
                        Code::InvalidHost
                    };
                    c.error(code, msg);
                }
            });
            if address.starts_with(UNIX_PREFIX) && !self.ports.is_empty() {
                c.field("ports", |c| {
                    c.error(
                        Code::ConflictingFields,
                        format!("a unix socket address ({address}) cannot have ports"),
                    )
                });
            }
        }
        c.field("ports", |c| {
            for (name, port) in &self.ports {
                c.key(name, |c| {
                    if let Some(msg) = port_name_error(name) {
                        c.error(Code::InvalidValue, msg);
                    }
                    c.port(i64::from(*port));
                });
            }
        });
        c.field("labels", |c| c.labels(&self.labels));
        if !network.is_empty() {
            c.not_supported(
                "network",
                "Mizzen does not route across networks: the endpoint is reached directly at its address, and one without an address is not used",
            );
        }
        c.opt(
            "serviceAccount",
            self.service_account.as_ref(),
            |c, sa: &String| {
                if !is_dns_name(sa) || sa.bytes().any(|b| b.is_ascii_uppercase()) {
                    c.error(
                        Code::InvalidValue,
                        format!(
                            "service account {sa:?} is not a valid Kubernetes name (lowercase DNS subdomain)"
                        ),
                    );
                }
            },
        );
    }
}

impl Normalize for WorkloadEntrySpec {}

/// Istio's networking `WorkloadSelector`, written `labels:` (not `matchLabels:`), as used by
/// `Sidecar` and `ServiceEntry`. Selects pods and WorkloadEntries in the resource's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadLabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl WorkloadLabelSelector {
    /// True when every label of the selector is present on `labels` with the same value.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl Validate for WorkloadLabelSelector {
    fn validate(&self, c: &mut Checker) {
        if self.labels.is_empty() {
            c.warn(
                Code::InvalidSelector,
                "has no labels, so it selects every workload in the namespace",
            );
        }
        c.field("labels", |c| c.labels(&self.labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    fn parse(yaml: &str) -> WorkloadEntrySpec {
        crate::testing::parse(yaml)
    }

    fn codes(p: &[Problem]) -> Vec<(&str, Code)> {
        crate::testing::codes(p)
    }

    const VM: &str = r#"
serviceAccount: details-legacy
address: 2.2.2.2
ports:
  http: 8080
labels:
  app: details-legacy
  instance-id: vm1
network: vpc-1
locality: us-east1/us-east1-b
weight: 3
"#;

    #[test]
    fn parses_and_round_trips_every_field() {
        let spec = parse(VM);
        assert_eq!(spec.address.as_deref(), Some("2.2.2.2"));
        assert_eq!(spec.ports["http"], 8080);
        assert_eq!(spec.weight, Some(3));
        assert_eq!(
            spec.address_kind(),
            Some(AddressKind::Ip("2.2.2.2".parse().unwrap()))
        );
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["serviceAccount"], "details-legacy");
        let back: WorkloadEntrySpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
        assert_eq!(
            codes(&validate_spec(&spec)),
            [("spec.network", Code::NotSupported)]
        );
    }

    #[test]
    fn whole_resource_parses() {
        let we: WorkloadEntry = serde_saphyr::from_str(
            "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata:\n  name: vm1\n  namespace: bookinfo\nspec:\n  address: vm1.vpc01.corp.net\n",
        )
        .unwrap();
        assert_eq!(we.spec.address_kind(), Some(AddressKind::Dns));
        assert_eq!(we.metadata.namespace.as_deref(), Some("bookinfo"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_saphyr::from_str::<WorkloadEntrySpec>("adress: 1.1.1.1").is_err());
    }

    #[test]
    fn address_or_network_is_required() {
        let p = validate_spec(&WorkloadEntrySpec::default());
        assert_eq!(codes(&p), [("spec.address", Code::MissingField)]);
        let only_network = parse("network: cluster-2\nserviceAccount: foo");
        assert_eq!(
            codes(&validate_spec(&only_network)),
            [("spec.network", Code::NotSupported)]
        );
    }

    #[test]
    fn addresses_must_be_ip_dns_or_unix() {
        for ok in [
            "10.0.0.1",
            "2001:db8::1",
            "vm1.corp.net",
            "unix:///var/run/app.sock",
            "unix://@abstract",
        ] {
            let spec = WorkloadEntrySpec {
                address: Some(ok.into()),
                ..Default::default()
            };
            assert!(validate_spec(&spec).is_empty(), "{ok}");
        }
        for (bad, code) in [
            ("*.corp.net", Code::InvalidHost),
            ("under_score.net", Code::InvalidHost),
            ("unix://relative.sock", Code::InvalidValue),
            ("unix:///var/run/", Code::InvalidValue),
        ] {
            let spec = WorkloadEntrySpec {
                address: Some(bad.into()),
                ..Default::default()
            };
            let p = validate_spec(&spec);
            assert_eq!(codes(&p), [("spec.address", code)], "{bad}");
            assert!(p[0].message.contains(bad), "{}", p[0].message);
        }
    }

    #[test]
    fn unix_socket_cannot_have_ports() {
        let p = validate_spec(&parse("address: unix:///sock\nports:\n  http: 80"));
        assert_eq!(codes(&p), [("spec.ports", Code::ConflictingFields)]);
    }

    #[test]
    fn port_values_and_names() {
        let p = validate_spec(&parse(
            "address: 1.1.1.1\nports:\n  http: 0\n  grpc: 65536\n  -bad: 80",
        ));
        assert_eq!(
            codes(&p),
            [
                ("spec.ports[-bad]", Code::InvalidValue),
                ("spec.ports[grpc]", Code::InvalidPort),
                ("spec.ports[http]", Code::InvalidPort),
            ]
        );
        assert!(p[1].message.contains("65536"));
    }

    #[test]
    fn labels_and_service_account() {
        let p = validate_spec(&parse(
            "address: 1.1.1.1\nlabels:\n  app: \"bad value\"\nserviceAccount: Not_Valid",
        ));
        assert_eq!(
            codes(&p),
            [
                ("spec.labels[app]", Code::InvalidSelector),
                ("spec.serviceAccount", Code::InvalidValue),
            ]
        );
    }

    #[test]
    fn network_is_reported_as_ignored_and_locality_is_used() {
        let p = validate_spec(&parse(
            "address: 10.0.0.1\nnetwork: vpc-1\nlocality: us-east1/us-east1-b",
        ));
        let verdicts = crate::testing::verdicts(&p);
        assert_eq!(
            verdicts,
            [("spec.network", Severity::Warn, Code::NotSupported)]
        );
        assert!(
            p[0].message.contains("without an address"),
            "{}",
            p[0].message
        );
        // Empty values say nothing, and the fields Mizzen uses are quiet.
        assert!(
            validate_spec(&parse(
                "address: 10.0.0.1\nnetwork: ''\nlocality: ''\nweight: 2\nserviceAccount: vm\nlabels:\n  app: vm"
            ))
            .is_empty()
        );
    }

    #[test]
    fn label_selector_matches_and_validates() {
        let sel: WorkloadLabelSelector = serde_saphyr::from_str("labels:\n  app: ratings").unwrap();
        assert!(sel.matches(&[("app".into(), "ratings".into())].into()));
        assert!(!sel.matches(&BTreeMap::new()));
        assert!(serde_saphyr::from_str::<WorkloadLabelSelector>("matchLabels: {}").is_err());
        let mut c = Checker::new("spec.workloadSelector");
        WorkloadLabelSelector::default().validate(&mut c);
        let p = c.into_problems();
        assert_eq!(
            codes(&p),
            [("spec.workloadSelector", Code::InvalidSelector)]
        );
        assert!(!p[0].is_error());
    }
}
