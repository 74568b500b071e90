//! What a gateway serves, compiled from the config's `gateway` section for this pod's labels:
//! per port, the plaintext HTTP site (every plaintext HTTP server's virtual hosts merged), the
//! TLS servers chosen by SNI, and a plaintext TCP server. Pure: no I/O.
//!
//! Virtual hosts are compiled by the one routing engine, `mizzen-route`: each host name of a
//! virtual host becomes a service of a small route table of its own, so a request's Host finds
//! its virtual host exactly as a sidecar's finds a service (exact name, then the longest
//! wildcard, then `*`; the first to claim a name keeps it) and its rules match with the same
//! code.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mizzen_proxy_config::{
    ProxyConfig, Server, ServerProtocol, ServerTlsMode, Service, VirtualHost,
};
use mizzen_route::{CompileError, Decision, RouteTable, normalize_host};

/// The servers of `config` that a gateway with `labels` serves.
pub fn served<'a>(
    config: &'a ProxyConfig,
    labels: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = &'a Server> + 'a {
    config
        .gateway
        .iter()
        .flat_map(|g| &g.servers)
        // An empty selector picks every gateway.
        .filter(move |s| mizzen_proxy_config::has_labels(labels, &s.selector))
}

/// The ports a gateway with `labels` listens on.
pub fn ports(config: &ProxyConfig, labels: &BTreeMap<String, String>) -> BTreeSet<u16> {
    served(config, labels).map(|s| s.port).collect()
}

/// How well a server or virtual host name matches a host: exact beats any wildcard, a longer
/// wildcard suffix beats a shorter one, `*` comes last; `None` when it does not match. A
/// wildcard needs at least one label in front of its suffix.
pub fn host_rank(pattern: &str, host: &str) -> Option<usize> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if pattern == "*" {
        return Some(0);
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => (host.len() > suffix.len()
            && host.as_bytes()[host.len() - suffix.len()..]
                .eq_ignore_ascii_case(suffix.as_bytes()))
        .then_some(suffix.len()),
        None => host.eq_ignore_ascii_case(pattern).then_some(usize::MAX),
    }
}

/// The best rank any of `patterns` gives `host`.
fn best_rank(patterns: &[String], host: &str) -> Option<usize> {
    patterns.iter().filter_map(|p| host_rank(p, host)).max()
}

/// HTTP served on one port (plaintext) or behind one TLS server (terminated).
#[derive(Debug)]
pub struct HttpSite {
    /// The listening port as the Gateway names it (route `port` matches compare with it).
    pub port: u16,
    /// The Gateway the site's (first) server belongs to, `namespace/name`.
    pub gateway: String,
    /// The virtual hosts, compiled (see the module documentation).
    pub table: RouteTable,
    /// Hosts of servers with `httpsRedirect`: requests for them get a 301 to https.
    redirect_hosts: Vec<String>,
    /// Hosts of the servers without it.
    routed_hosts: Vec<String>,
}

impl HttpSite {
    fn compile<'a>(
        port: u16,
        servers: impl IntoIterator<Item = &'a Server>,
    ) -> Result<Self, CompileError> {
        let mut config = ProxyConfig::new("gateway");
        let mut gateway = None;
        let (mut redirect_hosts, mut routed_hosts) = (Vec::new(), Vec::new());
        for server in servers {
            gateway.get_or_insert_with(|| server.gateway.clone());
            let hosts = server.hosts.iter().map(|h| normalize_host(h));
            if server.https_redirect {
                redirect_hosts.extend(hosts);
            } else {
                routed_hosts.extend(hosts);
            }
            config
                .services
                .extend(server.virtual_hosts.iter().flat_map(virtual_host_services));
        }
        Ok(Self {
            port,
            gateway: gateway.unwrap_or_default(),
            table: RouteTable::from_config(config)?,
            redirect_hosts,
            routed_hosts,
        })
    }

    /// Whether a request for `host` is answered with a redirect to https: a server with
    /// `httpsRedirect` serves the host at least as specifically as any server without it.
    pub fn redirects(&self, host: &str) -> bool {
        match best_rank(&self.redirect_hosts, host) {
            Some(r) => best_rank(&self.routed_hosts, host).is_none_or(|other| r >= other),
            None => false,
        }
    }

    /// A route decision made by a virtual host. The engine's default route (a host without
    /// rules, or whose rules all belong elsewhere) is no route at a gateway: 404 NR.
    pub fn gateway_decision(decision: Decision<'_>) -> Decision<'_> {
        match decision {
            Decision::Forward {
                service,
                route_index: None,
                ..
            } => Decision::NoRoute { service },
            other => other,
        }
    }
}

/// One service per host name of a virtual host, each with the virtual host's rules. The
/// operator has already narrowed the rules' matches to this gateway and port, so their
/// `gateways` lists are dropped: they hold for every request here.
fn virtual_host_services(vh: &VirtualHost) -> impl Iterator<Item = Service> + '_ {
    let namespace = vh
        .virtual_service
        .split_once('/')
        .map_or("", |(ns, _)| ns)
        .to_string();
    let mut routes = vh.routes.clone();
    for m in routes.iter_mut().flat_map(|r| r.matches.iter_mut()) {
        m.gateways.clear();
    }
    vh.hosts.iter().map(move |h| Service {
        host: h.clone(),
        namespace: namespace.clone(),
        http_routes: routes.clone(),
        ..Service::default()
    })
}

/// A server whose connections arrive over TLS (`HTTPS`, `TLS`), picked by SNI.
#[derive(Debug)]
pub struct TlsSite {
    pub server: Server,
    /// Names the site for requests made after a config change (see [`Plan::http_site`]).
    pub id: String,
    /// Terminated HTTP servers: their virtual hosts.
    pub http: Option<HttpSite>,
    /// `PASSTHROUGH`: the server's TLS rules, matched by SNI (one service per server host).
    pub passthrough: Option<RouteTable>,
}

impl TlsSite {
    fn compile(server: &Server) -> Result<Self, CompileError> {
        let passthrough = server.tls.as_ref().map(|t| t.mode) == Some(ServerTlsMode::Passthrough);
        let http = (!passthrough && server.protocol.is_http())
            .then(|| HttpSite::compile(server.port, [server]))
            .transpose()?;
        let passthrough = passthrough
            .then(|| {
                let mut config = ProxyConfig::new("gateway");
                let mut routes = server.tls_routes.clone();
                for m in routes.iter_mut().flat_map(|r| r.matches.iter_mut()) {
                    m.gateways.clear();
                }
                config.services = server
                    .hosts
                    .iter()
                    .map(|h| Service {
                        host: h.clone(),
                        tls_routes: routes.clone(),
                        ..Service::default()
                    })
                    .collect();
                RouteTable::from_config(config)
            })
            .transpose()?;
        Ok(Self {
            id: site_id(server),
            server: server.clone(),
            http,
            passthrough,
        })
    }
}

fn site_id(server: &Server) -> String {
    format!(
        "{}|{}|{}",
        server.gateway,
        server.name,
        server.hosts.join(",")
    )
}

/// What one port serves.
#[derive(Debug, Default)]
pub struct PortPlan {
    /// Plaintext HTTP servers, their virtual hosts merged.
    pub http: Option<HttpSite>,
    /// Servers that take TLS, in config order.
    pub tls: Vec<TlsSite>,
    /// A plaintext TCP server (the first, when several claim the port).
    pub tcp: Option<Server>,
}

impl PortPlan {
    /// The TLS server for a ClientHello's SNI: the best host match (see [`host_rank`]), the
    /// first on a tie; without SNI only a server of `*` takes the connection.
    pub fn tls_site(&self, sni: Option<&str>) -> Option<&TlsSite> {
        let mut best: Option<(usize, &TlsSite)> = None;
        for site in &self.tls {
            let rank = match sni {
                Some(name) => best_rank(&site.server.hosts, name),
                None => site.server.hosts.iter().any(|h| h == "*").then_some(0),
            };
            if let Some(r) = rank
                && best.is_none_or(|(b, _)| r > b)
            {
                best = Some((r, site));
            }
        }
        best.map(|(_, s)| s)
    }
}

/// Everything a gateway serves under one config version.
#[derive(Debug, Default)]
pub struct Plan {
    pub ports: HashMap<u16, PortPlan>,
}

/// Which HTTP site a connection belongs to, so each request finds it again in the plan
/// current when the request starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteKey {
    Plaintext(u16),
    Tls(u16, String),
}

impl Plan {
    /// Compiles the servers of `config` that select `labels`. A server whose rules do not
    /// compile is left out (and named in the error list), so one bad VirtualService does not
    /// take the others down.
    pub fn compile(
        config: &ProxyConfig,
        labels: &BTreeMap<String, String>,
    ) -> (Self, Vec<(String, CompileError)>) {
        let mut by_port: BTreeMap<u16, Vec<&Server>> = BTreeMap::new();
        for s in served(config, labels) {
            by_port.entry(s.port).or_default().push(s);
        }
        let mut errors = Vec::new();
        let mut ports = HashMap::new();
        for (port, servers) in by_port {
            let mut plan = PortPlan::default();
            let plain_http: Vec<&Server> = servers
                .iter()
                .copied()
                .filter(|s| s.tls.is_none() && s.protocol.is_http())
                .collect();
            if !plain_http.is_empty() {
                match HttpSite::compile(port, plain_http.iter().copied()) {
                    Ok(site) => plan.http = Some(site),
                    Err(e) => errors.push((format!("port {port}"), e)),
                }
            }
            for s in servers.iter().filter(|s| s.tls.is_some()) {
                match TlsSite::compile(s) {
                    Ok(site) => plan.tls.push(site),
                    Err(e) => errors.push((site_id(s), e)),
                }
            }
            plan.tcp = servers
                .iter()
                .find(|s| s.tls.is_none() && s.protocol == ServerProtocol::Tcp)
                .map(|s| (*s).clone());
            ports.insert(port, plan);
        }
        (Self { ports }, errors)
    }

    /// The HTTP site behind `key`, if the current config still has it.
    pub fn http_site(&self, key: &SiteKey) -> Option<&HttpSite> {
        match key {
            SiteKey::Plaintext(port) => self.ports.get(port)?.http.as_ref(),
            SiteKey::Tls(port, id) => self
                .ports
                .get(port)?
                .tls
                .iter()
                .find(|s| &s.id == id)?
                .http
                .as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_proxy_config::{
        Destination, GatewayConfig, HttpAction, HttpMatch, HttpRoute, ServerTls, StringMatcher,
        WeightedDestination,
    };

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn to(host: &str) -> HttpRoute {
        HttpRoute {
            name: host.into(),
            action: HttpAction::Route(vec![WeightedDestination {
                destination: Destination {
                    host: host.into(),
                    subset: None,
                    port: Some(9080),
                },
                weight: 100,
                headers: Default::default(),
            }]),
            ..Default::default()
        }
    }

    fn vhost(hosts: &[&str], routes: Vec<HttpRoute>) -> VirtualHost {
        VirtualHost {
            virtual_service: "default/vs".into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            routes,
        }
    }

    fn server(port: u16, hosts: &[&str], vhosts: Vec<VirtualHost>) -> Server {
        Server {
            gateway: "default/gw".into(),
            selector: labels(&[("istio", "ingressgateway")]),
            port,
            protocol: ServerProtocol::Http,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            virtual_hosts: vhosts,
            ..Default::default()
        }
    }

    fn config(servers: Vec<Server>) -> ProxyConfig {
        let mut c = ProxyConfig::new("istio-system");
        c.gateway = Some(GatewayConfig { servers });
        c
    }

    fn routed_to(site: &HttpSite, host: &str) -> Option<String> {
        let headers = http::HeaderMap::new();
        let l = BTreeMap::new();
        let info = mizzen_route::RequestInfo {
            authority: host,
            port: site.port,
            method: &http::Method::GET,
            scheme: "http",
            path_and_query: "/",
            headers: &headers,
            source_labels: &l,
            source_namespace: "istio-system",
            gateway: &site.gateway,
        };
        match HttpSite::gateway_decision(site.table.select(&info, 0)) {
            Decision::Forward { destination, .. } => Some(destination.destination.host.clone()),
            _ => None,
        }
    }

    #[test]
    fn selectors_are_subsets_of_the_pod_labels() {
        let pod = labels(&[("istio", "ingressgateway"), ("app", "gw")]);
        let selects = |selector| mizzen_proxy_config::has_labels(&pod, &selector);
        assert!(selects(labels(&[("istio", "ingressgateway")])));
        assert!(selects(BTreeMap::new()));
        assert!(!selects(labels(&[("istio", "egressgateway")])));
        let mut other = server(8080, &["*"], vec![]);
        other.selector = labels(&[("istio", "other")]);
        let c = config(vec![server(80, &["*"], vec![]), other]);
        assert_eq!(ports(&c, &pod), BTreeSet::from([80]));
    }

    #[test]
    fn hosts_rank_exact_then_longest_wildcard_then_star() {
        assert_eq!(
            host_rank("a.example.com", "A.example.com."),
            Some(usize::MAX)
        );
        assert!(
            host_rank("*.b.example.com", "x.b.example.com")
                > host_rank("*.example.com", "x.b.example.com")
        );
        assert!(host_rank("*.example.com", "x.example.com") > host_rank("*", "x.example.com"));
        assert_eq!(host_rank("*.example.com", "example.com"), None);
        assert_eq!(host_rank("a.example.com", "b.example.com"), None);
    }

    #[test]
    fn virtual_hosts_of_merged_servers_pick_exact_then_wildcard() {
        let c = config(vec![
            server(80, &["*"], vec![vhost(&["*"], vec![to("star")])]),
            server(
                80,
                &["*.example.com"],
                vec![
                    vhost(&["*.example.com"], vec![to("wild")]),
                    vhost(&["api.example.com"], vec![to("api")]),
                    // A later virtual host claiming the same name loses to the first.
                    vhost(&["api.example.com"], vec![to("late")]),
                    vhost(&["empty.example.com"], vec![]),
                ],
            ),
        ]);
        let (plan, errors) = Plan::compile(&c, &labels(&[("istio", "ingressgateway")]));
        assert!(errors.is_empty(), "{errors:?}");
        let site = plan.http_site(&SiteKey::Plaintext(80)).unwrap();
        assert_eq!(
            routed_to(site, "api.example.com:80").as_deref(),
            Some("api")
        );
        assert_eq!(routed_to(site, "www.example.com").as_deref(), Some("wild"));
        assert_eq!(routed_to(site, "other.org").as_deref(), Some("star"));
        // A virtual host without rules is no route (404 NR), not a route to itself.
        assert_eq!(routed_to(site, "empty.example.com"), None);
    }

    #[test]
    fn https_redirect_applies_to_the_hosts_of_its_server() {
        let mut redirect = server(80, &["secure.example.com"], vec![]);
        redirect.https_redirect = true;
        let c = config(vec![redirect, server(80, &["*"], vec![])]);
        let (plan, _) = Plan::compile(
            &c,
            &BTreeMap::from([("istio".into(), "ingressgateway".into())]),
        );
        let site = plan.http_site(&SiteKey::Plaintext(80)).unwrap();
        assert!(site.redirects("secure.example.com"));
        assert!(!site.redirects("plain.example.com"));
    }

    #[test]
    fn tls_servers_are_chosen_by_sni() {
        let tls = |hosts: &[&str], name: &str| {
            let mut s = server(443, hosts, vec![]);
            s.protocol = ServerProtocol::Https;
            s.name = name.into();
            s.tls = Some(ServerTls {
                credential_name: Some(name.into()),
                ..Default::default()
            });
            s
        };
        let c = config(vec![
            tls(&["*"], "any"),
            tls(&["*.example.com"], "wild"),
            tls(&["a.example.com"], "a"),
        ]);
        let (plan, _) = Plan::compile(&c, &labels(&[("istio", "ingressgateway")]));
        let port = &plan.ports[&443];
        let name = |sni| port.tls_site(sni).map(|s| s.server.name.as_str());
        assert_eq!(name(Some("a.example.com")), Some("a"));
        assert_eq!(name(Some("b.example.com")), Some("wild"));
        assert_eq!(name(Some("other.org")), Some("any"));
        assert_eq!(name(None), Some("any"));
    }

    #[test]
    fn a_server_whose_rules_do_not_compile_is_left_out_by_name() {
        let bad = HttpRoute {
            matches: vec![HttpMatch {
                uri: Some(StringMatcher::Regex("(".into())),
                ..Default::default()
            }],
            ..to("x")
        };
        let c = config(vec![server(80, &["*"], vec![vhost(&["*"], vec![bad])])]);
        let (plan, errors) = Plan::compile(&c, &labels(&[("istio", "ingressgateway")]));
        assert_eq!(errors.len(), 1);
        assert!(plan.http_site(&SiteKey::Plaintext(80)).is_none());
    }
}
