//! Routing of connections that are not HTTP: a service's `tcp_routes` (by destination address,
//! port, source labels, gateway) and `tls_routes` (the same plus the SNI of a TLS ClientHello
//! that is passed through, not terminated).

use std::collections::BTreeMap;
use std::net::IpAddr;

use mizzen_proxy_config::{L4Match, Service, TcpRoute, TlsMatch, WeightedDestination};

use crate::error::CompileError;
use crate::host::{Cidr, normalize_host};
use crate::request::MESH_GATEWAY;
use crate::table::RouteTable;
use crate::weight::WeightedPick;

/// The facts about one connection that L4 routing reads.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionInfo<'a> {
    /// The original destination address of the connection, when known.
    pub destination: Option<IpAddr>,
    /// The calling client's address.
    pub source: Option<IpAddr>,
    /// The service the connection was sent to by name (a local-mode listener that stands for
    /// one service), looked up before the SNI and the address.
    pub host: Option<&'a str>,
    /// The destination port (service port, or the gateway's listening port).
    pub port: u16,
    /// The SNI of a TLS connection the proxy passes through.
    pub sni: Option<&'a str>,
    /// Labels of the calling workload.
    pub source_labels: &'a BTreeMap<String, String>,
    /// Namespace of the calling workload.
    pub source_namespace: &'a str,
    /// `mesh` for a sidecar, `<namespace>/<name>` for a gateway.
    pub gateway: &'a str,
}

/// Which rule decided a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Rule {
    /// The service has no rules for this kind of traffic: to the service itself.
    Default,
    /// Index into `service.tcp_routes`.
    Tcp(usize),
    /// Index into `service.tls_routes`.
    Tls(usize),
}

/// Where a connection goes.
#[derive(Clone, Copy, Debug)]
pub enum L4Decision<'a> {
    Forward {
        service: &'a Service,
        rule: L4Rule,
        destination: &'a WeightedDestination,
    },
    /// The service is known but none of its rules matched: the connection is refused.
    NoRoute { service: &'a Service },
    /// No service has this SNI or address: passthrough or refusal per the outbound policy
    /// ([`RouteTable::unknown_host_action`]).
    UnknownHost,
}

#[derive(Debug, Default)]
struct CompiledL4Match {
    sni_hosts: Vec<String>,
    subnets: Vec<Cidr>,
    port: Option<u16>,
    source_labels: Vec<(String, String)>,
    source_namespace: Option<String>,
    source_subnet: Option<Cidr>,
    gateways: Vec<String>,
}

/// `s` as a CIDR block, or the reason it is not one.
fn cidr(s: &str) -> Result<Cidr, String> {
    Cidr::parse(s).ok_or_else(|| format!("{s:?} is neither an IP address nor a CIDR block"))
}

/// A match's `destinationSubnets`; an error names the entry.
fn destination_subnets(list: &[String]) -> Result<Vec<Cidr>, (String, String)> {
    list.iter()
        .enumerate()
        .map(|(k, s)| cidr(s).map_err(|e| (format!("destinationSubnets[{k}]"), e)))
        .collect()
}

impl CompiledL4Match {
    /// A `tcp` rule's match; an error names the field (relative to the match) and the fault.
    fn tcp(m: &L4Match) -> Result<Self, (String, String)> {
        let source_subnet = m
            .source_subnet
            .as_deref()
            .map(|s| cidr(s).map_err(|e| ("sourceSubnet".to_string(), e)))
            .transpose()?;
        Ok(Self {
            sni_hosts: Vec::new(),
            subnets: destination_subnets(&m.destination_subnets)?,
            port: m.port,
            source_labels: pairs(&m.source_labels),
            source_namespace: m.source_namespace.clone(),
            source_subnet,
            gateways: m.gateways.clone(),
        })
    }

    /// A `tls` rule's match, as [`Self::tcp`].
    fn tls(m: &TlsMatch) -> Result<Self, (String, String)> {
        Ok(Self {
            sni_hosts: m.sni_hosts.iter().map(|h| normalize_host(h)).collect(),
            subnets: destination_subnets(&m.destination_subnets)?,
            port: m.port,
            source_labels: pairs(&m.source_labels),
            source_namespace: m.source_namespace.clone(),
            source_subnet: None,
            gateways: m.gateways.clone(),
        })
    }

    fn applies_to_gateway(&self, gateway: &str) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == gateway)
    }

    fn matches(&self, conn: &ConnectionInfo<'_>) -> bool {
        self.port.is_none_or(|p| p == conn.port)
            && self.applies_to_gateway(conn.gateway)
            && self
                .source_labels
                .iter()
                .all(|(k, v)| conn.source_labels.get(k) == Some(v))
            && self
                .source_namespace
                .as_ref()
                .is_none_or(|ns| ns == conn.source_namespace)
            && self
                .source_subnet
                .is_none_or(|c| conn.source.is_some_and(|ip| c.contains(ip)))
            && (self.subnets.is_empty()
                || conn
                    .destination
                    .is_some_and(|ip| self.subnets.iter().any(|c| c.contains(ip))))
            && (self.sni_hosts.is_empty()
                || conn
                    .sni
                    .is_some_and(|sni| self.sni_hosts.iter().any(|h| sni_matches(h, sni))))
    }
}

/// `h` is lower case; `*` matches any SNI, `*.example.com` any name ending in `.example.com`.
fn sni_matches(h: &str, sni: &str) -> bool {
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    if h == "*" {
        return true;
    }
    match h.strip_prefix('*') {
        Some(suffix) => {
            sni.len() > suffix.len()
                && sni.as_bytes()[sni.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        }
        None => sni.eq_ignore_ascii_case(h),
    }
}

fn pairs(labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The first of `routes` that takes `conn`, and its destination picked by weight (`random`): a
/// gateway's TCP server, whose rules are few and compiled per connection. A match that cannot
/// be compiled (the operator's validation keeps those out) takes nothing.
pub fn select_tcp<'r>(
    routes: &'r [TcpRoute],
    conn: &ConnectionInfo<'_>,
    random: u32,
) -> Option<&'r WeightedDestination> {
    routes
        .iter()
        .find(|r| {
            r.matches.is_empty()
                || r.matches
                    .iter()
                    .any(|m| CompiledL4Match::tcp(m).is_ok_and(|m| m.matches(conn)))
        })
        .and_then(|r| crate::pick_weighted(&r.destinations, random))
}

#[derive(Debug)]
struct L4Route {
    matches: Vec<CompiledL4Match>,
    pick: WeightedPick,
}

impl L4Route {
    fn applies_to_gateway(&self, gateway: &str) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.applies_to_gateway(gateway))
    }
}

/// A service's TCP and TLS rules, compiled.
#[derive(Debug, Default)]
pub(crate) struct L4Routes {
    tcp: Vec<L4Route>,
    tls: Vec<L4Route>,
}

impl L4Routes {
    pub(crate) fn compile(svc: &Service) -> Result<Self, CompileError> {
        let err = |field: String, msg: String| CompileError::new(&svc.host, None, field, msg);
        let tcp = svc
            .tcp_routes
            .iter()
            .map(|r| (&r.matches[..], &r.destinations[..]));
        let tls = svc
            .tls_routes
            .iter()
            .map(|r| (&r.matches[..], &r.destinations[..]));
        let tcp = compile_rules("tcpRoutes", tcp, CompiledL4Match::tcp, &err)?;
        let tls = compile_rules("tlsRoutes", tls, CompiledL4Match::tls, &err)?;
        Ok(Self { tcp, tls })
    }
}

/// One kind of rule (`tcpRoutes` or `tlsRoutes`): each rule's matches compiled with `compile`
/// and its weighted pick; an error names the rule, the match and the field.
fn compile_rules<'a, M: 'a>(
    kind: &str,
    rules: impl Iterator<Item = (&'a [M], &'a [WeightedDestination])>,
    compile: fn(&M) -> Result<CompiledL4Match, (String, String)>,
    err: &impl Fn(String, String) -> CompileError,
) -> Result<Vec<L4Route>, CompileError> {
    rules
        .enumerate()
        .map(|(i, (matches, destinations))| {
            let matches = matches
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    compile(m).map_err(|(field, msg)| {
                        err(format!("{kind}[{i}].matches[{j}].{field}"), msg)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if destinations.is_empty() {
                return Err(err(
                    format!("{kind}[{i}].destinations"),
                    "the route forwards to no destination".into(),
                ));
            }
            Ok(L4Route {
                matches,
                pick: WeightedPick::new(destinations),
            })
        })
        .collect()
}

impl RouteTable {
    /// Decides where a TCP or passed-through TLS connection goes.
    ///
    /// The service is found by the name the connection was sent to, else by SNI (like a Host,
    /// see [`RouteTable::service_for_host`]), else by the original destination address and
    /// port ([`RouteTable::service_for_address`]). A TLS
    /// connection (with SNI) to a service with `tls_routes` takes the first that matches; other
    /// connections take the first matching `tcp_routes` entry. A rule without matches takes
    /// everything; a service without rules for the traffic (or whose rules all belong to other
    /// gateways, for a sidecar) forwards to itself. `random` drives the weighted pick, as in
    /// [`RouteTable::select`].
    pub fn select_l4(&self, conn: &ConnectionInfo<'_>, random: u32) -> L4Decision<'_> {
        let by_name = conn
            .host
            .and_then(|host| self.hosts.lookup(host))
            .or_else(|| conn.sni.and_then(|sni| self.hosts.lookup(sni)));
        let index = by_name.or_else(|| {
            self.hosts.lookup_address(conn.destination?, |i| {
                let s = &self.config.services[i];
                s.ports.is_empty() || s.port(conn.port).is_some()
            })
        });
        let Some(index) = index else {
            return L4Decision::UnknownHost;
        };
        let service = &self.config.services[index];
        let compiled = &self.services[index];
        let tls = conn.sni.is_some() && !compiled.l4.tls.is_empty();
        let routes = if tls {
            &compiled.l4.tls
        } else {
            &compiled.l4.tcp
        };
        let default = L4Decision::Forward {
            service,
            rule: L4Rule::Default,
            destination: compiled.default_destination(),
        };
        if routes.is_empty()
            || (conn.gateway == MESH_GATEWAY
                && !routes.iter().any(|r| r.applies_to_gateway(MESH_GATEWAY)))
        {
            return default;
        }
        for (i, route) in routes.iter().enumerate() {
            if route.matches.is_empty() || route.matches.iter().any(|m| m.matches(conn)) {
                let (rule, destinations) = if tls {
                    (L4Rule::Tls(i), &service.tls_routes[i].destinations)
                } else {
                    (L4Rule::Tcp(i), &service.tcp_routes[i].destinations)
                };
                return L4Decision::Forward {
                    service,
                    rule,
                    destination: &destinations[route.pick.pick(random)],
                };
            }
        }
        L4Decision::NoRoute { service }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UnknownHostAction;
    use mizzen_proxy_config::*;

    const DB: &str = "db.default.svc.cluster.local";

    fn dest(host: &str, subset: &str, weight: u32) -> WeightedDestination {
        WeightedDestination {
            destination: Destination {
                host: host.into(),
                subset: Some(subset.into()),
                port: None,
            },
            weight,
            headers: HeaderOps::default(),
        }
    }

    fn table() -> RouteTable {
        let mut cfg = ProxyConfig::new("default");
        cfg.services = vec![
            Service {
                host: DB.into(),
                namespace: "default".into(),
                addresses: vec!["10.96.0.30".into()],
                ports: vec![ServicePort {
                    number: 5432,
                    name: "tcp-postgres".into(),
                    protocol: Protocol::Tcp,
                    target_port: None,
                }],
                tcp_routes: vec![
                    TcpRoute {
                        matches: vec![L4Match {
                            source_labels: [("app".to_string(), "reports".to_string())].into(),
                            ..L4Match::default()
                        }],
                        destinations: vec![dest(DB, "replica", 100)],
                    },
                    TcpRoute {
                        matches: vec![],
                        destinations: vec![dest(DB, "primary", 80), dest(DB, "canary", 20)],
                    },
                ],
                ..Service::default()
            },
            Service {
                host: "*.example.com".into(),
                namespace: "default".into(),
                tls_routes: vec![TlsRoute {
                    matches: vec![TlsMatch {
                        sni_hosts: vec!["login.example.com".into()],
                        port: Some(443),
                        ..TlsMatch::default()
                    }],
                    destinations: vec![dest("*.example.com", "login", 100)],
                }],
                ..Service::default()
            },
            Service {
                host: "cache.default.svc.cluster.local".into(),
                namespace: "default".into(),
                addresses: vec!["10.96.0.40".into()],
                ..Service::default()
            },
        ];
        RouteTable::new(&cfg).unwrap()
    }

    fn conn<'a>(
        labels: &'a BTreeMap<String, String>,
        dst: &str,
        port: u16,
        sni: Option<&'a str>,
    ) -> ConnectionInfo<'a> {
        ConnectionInfo {
            destination: Some(dst.parse().unwrap()),
            source: Some("10.1.0.5".parse().unwrap()),
            host: None,
            port,
            sni,
            source_labels: labels,
            source_namespace: "default",
            gateway: MESH_GATEWAY,
        }
    }

    fn outcome(t: &RouteTable, c: &ConnectionInfo<'_>, random: u32) -> String {
        match t.select_l4(c, random) {
            L4Decision::Forward {
                rule, destination, ..
            } => format!(
                "{rule:?}->{}",
                destination
                    .destination
                    .subset
                    .as_deref()
                    .unwrap_or(&destination.destination.host)
            ),
            L4Decision::NoRoute { .. } => "no route".into(),
            L4Decision::UnknownHost => "unknown".into(),
        }
    }

    #[test]
    fn tcp_routes_by_address_labels_and_weight() {
        let t = table();
        let none = BTreeMap::new();
        let reports = [("app".to_string(), "reports".to_string())].into();
        assert_eq!(
            outcome(&t, &conn(&reports, "10.96.0.30", 5432, None), 0),
            "Tcp(0)->replica"
        );
        assert_eq!(
            outcome(&t, &conn(&none, "10.96.0.30", 5432, None), 0),
            "Tcp(1)->primary"
        );
        let canary = (0..100)
            .filter(|&r| outcome(&t, &conn(&none, "10.96.0.30", 5432, None), r) == "Tcp(1)->canary")
            .count();
        assert_eq!(canary, 20);
        // Wrong port or address: nobody's.
        assert_eq!(
            outcome(&t, &conn(&none, "10.96.0.30", 80, None), 0),
            "unknown"
        );
        assert_eq!(
            outcome(&t, &conn(&none, "10.96.0.31", 5432, None), 0),
            "unknown"
        );
        // A service without rules forwards to itself.
        assert_eq!(
            outcome(&t, &conn(&none, "10.96.0.40", 6379, None), 0),
            "Default->cache.default.svc.cluster.local"
        );
        assert_eq!(t.unknown_host_action(), UnknownHostAction::Passthrough);
    }

    #[test]
    fn tcp_routes_by_source_namespace() {
        let mut cfg = table().config().clone();
        cfg.services[0].tcp_routes[0].matches[0] = L4Match {
            source_namespace: Some("reports".into()),
            ..L4Match::default()
        };
        let t = RouteTable::new(&cfg).unwrap();
        let none = BTreeMap::new();
        let from = |ns| ConnectionInfo {
            source_namespace: ns,
            ..conn(&none, "10.96.0.30", 5432, None)
        };
        assert_eq!(outcome(&t, &from("reports"), 0), "Tcp(0)->replica");
        assert_eq!(outcome(&t, &from("default"), 0), "Tcp(1)->primary");
    }

    #[test]
    fn tcp_routes_by_source_subnet() {
        let mut cfg = table().config().clone();
        cfg.services[0].tcp_routes[0].matches[0] = L4Match {
            source_subnet: Some("10.1.0.0/16".into()),
            ..L4Match::default()
        };
        let t = RouteTable::new(&cfg).unwrap();
        let none = BTreeMap::new();
        let from = |ip: &str| ConnectionInfo {
            source: Some(ip.parse().unwrap()),
            ..conn(&none, "10.96.0.30", 5432, None)
        };
        assert_eq!(outcome(&t, &from("10.1.200.7"), 0), "Tcp(0)->replica");
        assert_eq!(outcome(&t, &from("10.2.0.1"), 0), "Tcp(1)->primary");
        cfg.services[0].tcp_routes[0].matches[0].source_subnet = Some("10.1.0.0/33".into());
        let e = RouteTable::new(&cfg).unwrap_err().to_string();
        assert!(e.contains("sourceSubnet"), "{e}");
    }

    #[test]
    fn a_gateways_tcp_rules_match_the_client_address() {
        let routes = vec![
            TcpRoute {
                matches: vec![L4Match {
                    source_subnet: Some("203.0.113.0/24".into()),
                    ..L4Match::default()
                }],
                destinations: vec![dest(DB, "partners", 100)],
            },
            TcpRoute {
                matches: vec![L4Match {
                    port: Some(5432),
                    ..L4Match::default()
                }],
                destinations: vec![dest(DB, "primary", 100)],
            },
        ];
        let none = BTreeMap::new();
        let from = |ip: &str| ConnectionInfo {
            source: Some(ip.parse().unwrap()),
            ..conn(&none, "10.96.0.30", 5432, None)
        };
        let subset = |c: &ConnectionInfo<'_>| {
            select_tcp(&routes, c, 0).and_then(|d| d.destination.subset.clone())
        };
        assert_eq!(subset(&from("203.0.113.9")).as_deref(), Some("partners"));
        assert_eq!(subset(&from("198.51.100.1")).as_deref(), Some("primary"));
        let elsewhere = ConnectionInfo {
            port: 6379,
            ..from("198.51.100.1")
        };
        assert_eq!(subset(&elsewhere), None);
    }

    #[test]
    fn tls_routes_by_sni() {
        let t = table();
        let none = BTreeMap::new();
        assert_eq!(
            outcome(
                &t,
                &conn(&none, "1.2.3.4", 443, Some("Login.Example.com")),
                0
            ),
            "Tls(0)->login"
        );
        assert_eq!(
            outcome(
                &t,
                &conn(&none, "1.2.3.4", 443, Some("shop.example.com")),
                0
            ),
            "no route"
        );
        assert_eq!(
            outcome(
                &t,
                &conn(&none, "1.2.3.4", 8443, Some("login.example.com")),
                0
            ),
            "no route"
        );
        assert_eq!(
            outcome(&t, &conn(&none, "1.2.3.4", 443, Some("other.org")), 0),
            "unknown"
        );
    }

    #[test]
    fn sni_wildcards() {
        assert!(sni_matches("*.example.com", "a.example.com"));
        assert!(sni_matches("*.example.com", "a.b.EXAMPLE.com."));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(sni_matches("*", "anything"));
        assert!(sni_matches("a.example.com", "A.example.com"));
        assert!(!sni_matches("a.example.com", "b.example.com"));
    }

    #[test]
    fn bad_subnets_and_empty_destinations_are_compile_errors() {
        let mut cfg = table().config().clone();
        cfg.services[0].tcp_routes[0].matches[0].destination_subnets = vec!["10.0.0.0/40".into()];
        let err = RouteTable::new(&cfg).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "service {DB} tcpRoutes[0].matches[0].destinationSubnets[0]: \"10.0.0.0/40\" is neither an IP address nor a CIDR block"
            )
        );
        let mut cfg = table().config().clone();
        cfg.services[1].tls_routes[0].destinations.clear();
        let err = RouteTable::new(&cfg).unwrap_err();
        assert_eq!(err.field, "tlsRoutes[0].destinations");
    }
}
