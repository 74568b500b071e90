//! The ingress gateways' config: the servers of every valid Gateway and the VirtualService rules
//! bound to each, as [`pc::GatewayConfig`], plus the problems of bindings that do not resolve.
//!
//! Istio's binding rules, as implemented here:
//! - a VirtualService is bound to the Gateways its `gateways` list names and to those its
//!   matches name (`name` is in the VirtualService's namespace, `namespace/name` anywhere;
//!   `mesh` means the sidecars and is never a Gateway);
//! - a server serves a VirtualService host when one covers the other (wildcards both ways; the
//!   narrower name is what the gateway serves), and only for VirtualServices of the namespaces
//!   its host's `namespace/` prefix allows (`*/` or none: any, `./`: the Gateway's own);
//! - a VirtualService must be exported to the gateway's namespace;
//! - a match that lists `gateways` applies to those only; a match with a `port` applies to the
//!   server on that port only ([`routes::Scope`]).
//!
//! What cannot resolve is reported on the objects and left out, so the rest keeps serving: a
//! VirtualService naming a Gateway that does not exist (or is invalid), a VirtualService host no
//! server of its Gateway serves, and two Gateways that select the same workloads with one port
//! number but protocols that need different listeners (the older Gateway keeps the port).

use std::collections::BTreeMap;

use mizzen_crds::{
    inventory::host_matches,
    networking::gateway::{self as gw, ServerTlsMode, TlsProtocolVersion},
    resource::{MeshResource, ObjectRef},
    validate::{Code, Problem},
};
use mizzen_proxy_config as pc;

use super::{
    ObjectStatus,
    catalog::{Catalog, VsEntry, exported},
    routes::{self, Scope},
    summary, vs_routes,
};
use crate::index::{Index, Stored};

/// What the rules bound to a server become, by the server's protocol and TLS mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Routing {
    /// HTTP, HTTP2, GRPC, and HTTPS once terminated: `virtual_hosts` from `http` rules.
    Http,
    /// TCP, MONGO, and TLS once terminated: `tcp_routes`.
    Tcp,
    /// HTTPS and TLS in `PASSTHROUGH`: `tls_routes`, matched by SNI.
    Passthrough,
}

/// Which listener a port needs: servers that need different ones cannot share the port.
fn listener(protocol: pc::ServerProtocol) -> &'static str {
    match protocol {
        pc::ServerProtocol::Http | pc::ServerProtocol::Http2 | pc::ServerProtocol::Grpc => {
            "plain-text HTTP"
        }
        pc::ServerProtocol::Https | pc::ServerProtocol::Tls => "TLS",
        pc::ServerProtocol::Tcp => "TCP",
    }
}

/// A server host: `namespace/` restriction (`None`: any namespace) and the name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServerHost {
    namespace: Option<String>,
    name: String,
}

impl ServerHost {
    fn parse(host: &str, gateway_ns: &str) -> Self {
        let host = host.to_ascii_lowercase();
        match host.split_once('/') {
            None => Self {
                namespace: None,
                name: host,
            },
            Some(("*", name)) => Self {
                namespace: None,
                name: name.to_string(),
            },
            Some((".", name)) => Self {
                namespace: Some(gateway_ns.to_string()),
                name: name.to_string(),
            },
            Some((ns, name)) => Self {
                namespace: Some(ns.to_string()),
                name: name.to_string(),
            },
        }
    }

    fn admits(&self, vs_ns: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == vs_ns)
    }
}

/// The name a gateway serves for a VirtualService host under a server host: the narrower of
/// the two when one covers the other.
pub fn intersect(vs_host: &str, server_host: &str) -> Option<String> {
    if host_matches(server_host, vs_host) {
        Some(vs_host.to_string())
    } else if host_matches(vs_host, server_host) {
        Some(server_host.to_string())
    } else {
        None
    }
}

/// One server of a valid Gateway, resolved; its routes are filled per gateway namespace.
struct Entry {
    hosts: Vec<ServerHost>,
    routing: Routing,
    server: pc::Server,
}

impl Entry {
    /// The names this server serves for `host` of a VirtualService in `vs_ns`.
    fn serves(&self, vs_ns: &str, host: &str) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.admits(vs_ns))
            .filter_map(|h| intersect(host, &h.name))
            .collect()
    }
}

/// A server's hold on a port of the workloads its Gateway selects.
struct Claim<'a> {
    gateway: &'a Stored,
    /// Position in `spec.servers`.
    server: usize,
    /// `port.protocol` as written.
    protocol: &'a str,
}

/// A binding problem, with the condition reason it gives its object.
struct Finding {
    reason: &'static str,
    problem: Problem,
}

/// The Gateways of one render: their servers, and what did not resolve.
pub struct Gateways {
    /// Servers that are served, sorted by gateway (`namespace/name`) then port.
    entries: Vec<Entry>,
    findings: BTreeMap<ObjectRef, Vec<Finding>>,
}

impl Gateways {
    /// Resolves the Gateways that `valid` accepts and checks every binding of `catalog.bound`.
    pub fn new(index: &Index, catalog: &Catalog<'_>, valid: impl Fn(&Stored) -> bool) -> Self {
        let mut out = Self {
            entries: Vec::new(),
            findings: BTreeMap::new(),
        };
        let mut gateways: Vec<(&Stored, &gw::GatewaySpec)> = index
            .resources()
            .filter_map(|s| match &s.resource {
                MeshResource::Gateway(g) => Some((s, &g.spec)),
                _ => None,
            })
            .collect();
        gateways.sort_by(|a, b| a.0.order.cmp(&b.0.order));

        // Oldest first, so an older Gateway keeps a port a newer one conflicts with.
        let mut taken: BTreeMap<(&BTreeMap<String, String>, u16), Claim<'_>> = BTreeMap::new();
        for &(stored, spec) in gateways.iter().filter(|(s, _)| valid(s)) {
            for (i, server) in spec.servers.iter().enumerate() {
                let Some(entry) = entry(stored, spec, server) else {
                    continue;
                };
                let claim = Claim {
                    gateway: stored,
                    server: i,
                    protocol: server.port.as_ref().map_or("", |p| p.protocol.as_str()),
                };
                let key = (&spec.selector, entry.server.port);
                match taken.get(&key) {
                    Some(first)
                        if first.gateway.object != stored.object
                            && listener(protocol_of(first.protocol))
                                != listener(entry.server.protocol) =>
                    {
                        out.port_conflict(first, &claim, key.0, key.1);
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        taken.insert(key, claim);
                    }
                }
                out.entries.push(entry);
            }
        }
        out.entries.sort_by(|a, b| {
            (&a.server.gateway, a.server.port).cmp(&(&b.server.gateway, b.server.port))
        });

        for v in &catalog.bound {
            out.check_binding(&gateways, &valid, v);
        }
        out
    }

    fn find(&mut self, object: &ObjectRef, reason: &'static str, problem: Problem) {
        self.findings
            .entry(object.clone())
            .or_default()
            .push(Finding { reason, problem });
    }

    /// `second` asks for a port that `first` (an older Gateway, same selector) holds with a
    /// protocol that needs another listener.
    fn port_conflict(
        &mut self,
        first: &Claim<'_>,
        second: &Claim<'_>,
        selector: &BTreeMap<String, String>,
        port: u16,
    ) {
        let labels = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let workloads = if labels.is_empty() {
            "every gateway workload".to_string()
        } else {
            format!("the workloads labelled {labels}")
        };
        let (a, b) = (gateway_name(first.gateway), gateway_name(second.gateway));
        let (i, j) = (first.server, second.server);
        let (p, q) = (first.protocol, second.protocol);
        self.find(
            &second.gateway.object,
            "PortConflict",
            Problem::error(
                Code::InvalidPort,
                format!("spec.servers[{j}].port"),
                format!(
                    "port {port} is already served with protocol {p} by Gateway {a} (servers[{i}]) on {workloads}; {q} cannot share it, so this server is not served"
                ),
            ),
        );
        self.find(
            &first.gateway.object,
            "PortConflict",
            Problem::warn(
                Code::InvalidPort,
                format!("spec.servers[{i}].port"),
                format!(
                    "Gateway {b} (servers[{j}]) also asks for port {port} on {workloads} with protocol {q}; this Gateway keeps it with {p}"
                ),
            ),
        );
    }

    /// Every Gateway `v` binds to must exist, and serve each of its hosts.
    fn check_binding(
        &mut self,
        gateways: &[(&Stored, &gw::GatewaySpec)],
        valid: &impl Fn(&Stored) -> bool,
        v: &VsEntry<'_>,
    ) {
        let vns = v.stored.namespace();
        let vs_name = gateway_name(v.stored);
        for (gateway, path) in routes::bound_gateways(v.spec, vns) {
            let Some((stored, _)) = gateways.iter().find(|(s, _)| gateway_name(s) == gateway)
            else {
                self.find(
                    &v.stored.object,
                    "UnknownGateway",
                    Problem::error(
                        Code::ReferencedResourceNotFound,
                        path,
                        format!("Gateway {gateway} does not exist"),
                    ),
                );
                continue;
            };
            if !valid(stored) {
                self.find(
                    &v.stored.object,
                    "UnknownGateway",
                    Problem::error(
                        Code::ReferencedResourceNotFound,
                        path,
                        format!("Gateway {gateway} is not valid, so nothing is bound to it"),
                    ),
                );
                continue;
            }
            let servers: Vec<&Entry> = self
                .entries
                .iter()
                .filter(|e| e.server.gateway == gateway)
                .collect();
            let unserved: Vec<(usize, &String)> = v
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| servers.iter().all(|e| e.serves(vns, h).is_empty()))
                .collect();
            let gateway_object = stored.object.clone();
            for (j, host) in unserved {
                self.find(
                    &v.stored.object,
                    "HostNotServed",
                    Problem::error(
                        Code::InvalidHost,
                        format!("spec.hosts[{j}]"),
                        format!(
                            "host {host} is not served by any server of Gateway {gateway} (for VirtualServices of namespace {vns})"
                        ),
                    ),
                );
                self.find(
                    &gateway_object,
                    "HostNotServed",
                    Problem::warn(
                        Code::InvalidHost,
                        "spec.servers",
                        format!(
                            "VirtualService {vs_name} binds to this Gateway for host {host}, which none of its servers serves"
                        ),
                    ),
                );
            }
        }
    }

    /// The gateway section of the config that the gateway workloads of `namespace` read.
    pub fn config(&self, catalog: &Catalog<'_>, namespace: &str) -> pc::GatewayConfig {
        let servers = self
            .entries
            .iter()
            .map(|e| {
                let mut server = e.server.clone();
                if !server.https_redirect {
                    bind(catalog, namespace, e, &mut server);
                }
                server
            })
            .collect();
        pc::GatewayConfig { servers }
    }

    /// Lays the binding findings over the validation verdicts: an error makes an accepted
    /// object not accepted (with the finding's reason), a warning is added to its message.
    /// Rendering does not read these verdicts: what resolves keeps serving.
    pub fn merge_statuses(&self, statuses: &mut BTreeMap<ObjectRef, ObjectStatus>) {
        for (object, findings) in &self.findings {
            let Some(status) = statuses.get_mut(object) else {
                continue;
            };
            if !status.accepted {
                continue;
            }
            let errors: Vec<&Problem> = findings
                .iter()
                .map(|f| &f.problem)
                .filter(|p| p.is_error())
                .collect();
            let warnings: Vec<&Problem> = findings
                .iter()
                .map(|f| &f.problem)
                .filter(|p| !p.is_error())
                .collect();
            let join = |a: String, b: &str| match (a.is_empty(), b.is_empty()) {
                (true, _) => b.to_string(),
                (_, true) => a,
                _ => format!("{a}; {b}"),
            };
            if let Some(first) = findings.iter().find(|f| f.problem.is_error()) {
                status.accepted = false;
                status.reason = first.reason;
                status.message = summary(&errors);
            } else {
                status.message = join(summary(&warnings), &status.message);
            }
        }
    }
}

/// `namespace/name` of a stored object.
fn gateway_name(s: &Stored) -> String {
    format!("{}/{}", s.namespace(), s.object.name)
}

fn protocol_of(protocol: &str) -> pc::ServerProtocol {
    match protocol.to_ascii_uppercase().as_str() {
        "HTTPS" => pc::ServerProtocol::Https,
        "HTTP2" => pc::ServerProtocol::Http2,
        "GRPC" => pc::ServerProtocol::Grpc,
        "TLS" => pc::ServerProtocol::Tls,
        "TCP" | "MONGO" => pc::ServerProtocol::Tcp,
        // HTTP and GRPC-WEB (plain HTTP/1.1 or HTTP/2 to the gateway).
        _ => pc::ServerProtocol::Http,
    }
}

fn tls_version(v: Option<TlsProtocolVersion>) -> Option<pc::TlsVersion> {
    match v? {
        TlsProtocolVersion::TlsV1_2 => Some(pc::TlsVersion::V1_2),
        TlsProtocolVersion::TlsV1_3 => Some(pc::TlsVersion::V1_3),
        // The proxy speaks TLS 1.2 and 1.3 only: older bounds and TLS_AUTO leave its default.
        _ => None,
    }
}

/// The Secrets of a server as the proxy reads them: one as `credentialName` (what proxies that
/// predate `credentialNames` read), two (one per key type) as `credentialNames`.
fn credentials(t: &gw::ServerTlsSettings) -> (Option<String>, Vec<String>) {
    let mut names: Vec<String> = t
        .credential_name
        .iter()
        .chain(&t.credential_names)
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    if names.len() == 1 {
        (names.pop(), Vec::new())
    } else {
        (None, names)
    }
}

/// The TLS 1.2 suites a terminating server offers (Istio's OpenSSL names that the gateway
/// implements, groups opened, in order); empty for the gateway's defaults, and for modes that
/// do not take the list (`ISTIO_MUTUAL` uses the mesh's settings, passthrough terminates
/// nothing). Validation has reported the names left out.
fn cipher_suites(t: &gw::ServerTlsSettings) -> Vec<pc::CipherSuite> {
    match t.mode.unwrap_or_default() {
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            gw::cipher_suites::offered_suites(&t.cipher_suites)
                .into_iter()
                .filter_map(pc::CipherSuite::from_name)
                .collect()
        }
        _ => Vec::new(),
    }
}

/// A server's client-certificate pins as digests, where it verifies clients with its own CA
/// (validation refuses pins elsewhere, and malformed ones). A pin that does not parse, which
/// validation keeps from being rendered, would still pin, to a digest no certificate has: a
/// list that lost its entries would admit every client its CA signed.
fn client_pins(
    tls: &gw::ServerTlsSettings,
    pins: &[String],
    parse: gw::PinParser,
) -> Vec<pc::Sha256> {
    let mode = tls.mode.unwrap_or_default();
    if !matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) {
        return Vec::new();
    }
    pins.iter()
        .map(|p| pc::Sha256(parse(p).unwrap_or([0; 32])))
        .collect()
}

/// A server of a Gateway as the proxy serves it (no routes yet); `None` for a server the
/// proxy cannot listen for (a Unix socket `bind`).
fn entry(stored: &Stored, spec: &gw::GatewaySpec, s: &gw::Server) -> Option<Entry> {
    let port = s.port.as_ref()?;
    let number = u16::try_from(port.number).ok().filter(|n| *n != 0)?;
    let protocol = protocol_of(&port.protocol);
    let gateway_ns = stored.namespace().to_string();
    let mode = s.tls.as_ref().map(|t| t.mode.unwrap_or_default());
    let (tls, https_redirect) = match (&s.tls, protocol) {
        (Some(t), pc::ServerProtocol::Https | pc::ServerProtocol::Tls) => {
            let (credential_name, credential_names) = credentials(t);
            (
                Some(pc::ServerTls {
                    mode: match t.mode.unwrap_or_default() {
                        ServerTlsMode::Simple => pc::ServerTlsMode::Simple,
                        ServerTlsMode::Mutual => pc::ServerTlsMode::Mutual,
                        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
                            pc::ServerTlsMode::Passthrough
                        }
                        ServerTlsMode::IstioMutual => pc::ServerTlsMode::IstioMutual,
                        ServerTlsMode::OptionalMutual => pc::ServerTlsMode::OptionalMutual,
                    },
                    credential_name,
                    credential_names,
                    subject_alt_names: t.subject_alt_names.clone(),
                    client_cert_sha256: client_pins(t, &t.verify_certificate_hash, gw::cert_pin),
                    client_spki_sha256: client_pins(t, &t.verify_certificate_spki, gw::spki_pin),
                    min_protocol_version: tls_version(t.min_protocol_version),
                    max_protocol_version: tls_version(t.max_protocol_version),
                    cipher_suites: cipher_suites(t),
                }),
                false,
            )
        }
        (Some(t), _) => (
            None,
            t.https_redirect.unwrap_or(false) && protocol.is_http(),
        ),
        (None, _) => (None, false),
    };
    let passthrough = mode.is_some_and(ServerTlsMode::is_passthrough);
    let routing = match protocol {
        pc::ServerProtocol::Tcp => Routing::Tcp,
        pc::ServerProtocol::Https | pc::ServerProtocol::Tls if passthrough => Routing::Passthrough,
        pc::ServerProtocol::Tls => Routing::Tcp,
        _ => Routing::Http,
    };
    let hosts: Vec<ServerHost> = s
        .hosts
        .iter()
        .map(|h| ServerHost::parse(h, &gateway_ns))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for h in &hosts {
        if !names.contains(&h.name) {
            names.push(h.name.clone());
        }
    }
    Some(Entry {
        server: pc::Server {
            gateway: gateway_name(stored),
            selector: spec.selector.clone(),
            port: number,
            name: port.name.clone(),
            protocol,
            hosts: names,
            tls,
            https_redirect,
            ..pc::Server::default()
        },
        hosts,
        routing,
    })
}

/// Fills the routes of `server` from the VirtualServices bound to it that `namespace` sees.
fn bind(catalog: &Catalog<'_>, namespace: &str, e: &Entry, server: &mut pc::Server) {
    for v in &catalog.bound {
        let vns = v.stored.namespace();
        if !exported(&v.spec.export_to, vns, namespace) {
            continue;
        }
        if !routes::bound_gateways(v.spec, vns)
            .iter()
            .any(|(g, _)| *g == server.gateway)
        {
            continue;
        }
        let mut hosts: Vec<String> = Vec::new();
        for h in &v.hosts {
            for name in e.serves(vns, h) {
                if !hosts.contains(&name) {
                    hosts.push(name);
                }
            }
        }
        if hosts.is_empty() {
            continue;
        }
        let scope = Scope::Gateway {
            gateway: &server.gateway,
            port: server.port,
            bound: v
                .spec
                .gateways
                .iter()
                .any(|g| routes::gateway_ref(g, vns) == server.gateway),
        };
        let r = vs_routes(catalog, v, scope);
        match e.routing {
            Routing::Http if !r.http.is_empty() => server.virtual_hosts.push(pc::VirtualHost {
                virtual_service: gateway_name(v.stored),
                hosts,
                routes: r.http,
            }),
            Routing::Http => {}
            Routing::Tcp => server.tcp_routes.extend(r.tcp),
            Routing::Passthrough => {
                server
                    .tls_routes
                    .extend(r.tls.into_iter().filter_map(|t| sni_served(t, e, vns)));
            }
        }
    }
}

/// A TLS route with each match's SNI names narrowed to what the server serves; `None` when
/// no match keeps a name.
fn sni_served(mut route: pc::TlsRoute, e: &Entry, vs_ns: &str) -> Option<pc::TlsRoute> {
    for m in &mut route.matches {
        let mut names = Vec::new();
        for h in &m.sni_hosts {
            for n in e.serves(vs_ns, h) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        m.sni_hosts = names;
    }
    route.matches.retain(|m| !m.sni_hosts.is_empty());
    (!route.matches.is_empty()).then_some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_intersect_both_ways() {
        assert_eq!(
            intersect("a.example.com", "*").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("a.example.com", "*.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*.b.example.com").as_deref(),
            Some("*.b.example.com")
        );
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
        assert_eq!(intersect("example.com", "*.example.com"), None);
    }

    #[test]
    fn server_host_prefixes_restrict_namespaces() {
        let any = ServerHost::parse("*/A.com", "edge");
        assert_eq!(any.name, "a.com");
        assert!(any.admits("shop"));
        assert!(ServerHost::parse("a.com", "edge").admits("shop"));
        let own = ServerHost::parse("./a.com", "edge");
        assert!(own.admits("edge") && !own.admits("shop"));
        let named = ServerHost::parse("shop/a.com", "edge");
        assert!(named.admits("shop") && !named.admits("edge"));
    }

    /// The validation's list of suites the gateway offers and the config's closed set of
    /// suites are two views of one fact (rustls' TLS 1.2 suites): they must name the same ones.
    #[test]
    fn the_suites_validation_accepts_are_the_ones_the_config_carries() {
        let validated: Vec<&str> = gw::cipher_suites::all_offered().collect();
        let carried: Vec<&str> = pc::CipherSuite::ALL.iter().map(|(_, n)| *n).collect();
        assert_eq!(validated, carried);
    }

    #[test]
    fn one_secret_renders_as_credential_name_two_as_credential_names() {
        let tls = |yaml: &str| -> gw::ServerTlsSettings { serde_saphyr::from_str(yaml).unwrap() };
        assert_eq!(
            credentials(&tls("{mode: SIMPLE, credentialNames: [only]}")),
            (Some("only".to_string()), vec![])
        );
        assert_eq!(
            credentials(&tls("{mode: SIMPLE, credentialName: one}")),
            (Some("one".to_string()), vec![])
        );
        assert_eq!(
            credentials(&tls("{mode: SIMPLE, credentialNames: [rsa, ecdsa]}")),
            (None, vec!["rsa".to_string(), "ecdsa".to_string()])
        );
        let suites = cipher_suites(&tls(
            "{mode: SIMPLE, credentialName: s, cipherSuites: [AES128-SHA, '[ECDHE-RSA-CHACHA20-POLY1305|ECDHE-RSA-AES128-GCM-SHA256]']}",
        ));
        assert_eq!(
            suites,
            [
                pc::CipherSuite::EcdheRsaChacha20Poly1305,
                pc::CipherSuite::EcdheRsaAes128GcmSha256
            ]
        );
        assert!(cipher_suites(&tls("{mode: ISTIO_MUTUAL, cipherSuites: [ALL]}")).is_empty());
    }

    /// Pins reach the config as digests, the certificate hash in any of Istio's spellings;
    /// only servers that verify clients with their own CA carry them.
    #[test]
    fn client_certificate_pins_render_as_digests_for_mutual_servers() {
        let tls = |yaml: &str| -> gw::ServerTlsSettings { serde_saphyr::from_str(yaml).unwrap() };
        let hash = "06:29:84:32:E8:06:6B:29:E2:22:3B:CC:23:AA:95:04:B5:6A:E5:08:FA:BF:34:35:50:88:69:B9:C3:19:0E:22";
        let spki = "b+7MjBbFVR2f6z61934tp3O/aL2e+cUpJ86yyG5WiSs=";
        let t = tls(&format!(
            "{{mode: MUTUAL, credentialName: s, verifyCertificateHash: ['{hash}', '{}'], verifyCertificateSpki: ['{spki}']}}",
            hash.replace(':', "").to_lowercase()
        ));
        let certs = client_pins(&t, &t.verify_certificate_hash, gw::cert_pin);
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0], certs[1]);
        assert_eq!(
            serde_json::to_value(certs[0]).unwrap(),
            "06298432e8066b29e2223bcc23aa9504b56ae508fabf3435508869b9c3190e22"
        );
        let spkis = client_pins(&t, &t.verify_certificate_spki, gw::spki_pin);
        assert_eq!(spkis[0].0[0], 0x6f);
        let simple = tls(&format!(
            "{{mode: SIMPLE, credentialName: s, verifyCertificateHash: ['{hash}']}}"
        ));
        assert!(client_pins(&simple, &simple.verify_certificate_hash, gw::cert_pin).is_empty());
        // Fails closed: a malformed pin still pins (to nothing), it does not unpin the server.
        let bad = tls("{mode: MUTUAL, credentialName: s, verifyCertificateHash: ['zz']}");
        assert_eq!(
            client_pins(&bad, &bad.verify_certificate_hash, gw::cert_pin),
            [pc::Sha256([0; 32])]
        );
    }

    #[test]
    fn listeners_follow_protocol_families() {
        assert_eq!(
            listener(protocol_of("http")),
            listener(protocol_of("GRPC-WEB"))
        );
        assert_eq!(listener(protocol_of("HTTPS")), listener(protocol_of("TLS")));
        assert_ne!(
            listener(protocol_of("HTTP")),
            listener(protocol_of("HTTPS"))
        );
        assert_eq!(protocol_of("MONGO"), pc::ServerProtocol::Tcp);
    }
}
