//! `Sidecar`: narrows what a workload's proxy listens on and which services it can reach,
//! instead of every port and every service in the mesh.

use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    destination_rule::ConnectionPoolSettings,
    gateway::{ServerPort, ServerTlsMode, ServerTlsSettings},
    service_entry::SERVICE_PROTOCOLS,
    virtual_service::Destination,
    workload_entry::{UNIX_PREFIX, WorkloadLabelSelector, unix_socket_error},
};
use crate::{
    Normalize,
    selector::is_dns_label,
    validate::{Checker, Code, Validate, host_error},
};

/// Listener and reachability settings for the proxies of the selected workloads (all of the
/// namespace without a selector).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Sidecar",
    plural = "sidecars",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// The workloads (pods, VMs) of this namespace the Sidecar applies to, by `labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabelSelector>,
    /// Inbound listeners; derived from the workload's services when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and the hosts they expose; every visible service when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// What happens to traffic for destinations that are not in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Limits on connections the proxy accepts for the workload (all inbound ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
}

/// An inbound listener: a port on the proxy forwarded to the application.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    /// The port the listener accepts traffic on (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<ServerPort>,
    /// IP address to bind to; chosen from the workload's addresses when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where to forward: `127.0.0.1:PORT`, `[::1]:PORT`, `0.0.0.0:PORT`, `[::]:PORT` or
    /// `unix:///path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// Terminate TLS from clients outside the mesh on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Limits on connections accepted on this port (overrides `inboundConnectionPool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener and the services it makes reachable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// Listener port (0 with a `unix://` bind); ports come from the hosts when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<ServerPort>,
    /// IP address or `unix://` socket to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Hosts exposed, as `namespace/dnsName`: namespace `*`, `.`, `~` or a name; dnsName `*`,
    /// `*.suffix` or an FQDN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// How traffic reaches a listener bound to an IP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// Whatever the environment captures with.
    #[default]
    Default,
    /// Redirected by iptables.
    Iptables,
    /// Not captured: the application connects to the listener itself.
    None,
}

/// Outbound traffic to unknown destinations: blocked, or passed through (optionally via a
/// proxy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// `REGISTRY_ONLY` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficMode>,
    /// With `ALLOW_ANY`, send unknown traffic to this service instead of its original
    /// destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Only destinations in the service registry are reachable.
    #[default]
    RegistryOnly,
    /// Unknown destinations are passed through.
    AllowAny,
}

impl Normalize for SidecarSpec {}

impl Validate for SidecarSpec {
    fn validate(&self, c: &mut Checker) {
        if self.ingress.is_empty()
            && self.egress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            c.error(
                Code::MissingField,
                "a Sidecar must set at least one of ingress, egress, outboundTrafficPolicy or inboundConnectionPool",
            );
        }
        c.opt(
            "workloadSelector",
            self.workload_selector.as_ref(),
            |c, s| s.validate(c),
        );
        self.validate_ingress(c);
        if !self.ingress.is_empty() {
            c.not_supported(
                "ingress",
                "Mizzen's sidecar forwards inbound traffic to the port it arrived on, on loopback; Sidecar ingress listeners are not applied",
            );
        }
        self.validate_egress(c);
        c.opt(
            "outboundTrafficPolicy",
            self.outbound_traffic_policy.as_ref(),
            |c, p| p.validate(c),
        );
        c.opt(
            "inboundConnectionPool",
            self.inbound_connection_pool.as_ref(),
            |c, p| {
                p.validate(c);
                c.warn(
                    Code::NotSupported,
                    "Mizzen's sidecar does not limit the connections it accepts for the workload; inboundConnectionPool has no effect",
                );
            },
        );
    }
}

impl SidecarSpec {
    fn validate_ingress(&self, c: &mut Checker) {
        c.field("ingress", |c| {
            let mut ports: BTreeMap<u32, usize> = BTreeMap::new();
            for (i, l) in self.ingress.iter().enumerate() {
                c.index(i, |c| {
                    l.validate(c);
                    if let Some(port) = &l.port
                        && let Some(first) = ports.insert(port.number, i)
                    {
                        c.field("port", |c| {
                            c.field("number", |c| {
                                c.error(
                                    Code::InvalidPort,
                                    format!(
                                        "port {} is already used by ingress[{first}]",
                                        port.number
                                    ),
                                )
                            })
                        });
                    }
                });
            }
        });
    }

    fn validate_egress(&self, c: &mut Checker) {
        c.field("egress", |c| {
            let mut catch_all: Option<usize> = None;
            let mut ports: BTreeMap<u32, usize> = BTreeMap::new();
            let mut sockets: BTreeMap<&str, usize> = BTreeMap::new();
            let last = self.egress.len().saturating_sub(1);
            for (i, l) in self.egress.iter().enumerate() {
                c.index(i, |c| {
                    l.validate(c);
                    match &l.port {
                        None => {
                            if let Some(first) = catch_all {
                                c.error(
                                    Code::ConflictingFields,
                                    format!("only one egress listener may leave out port (egress[{first}] already does)"),
                                );
                            } else {
                                catch_all = Some(i);
                                if i != last {
                                    c.error(
                                        Code::InvalidValue,
                                        "the egress listener without a port must be the last one",
                                    );
                                }
                            }
                        }
                        Some(port) if port.number == 0 => {
                            let bind = l.bind.as_deref().unwrap_or_default();
                            if let Some(first) = sockets.insert(bind, i) {
                                c.field("bind", |c| {
                                    c.error(
                                        Code::InvalidValue,
                                        format!("unix socket {bind:?} is already bound by egress[{first}]"),
                                    )
                                });
                            }
                        }
                        Some(port) => {
                            if let Some(first) = ports.insert(port.number, i) {
                                c.field("port", |c| {
                                    c.field("number", |c| {
                                        c.error(
                                            Code::InvalidPort,
                                            format!(
                                                "port {} is already used by egress[{first}]",
                                                port.number
                                            ),
                                        )
                                    })
                                });
                            }
                        }
                    }
                });
            }
        });
    }
}

/// Checks a listener port: number (0 allowed only when `unix_ok`), protocol and name.
fn check_port(c: &mut Checker, port: &ServerPort, unix_ok: bool) {
    c.field("port", |c| {
        c.field("number", |c| {
            if !(unix_ok && port.number == 0) {
                c.port(i64::from(port.number));
            }
        });
        if !port.protocol.is_empty()
            && !SERVICE_PROTOCOLS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&port.protocol))
        {
            c.field("protocol", |c| {
                c.error(
                    Code::UnknownEnumValue,
                    format!(
                        "unknown protocol {:?}: use one of {}",
                        port.protocol,
                        SERVICE_PROTOCOLS.join(", ")
                    ),
                )
            });
        }
        if !port.name.is_empty() && !is_dns_label(&port.name) {
            c.field("name", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "port name {:?} must be a DNS label: at most 63 lowercase letters, digits or '-'",
                        port.name
                    ),
                )
            });
        }
        if port.target_port.is_some() {
            c.field("targetPort", |c| {
                c.warn(
                    Code::Deprecated,
                    "targetPort is ignored on a Sidecar listener; the listener uses number",
                )
            });
        }
    });
}

fn check_ip_bind(c: &mut Checker, bind: &str) {
    if bind.parse::<std::net::IpAddr>().is_err() {
        c.field("bind", |c| {
            c.error(
                Code::InvalidValue,
                format!("bind must be an IP address (got {bind:?})"),
            )
        });
    }
}

impl Validate for IstioIngressListener {
    fn validate(&self, c: &mut Checker) {
        match &self.port {
            None => c.require("port", false),
            Some(port) => check_port(c, port, false),
        }
        if let Some(bind) = &self.bind {
            check_ip_bind(c, bind);
        }
        match self.default_endpoint.as_deref() {
            None | Some("") => c.field("defaultEndpoint", |c| {
                c.error(
                    Code::MissingField,
                    "an ingress listener needs a defaultEndpoint such as 127.0.0.1:8080",
                )
            }),
            Some(ep) => c.field("defaultEndpoint", |c| check_default_endpoint(c, ep)),
        }
        c.opt("tls", self.tls.as_ref(), |c, tls| {
            tls.validate(c);
            let mode = tls.mode.unwrap_or_default();
            if matches!(
                mode,
                ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
            ) {
                c.field("mode", |c| {
                    c.error(
                        Code::InvalidValue,
                        format!(
                            "mode {} cannot be used on a Sidecar ingress listener",
                            mode.as_str()
                        ),
                    )
                });
            }
            if tls.https_redirect == Some(true) {
                c.field("httpsRedirect", |c| {
                    c.error(
                        Code::InvalidValue,
                        "httpsRedirect is not supported on a Sidecar ingress listener",
                    )
                });
            }
            if let Some(port) = &self.port
                && !["HTTPS", "TLS"]
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&port.protocol))
            {
                c.error(
                    Code::ConflictingFields,
                    format!(
                        "tls settings need port protocol HTTPS or TLS (got {:?})",
                        port.protocol
                    ),
                );
            }
        });
        c.opt("connectionPool", self.connection_pool.as_ref(), |c, p| {
            p.validate(c)
        });
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or `unix:///path`.
fn check_default_endpoint(c: &mut Checker, ep: &str) {
    if ep.starts_with(UNIX_PREFIX) {
        if let Some(msg) = unix_socket_error(ep) {
            c.error(Code::InvalidValue, msg);
        }
        return;
    }
    let split = match ep.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        None => ep.rsplit_once(':').filter(|(h, _)| !h.contains(':')),
    };
    let Some((host, port)) = split else {
        c.error(
            Code::InvalidValue,
            format!("defaultEndpoint must be HOST:PORT or unix:///path (got {ep:?})"),
        );
        return;
    };
    if !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::" | "") {
        c.error(
            Code::InvalidValue,
            format!(
                "defaultEndpoint must forward to 127.0.0.1, [::1] (loopback), 0.0.0.0 or [::] (the instance IP), or a unix socket (got {ep:?})"
            ),
        );
    }
    match port.parse::<i64>() {
        Ok(n) => c.port(n),
        Err(_) => c.error(
            Code::InvalidPort,
            format!("defaultEndpoint has no valid port number (got {ep:?})"),
        ),
    }
}

impl Validate for IstioEgressListener {
    fn validate(&self, c: &mut Checker) {
        let bind = self.bind.as_deref().unwrap_or_default();
        let unix_bind = bind.starts_with(UNIX_PREFIX);
        if let Some(port) = &self.port {
            check_port(c, port, true);
            if port.number == 0 {
                if !unix_bind {
                    c.field("bind", |c| {
                        c.error(
                            Code::MissingField,
                            format!(
                                "a listener with port 0 needs a unix:// socket bind (got {bind:?})"
                            ),
                        )
                    });
                }
                if !matches!(
                    self.capture_mode.unwrap_or_default(),
                    CaptureMode::Default | CaptureMode::None
                ) {
                    c.field("captureMode", |c| {
                        c.error(
                            Code::ConflictingFields,
                            "captureMode must be DEFAULT or NONE for a unix socket listener",
                        )
                    });
                }
            }
        }
        if unix_bind {
            if let Some(msg) = unix_socket_error(bind) {
                c.field("bind", |c| c.error(Code::InvalidValue, msg));
            }
            if self.port.as_ref().is_none_or(|p| p.number != 0) {
                c.field("bind", |c| {
                    c.error(
                        Code::ConflictingFields,
                        "a unix socket bind needs port number 0",
                    )
                });
            }
        } else if !bind.is_empty() {
            check_ip_bind(c, bind);
        }

        if self.port.is_some() {
            c.not_supported(
                "port",
                "Mizzen does not open per-port egress listeners: the hosts of every listener are reachable on every port",
            );
        }
        if !bind.is_empty() {
            c.not_supported(
                "bind",
                "Mizzen's sidecar opens no listener at an egress bind address or Unix socket; only captured outbound traffic is proxied",
            );
        }
        // DEFAULT and IPTABLES are how Mizzen captures anyway.
        if self.capture_mode == Some(CaptureMode::None) {
            c.not_supported(
                "captureMode",
                "Mizzen's sidecar captures outbound traffic with iptables and opens no listener for the application to connect to; captureMode NONE has no effect",
            );
        }
        if self.hosts.is_empty() {
            c.field("hosts", |c| {
                c.error(
                    Code::MissingField,
                    "an egress listener needs at least one host, e.g. \"./*\" or \"istio-system/*\"",
                )
            });
        }
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        c.each("hosts", &self.hosts, |c, h| {
            let Some((ns, name)) = h.split_once('/') else {
                c.error(
                    Code::InvalidHost,
                    format!("host {h:?} must be in namespace/dnsName form, e.g. \"./*\" or \"*/{h}\""),
                );
                return;
            };
            if ns.is_empty() || name.is_empty() {
                c.error(
                    Code::InvalidHost,
                    format!("host {h:?} needs both a namespace and a dnsName"),
                );
                return;
            }
            if !matches!(ns, "*" | "." | "~") && !is_dns_label(ns) {
                c.error(
                    Code::InvalidHost,
                    format!("host {h:?} has an invalid namespace {ns:?}: use *, ., ~ or a namespace name"),
                );
            }
            if let Some(msg) = host_error(name) {
                c.error(Code::InvalidHost, format!("host {h:?} is invalid: {msg}"));
            }
            let names = seen.entry(ns.to_string()).or_default();
            if names.contains(name) || names.contains("*") || (name == "*" && !names.is_empty()) {
                c.warn(
                    Code::InvalidHost,
                    format!("host {h:?} repeats or overlaps an earlier host of this listener"),
                );
            }
            names.insert(name.to_string());
        });
        if seen.get("*").is_some_and(|n| n.contains("*")) && self.hosts.len() > 1 {
            c.field("hosts", |c| {
                c.warn(
                    Code::InvalidHost,
                    "\"*/*\" already selects every service; the other hosts add nothing",
                )
            });
        }
    }
}

impl Validate for OutboundTrafficPolicy {
    fn validate(&self, c: &mut Checker) {
        let mode = self.mode.unwrap_or_default();
        c.opt("egressProxy", self.egress_proxy.as_ref(), |c, proxy| {
            if mode != OutboundTrafficMode::AllowAny {
                c.error(
                    Code::ConflictingFields,
                    "egressProxy needs mode ALLOW_ANY (mode is REGISTRY_ONLY)",
                );
            }
            proxy.validate(c);
            if proxy.host.starts_with('*') {
                c.field("host", |c| {
                    c.error(
                        Code::InvalidHost,
                        format!("egressProxy host must be a fully qualified name, not a wildcard (got {:?})", proxy.host),
                    )
                });
            }
            if proxy.port.is_none() {
                c.require("port", false);
            }
            c.warn(
                Code::NotSupported,
                "Mizzen's sidecar sends traffic for unknown destinations straight to them under ALLOW_ANY; egressProxy has no effect",
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    fn spec(yaml: &str) -> SidecarSpec {
        crate::testing::parse(yaml)
    }

    /// The problems of `yaml` besides the fields Mizzen does not implement, which most Sidecar
    /// listeners set and `fields_mizzen_ignores_are_reported` covers.
    fn problems(yaml: &str) -> Vec<Problem> {
        implemented(validate_spec(&spec(yaml)))
    }

    fn implemented(p: Vec<Problem>) -> Vec<Problem> {
        p.into_iter()
            .filter(|p| p.code != Code::NotSupported)
            .collect()
    }

    fn codes(p: &[Problem]) -> Vec<(&str, Code)> {
        crate::testing::codes(p)
    }

    const FULL: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: ratings
  namespace: prod-us1
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
    connectionPool:
      http:
        http1MaxPendingRequests: 100
  - port:
      number: 8443
      protocol: HTTPS
      name: https
    bind: 0.0.0.0
    captureMode: IPTABLES
    defaultEndpoint: 127.0.0.1:8443
    tls:
      mode: SIMPLE
      privateKey: /etc/istio/server.key
      serverCertificate: /etc/istio/server.pem
  egress:
  - port:
      number: 9080
      protocol: HTTP
      name: egresshttp
    hosts:
    - prod-us1/*
  - port:
      number: 0
      protocol: HTTP
      name: uds
    bind: unix:///var/run/app.sock
    captureMode: NONE
    hosts:
    - "*/mysql.foo.com"
  - hosts:
    - istio-system/*
    - ./*.example.com
    - "~/*"
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy:
      host: foo.bar.com
      subset: v1
      port:
        number: 443
  inboundConnectionPool:
    tcp:
      maxConnections: 1000
"#;

    #[test]
    fn every_field_parses_round_trips_and_reports_only_what_mizzen_ignores() {
        let sc: Sidecar = serde_saphyr::from_str(FULL).unwrap();
        let s = &sc.spec;
        assert_eq!(
            s.workload_selector.as_ref().unwrap().labels["app"],
            "ratings"
        );
        assert_eq!(s.ingress[1].capture_mode, Some(CaptureMode::Iptables));
        assert_eq!(s.egress[1].port.as_ref().unwrap().number, 0);
        let otp = s.outbound_traffic_policy.as_ref().unwrap();
        assert_eq!(otp.mode, Some(OutboundTrafficMode::AllowAny));
        assert_eq!(otp.egress_proxy.as_ref().unwrap().port.unwrap().number, 443);
        let json = serde_json::to_value(&sc).unwrap();
        assert_eq!(json["spec"]["egress"][1]["captureMode"], "NONE");
        let back: Sidecar = serde_json::from_value(json).unwrap();
        assert_eq!(back, sc);
        let p = validate_spec(s);
        assert!(p.iter().all(|p| p.code == Code::NotSupported), "{p:#?}");
        assert_eq!(p.len(), 7, "{p:#?}");
    }

    #[test]
    fn fields_mizzen_ignores_are_reported() {
        let p = validate_spec(&spec(
            r#"
workloadSelector:
  labels:
    app: ratings
ingress:
- port: {number: 9080, protocol: HTTP, name: http}
  defaultEndpoint: 127.0.0.1:8080
egress:
- port: {number: 9080, protocol: HTTP, name: http}
  hosts: [./*]
- port: {number: 0, protocol: HTTP, name: uds}
  bind: unix:///var/run/app.sock
  captureMode: NONE
  hosts: ["*/mysql.foo.com"]
- bind: 10.0.0.1
  captureMode: IPTABLES
  hosts: [istio-system/*]
outboundTrafficPolicy:
  mode: ALLOW_ANY
  egressProxy:
    host: proxy.example.com
    port: {number: 3128}
inboundConnectionPool:
  tcp: {maxConnections: 10}
"#,
        ));
        let verdicts = crate::testing::verdicts(&p);
        let warn = |path| (path, Severity::Warn, Code::NotSupported);
        assert_eq!(
            verdicts,
            [
                warn("spec.ingress"),
                warn("spec.egress[0].port"),
                warn("spec.egress[1].port"),
                warn("spec.egress[1].bind"),
                warn("spec.egress[1].captureMode"),
                warn("spec.egress[2].bind"),
                warn("spec.outboundTrafficPolicy.egressProxy"),
                warn("spec.inboundConnectionPool"),
            ]
        );
        assert!(p[1].message.contains("every port"), "{}", p[1].message);

        // A Sidecar that only scopes egress hosts and the outbound policy, namespace-wide or
        // for selected workloads, is what Mizzen implements, and is clean.
        for selector in ["", "workloadSelector:\n  labels:\n    app: ratings\n"] {
            assert_eq!(
                validate_spec(&spec(&format!(
                    "{selector}egress:\n- hosts: [./*, istio-system/*]\n  captureMode: DEFAULT\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY"
                ))),
                vec![],
                "{selector}"
            );
        }
    }

    #[test]
    fn istio_selector_spelling_is_labels() {
        assert!(
            serde_saphyr::from_str::<SidecarSpec>(
                "workloadSelector:\n  matchLabels:\n    app: x\negress:\n- hosts: ['./*']"
            )
            .is_err()
        );
        let p = problems("workloadSelector:\n  labels:\n    app: 'a b'\negress:\n- hosts: ['./*']");
        assert_eq!(
            codes(&p),
            [("spec.workloadSelector.labels[app]", Code::InvalidSelector)]
        );
    }

    #[test]
    fn an_empty_sidecar_is_refused() {
        assert_eq!(codes(&problems("{}")), [("spec", Code::MissingField)]);
        assert!(problems("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY").is_empty());
    }

    #[test]
    fn egress_hosts_are_namespace_slash_dns_name() {
        let p = problems(
            "egress:\n- hosts:\n  - foo.com\n  - Bad_NS/*\n  - ./a.*.com\n  - '/x'\n  - '*/*.example.com'",
        );
        assert_eq!(
            codes(&p),
            [
                ("spec.egress[0].hosts[0]", Code::InvalidHost),
                ("spec.egress[0].hosts[1]", Code::InvalidHost),
                ("spec.egress[0].hosts[2]", Code::InvalidHost),
                ("spec.egress[0].hosts[3]", Code::InvalidHost),
            ]
        );
        assert!(p[0].message.contains("namespace/dnsName"));
        let p = problems("egress:\n- hosts: []");
        assert_eq!(codes(&p), [("spec.egress[0].hosts", Code::MissingField)]);
    }

    #[test]
    fn overlapping_egress_hosts_warn() {
        let p = problems("egress:\n- hosts: ['ns1/*', 'ns1/a.com', '*/*']");
        assert_eq!(
            codes(&p),
            [
                ("spec.egress[0].hosts[1]", Code::InvalidHost),
                ("spec.egress[0].hosts", Code::InvalidHost),
            ]
        );
        assert!(p.iter().all(|p| p.severity == Severity::Warn));
    }

    #[test]
    fn only_one_egress_listener_without_port_and_it_comes_last() {
        let p = problems(
            "egress:\n- hosts: ['./*']\n- hosts: ['ns/*']\n- port:\n    number: 80\n    protocol: HTTP\n    name: http\n  hosts: ['./*']",
        );
        assert_eq!(
            codes(&p),
            [
                ("spec.egress[0]", Code::InvalidValue),
                ("spec.egress[1]", Code::ConflictingFields)
            ]
        );
        assert!(p[1].message.contains("egress[0]"));
    }

    #[test]
    fn egress_ports_and_binds() {
        let p = problems(
            "egress:\n- port:\n    number: 80\n    name: http\n  hosts: ['./*']\n- port:\n    number: 80\n    protocol: SCTP\n  bind: not-an-ip\n  hosts: ['./*']\n- port:\n    number: 0\n  captureMode: IPTABLES\n  hosts: ['./*']\n- port:\n    number: 8080\n  bind: unix:///sock\n  hosts: ['./*']",
        );
        assert_eq!(
            codes(&p),
            [
                ("spec.egress[1].port.protocol", Code::UnknownEnumValue),
                ("spec.egress[1].bind", Code::InvalidValue),
                ("spec.egress[1].port.number", Code::InvalidPort),
                ("spec.egress[2].bind", Code::MissingField),
                ("spec.egress[2].captureMode", Code::ConflictingFields),
                ("spec.egress[3].bind", Code::ConflictingFields),
            ]
        );
        assert_eq!(p[2].message, "port 80 is already used by egress[0]");
    }

    #[test]
    fn ingress_needs_port_and_default_endpoint() {
        let p = problems("ingress:\n- bind: 10.0.0.1");
        assert_eq!(
            codes(&p),
            [
                ("spec.ingress[0].port", Code::MissingField),
                ("spec.ingress[0].defaultEndpoint", Code::MissingField),
            ]
        );
    }

    #[test]
    fn default_endpoint_forms() {
        for ok in [
            "127.0.0.1:8080",
            "0.0.0.0:8080",
            "[::1]:8080",
            "[::]:8080",
            ":8080",
            "unix:///var/run/app.sock",
        ] {
            let s = SidecarSpec {
                ingress: vec![IstioIngressListener {
                    port: Some(ServerPort {
                        number: 9080,
                        protocol: "HTTP".into(),
                        name: "http".into(),
                        target_port: None,
                    }),
                    default_endpoint: Some(ok.into()),
                    ..Default::default()
                }],
                ..Default::default()
            };
            assert!(implemented(validate_spec(&s)).is_empty(), "{ok}");
        }
        let ingress = "ingress:\n- port:\n    number: 9080\n    protocol: HTTP\n    name: http\n  defaultEndpoint: ";
        for (bad, code) in [
            ("10.1.1.1:8080", Code::InvalidValue),
            ("127.0.0.1", Code::InvalidValue),
            ("127.0.0.1:0", Code::InvalidPort),
            ("127.0.0.1:http", Code::InvalidPort),
            ("unix://relative", Code::InvalidValue),
        ] {
            let p = problems(&format!("{ingress}'{bad}'"));
            assert_eq!(
                codes(&p),
                [("spec.ingress[0].defaultEndpoint", code)],
                "{bad}"
            );
        }
    }

    #[test]
    fn ingress_ports_are_unique_and_tls_fits_the_port() {
        let p = problems(
            "ingress:\n- port:\n    number: 9080\n    protocol: HTTP\n    name: a\n  defaultEndpoint: 127.0.0.1:9080\n  tls:\n    mode: ISTIO_MUTUAL\n- port:\n    number: 9080\n    protocol: HTTP\n    name: b\n  defaultEndpoint: 127.0.0.1:9081",
        );
        assert_eq!(
            codes(&p),
            [
                ("spec.ingress[0].tls.mode", Code::InvalidValue),
                ("spec.ingress[0].tls", Code::ConflictingFields),
                ("spec.ingress[1].port.number", Code::InvalidPort),
            ]
        );
        // The server TLS checks of Gateway apply too.
        let p = problems(
            "ingress:\n- port:\n    number: 8443\n    protocol: HTTPS\n    name: https\n  defaultEndpoint: 127.0.0.1:8443\n  tls:\n    mode: SIMPLE",
        );
        assert_eq!(codes(&p), [("spec.ingress[0].tls", Code::MissingField)]);
    }

    #[test]
    fn connection_pools_are_checked() {
        let p = problems(
            "inboundConnectionPool:\n  tcp:\n    connectTimeout: 0s\ningress:\n- port:\n    number: 80\n    name: http\n  defaultEndpoint: 127.0.0.1:80\n  connectionPool: {}",
        );
        assert_eq!(
            codes(&p),
            [
                ("spec.ingress[0].connectionPool", Code::MissingField),
                (
                    "spec.inboundConnectionPool.tcp.connectTimeout",
                    Code::InvalidDuration
                ),
            ]
        );
    }

    #[test]
    fn egress_proxy_needs_allow_any_and_a_port() {
        let p = problems("outboundTrafficPolicy:\n  egressProxy:\n    host: '*.bar.com'");
        assert_eq!(
            codes(&p),
            [
                (
                    "spec.outboundTrafficPolicy.egressProxy",
                    Code::ConflictingFields
                ),
                (
                    "spec.outboundTrafficPolicy.egressProxy.host",
                    Code::InvalidHost
                ),
                (
                    "spec.outboundTrafficPolicy.egressProxy.port",
                    Code::MissingField
                ),
            ]
        );
    }
}
