//! `ServiceEntry`: adds services to the mesh's registry — external APIs, VMs, anything the
//! platform registry does not know — with their ports, resolution and endpoints.

use std::{collections::BTreeMap, net::IpAddr};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workload_entry::{AddressKind, UNIX_PREFIX, WorkloadEntrySpec, WorkloadLabelSelector};
use crate::{
    Normalize,
    selector::is_dns_label,
    validate::{Checker, Code, Validate},
};

/// A service entry: hosts, optional virtual IPs, ports, where it lives and how its endpoints
/// are found.
// Clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    plural = "serviceentries",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "se",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.hosts"),
    printcolumn(name = "Location", type_ = "string", json_path = ".spec.location"),
    printcolumn(name = "Resolution", type_ = "string", json_path = ".spec.resolution"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// DNS names of the service, optionally with a `*.` wildcard prefix; matched against the
    /// HTTP authority or TLS SNI.
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR ranges of the service; traffic to them is attributed to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Inside the mesh (mTLS, identities) or outside it. `MESH_EXTERNAL` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How the proxy finds endpoint addresses. `NONE` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// The service's endpoints; excludes `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Select pods and WorkloadEntries of this namespace as endpoints (`MESH_INTERNAL` only);
    /// excludes `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabelSelector>,
    /// Namespaces that see the service: `.`, `*`, `~` (none) or namespace names. All when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Names accepted in the server certificate's subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// One port of the service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`, `HTTP2`, `MONGO`, `TCP`, `TLS`, `UDP`, `REDIS` or
    /// `MYSQL` (any case); detected from the traffic when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port name, unique within the entry; endpoint port maps refer to it.
    pub name: String,
    /// Port on the endpoints; `number` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Port protocols a ServiceEntry may declare, in Istio's canonical spelling.
pub const SERVICE_PROTOCOLS: [&str; 11] = [
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "UDP", "REDIS", "MYSQL",
];

impl ServicePort {
    /// The protocol in canonical upper case, or `None` when unset or unknown.
    pub fn known_protocol(&self) -> Option<&'static str> {
        let p = self.protocol.as_deref()?;
        SERVICE_PROTOCOLS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(p))
            .copied()
    }

    /// The endpoint port traffic to this service port goes to.
    pub fn effective_target_port(&self) -> u32 {
        self.target_port.unwrap_or(self.number)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no mesh mTLS towards it.
    #[default]
    MeshExternal,
    /// Part of the mesh (e.g. VMs with a sidecar).
    MeshInternal,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MeshExternal => "MESH_EXTERNAL",
            Self::MeshInternal => "MESH_INTERNAL",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the destination address the connection was already sent to.
    #[default]
    None,
    /// Use the IP addresses of the endpoints.
    Static,
    /// Resolve the endpoints' (or hosts') names and balance over every address returned.
    Dns,
    /// Resolve names and connect to the first address returned.
    DnsRoundRobin,
    /// Resolve the name the client asked for (Host header or SNI) under wildcard hosts.
    DynamicDns,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Static => "STATIC",
            Self::Dns => "DNS",
            Self::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Self::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

impl Normalize for ServiceEntrySpec {}

/// An IP address or CIDR range: `Ok(true)` for a CIDR, `Ok(false)` for a plain IP.
fn parse_address(addr: &str) -> Result<bool, String> {
    match addr.split_once('/') {
        None => addr
            .parse::<IpAddr>()
            .map(|_| false)
            .map_err(|_| format!("address must be an IP address or a CIDR range (got {addr:?})")),
        Some((ip, bits)) => {
            let ip: IpAddr = ip.parse().map_err(|_| {
                format!("address must be an IP address or a CIDR range (got {addr:?})")
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match bits.parse::<u8>() {
                Ok(b) if b <= max => Ok(true),
                _ => Err(format!("CIDR prefix length must be 0-{max} (got {addr:?})")),
            }
        }
    }
}

impl Validate for ServiceEntrySpec {
    fn validate(&self, c: &mut Checker) {
        let resolution = self.resolution.unwrap_or_default();
        let location = self.location.unwrap_or_default();

        self.validate_hosts(c, resolution);

        c.each("addresses", &self.addresses, |c, a| match parse_address(a) {
            Err(msg) => c.error(Code::InvalidValue, msg),
            Ok(true) if !matches!(resolution, Resolution::None | Resolution::Static) => c.error(
                Code::ConflictingFields,
                format!(
                    "CIDR addresses need resolution NONE or STATIC (resolution is {}, address {a:?})",
                    resolution.as_str()
                ),
            ),
            Ok(_) => {}
        });

        self.validate_ports(c);

        if !self.endpoints.is_empty() && self.workload_selector.is_some() {
            c.error(
                Code::ConflictingFields,
                "only one of endpoints or workloadSelector may be set",
            );
        }
        self.validate_endpoints(c, resolution);
        c.opt(
            "workloadSelector",
            self.workload_selector.as_ref(),
            |c, s| s.validate(c),
        );

        if resolution == Resolution::DynamicDns && location != Location::MeshExternal {
            c.field("location", |c| {
                c.error(
                    Code::ConflictingFields,
                    format!(
                        "resolution DYNAMIC_DNS is only supported for MESH_EXTERNAL services (location is {})",
                        location.as_str()
                    ),
                )
            });
        }

        c.export_to(&self.export_to, true);
        c.each("subjectAltNames", &self.subject_alt_names, |c, san| {
            if san.is_empty() {
                c.error(
                    Code::InvalidValue,
                    "subject alternative name must not be empty",
                );
            } else if !san.starts_with("spiffe://") {
                c.warn(
                    Code::InvalidValue,
                    format!(
                        "`{san}` is not a SPIFFE id: mesh certificates carry SPIFFE ids only, so it matches no endpoint reached over mesh mTLS"
                    ),
                );
            }
        });
    }
}

impl ServiceEntrySpec {
    fn validate_hosts(&self, c: &mut Checker, resolution: Resolution) {
        if self.hosts.is_empty() {
            c.field("hosts", |c| {
                c.error(Code::MissingField, "a ServiceEntry needs at least one host")
            });
        }
        let resolves_hosts = matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
            && self.endpoints.is_empty();
        c.each("hosts", &self.hosts, |c, h| {
            if h == "*" {
                c.error(
                    Code::InvalidHost,
                    "a ServiceEntry host cannot be \"*\" alone: name the service or use a wildcard such as *.example.com",
                );
                return;
            }
            c.host(h);
            let wildcard = h.starts_with('*');
            if resolves_hosts && wildcard {
                c.error(
                    Code::InvalidHost,
                    format!(
                        "resolution {} without endpoints resolves the hosts themselves, so host {h:?} cannot be a wildcard",
                        resolution.as_str()
                    ),
                );
            }
            if resolution == Resolution::DynamicDns && !wildcard {
                c.error(
                    Code::InvalidHost,
                    format!("resolution DYNAMIC_DNS needs wildcard hosts such as *.example.com (got {h:?})"),
                );
            }
        });
    }

    fn validate_ports(&self, c: &mut Checker) {
        c.field("ports", |c| {
            let mut names: BTreeMap<&str, usize> = BTreeMap::new();
            let mut numbers: BTreeMap<u32, usize> = BTreeMap::new();
            for (i, port) in self.ports.iter().enumerate() {
                c.index(i, |c| {
                    c.field("number", |c| {
                        c.port(i64::from(port.number));
                        if let Some(first) = numbers.insert(port.number, i) {
                            c.error(
                                Code::InvalidPort,
                                format!("port {} is already declared by ports[{first}]", port.number),
                            );
                        }
                    });
                    if port.known_protocol() == Some("UDP") {
                        c.not_supported(
                            "protocol",
                            "Mizzen's proxy carries TCP only; this UDP port is not served",
                        );
                    }
                    if let Some(p) = &port.protocol
                        && port.known_protocol().is_none()
                    {
                        c.field("protocol", |c| {
                            c.error(
                                Code::UnknownEnumValue,
                                format!(
                                    "unknown protocol {p:?}: use one of {}",
                                    SERVICE_PROTOCOLS.join(", ")
                                ),
                            )
                        });
                    }
                    if port.name.is_empty() {
                        c.require("name", false);
                    } else {
                        c.field("name", |c| {
                            if !is_dns_label(&port.name) {
                                c.error(
                                    Code::InvalidValue,
                                    format!(
                                        "port name {:?} must be a DNS label: at most 63 lowercase letters, digits or '-'",
                                        port.name
                                    ),
                                );
                            }
                            if let Some(first) = names.insert(&port.name, i) {
                                c.error(
                                    Code::InvalidPort,
                                    format!(
                                        "port name {:?} is already used by ports[{first}]",
                                        port.name
                                    ),
                                );
                            }
                        });
                    }
                    c.opt("targetPort", port.target_port.as_ref(), |c, t| {
                        c.port(i64::from(*t))
                    });
                });
            }
        });
    }

    fn validate_endpoints(&self, c: &mut Checker, resolution: Resolution) {
        match resolution {
            Resolution::None if !self.endpoints.is_empty() => c.field("endpoints", |c| {
                c.warn(
                    Code::ConflictingFields,
                    "endpoints are ignored with resolution NONE, which forwards to the address the client dialled: use STATIC or DNS to route to them",
                )
            }),
            Resolution::DynamicDns if !self.endpoints.is_empty() => c.field("endpoints", |c| {
                c.warn(
                    Code::ConflictingFields,
                    "endpoints are ignored with resolution DYNAMIC_DNS, which resolves the requested name",
                )
            }),
            Resolution::Static if self.endpoints.is_empty() && self.workload_selector.is_none() => {
                c.field("endpoints", |c| {
                    c.error(
                        Code::MissingField,
                        "resolution STATIC needs endpoints with IP addresses (or a workloadSelector)",
                    )
                })
            }
            Resolution::DnsRoundRobin if self.endpoints.len() > 1 => c.field("endpoints", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "resolution DNS_ROUND_ROBIN allows at most one endpoint (got {})",
                        self.endpoints.len()
                    ),
                )
            }),
            _ => {}
        }

        let port_names: Vec<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();
        let mut unix_endpoints = false;
        c.each("endpoints", &self.endpoints, |c, ep| {
            ep.validate(c);
            let kind = ep.address_kind();
            unix_endpoints |= kind == Some(AddressKind::Unix);
            match (resolution, kind) {
                (Resolution::Static, Some(AddressKind::Dns)) => c.field("address", |c| {
                    c.error(
                        Code::InvalidValue,
                        format!(
                            "resolution STATIC needs an IP address or unix:// socket, not a DNS name (got {:?}): use resolution DNS",
                            ep.address.as_deref().unwrap_or_default()
                        ),
                    )
                }),
                (Resolution::Dns | Resolution::DnsRoundRobin, Some(AddressKind::Unix)) => {
                    c.field("address", |c| {
                        c.error(
                            Code::InvalidValue,
                            format!(
                                "resolution {} cannot resolve a unix socket address (got {:?})",
                                resolution.as_str(),
                                ep.address.as_deref().unwrap_or_default()
                            ),
                        )
                    })
                }
                _ => {}
            }
            c.field("ports", |c| {
                for name in ep.ports.keys() {
                    if !port_names.contains(&name.as_str()) {
                        c.key(name, |c| {
                            c.error(
                                Code::InvalidPort,
                                format!(
                                    "endpoint port {name:?} is not a port name of this ServiceEntry (its ports are {port_names:?})"
                                ),
                            )
                        });
                    }
                }
            });
        });
        if unix_endpoints && self.ports.len() != 1 {
            c.field("ports", |c| {
                c.error(
                    Code::InvalidPort,
                    format!(
                        "endpoints with a unix socket address ({UNIX_PREFIX}...) need exactly one service port (got {})",
                        self.ports.len()
                    ),
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    fn spec(yaml: &str) -> ServiceEntrySpec {
        crate::testing::parse(yaml)
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        validate_spec(&spec(yaml))
    }

    fn codes(p: &[Problem]) -> Vec<(&str, Code)> {
        crate::testing::codes(p)
    }

    const EXTERNAL_HTTPS: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-svc-https
spec:
  hosts:
  - api.dropboxapi.com
  - www.googleapis.com
  location: MESH_EXTERNAL
  ports:
  - number: 443
    name: https
    protocol: TLS
  resolution: DNS
"#;

    const VMS: &str = r#"
hosts:
- mymongodb.somedomain
addresses:
- 192.192.192.192/24
ports:
- number: 27018
  name: mongodb
  protocol: MONGO
  targetPort: 27017
location: MESH_INTERNAL
resolution: STATIC
endpoints:
- address: 2.2.2.2
  ports:
    mongodb: 27019
  labels:
    version: v1
  network: vpc-1
  locality: us-east1/us-east1-b
  weight: 2
  serviceAccount: mongo
- address: 3.3.3.3
exportTo: [".", "~"]
subjectAltNames:
- spiffe://cluster.local/ns/db/sa/mongo
"#;

    #[test]
    fn whole_resource_parses_round_trips_and_validates() {
        let se: ServiceEntry = serde_saphyr::from_str(EXTERNAL_HTTPS).unwrap();
        assert_eq!(se.spec.resolution, Some(Resolution::Dns));
        assert_eq!(se.spec.ports[0].known_protocol(), Some("TLS"));
        let json = serde_json::to_value(&se).unwrap();
        assert_eq!(json["spec"]["location"], "MESH_EXTERNAL");
        let back: ServiceEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back, se);
        assert!(validate_spec(&se.spec).is_empty());
    }

    #[test]
    fn every_field_round_trips_and_validates_except_the_none_export_and_what_mizzen_ignores() {
        let s = spec(VMS);
        assert_eq!(s.endpoints[0].ports["mongodb"], 27019);
        assert_eq!(s.ports[0].effective_target_port(), 27017);
        assert_eq!(s.location, Some(Location::MeshInternal));
        let back: ServiceEntrySpec =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // "~" must stand alone; the rest is what Mizzen does not implement.
        assert_eq!(
            codes(&validate_spec(&s)),
            [
                ("spec.endpoints[0].network", Code::NotSupported),
                ("spec.exportTo", Code::ConflictingFields),
            ]
        );
        let alone = ServiceEntrySpec {
            export_to: vec!["~".into()],
            ..s
        };
        assert!(
            validate_spec(&alone)
                .iter()
                .all(|p| p.code == Code::NotSupported)
        );
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        assert!(serde_saphyr::from_str::<ServiceEntrySpec>("hosts: [a]\nresolve: DNS").is_err());
        assert!(
            serde_saphyr::from_str::<ServiceEntrySpec>("hosts: [a]\nresolution: LOGICAL_DNS")
                .is_err()
        );
        assert!(
            serde_saphyr::from_str::<ServiceEntrySpec>(
                "hosts: [a]\nworkloadSelector:\n  matchLabels: {}"
            )
            .is_err()
        );
    }

    #[test]
    fn hosts_are_required_valid_and_not_star() {
        assert_eq!(
            codes(&problems("hosts: []")),
            [("spec.hosts", Code::MissingField)]
        );
        let p = problems("hosts: ['*', 'a.*.b', '*.example.com']");
        assert_eq!(
            codes(&p),
            [
                ("spec.hosts[0]", Code::InvalidHost),
                ("spec.hosts[1]", Code::InvalidHost)
            ]
        );
    }

    #[test]
    fn addresses_are_ips_or_cidrs() {
        assert!(
            problems("hosts: [a.b]\naddresses: [10.0.0.1, 10.1.0.0/16, 'fd00::/8']").is_empty()
        );
        let p = problems("hosts: [a.b]\naddresses: [10.0.0, 10.0.0.0/33, 'unix:///sock']");
        assert_eq!(
            codes(&p),
            [
                ("spec.addresses[0]", Code::InvalidValue),
                ("spec.addresses[1]", Code::InvalidValue),
                ("spec.addresses[2]", Code::InvalidValue),
            ]
        );
        assert!(p[1].message.contains("10.0.0.0/33"));
        let p = problems("hosts: [a.b]\naddresses: [10.1.0.0/16]\nresolution: DNS");
        assert_eq!(codes(&p), [("spec.addresses[0]", Code::ConflictingFields)]);
    }

    #[test]
    fn ports_are_valid_unique_and_of_known_protocols() {
        let p = problems(
            "hosts: [a.b]\nports:\n- number: 80\n  name: http\n  protocol: http\n- number: 80\n  name: http\n  protocol: QUIC\n- number: 0\n  name: Bad_Name\n  targetPort: 70000\n- number: 81\n  name: ''",
        );
        assert_eq!(
            codes(&p),
            [
                ("spec.ports[1].number", Code::InvalidPort),
                ("spec.ports[1].protocol", Code::UnknownEnumValue),
                ("spec.ports[1].name", Code::InvalidPort),
                ("spec.ports[2].number", Code::InvalidPort),
                ("spec.ports[2].name", Code::InvalidValue),
                ("spec.ports[2].targetPort", Code::InvalidPort),
                ("spec.ports[3].name", Code::MissingField),
            ]
        );
        assert_eq!(p[0].message, "port 80 is already declared by ports[0]");
        assert!(p[1].message.contains("QUIC"));
        assert_eq!(
            p[2].message,
            "port name \"http\" is already used by ports[0]"
        );
    }

    #[test]
    fn static_resolution_needs_ip_endpoints_or_a_selector() {
        let p = problems("hosts: [a.b]\nresolution: STATIC");
        assert_eq!(codes(&p), [("spec.endpoints", Code::MissingField)]);
        assert!(
            problems("hosts: [a.b]\nresolution: STATIC\nlocation: MESH_INTERNAL\nworkloadSelector:\n  labels:\n    app: vm")
                .is_empty()
        );
        let p = problems("hosts: [a.b]\nresolution: STATIC\nendpoints:\n- address: vm1.corp.net");
        assert_eq!(
            codes(&p),
            [("spec.endpoints[0].address", Code::InvalidValue)]
        );
        assert!(p[0].message.contains("vm1.corp.net"));
    }

    #[test]
    fn endpoints_and_selector_are_exclusive() {
        let p = problems(
            "hosts: [a.b]\nresolution: STATIC\nendpoints:\n- address: 1.1.1.1\nworkloadSelector:\n  labels:\n    app: x",
        );
        assert_eq!(codes(&p), [("spec", Code::ConflictingFields)]);
    }

    #[test]
    fn none_resolution_with_endpoints_warns() {
        let p = problems("hosts: [a.b]\nendpoints:\n- address: 1.1.1.1");
        assert_eq!(codes(&p), [("spec.endpoints", Code::ConflictingFields)]);
        assert_eq!(p[0].severity, Severity::Warn);
    }

    #[test]
    fn dns_resolution_of_wildcard_hosts_needs_endpoints() {
        let p = problems("hosts: ['*.example.com', api.example.com]\nresolution: DNS");
        assert_eq!(codes(&p), [("spec.hosts[0]", Code::InvalidHost)]);
        assert!(p[0].message.contains("*.example.com"));
        assert!(
            problems("hosts: ['*.example.com']\nresolution: DNS\nendpoints:\n- address: egress.example.com")
                .is_empty()
        );
        let p = problems(
            "hosts: [a.b]\nresolution: DNS_ROUND_ROBIN\nendpoints:\n- address: x.b\n- address: y.b",
        );
        assert_eq!(codes(&p), [("spec.endpoints", Code::InvalidValue)]);
    }

    #[test]
    fn dynamic_dns_needs_external_wildcard_hosts() {
        assert!(problems("hosts: ['*.example.com']\nresolution: DYNAMIC_DNS").is_empty());
        let p =
            problems("hosts: [a.example.com]\nresolution: DYNAMIC_DNS\nlocation: MESH_INTERNAL");
        assert_eq!(
            codes(&p),
            [
                ("spec.hosts[0]", Code::InvalidHost),
                ("spec.location", Code::ConflictingFields)
            ]
        );
    }

    #[test]
    fn endpoint_ports_name_service_ports_and_unix_sockets_need_one_port() {
        let p = problems(
            "hosts: [a.b]\nresolution: STATIC\nports:\n- number: 80\n  name: http\nendpoints:\n- address: 1.1.1.1\n  ports:\n    grpc: 9090",
        );
        assert_eq!(
            codes(&p),
            [("spec.endpoints[0].ports[grpc]", Code::InvalidPort)]
        );
        let p = problems(
            "hosts: [a.b]\nresolution: STATIC\nports:\n- number: 80\n  name: http\n- number: 81\n  name: admin\nendpoints:\n- address: unix:///var/run/app.sock",
        );
        assert_eq!(codes(&p), [("spec.ports", Code::InvalidPort)]);
        let p = problems(
            "hosts: [a.b]\nresolution: DNS\nports:\n- number: 80\n  name: http\nendpoints:\n- address: unix:///var/run/app.sock",
        );
        assert_eq!(
            codes(&p),
            [("spec.endpoints[0].address", Code::InvalidValue)]
        );
    }

    #[test]
    fn fields_mizzen_ignores_are_reported() {
        let p = problems(
            "hosts: [dns.corp]\nlocation: MESH_INTERNAL\nresolution: STATIC\nports:\n- number: 53\n  name: dns\n  protocol: udp\n- number: 5353\n  name: dns-tcp\n  protocol: TCP\nendpoints:\n- address: 10.0.0.1\n  network: vpc-1\n  locality: us-east1/us-east1-b\n- address: 10.0.0.2\nsubjectAltNames: [spiffe://corp/ns/dns/sa/dns]",
        );
        let verdicts = crate::testing::verdicts(&p);
        assert_eq!(
            verdicts,
            [
                ("spec.ports[0].protocol", Severity::Warn, Code::NotSupported),
                (
                    "spec.endpoints[0].network",
                    Severity::Warn,
                    Code::NotSupported
                ),
            ]
        );
        assert!(p[0].message.contains("UDP"), "{}", p[0].message);
        // A name that is not a SPIFFE id can match no mesh certificate.
        let named = problems(
            "hosts: [vm.corp]\nlocation: MESH_INTERNAL\nresolution: STATIC\nports:\n- number: 80\n  name: http\nendpoints:\n- address: 10.0.0.1\nsubjectAltNames: [spiffe://corp/ns/vm/sa/vm, vm.corp]",
        );
        assert_eq!(
            crate::testing::verdicts(&named),
            [(
                "spec.subjectAltNames[1]",
                Severity::Warn,
                Code::InvalidValue
            )]
        );
        assert!(named[0].message.starts_with("`vm.corp` is not a SPIFFE id"));
        // Without them, nothing is reported.
        assert!(
            problems(
                "hosts: [dns.corp]\nlocation: MESH_INTERNAL\nresolution: STATIC\nports:\n- number: 53\n  name: dns-tcp\n  protocol: TCP\nendpoints:\n- address: 10.0.0.1\n  serviceAccount: dns\n  weight: 2"
            )
            .is_empty()
        );
    }

    #[test]
    fn endpoints_are_checked_as_workload_entries() {
        let p = problems("hosts: [a.b]\nresolution: STATIC\nendpoints:\n- labels:\n    app: x");
        assert_eq!(
            codes(&p),
            [("spec.endpoints[0].address", Code::MissingField)]
        );
    }
}
