//! Istio's `Gateway`: the ports, hosts and TLS settings a gateway workload (an ingress or egress
//! proxy picked by label) serves at the edge of the mesh.

use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod cipher_suites;

use crate::{
    Normalize,
    selector::is_dns_label,
    validate::{Checker, Code, Validate, host_error},
};

/// A load balancer at the edge of the mesh: which proxies (by label) listen on which ports, for
/// which hosts, with which TLS settings.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    doc = "Istio Gateway: the ports, hosts and TLS settings of an edge proxy.",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "gw",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The servers (port, hosts, TLS) this gateway exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway pods that serve this configuration, in the Gateway's namespace
    /// (a plain label map, not a `WorkloadSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// One listening port of a gateway and the hosts it accepts there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The port to listen on. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<ServerPort>,
    /// The IP or Unix domain socket (`unix:///path`, `unix://@name`) to bind to instead of all
    /// addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts served here, each `[namespace/]dnsName`: `*`, `*.example.com` or an FQDN; the
    /// namespace may be `*` (any) or `.` (the Gateway's own). Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS termination, passthrough and HTTP-to-HTTPS redirect settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Loopback endpoint or Unix socket to forward to by default (not implemented by Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// Optional server name, unique within the Gateway; used e.g. as a stats prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The port a server (of a Gateway or a Sidecar listener) listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerPort {
    /// Port number, 1-65535 (0 only with a Unix socket `bind`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`, `HTTP2`, `MONGO`, `TCP` or `TLS` (any case).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Name of the port, unique within the resource.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Deprecated: the endpoint port; only meaningful for ServiceEntries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a server port handles TLS: terminate (`SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL`,
/// `ISTIO_MUTUAL`), pass through by SNI (`PASSTHROUGH`, `AUTO_PASSTHROUGH`), or redirect plain
/// HTTP to HTTPS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Answer plain HTTP requests with a 301 redirect to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// TLS mode; `PASSTHROUGH` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Path of the server certificate file (`SIMPLE`/`MUTUAL` without `credentialName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Path of the server private key file (`SIMPLE`/`MUTUAL` without `credentialName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Path of the CA bundle that verifies client certificates (`MUTUAL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Path of a certificate revocation list for client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// Name of the Secret holding the key, certificate and (for mutual TLS) CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Up to two Secrets (e.g. one RSA and one ECDSA certificate); excludes `credentialName`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Up to two certificate/key file pairs; excludes the single-certificate fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Names accepted in the subject of client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Base64 SHA-256 hashes of the SPKI of accepted client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Hex SHA-256 hashes (plain or colon separated) of accepted client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Lowest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocolVersion>,
    /// Highest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocolVersion>,
    /// Cipher suites to offer instead of the proxy's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// One certificate/key pair of [`ServerTlsSettings::tls_certificates`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

/// TLS mode of a server port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Route on the client's SNI without terminating TLS.
    #[default]
    Passthrough,
    /// Terminate TLS with a server certificate.
    Simple,
    /// Terminate TLS and require a client certificate.
    Mutual,
    /// Pass through, with the destination encoded in the SNI (no VirtualService needed).
    AutoPassthrough,
    /// Terminate mutual TLS with the gateway's own mesh identity.
    IstioMutual,
    /// Terminate TLS and verify a client certificate when one is presented.
    OptionalMutual,
}

impl ServerTlsMode {
    pub fn is_passthrough(self) -> bool {
        matches!(self, Self::Passthrough | Self::AutoPassthrough)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passthrough => "PASSTHROUGH",
            Self::Simple => "SIMPLE",
            Self::Mutual => "MUTUAL",
            Self::AutoPassthrough => "AUTO_PASSTHROUGH",
            Self::IstioMutual => "ISTIO_MUTUAL",
            Self::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

/// A TLS protocol version bound; ordered from `TLS_AUTO` (no bound) to `TLSV1_3`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum TlsProtocolVersion {
    /// Let the proxy choose.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// The port protocols a Gateway server may declare (compared case-insensitively).
pub const SERVER_PROTOCOLS: [&str; 8] = [
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS",
];

impl ServerPort {
    /// The protocol in Istio's canonical upper case, if it is one a server may declare.
    pub fn known_protocol(&self) -> Option<&'static str> {
        SERVER_PROTOCOLS
            .iter()
            .find(|p| p.eq_ignore_ascii_case(&self.protocol))
            .copied()
    }
}

/// Protocols that can share one port: plain HTTP variants share a listener, TLS-based ones are
/// told apart by SNI.
fn protocol_family(protocol: &str) -> &'static str {
    match protocol {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => "plain-text HTTP",
        "HTTPS" | "TLS" => "TLS",
        "MONGO" => "MONGO",
        _ => "TCP",
    }
}

fn is_unix_socket(bind: &str) -> bool {
    bind.starts_with("unix://")
}

impl Normalize for GatewaySpec {}

impl Validate for GatewaySpec {
    fn validate(&self, c: &mut Checker) {
        if self.servers.is_empty() {
            c.field("servers", |c| {
                c.error(Code::MissingField, "a Gateway needs at least one server")
            });
        }
        c.field("selector", |c| c.labels(&self.selector));
        c.each("servers", &self.servers, |c, s| s.validate(c));
        self.validate_across_servers(c);
    }
}

impl GatewaySpec {
    /// Port names and server names must be unique; one port number cannot carry protocols that
    /// need different listeners.
    fn validate_across_servers(&self, c: &mut Checker) {
        let mut port_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut server_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut families: BTreeMap<u32, (usize, &'static str, &'static str)> = BTreeMap::new();
        c.field("servers", |c| {
            for (i, server) in self.servers.iter().enumerate() {
                c.index(i, |c| {
                    if let Some(name) = server.name.as_deref().filter(|n| !n.is_empty()) {
                        if let Some(first) = server_names.get(name) {
                            c.field("name", |c| {
                                c.error(
                                    Code::InvalidValue,
                                    format!(
                                        "server name {name:?} is already used by servers[{first}]"
                                    ),
                                )
                            });
                        } else {
                            server_names.insert(name, i);
                        }
                    }
                    let Some(port) = &server.port else { return };
                    c.field("port", |c| {
                        if !port.name.is_empty() {
                            if let Some(first) = port_names.get(port.name.as_str()) {
                                c.field("name", |c| {
                                    c.error(
                                        Code::InvalidPort,
                                        format!(
                                            "port name {:?} is already used by servers[{first}]",
                                            port.name
                                        ),
                                    )
                                });
                            } else {
                                port_names.insert(&port.name, i);
                            }
                        }
                        let Some(protocol) = port.known_protocol() else {
                            return;
                        };
                        if port.number == 0 {
                            return;
                        }
                        let family = protocol_family(protocol);
                        match families.get(&port.number) {
                            Some((first, first_protocol, first_family)) if *first_family != family => {
                                c.field("protocol", |c| {
                                    c.error(
                                        Code::InvalidPort,
                                        format!(
                                            "port {} is already served with protocol {first_protocol} by servers[{first}]; {protocol} cannot share it",
                                            port.number
                                        ),
                                    )
                                });
                            }
                            Some(_) => {}
                            None => {
                                families.insert(port.number, (i, protocol, family));
                            }
                        }
                    });
                });
            }
        });
    }
}

impl Validate for Server {
    fn validate(&self, c: &mut Checker) {
        let unix_bind = self.bind.as_deref().is_some_and(is_unix_socket);
        match &self.port {
            None => c.require("port", false),
            Some(port) => c.field("port", |c| validate_port(port, unix_bind, c)),
        }
        if let Some(bind) = &self.bind {
            c.field("bind", |c| {
                if !unix_bind && bind.parse::<std::net::IpAddr>().is_err() {
                    c.error(
                        Code::InvalidValue,
                        format!(
                            "bind must be an IP address or a unix:// socket path (got {bind:?})"
                        ),
                    );
                }
                let msg = if unix_bind {
                    "Mizzen's gateway does not listen on Unix domain sockets; a server with port number 0 is not served, any other listens on its port as if bind were unset"
                } else {
                    "Mizzen's gateway listens on the port at its own address, not at bind; the setting has no effect"
                };
                c.warn(Code::NotSupported, msg);
            });
        }
        c.opt("defaultEndpoint", self.default_endpoint.as_ref(), |c, _| {
            c.warn(
                Code::NotSupported,
                "Mizzen's gateway does not forward to a defaultEndpoint; traffic goes only where routes send it",
            )
        });
        if self.hosts.is_empty() {
            c.field("hosts", |c| {
                c.error(Code::MissingField, "a server needs at least one host")
            });
        }
        c.each("hosts", &self.hosts, |c, h| {
            if let Some(msg) = server_host_error(h) {
                c.error(Code::InvalidHost, msg);
            }
        });

        let protocol = self.port.as_ref().and_then(ServerPort::known_protocol);
        let terminates_or_passes_tls = matches!(protocol, Some("HTTPS" | "TLS"));
        match &self.tls {
            None if terminates_or_passes_tls => c.field("tls", |c| {
                c.error(
                    Code::MissingField,
                    format!(
                        "a server with protocol {} needs tls settings",
                        protocol.unwrap_or_default()
                    ),
                )
            }),
            None => {}
            Some(tls) => c.field("tls", |c| {
                tls.validate(c);
                tls.report_unsupported_at_gateway(c);
                let redirect = tls.https_redirect == Some(true);
                let mode = tls.mode.unwrap_or_default();
                if let Some(protocol) = protocol {
                    let plain_http = protocol_family(protocol) == "plain-text HTTP";
                    if redirect && !plain_http {
                        c.field("httpsRedirect", |c| {
                            c.warn(
                                Code::InvalidValue,
                                format!("httpsRedirect only applies to plain-text HTTP servers (protocol is {protocol})"),
                            )
                        });
                    }
                    if !terminates_or_passes_tls && !redirect {
                        c.error(
                            Code::ConflictingFields,
                            format!("tls settings need protocol HTTPS or TLS (protocol is {protocol}); only httpsRedirect may be set on a plain-text port"),
                        );
                    } else if terminates_or_passes_tls && mode.is_passthrough() && protocol != "TLS" {
                        if mode == ServerTlsMode::AutoPassthrough {
                            c.field("mode", |c| {
                                c.error(
                                    Code::InvalidValue,
                                    format!("mode AUTO_PASSTHROUGH needs protocol TLS (protocol is {protocol})"),
                                )
                            });
                        } else {
                            c.field("mode", |c| {
                                c.warn(
                                    Code::InvalidValue,
                                    format!("mode PASSTHROUGH forwards TLS without terminating it; protocol TLS describes that better than {protocol}"),
                                )
                            });
                        }
                    }
                }
            }),
        }
    }
}

impl ServerTlsSettings {
    /// Reports the settings Mizzen's gateway does not implement. Not part of `validate`, which a
    /// Sidecar ingress listener shares: those listeners are reported as a whole.
    fn report_unsupported_at_gateway(&self, c: &mut Checker) {
        let mode = self.mode.unwrap_or_default();
        if mode == ServerTlsMode::AutoPassthrough {
            c.not_supported(
                "mode",
                "Mizzen serves AUTO_PASSTHROUGH as PASSTHROUGH: connections are forwarded only by tls routes of a VirtualService bound to this Gateway, not by the destination named in the SNI",
            );
        }
        if mode.is_passthrough() {
            // Nothing is terminated, so the settings below are unused in Istio as well.
            return;
        }
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        // ISTIO_MUTUAL already refuses certificate files (see `validate`).
        if mode != ServerTlsMode::IstioMutual {
            let from_secret =
                set(&self.credential_name) || self.credential_names.iter().any(|n| !n.is_empty());
            for (present, name) in [
                (set(&self.server_certificate), "serverCertificate"),
                (set(&self.private_key), "privateKey"),
                (set(&self.ca_certificates), "caCertificates"),
                (!self.tls_certificates.is_empty(), "tlsCertificates"),
            ] {
                if !present {
                    continue;
                }
                c.field(name, |c| {
                    if from_secret {
                        c.warn(
                            Code::NotSupported,
                            "Mizzen's gateway reads certificates only from the credentialName Secret; this file path is ignored",
                        );
                    } else {
                        c.error(
                            Code::NotSupported,
                            "Mizzen's gateway reads certificates only from credentialName (a Kubernetes Secret); file paths are not read, so this server could not terminate TLS",
                        );
                    }
                });
            }
        }
        let verifies_clients = matches!(
            mode,
            ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual | ServerTlsMode::IstioMutual
        );
        if verifies_clients {
            if set(&self.ca_crl) {
                c.field("caCrl", |c| {
                    c.error(
                        Code::NotSupported,
                        "Mizzen's gateway reads revocation lists from the credential Secret's `ca.crl` key (as Istio requires with credentialName), not from a file path; caCrl cannot be honoured, and without the lists it would accept revoked client certificates",
                    )
                });
            }
            self.check_pins(mode, c);
        }
        self.check_cipher_suites(mode, c);
        for (version, name) in [
            (self.min_protocol_version, "minProtocolVersion"),
            (self.max_protocol_version, "maxProtocolVersion"),
        ] {
            if matches!(
                version,
                Some(TlsProtocolVersion::TlsV1_0 | TlsProtocolVersion::TlsV1_1)
            ) {
                c.not_supported(
                    name,
                    "Mizzen's gateway (rustls) speaks TLS 1.2 and 1.3 only; a TLS 1.0 or 1.1 bound has no effect",
                );
            }
        }
    }
}

impl ServerTlsSettings {
    /// `cipherSuites` of a server that terminates TLS: each name the gateway cannot offer is
    /// reported (see [`cipher_suites`]), and a list of real suites none of which it can offer
    /// is refused while TLS 1.2 is allowed: applying it would leave TLS 1.2 clients without a
    /// suite, and ignoring it would offer suites the list excludes. A list of unknown names
    /// only is ignored, as Istio drops such names before Envoy sees them.
    /// `verifyCertificateSpki` and `verifyCertificateHash`: each entry a SHA-256 in the form
    /// Istio documents; honoured where the gateway verifies clients with a CA of its own.
    fn check_pins(&self, mode: ServerTlsMode, c: &mut Checker) {
        let lists: [(&[String], &str, PinParser); 2] = [
            (
                &self.verify_certificate_spki,
                "verifyCertificateSpki",
                spki_pin,
            ),
            (
                &self.verify_certificate_hash,
                "verifyCertificateHash",
                cert_pin,
            ),
        ];
        for (pins, name, parse) in lists {
            if pins.is_empty() {
                continue;
            }
            c.field(name, |c| {
                if mode == ServerTlsMode::IstioMutual {
                    c.error(
                        Code::NotSupported,
                        format!("Mizzen's gateway pins client certificates under MUTUAL and OPTIONAL_MUTUAL only; under ISTIO_MUTUAL it would accept any workload of the mesh, so {name} cannot be honoured"),
                    );
                    return;
                }
                for (i, pin) in pins.iter().enumerate() {
                    if let Err(why) = parse(pin) {
                        c.index(i, |c| c.error(Code::InvalidValue, why));
                    }
                }
            });
        }
    }

    fn check_cipher_suites(&self, mode: ServerTlsMode, c: &mut Checker) {
        if self.cipher_suites.is_empty() {
            return;
        }
        c.field("cipherSuites", |c| {
            if mode == ServerTlsMode::IstioMutual {
                c.warn(
                    Code::InvalidValue,
                    "ISTIO_MUTUAL terminates with the mesh's own TLS settings, so cipherSuites is ignored here (as in Istio); it applies to SIMPLE, MUTUAL and OPTIONAL_MUTUAL",
                );
                return;
            }
            let mut real = false;
            let mut seen = BTreeSet::new();
            for (i, entry) in self.cipher_suites.iter().enumerate() {
                if entry.trim().is_empty() || !seen.insert(entry.as_str()) {
                    continue; // reported by `validate`
                }
                c.index(i, |c| {
                    for name in cipher_suites::names(entry) {
                        let suite = cipher_suites::classify(name);
                        real |= suite.is_real();
                        report_suite(suite, c);
                    }
                });
            }
            let offered = cipher_suites::offered_suites(&self.cipher_suites);
            if self.min_protocol_version == Some(TlsProtocolVersion::TlsV1_3) {
                c.warn(
                    Code::InvalidValue,
                    "minProtocolVersion TLSV1_3 leaves no TLS 1.2 handshake, and cipherSuites restricts TLS 1.2 only, so it has no effect",
                );
            } else if offered.is_empty() && real {
                c.error(
                    Code::NotSupported,
                    format!(
                        "none of these cipher suites can be offered by Mizzen's gateway, so TLS 1.2 clients could not connect; list at least one of {}, or set minProtocolVersion: TLSV1_3",
                        cipher_suites::all_offered().collect::<Vec<_>>().join(", ")
                    ),
                );
            } else if offered.is_empty() {
                c.warn(
                    Code::InvalidValue,
                    "no entry names a TLS 1.2 cipher suite, so the list is ignored and the gateway offers its default suites (Istio drops unknown names the same way)",
                );
            }
        });
    }
}

/// The problem, if any, with one name of `cipherSuites`.
fn report_suite(suite: cipher_suites::Suite<'_>, c: &mut Checker) {
    use cipher_suites::Suite;
    match suite {
        Suite::Offered(_) => {}
        Suite::NotOffered { name, why } => c.warn(
            Code::NotSupported,
            format!(
                "{name} is not offered: Mizzen's gateway (rustls) implements TLS 1.2 only with ECDHE key exchange and AES-GCM or ChaCha20-Poly1305, and this suite uses {why}"
            ),
        ),
        Suite::Tls13(name) => c.warn(
            Code::InvalidValue,
            format!(
                "{name} is a TLS 1.3 suite; cipherSuites restricts TLS 1.2 only, and every TLS 1.3 suite stays offered"
            ),
        ),
        Suite::Unknown { name, openssl } => c.warn(
            Code::InvalidValue,
            match openssl {
                Some(o) => format!(
                    "{name:?} is the IANA name of a suite; cipherSuites takes OpenSSL names ({o}), so it is ignored"
                ),
                None => format!(
                    "{name:?} is not an OpenSSL cipher suite name (nor an equal-preference group [A|B] of them), so it is ignored, as Istio ignores it"
                ),
            },
        ),
    }
}

fn validate_port(port: &ServerPort, unix_bind: bool, c: &mut Checker) {
    c.field("number", |c| {
        if !(unix_bind && port.number == 0) {
            c.port(i64::from(port.number));
        }
    });
    if port.protocol.is_empty() {
        c.require("protocol", false);
    } else if port.known_protocol().is_none() {
        c.field("protocol", |c| {
            c.error(
                Code::UnknownEnumValue,
                format!(
                    "unknown protocol {:?}: use one of {}",
                    port.protocol,
                    SERVER_PROTOCOLS.join(", ")
                ),
            )
        });
    }
    c.require("name", !port.name.is_empty());
    if port.target_port.is_some() {
        c.field("targetPort", |c| {
            c.warn(
                Code::Deprecated,
                "targetPort is deprecated and ignored on a server; the listener uses number",
            )
        });
    }
}

/// Why a Gateway server host (`[namespace/]dnsName`) is invalid, if it is.
pub fn server_host_error(host: &str) -> Option<String> {
    let (namespace, name) = match host.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, host),
    };
    if let Some(ns) = namespace
        && ns != "*"
        && ns != "."
        && !is_dns_label(ns)
    {
        return Some(format!(
            "host {host:?} has an invalid namespace {ns:?}: use *, . or a namespace name"
        ));
    }
    if name.is_empty() {
        return Some(format!("host {host:?} has no DNS name after the namespace"));
    }
    host_error(name).map(|msg| format!("host {host:?} is invalid: {msg}"))
}

impl Validate for ServerTlsSettings {
    fn validate(&self, c: &mut Checker) {
        let mode = self.mode.unwrap_or_default();
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let has_files = set(&self.server_certificate) || set(&self.private_key);
        let has_credential = set(&self.credential_name);
        let has_credentials = !self.credential_names.is_empty();
        let has_pairs = !self.tls_certificates.is_empty();

        let sources = [
            (has_files, "serverCertificate/privateKey"),
            (has_credential, "credentialName"),
            (has_credentials, "credentialNames"),
            (has_pairs, "tlsCertificates"),
        ];
        let used: Vec<&str> = sources
            .iter()
            .filter(|(s, _)| *s)
            .map(|(_, n)| *n)
            .collect();

        match mode {
            ServerTlsMode::IstioMutual => {
                for (present, name) in [
                    (set(&self.server_certificate), "serverCertificate"),
                    (set(&self.private_key), "privateKey"),
                    (set(&self.ca_certificates), "caCertificates"),
                    (has_credential, "credentialName"),
                    (has_credentials, "credentialNames"),
                    (has_pairs, "tlsCertificates"),
                ] {
                    if present {
                        c.field(name, |c| {
                            c.error(
                                Code::ConflictingFields,
                                "ISTIO_MUTUAL uses the gateway's mesh certificate; leave certificate fields empty",
                            )
                        });
                    }
                }
            }
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                if used.len() > 1 {
                    c.error(
                        Code::ConflictingFields,
                        format!(
                            "only one certificate source may be set (got {})",
                            used.join(" and ")
                        ),
                    );
                }
                if used.is_empty() {
                    c.error(
                        Code::MissingField,
                        format!(
                            "mode {} needs credentialName (or credentialNames, tlsCertificates, or serverCertificate and privateKey)",
                            mode.as_str()
                        ),
                    );
                } else if has_files {
                    c.require("serverCertificate", set(&self.server_certificate));
                    c.require("privateKey", set(&self.private_key));
                }
                let mutual = mode != ServerTlsMode::Simple;
                if mutual
                    && has_files
                    && !has_credential
                    && !has_credentials
                    && !set(&self.ca_certificates)
                {
                    c.field("caCertificates", |c| {
                        c.error(
                            Code::MissingField,
                            format!(
                                "mode {} needs caCertificates to verify clients (or a credentialName whose Secret holds the CA)",
                                mode.as_str()
                            ),
                        )
                    });
                }
            }
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
        }

        if self.credential_names.len() > 2 {
            c.field("credentialNames", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "at most 2 Secrets may be given, one certificate per key type such as RSA and ECDSA (got {})",
                        self.credential_names.len()
                    ),
                )
            });
        }
        c.each("credentialNames", &self.credential_names, |c, n| {
            if n.is_empty() {
                c.error(Code::MissingField, "credential name must not be empty");
            }
        });
        if self.tls_certificates.len() > 2 {
            c.field("tlsCertificates", |c| {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "at most 2 certificates may be given (got {})",
                        self.tls_certificates.len()
                    ),
                )
            });
        }
        c.each("tlsCertificates", &self.tls_certificates, |c, pair| {
            c.require("serverCertificate", set(&pair.server_certificate));
            c.require("privateKey", set(&pair.private_key));
        });

        if let (Some(min), Some(max)) = (self.min_protocol_version, self.max_protocol_version)
            && min != TlsProtocolVersion::TlsAuto
            && max != TlsProtocolVersion::TlsAuto
            && min > max
        {
            c.field("minProtocolVersion", |c| {
                c.error(
                    Code::InvalidValue,
                    format!("minimum TLS version {min:?} is above the maximum {max:?}"),
                )
            });
        }

        let mut seen = BTreeSet::new();
        c.field("cipherSuites", |c| {
            for (i, suite) in self.cipher_suites.iter().enumerate() {
                c.index(i, |c| {
                    if suite.is_empty() {
                        c.error(Code::InvalidValue, "cipher suite must not be empty");
                    } else if !seen.insert(suite.as_str()) {
                        c.warn(
                            Code::InvalidValue,
                            format!("cipher suite {suite:?} is listed more than once"),
                        );
                    }
                });
            }
        });
    }
}

/// Reads one client-certificate pin into its SHA-256 digest, or says what is wrong with it.
pub type PinParser = fn(&str) -> Result<[u8; 32], String>;

/// A `verifyCertificateSpki` entry: the base64 (standard alphabet, padded) SHA-256 of a
/// certificate's SubjectPublicKeyInfo, as Envoy takes it.
pub fn spki_pin(pin: &str) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(pin.trim())
        .map_err(|e| format!("{pin:?} is not base64 ({e}); give the base64 SHA-256 of the certificate's SubjectPublicKeyInfo"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "{pin:?} decodes to {} bytes; a SHA-256 is 32 bytes (44 base64 characters)",
            bytes.len()
        )
    })
}

/// A `verifyCertificateHash` entry: the hex SHA-256 of a DER certificate, plain or with colons
/// between the bytes (`DF:6F:...`), in either case.
pub fn cert_pin(pin: &str) -> Result<[u8; 32], String> {
    let digits: Vec<u8> = pin.trim().bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return Err(format!(
            "{pin:?} has {} hex digits; a SHA-256 has 64 (colons between bytes are allowed)",
            digits.len()
        ));
    }
    let mut out = [0u8; 32];
    base16ct::mixed::decode(&digits, &mut out)
        .map_err(|_| format!("{pin:?} is not hexadecimal"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    fn spec(yaml: &str) -> GatewaySpec {
        crate::testing::parse(yaml)
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        validate_spec(&spec(yaml))
    }

    /// The only problem is `code` at `path`, with that severity.
    #[track_caller]
    fn assert_one(yaml: &str, severity: Severity, code: Code, path: &str) -> Problem {
        let p = crate::testing::only(problems(yaml), path, code);
        assert_eq!(p.severity, severity, "{p}");
        p
    }

    #[track_caller]
    fn assert_round_trip(gw: &GatewaySpec) {
        crate::testing::assert_round_trip(gw);
    }

    const FULL: &str = r#"
selector:
  istio: ingressgateway
servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: [uk.bookinfo.com, eu.bookinfo.com]
  tls:
    httpsRedirect: true
- port: {number: 443, name: https-443, protocol: HTTPS}
  name: main-https
  hosts: ["bookinfo-namespace/*.bookinfo.com", "./local.example.com", "*/any.example.com"]
  tls:
    mode: SIMPLE
    credentialName: bookinfo-secret
    minProtocolVersion: TLSV1_2
    maxProtocolVersion: TLSV1_3
    cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
- port: {number: 443, name: tls-passthrough, protocol: TLS}
  hosts: [db.example.com]
  tls:
    mode: PASSTHROUGH
- port: {number: 9443, name: https-mutual, protocol: https}
  hosts: ["*"]
  tls:
    mode: MUTUAL
    serverCertificate: /etc/certs/server.pem
    privateKey: /etc/certs/key.pem
    caCertificates: /etc/certs/ca.pem
    caCrl: /etc/certs/crl.pem
    subjectAltNames: [spiffe://cluster.local/ns/a/sa/b]
    verifyCertificateSpki: ["b+7MjBbFVR2f6z61934tp3O/aL2e+cUpJ86yyG5WiSs="]
    verifyCertificateHash: ["06:29:84:32:E8:06:6B:29:E2:22:3B:CC:23:AA:95:04:B5:6A:E5:08:FA:BF:34:35:50:88:69:B9:C3:19:0E:22"]
- port: {number: 15443, name: tls-auto, protocol: TLS}
  hosts: ["*.local"]
  tls: {mode: AUTO_PASSTHROUGH}
- port: {number: 8443, name: https-optional, protocol: HTTPS}
  hosts: [opt.example.com]
  tls:
    mode: OPTIONAL_MUTUAL
    credentialNames: [rsa-cert, ecdsa-cert]
- port: {number: 8444, name: https-pairs, protocol: HTTPS}
  hosts: [pairs.example.com]
  tls:
    mode: SIMPLE
    tlsCertificates:
    - {serverCertificate: /a.pem, privateKey: /a.key}
    - {serverCertificate: /b.pem, privateKey: /b.key, caCertificates: /ca.pem}
- port: {number: 15012, name: tls-istiod, protocol: TLS}
  hosts: ["*"]
  tls: {mode: ISTIO_MUTUAL}
- port: {number: 27017, name: mongo, protocol: MONGO}
  bind: 10.0.0.1
  hosts: ["*"]
- port: {number: 0, name: uds, protocol: TCP}
  bind: unix:///var/run/gw.sock
  defaultEndpoint: 127.0.0.1:8080
  hosts: ["*"]
"#;

    #[test]
    fn parses_every_field_and_round_trips() {
        let gw = spec(FULL);
        assert_eq!(gw.selector["istio"], "ingressgateway");
        assert_eq!(gw.servers.len(), 10);
        let https = &gw.servers[1];
        assert_eq!(https.name.as_deref(), Some("main-https"));
        let tls = https.tls.as_ref().unwrap();
        assert_eq!(tls.mode, Some(ServerTlsMode::Simple));
        assert_eq!(tls.min_protocol_version, Some(TlsProtocolVersion::TlsV1_2));
        assert_eq!(tls.max_protocol_version, Some(TlsProtocolVersion::TlsV1_3));
        assert_eq!(
            gw.servers[5].tls.as_ref().unwrap().mode,
            Some(ServerTlsMode::OptionalMutual)
        );
        assert_eq!(
            gw.servers[3].port.as_ref().unwrap().known_protocol(),
            Some("HTTPS")
        );
        assert_eq!(
            gw.servers[9].bind.as_deref(),
            Some("unix:///var/run/gw.sock")
        );
        assert_round_trip(&gw);
        let json = serde_json::to_value(&gw).unwrap();
        assert_eq!(json["servers"][4]["tls"]["mode"], "AUTO_PASSTHROUGH");
        assert_eq!(json["servers"][1]["tls"]["minProtocolVersion"], "TLSV1_2");
        assert_eq!(json["servers"][0]["tls"]["httpsRedirect"], true);
    }

    /// `(path, severity, code)` of each problem.
    fn verdicts(p: Vec<Problem>) -> Vec<(String, Severity, Code)> {
        p.into_iter()
            .map(|p| (p.path, p.severity, p.code))
            .collect()
    }

    #[test]
    fn full_example_reports_only_the_settings_mizzen_ignores() {
        use Severity::{Error, Warn};
        // servers[1]'s cipherSuites and servers[5]'s two credentialNames are served as written.
        let expected = [
            ("servers[3].tls.serverCertificate", Error),
            ("servers[3].tls.privateKey", Error),
            ("servers[3].tls.caCertificates", Error),
            ("servers[3].tls.caCrl", Error),
            ("servers[4].tls.mode", Warn),
            ("servers[6].tls.tlsCertificates", Error),
            ("servers[8].bind", Warn),
            ("servers[9].bind", Warn),
            ("servers[9].defaultEndpoint", Warn),
        ]
        .map(|(path, severity)| (format!("spec.{path}"), severity, Code::NotSupported));
        assert_eq!(verdicts(problems(FULL)), expected);
    }

    /// Client certificate pins in the forms Istio documents: base64 SPKI hashes, hex
    /// certificate hashes with or without colons; anything else names the entry at fault.
    #[test]
    fn client_certificate_pins_are_checked_entry_by_entry() {
        let server = |tls: &str| {
            format!(
                "servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], tls: {{{tls}}}}}]"
            )
        };
        let spki = "b+7MjBbFVR2f6z61934tp3O/aL2e+cUpJ86yyG5WiSs=";
        let hash = "06:29:84:32:E8:06:6B:29:E2:22:3B:CC:23:AA:95:04:B5:6A:E5:08:FA:BF:34:35:50:88:69:B9:C3:19:0E:22";
        let plain = hash.replace(':', "").to_lowercase();
        for mode in ["MUTUAL", "OPTIONAL_MUTUAL"] {
            let tls = format!(
                "mode: {mode}, credentialName: c, verifyCertificateSpki: ['{spki}'], verifyCertificateHash: ['{hash}', '{plain}']"
            );
            assert_eq!(problems(&server(&tls)), vec![], "{mode}");
        }
        assert_eq!(spki_pin(spki).unwrap()[0], 0x6f);
        assert_eq!(cert_pin(hash), cert_pin(&plain));
        assert_eq!(cert_pin(hash).unwrap()[..2], [0x06, 0x29]);

        let bad = format!(
            "mode: MUTUAL, credentialName: c, verifyCertificateSpki: ['{spki}', 'AAAA', 'not base64!'], verifyCertificateHash: ['ab:cd', '{}']",
            "zz".repeat(32)
        );
        let p = problems(&server(&bad));
        let tls = "spec.servers[0].tls";
        assert_eq!(
            verdicts(p.clone()),
            [
                "verifyCertificateSpki[1]",
                "verifyCertificateSpki[2]",
                "verifyCertificateHash[0]",
                "verifyCertificateHash[1]",
            ]
            .map(|field| (
                format!("{tls}.{field}"),
                Severity::Error,
                Code::InvalidValue
            ))
        );
        assert!(p[0].message.contains("3 bytes"), "{}", p[0].message);
        assert!(p[1].message.contains("not base64"), "{}", p[1].message);
        assert!(p[2].message.contains("4 hex digits"), "{}", p[2].message);
        assert!(p[3].message.contains("not hexadecimal"), "{}", p[3].message);

        // ISTIO_MUTUAL verifies clients by the mesh's CA alone.
        let p = problems(&server(&format!(
            "mode: ISTIO_MUTUAL, verifyCertificateHash: ['{hash}']"
        )));
        assert_eq!(
            verdicts(p),
            [(
                format!("{tls}.verifyCertificateHash"),
                Severity::Error,
                Code::NotSupported
            )]
        );
    }

    #[test]
    fn settings_mizzen_ignores_are_reported() {
        let server = |tls: &str| {
            format!(
                "servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], tls: {{{tls}}}}}]"
            )
        };
        use Severity::{Error, Warn};
        // Certificates from files alone: the server could not terminate TLS.
        let p = problems(&server(
            "mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, caCrl: /crl.pem, verifyCertificateHash: ['06:29:84:32:E8:06:6B:29:E2:22:3B:CC:23:AA:95:04:B5:6A:E5:08:FA:BF:34:35:50:88:69:B9:C3:19:0E:22'], minProtocolVersion: TLSV1_0, maxProtocolVersion: TLSV1_1",
        ));
        let tls = "spec.servers[0].tls";
        let expected = [
            ("serverCertificate", Error),
            ("privateKey", Error),
            ("caCertificates", Error),
            ("caCrl", Error),
            ("minProtocolVersion", Warn),
            ("maxProtocolVersion", Warn),
        ]
        .map(|(field, severity)| (format!("{tls}.{field}"), severity, Code::NotSupported));
        assert_eq!(verdicts(p.clone()), expected);
        assert!(p[0].message.contains("credentialName"), "{}", p[0].message);

        // Beside Secrets, a CA file is only ignored; both Secrets are served.
        let p = problems(&server(
            "mode: OPTIONAL_MUTUAL, credentialNames: [rsa, ecdsa], caCertificates: /ca.pem",
        ));
        assert_eq!(
            verdicts(p),
            [(format!("{tls}.caCertificates"), Warn, Code::NotSupported)]
        );

        // Server-side settings that nothing uses without termination or client certificates.
        assert_eq!(
            problems(
                "servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], tls: {mode: PASSTHROUGH, serverCertificate: /c.pem, cipherSuites: [x]}}]"
            ),
            vec![]
        );
        assert_eq!(
            problems(&server(
                "mode: SIMPLE, credentialName: s, caCrl: /crl.pem, verifyCertificateSpki: [AAAA]"
            )),
            vec![]
        );

        // What Mizzen does implement is quiet.
        assert_eq!(
            problems(&server(
                "mode: MUTUAL, credentialNames: [rsa, ecdsa], subjectAltNames: [spiffe://td/ns/a/sa/b], minProtocolVersion: TLSV1_2, maxProtocolVersion: TLSV1_3, cipherSuites: ['[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]', ECDHE-RSA-AES256-GCM-SHA384, ALL]"
            )),
            vec![]
        );
        assert_one(
            "servers: [{port: {number: 15443, name: tls, protocol: TLS}, hosts: ['*.local'], tls: {mode: AUTO_PASSTHROUGH}}]",
            Warn,
            Code::NotSupported,
            "spec.servers[0].tls.mode",
        );
    }

    #[test]
    fn cipher_suites_are_checked_against_what_the_gateway_can_offer() {
        use Severity::{Error, Warn};
        let server = |tls: &str| {
            problems(&format!(
                "servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], tls: {{mode: SIMPLE, credentialName: s, {tls}}}}}]"
            ))
        };
        let at = |field: &str| format!("spec.servers[0].tls.cipherSuites{field}");
        // Real suites rustls cannot offer, a TLS 1.3 suite, an IANA spelling and a typo are
        // each named; the offered one is served. A duplicate is reported as one (first).
        let p = server(
            "cipherSuites: [ECDHE-RSA-AES128-SHA, '[AES128-GCM-SHA256|ECDHE-RSA-AES128-GCM-SHA256]', TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, ECDHE-RSA-AES128-SHA, nonsense]",
        );
        assert_eq!(
            verdicts(p.clone()),
            [
                (at("[4]"), Warn, Code::InvalidValue),
                (at("[0]"), Warn, Code::NotSupported),
                (at("[1]"), Warn, Code::NotSupported),
                (at("[2]"), Warn, Code::InvalidValue),
                (at("[3]"), Warn, Code::InvalidValue),
                (at("[5]"), Warn, Code::InvalidValue),
            ]
        );
        let says = |i: usize, words: &[&str]| {
            let m = &p
                .iter()
                .find(|p| p.path == at(&format!("[{i}]")))
                .unwrap()
                .message;
            assert!(words.iter().all(|w| m.contains(w)), "{m}");
        };
        says(0, &["ECDHE-RSA-AES128-SHA is not offered", "CBC"]);
        says(1, &["AES128-GCM-SHA256 is not offered", "RSA key exchange"]);
        says(2, &["TLS 1.3"]);
        says(3, &["IANA", "ECDHE-RSA-AES256-GCM-SHA384"]);
        says(4, &["more than once"]);
        says(5, &["\"nonsense\" is not an OpenSSL cipher suite"]);

        // Only suites rustls cannot offer, with TLS 1.2 allowed: TLS 1.2 clients would have no
        // suite, so the server is refused, naming what would work.
        let p = server("cipherSuites: [AES128-SHA, DES-CBC3-SHA]");
        assert_eq!(
            verdicts(p.clone()),
            [
                (at("[0]"), Warn, Code::NotSupported),
                (at("[1]"), Warn, Code::NotSupported),
                (at(""), Error, Code::NotSupported),
            ]
        );
        assert!(
            p[2].message.contains("ECDHE-ECDSA-AES128-GCM-SHA256"),
            "{}",
            p[2].message
        );
        // ... unless only TLS 1.3 is allowed, where the list has no effect.
        assert_eq!(
            verdicts(server(
                "cipherSuites: [AES128-SHA], minProtocolVersion: TLSV1_3"
            )),
            [
                (at("[0]"), Warn, Code::NotSupported),
                (at(""), Warn, Code::InvalidValue),
            ]
        );
        // Names that are no suites at all are dropped, as Istio drops them: the defaults stay.
        assert_eq!(
            verdicts(server("cipherSuites: [TLS_AES_256_GCM_SHA384]")),
            [
                (at("[0]"), Warn, Code::InvalidValue),
                (at(""), Warn, Code::InvalidValue)
            ]
        );
        // ISTIO_MUTUAL uses the mesh's TLS settings.
        let p = problems(
            "servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, cipherSuites: [AES128-SHA]}}]",
        );
        assert_eq!(verdicts(p), [(at(""), Warn, Code::InvalidValue)]);
    }

    #[test]
    fn fixture_gateway_parses_validates_and_round_trips() {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(include_str!(
            "../../../../shared/fixtures/istio/gateway-and-cookie-match.yaml"
        ))
        .unwrap();
        let doc = docs.into_iter().find(|d| d["kind"] == "Gateway").unwrap();
        let mut gw: Gateway = serde_json::from_value(doc).unwrap();
        assert_eq!(gw.metadata.name.as_deref(), Some("bookinfo-gateway"));
        let port = gw.spec.servers[0].port.as_ref().unwrap();
        assert_eq!(
            (port.number, port.protocol.as_str(), port.name.as_str()),
            (80, "HTTP", "http")
        );
        let back: Gateway = serde_json::from_value(serde_json::to_value(&gw).unwrap()).unwrap();
        assert_eq!(back, gw);
        assert_eq!(validate_spec(&gw.spec), vec![]);
        let before = gw.spec.clone();
        gw.spec.normalize();
        assert_eq!(gw.spec, before);
    }

    #[test]
    fn unknown_fields_and_modes_are_refused_by_parsing() {
        let bad_field =
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tsl: {}}]";
        assert!(serde_saphyr::from_str::<GatewaySpec>(bad_field).is_err());
        let bad_mode = "servers: [{port: {number: 443, name: h, protocol: HTTPS}, hosts: ['*'], tls: {mode: STRICT}}]";
        assert!(serde_saphyr::from_str::<GatewaySpec>(bad_mode).is_err());
    }

    #[test]
    fn needs_a_server() {
        assert_one(
            "selector: {istio: ingressgateway}",
            Severity::Error,
            Code::MissingField,
            "spec.servers",
        );
    }

    #[test]
    fn server_needs_hosts_and_port() {
        assert_one(
            "servers: [{port: {number: 80, name: http, protocol: HTTP}}]",
            Severity::Error,
            Code::MissingField,
            "spec.servers[0].hosts",
        );
        assert_one(
            "servers: [{hosts: ['*']}]",
            Severity::Error,
            Code::MissingField,
            "spec.servers[0].port",
        );
    }

    #[test]
    fn hosts_are_checked_with_their_namespace() {
        let p = assert_one(
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*', 'Bad_NS/foo.com']}]",
            Severity::Error,
            Code::InvalidHost,
            "spec.servers[0].hosts[1]",
        );
        assert!(p.message.contains("Bad_NS"), "{}", p.message);
        assert_one(
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['ns/foo.*.com']}]",
            Severity::Error,
            Code::InvalidHost,
            "spec.servers[0].hosts[0]",
        );
        assert_one(
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['ns/']}]",
            Severity::Error,
            Code::InvalidHost,
            "spec.servers[0].hosts[0]",
        );
        for ok in [
            "*",
            "ns/*",
            "./a.com",
            "*/a.com",
            "*.a.com",
            "ns1/*.a.com",
            "a.b.c",
        ] {
            assert_eq!(server_host_error(ok), None, "{ok}");
        }
    }

    #[test]
    fn port_number_protocol_and_name() {
        let p = assert_one(
            "servers: [{port: {number: 70000, name: http, protocol: HTTP}, hosts: ['*']}]",
            Severity::Error,
            Code::InvalidPort,
            "spec.servers[0].port.number",
        );
        assert!(p.message.contains("70000"));
        let p = assert_one(
            "servers: [{port: {number: 80, name: http, protocol: QUIC}, hosts: ['*']}]",
            Severity::Error,
            Code::UnknownEnumValue,
            "spec.servers[0].port.protocol",
        );
        assert!(p.message.contains("QUIC"));
        assert_one(
            "servers: [{port: {number: 80, name: http}, hosts: ['*']}]",
            Severity::Error,
            Code::MissingField,
            "spec.servers[0].port.protocol",
        );
        assert_one(
            "servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]",
            Severity::Error,
            Code::MissingField,
            "spec.servers[0].port.name",
        );
        assert_one(
            "servers: [{port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}, hosts: ['*']}]",
            Severity::Warn,
            Code::Deprecated,
            "spec.servers[0].port.targetPort",
        );
    }

    #[test]
    fn bind_must_be_ip_or_unix_socket() {
        let p = problems(
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, bind: localhost, hosts: ['*']}]",
        );
        assert_eq!(
            crate::testing::codes(&p),
            [
                ("spec.servers[0].bind", Code::InvalidValue),
                ("spec.servers[0].bind", Code::NotSupported),
            ]
        );
        // Port 0 is only fine with a Unix socket.
        let p = problems(
            "servers: [{port: {number: 0, name: tcp, protocol: TCP}, bind: 10.0.0.1, hosts: ['*']}]",
        );
        assert_eq!(
            crate::testing::codes(&p),
            [
                ("spec.servers[0].port.number", Code::InvalidPort),
                ("spec.servers[0].bind", Code::NotSupported),
            ]
        );
    }

    #[test]
    fn selector_labels_are_checked() {
        assert_one(
            "selector: {'-bad': x}\nservers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]",
            Severity::Error,
            Code::InvalidSelector,
            "spec.selector[-bad]",
        );
    }

    #[test]
    fn https_and_tls_servers_need_tls_settings() {
        assert_one(
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]",
            Severity::Error,
            Code::MissingField,
            "spec.servers[0].tls",
        );
        assert_one(
            "servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*']}]",
            Severity::Error,
            Code::MissingField,
            "spec.servers[0].tls",
        );
    }

    #[test]
    fn tls_on_plain_ports_only_for_redirects() {
        assert_one(
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}]",
            Severity::Error,
            Code::ConflictingFields,
            "spec.servers[0].tls",
        );
        assert_one(
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {httpsRedirect: true, mode: SIMPLE, credentialName: c}}]",
            Severity::Warn,
            Code::InvalidValue,
            "spec.servers[0].tls.httpsRedirect",
        );
    }

    #[test]
    fn passthrough_modes_and_protocols() {
        let p = problems(
            "servers: [{port: {number: 15443, name: tls, protocol: HTTPS}, hosts: ['*'], tls: {mode: AUTO_PASSTHROUGH}}]",
        );
        assert_eq!(
            verdicts(p),
            [
                (
                    "spec.servers[0].tls.mode".to_string(),
                    Severity::Warn,
                    Code::NotSupported
                ),
                (
                    "spec.servers[0].tls.mode".to_string(),
                    Severity::Error,
                    Code::InvalidValue
                ),
            ]
        );
        // Istio's own docs use HTTPS + PASSTHROUGH; it works, with a hint.
        assert_one(
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: PASSTHROUGH}}]",
            Severity::Warn,
            Code::InvalidValue,
            "spec.servers[0].tls.mode",
        );
    }

    #[test]
    fn simple_and_mutual_need_certificates() {
        // Certificate files are Istio but not Mizzen: each set one is also reported (see
        // `settings_mizzen_ignores_are_reported`), so these compare codes.
        let https = |tls: &str| {
            format!(
                "servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], tls: {{{tls}}}}}]"
            )
        };
        let codes = |p: &[Problem]| -> Vec<(String, Code)> {
            p.iter().map(|p| (p.path.clone(), p.code)).collect()
        };
        let tls = "spec.servers[0].tls";
        let at = |field: &str, code| (format!("{tls}.{field}"), code);
        let p = assert_one(
            &https("mode: SIMPLE"),
            Severity::Error,
            Code::MissingField,
            tls,
        );
        assert!(p.message.contains("credentialName"));
        assert_eq!(
            codes(&problems(&https("mode: SIMPLE, serverCertificate: /c.pem"))),
            [
                at("privateKey", Code::MissingField),
                at("serverCertificate", Code::NotSupported),
            ]
        );
        assert_eq!(
            codes(&problems(&https(
                "mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem"
            ))),
            [
                at("caCertificates", Code::MissingField),
                at("serverCertificate", Code::NotSupported),
                at("privateKey", Code::NotSupported),
            ]
        );
        // A Secret carries the CA too.
        assert_eq!(problems(&https("mode: MUTUAL, credentialName: s")), vec![]);
        let p = problems(&https(
            "mode: SIMPLE, credentialName: s, serverCertificate: /c.pem, privateKey: /k.pem",
        ));
        assert_eq!(
            codes(&p),
            [
                (tls.to_string(), Code::ConflictingFields),
                at("serverCertificate", Code::NotSupported),
                at("privateKey", Code::NotSupported),
            ]
        );
        assert!(p[0].message.contains("credentialName"), "{}", p[0].message);
        // Two Secrets are served (one per key type); a third is refused, as Istio's schema does.
        assert_eq!(
            problems(&https("mode: SIMPLE, credentialNames: [rsa, ecdsa]")),
            vec![]
        );
        let p = problems(&https("mode: SIMPLE, credentialNames: [a, b, c]"));
        assert_eq!(codes(&p), [at("credentialNames", Code::InvalidValue)]);
        assert!(
            p[0].message.contains("at most 2") && p[0].message.contains("got 3"),
            "{}",
            p[0].message
        );
        // Either credentialName or credentialNames, as in Istio.
        let p = problems(&https(
            "mode: SIMPLE, credentialName: a, credentialNames: [b]",
        ));
        assert_eq!(codes(&p), [(tls.to_string(), Code::ConflictingFields)]);
        assert!(
            p[0].message.contains("credentialName and credentialNames"),
            "{}",
            p[0].message
        );
        assert_eq!(
            codes(&problems(&https(
                "mode: SIMPLE, tlsCertificates: [{serverCertificate: /c.pem}]"
            ))),
            [
                at("tlsCertificates[0].privateKey", Code::MissingField),
                at("tlsCertificates", Code::NotSupported),
            ]
        );
    }

    #[test]
    fn istio_mutual_takes_no_certificates() {
        assert_one(
            "servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, credentialName: s}}]",
            Severity::Error,
            Code::ConflictingFields,
            "spec.servers[0].tls.credentialName",
        );
    }

    #[test]
    fn protocol_versions_must_be_ordered() {
        assert_one(
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: s, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}}]",
            Severity::Error,
            Code::InvalidValue,
            "spec.servers[0].tls.minProtocolVersion",
        );
    }

    #[test]
    fn duplicate_port_names_and_server_names() {
        let p = assert_one(
            "servers:\n- {port: {number: 80, name: http, protocol: HTTP}, hosts: [a.com]}\n- {port: {number: 8080, name: http, protocol: HTTP}, hosts: [b.com]}",
            Severity::Error,
            Code::InvalidPort,
            "spec.servers[1].port.name",
        );
        assert!(p.message.contains("servers[0]"), "{}", p.message);
        assert_one(
            "servers:\n- {name: s, port: {number: 80, name: a, protocol: HTTP}, hosts: [a.com]}\n- {name: s, port: {number: 81, name: b, protocol: HTTP}, hosts: [b.com]}",
            Severity::Error,
            Code::InvalidValue,
            "spec.servers[1].name",
        );
    }

    #[test]
    fn one_port_cannot_mix_plain_text_and_tls() {
        let p = assert_one(
            "servers:\n- {port: {number: 443, name: a, protocol: HTTP}, hosts: [a.com]}\n- {port: {number: 443, name: b, protocol: HTTPS}, hosts: [b.com], tls: {mode: SIMPLE, credentialName: s}}",
            Severity::Error,
            Code::InvalidPort,
            "spec.servers[1].port.protocol",
        );
        assert!(p.message.contains("port 443"), "{}", p.message);
        // HTTP and HTTP2 share a listener; HTTPS and TLS are told apart by SNI.
        assert_eq!(
            problems(
                "servers:\n- {port: {number: 80, name: a, protocol: HTTP}, hosts: [a.com]}\n- {port: {number: 80, name: b, protocol: HTTP2}, hosts: [b.com]}"
            ),
            vec![]
        );
    }
}
