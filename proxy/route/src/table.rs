//! The route table: a [`ProxyConfig`] compiled for fast, allocation-free route selection.

use std::{net::IpAddr, sync::Arc};

use mizzen_proxy_config::{
    Destination, Fault, HttpAction, HttpMatch, HttpRoute, Mirror, OutboundTrafficPolicy,
    ProxyConfig, Service, StringMatcher, WeightedDestination,
};

use mizzen_resilience::retry::RetryPolicy;

use crate::cors::CorsPolicy;
use crate::error::CompileError;
use crate::host::{HostIndex, authority_host};
use crate::l4::L4Routes;
use crate::matcher::CompiledMatch;
use crate::redirect::{redirect_code, redirect_location};
use crate::request::{MESH_GATEWAY, RequestInfo};
use crate::rewrite::UriRewrite;
use crate::weight::WeightedPick;

/// The name of the route a service without HTTP routes gets.
pub const DEFAULT_ROUTE_NAME: &str = "default";

/// Where a request goes. Borrowed from the [`RouteTable`] that decided it.
#[derive(Clone, Debug)]
pub enum Decision<'a> {
    /// Send the request upstream to `destination`.
    Forward {
        service: &'a Service,
        /// The route that matched; for a service without routes (or whose routes all belong to
        /// other gateways, see [`RouteTable::select`]) a default route to the service itself,
        /// named [`DEFAULT_ROUTE_NAME`], with no timeout, fault, mirror or header operations
        /// and the mesh's default retries.
        route: &'a HttpRoute,
        /// Index of `route` in `service.http_routes`; `None` for the default route.
        route_index: Option<usize>,
        /// The destination picked by weight.
        destination: &'a WeightedDestination,
        /// The match (of `route.matches`) that selected the route: the first that held. `None`
        /// when the route has no matches.
        matched: Option<&'a HttpMatch>,
        /// The route's rewrite, compiled; apply it with `rewrite.apply(matched_uri, parts)`.
        rewrite: Option<&'a UriRewrite>,
        /// The route's CORS policy, compiled.
        cors: Option<&'a CorsPolicy>,
        /// The route's `retries`, `fault` and `mirrors`, compiled once and shared (a request's
        /// layers hold them while it runs, without a copy); `None` when it has none (for
        /// `retry`: the mesh's default policy applies).
        retry: Option<&'a Arc<RetryPolicy>>,
        fault: Option<&'a Arc<Fault>>,
        mirrors: Option<&'a Arc<[Mirror]>>,
    },
    /// Answer with a redirect.
    Redirect {
        service: &'a Service,
        route: &'a HttpRoute,
        route_index: usize,
        /// Absolute URL for the `Location` header.
        location: String,
        /// 301 unless the route says otherwise.
        code: u16,
        cors: Option<&'a CorsPolicy>,
    },
    /// Answer directly, without calling upstream.
    DirectResponse {
        service: &'a Service,
        route: &'a HttpRoute,
        route_index: usize,
        status: u16,
        body: Option<&'a str>,
        cors: Option<&'a CorsPolicy>,
    },
    /// The host is known but no route matched: Envoy answers 404 with response flag NR.
    NoRoute { service: &'a Service },
    /// No service has this host (or virtual address): see [`RouteTable::unknown_host_action`].
    UnknownHost,
}

impl<'a> Decision<'a> {
    /// The service the request was addressed to, when one was found.
    pub fn service(&self) -> Option<&'a Service> {
        match self {
            Self::Forward { service, .. }
            | Self::Redirect { service, .. }
            | Self::DirectResponse { service, .. }
            | Self::NoRoute { service } => Some(service),
            Self::UnknownHost => None,
        }
    }

    /// The route that decided, when one did (its CORS policy, fault and response header
    /// operations apply to redirects and direct responses too).
    pub fn route(&self) -> Option<&'a HttpRoute> {
        match self {
            Self::Forward { route, .. }
            | Self::Redirect { route, .. }
            | Self::DirectResponse { route, .. } => Some(route),
            Self::NoRoute { .. } | Self::UnknownHost => None,
        }
    }

    /// The `uri` condition of the match that selected a forwarded request, for rewrites.
    pub fn matched_uri(&self) -> Option<&'a StringMatcher> {
        match self {
            Self::Forward { matched, .. } => matched.and_then(|m| m.uri.as_ref()),
            _ => None,
        }
    }

    /// The CORS policy of the route that decided, compiled.
    pub fn cors(&self) -> Option<&'a CorsPolicy> {
        match self {
            Self::Forward { cors, .. }
            | Self::Redirect { cors, .. }
            | Self::DirectResponse { cors, .. } => *cors,
            Self::NoRoute { .. } | Self::UnknownHost => None,
        }
    }

    /// The destination of a forwarded request.
    pub fn destination(&self) -> Option<&'a WeightedDestination> {
        match self {
            Self::Forward { destination, .. } => Some(destination),
            _ => None,
        }
    }
}

/// What the proxy does with a request for a host no service has, per the mesh's
/// `outboundTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownHostAction {
    /// `ALLOW_ANY`: forward to the connection's original destination.
    Passthrough,
    /// `REGISTRY_ONLY`: answer 502 with response flag NR.
    Reject,
}

impl From<OutboundTrafficPolicy> for UnknownHostAction {
    fn from(p: OutboundTrafficPolicy) -> Self {
        match p {
            OutboundTrafficPolicy::AllowAny => Self::Passthrough,
            OutboundTrafficPolicy::RegistryOnly => Self::Reject,
        }
    }
}

#[derive(Debug)]
struct CompiledRoute {
    matches: Vec<CompiledMatch>,
    /// For `HttpAction::Route`.
    pick: Option<WeightedPick>,
    rewrite: Option<UriRewrite>,
    cors: Option<CorsPolicy>,
    retry: Option<Arc<RetryPolicy>>,
    fault: Option<Arc<Fault>>,
    mirrors: Option<Arc<[Mirror]>>,
}

impl CompiledRoute {
    /// Whether some match of this route can apply through `gateway` (no matches: any).
    fn applies_to_gateway(&self, gateway: &str) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.applies_to_gateway(gateway))
    }
}

#[derive(Debug)]
pub(crate) struct CompiledService {
    routes: Vec<CompiledRoute>,
    pub(crate) default_route: HttpRoute,
    pub(crate) l4: L4Routes,
}

impl CompiledService {
    /// The destination of the default route: the service itself.
    pub(crate) fn default_destination(&self) -> &WeightedDestination {
        match &self.default_route.action {
            HttpAction::Route(ds) => &ds[0],
            _ => unreachable!("the default route always forwards"),
        }
    }
}

/// A [`ProxyConfig`] compiled for routing: every regex built once, services indexed by host,
/// alias and virtual address. Immutable; build a new one when the config changes and swap it
/// in (the proxy keeps the old one when [`RouteTable::new`] fails).
#[derive(Debug)]
pub struct RouteTable {
    pub(crate) config: ProxyConfig,
    pub(crate) services: Vec<CompiledService>,
    pub(crate) hosts: HostIndex,
}

impl RouteTable {
    /// Compiles `config` (it is cloned; see [`RouteTable::from_config`] to hand it over).
    pub fn new(config: &ProxyConfig) -> Result<Self, CompileError> {
        Self::from_config(config.clone())
    }

    /// Compiles `config`, taking ownership of it.
    ///
    /// Fails, naming the service, route and field, on an invalid regex (match conditions are
    /// full matches, compiled like the validating webhook does), an invalid
    /// `uriRegexRewrite.pattern`, a route whose action forwards to no destination, or an
    /// unparsable virtual address.
    pub fn from_config(config: ProxyConfig) -> Result<Self, CompileError> {
        let mut hosts = HostIndex::default();
        let mut services = Vec::with_capacity(config.services.len());
        // Hosts first, then aliases, so a service's own host always beats another's alias.
        for (i, svc) in config.services.iter().enumerate() {
            hosts.insert(&svc.host, i);
        }
        for (i, svc) in config.services.iter().enumerate() {
            for alias in &svc.aliases {
                hosts.insert(alias, i);
            }
            for (a, address) in svc.addresses.iter().enumerate() {
                if !hosts.insert_address(address, i) {
                    return Err(CompileError::new(
                        &svc.host,
                        None,
                        format!("addresses[{a}]"),
                        format!("{address:?} is neither an IP address nor a CIDR block"),
                    ));
                }
            }
            services.push(compile_service(svc)?);
        }
        Ok(Self {
            config,
            services,
            hosts,
        })
    }

    /// The config this table was compiled from.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// What to do with [`Decision::UnknownHost`], from `mesh.outboundTrafficPolicy`.
    pub fn unknown_host_action(&self) -> UnknownHostAction {
        self.config.mesh.outbound_traffic_policy.into()
    }

    /// The service a host name (any case, with or without port) refers to: its host or an
    /// alias exactly, else the wildcard service with the longest matching suffix
    /// (`*.example.com`), else a `*` service.
    pub fn service_for_host(&self, authority: &str) -> Option<&Service> {
        self.hosts
            .lookup(authority_host(authority))
            .map(|i| &self.config.services[i])
    }

    /// The service owning a virtual address (ClusterIP, ServiceEntry address or CIDR) and
    /// serving `port` (a service that lists no ports serves any).
    pub fn service_for_address(&self, ip: IpAddr, port: u16) -> Option<&Service> {
        self.hosts
            .lookup_address(ip, |i| {
                let s = &self.config.services[i];
                s.ports.is_empty() || s.port(port).is_some()
            })
            .map(|i| &self.config.services[i])
    }

    fn service_index(&self, req: &RequestInfo<'_>) -> Option<usize> {
        let host = authority_host(req.authority);
        if host.is_empty() {
            return None;
        }
        if let Some(i) = self.hosts.lookup(host) {
            return Some(i);
        }
        let ip = host.parse::<IpAddr>().ok()?;
        self.hosts.lookup_address(ip, |i| {
            let s = &self.config.services[i];
            s.ports.is_empty() || s.port(req.port).is_some()
        })
    }

    /// Decides where `req` goes. `random` drives the weighted pick of a destination (the same
    /// `random` always picks the same one; see [`pick_weighted`](crate::pick_weighted)).
    ///
    /// The service is found by the request's authority ([`RouteTable::service_for_host`]), or,
    /// when the authority is an IP address, by virtual address and `req.port`. Its routes are
    /// tried in order and the first whose matches hold wins (a route's matches are alternatives;
    /// the conditions inside one match must all hold; a route without matches takes
    /// everything). A service without routes forwards to itself.
    ///
    /// Gateway scoping: a match listing `gateways` applies only to requests through one of
    /// them (`req.gateway`: `mesh` for sidecars); a match without `gateways` applies to any.
    /// When no route of a service applies to `mesh` at all (its VirtualService is bound only to
    /// gateways), sidecars route to the service by default, as Istio does; through a gateway the
    /// same situation is [`Decision::NoRoute`].
    pub fn select(&self, req: &RequestInfo<'_>, random: u32) -> Decision<'_> {
        let Some(index) = self.service_index(req) else {
            return Decision::UnknownHost;
        };
        let service = &self.config.services[index];
        let compiled = &self.services[index];

        if compiled.routes.is_empty()
            || (req.gateway == MESH_GATEWAY
                && !compiled
                    .routes
                    .iter()
                    .any(|r| r.applies_to_gateway(MESH_GATEWAY)))
        {
            return default_forward(service, compiled);
        }

        let path = req.path();
        let query = req.query();
        for (route_index, (route, cr)) in
            service.http_routes.iter().zip(&compiled.routes).enumerate()
        {
            let matched = if cr.matches.is_empty() {
                None
            } else {
                match cr.matches.iter().position(|m| m.matches(req, path, query)) {
                    Some(i) => Some(&route.matches[i]),
                    None => continue,
                }
            };
            return match &route.action {
                HttpAction::Route(destinations) => {
                    let pick = cr.pick.as_ref().map_or(0, |p| p.pick(random));
                    Decision::Forward {
                        service,
                        route,
                        route_index: Some(route_index),
                        destination: &destinations[pick],
                        matched,
                        rewrite: cr.rewrite.as_ref(),
                        cors: cr.cors.as_ref(),
                        retry: cr.retry.as_ref(),
                        fault: cr.fault.as_ref(),
                        mirrors: cr.mirrors.as_ref(),
                    }
                }
                HttpAction::Redirect(r) => Decision::Redirect {
                    service,
                    route,
                    route_index,
                    location: redirect_location(r, req),
                    code: redirect_code(r),
                    cors: cr.cors.as_ref(),
                },
                HttpAction::DirectResponse(d) => Decision::DirectResponse {
                    service,
                    route,
                    route_index,
                    status: d.status,
                    body: d.body.as_deref(),
                    cors: cr.cors.as_ref(),
                },
            };
        }
        Decision::NoRoute { service }
    }
}

fn default_forward<'a>(service: &'a Service, compiled: &'a CompiledService) -> Decision<'a> {
    Decision::Forward {
        service,
        route: &compiled.default_route,
        route_index: None,
        destination: compiled.default_destination(),
        matched: None,
        rewrite: None,
        cors: None,
        retry: None,
        fault: None,
        mirrors: None,
    }
}

fn compile_service(svc: &Service) -> Result<CompiledService, CompileError> {
    let mut routes = Vec::with_capacity(svc.http_routes.len());
    for (r, route) in svc.http_routes.iter().enumerate() {
        let name = if route.name.is_empty() {
            format!("http[{r}]")
        } else {
            route.name.clone()
        };
        let mut matches = Vec::with_capacity(route.matches.len());
        for (i, m) in route.matches.iter().enumerate() {
            let at = |f: &str| format!("matches[{i}].{f}");
            let compiled = CompiledMatch::compile(m, &at).map_err(|(field, pattern, e)| {
                CompileError::regex(&svc.host, Some(&name), field, &pattern, &e)
            })?;
            matches.push(compiled);
        }
        let pick = match &route.action {
            HttpAction::Route(ds) if ds.is_empty() => {
                return Err(CompileError::new(
                    &svc.host,
                    Some(&name),
                    "action.route",
                    "the route forwards to no destination",
                ));
            }
            HttpAction::Route(ds) => Some(WeightedPick::new(ds)),
            _ => None,
        };
        let rewrite = route
            .rewrite
            .as_ref()
            .map(|rw| {
                UriRewrite::new(rw).map_err(|e| {
                    let pattern = rw.uri_regex.as_ref().map_or("", |r| r.pattern.as_str());
                    CompileError::regex(
                        &svc.host,
                        Some(&name),
                        "rewrite.uriRegex.pattern",
                        pattern,
                        &e,
                    )
                })
            })
            .transpose()?;
        let cors = route
            .cors
            .as_ref()
            .map(|c| {
                CorsPolicy::new(c).map_err(|e| {
                    CompileError::new(
                        &svc.host,
                        Some(&name),
                        "cors.allowOrigins",
                        format!(
                            "invalid regex: {}",
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    )
                })
            })
            .transpose()?;
        routes.push(CompiledRoute {
            matches,
            pick,
            rewrite,
            cors,
            retry: route.retry.as_ref().map(|r| Arc::new(RetryPolicy::new(r))),
            fault: route.fault.clone().map(Arc::new),
            mirrors: (!route.mirrors.is_empty()).then(|| Arc::from(route.mirrors.as_slice())),
        });
    }
    Ok(CompiledService {
        routes,
        default_route: default_route(svc),
        l4: L4Routes::compile(svc)?,
    })
}

/// The route of a service that has none: everything to the service itself.
fn default_route(svc: &Service) -> HttpRoute {
    HttpRoute {
        name: DEFAULT_ROUTE_NAME.to_string(),
        action: HttpAction::Route(vec![WeightedDestination {
            destination: Destination {
                host: svc.host.clone(),
                subset: None,
                port: None,
            },
            weight: 100,
            headers: Default::default(),
        }]),
        ..HttpRoute::default()
    }
}
