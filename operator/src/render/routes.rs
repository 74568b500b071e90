//! VirtualService rules into the proxy's routes. Hosts are resolved against the VirtualService's
//! namespace; percentages, durations and older spellings are already normalised by the index.

use mizzen_crds::{
    inventory::fqdn, networking::virtual_service as vs, string_match::StringMatch,
    validate::grpc_status_code,
};
use mizzen_proxy_config as pc;

/// Whether a rule or match applies to sidecars: no gateways listed, or `mesh` among them.
pub fn applies_to_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// The reserved gateway name for every sidecar of the mesh.
pub const MESH: &str = "mesh";

/// A `gateways` entry of a VirtualService in `vs_ns` as `namespace/name`: a name without a
/// namespace is the VirtualService's own namespace; `mesh` stays `mesh`.
pub fn gateway_ref(name: &str, vs_ns: &str) -> String {
    if name == MESH || name.contains('/') {
        name.to_string()
    } else {
        format!("{vs_ns}/{name}")
    }
}

/// The Gateways (`namespace/name`, never `mesh`) a VirtualService in `vs_ns` is bound to: its
/// own `gateways` and those its matches name (Istio indexes a VirtualService by both), each
/// with the first field path that names it, in order.
pub fn bound_gateways(spec: &vs::VirtualServiceSpec, vs_ns: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |path: String, g: &String| {
        let g = gateway_ref(g, vs_ns);
        if g != MESH && !out.iter().any(|(o, _)| *o == g) {
            out.push((g, path));
        }
    };
    for (i, g) in spec.gateways.iter().enumerate() {
        add(format!("spec.gateways[{i}]"), g);
    }
    for (i, r) in spec.http.iter().enumerate() {
        for (j, m) in r.r#match.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                add(format!("spec.http[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    for (i, r) in spec.tcp.iter().enumerate() {
        for (j, m) in r.r#match.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                add(format!("spec.tcp[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    for (i, r) in spec.tls.iter().enumerate() {
        for (j, m) in r.r#match.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                add(format!("spec.tls[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    out
}

/// Which proxies rules are rendered for. A match that lists `gateways` applies to those only
/// (Istio: it overrides the VirtualService's list); a match that lists none inherits the
/// VirtualService's binding, which the caller has already checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The sidecars of the mesh.
    Mesh,
    /// One server of an ingress gateway: the Gateway (`namespace/name`) and the server's port.
    /// Matches for another port are dropped, the others lose their `port` (already narrowed).
    Gateway {
        gateway: &'a str,
        port: u16,
        /// Whether the VirtualService's own `gateways` list names this Gateway: matches that
        /// list no gateways apply only then.
        bound: bool,
    },
}

impl Scope<'_> {
    /// Whether a match with these `gateways` (and `port`) of a VirtualService in `vs_ns` applies.
    fn admits(&self, gateways: &[String], port: Option<u32>, vs_ns: &str) -> bool {
        match *self {
            Self::Mesh => applies_to_mesh(gateways),
            Self::Gateway {
                gateway,
                port: server_port,
                bound,
            } => {
                let named = if gateways.is_empty() {
                    bound
                } else {
                    gateways.iter().any(|g| gateway_ref(g, vs_ns) == gateway)
                };
                named && port.is_none_or(|p| p == u32::from(server_port))
            }
        }
    }

    /// The `port` a rendered match keeps: sidecars match on it, a gateway server has already
    /// narrowed by it.
    fn kept_port(&self, port: Option<u32>) -> Option<u16> {
        match self {
            Self::Mesh => port.and_then(self::port),
            Self::Gateway { .. } => None,
        }
    }
}

fn ms(d: &mizzen_crds::Duration) -> u64 {
    u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX)
}

fn port(n: u32) -> Option<u16> {
    u16::try_from(n).ok()
}

pub fn matcher(m: &StringMatch) -> Option<pc::StringMatcher> {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) => Some(pc::StringMatcher::Exact(e.clone())),
        (_, Some(p), _) => Some(pc::StringMatcher::Prefix(p.clone())),
        (_, _, Some(r)) => Some(pc::StringMatcher::Regex(r.clone())),
        _ => None,
    }
}

pub fn destination(d: &vs::Destination, ns: &str) -> pc::Destination {
    pc::Destination {
        host: fqdn(&d.host, ns),
        subset: d.subset.clone().filter(|s| !s.is_empty()),
        port: d.port.and_then(|p| port(p.number)),
    }
}

fn header_ops(h: Option<&vs::Headers>) -> pc::HeaderOps {
    let ops = |o: Option<&vs::HeaderOperations>| {
        o.map(|o| pc::HeaderOperations {
            set: o.set.clone(),
            add: o.add.clone(),
            remove: o.remove.clone(),
        })
        .unwrap_or_default()
    };
    match h {
        None => pc::HeaderOps::default(),
        Some(h) => pc::HeaderOps {
            request: ops(h.request.as_ref()),
            response: ops(h.response.as_ref()),
        },
    }
}

/// One match of a rule; `None` when it does not apply in `scope`.
fn http_match(m: &vs::HttpMatchRequest, scope: Scope<'_>, vs_ns: &str) -> Option<pc::HttpMatch> {
    if !scope.admits(&m.gateways, m.port, vs_ns) {
        return None;
    }
    let mut headers: Vec<pc::HeaderMatch> = m
        .headers
        .iter()
        .map(|(name, v)| pc::HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: matcher(v),
            invert: false,
        })
        .collect();
    headers.extend(m.without_headers.iter().map(|(name, v)| pc::HeaderMatch {
        name: name.to_ascii_lowercase(),
        value: matcher(v),
        invert: true,
    }));
    Some(pc::HttpMatch {
        uri: m.uri.as_ref().and_then(matcher),
        scheme: m.scheme.as_ref().and_then(matcher),
        method: m.method.as_ref().and_then(matcher),
        authority: m.authority.as_ref().and_then(matcher),
        headers,
        query_params: m
            .query_params
            .iter()
            .map(|(name, v)| pc::QueryParamMatch {
                name: name.clone(),
                value: matcher(v),
            })
            .collect(),
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        port: scope.kept_port(m.port),
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
        gateways: Vec::new(),
    })
}

/// The matches of a rule in `scope`; `None` when none of them applies there.
fn http_matches(rule: &vs::HttpRoute, scope: Scope<'_>, vs_ns: &str) -> Option<Vec<pc::HttpMatch>> {
    if rule.r#match.is_empty() {
        return Some(Vec::new());
    }
    let out: Vec<_> = rule
        .r#match
        .iter()
        .filter_map(|m| http_match(m, scope, vs_ns))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Splits Istio's `retryOn` into conditions and bare status codes.
pub fn retry(r: &vs::HttpRetry) -> pc::Retry {
    let attempts = u32::try_from(r.attempts.unwrap_or(0)).unwrap_or(0);
    if attempts == 0 {
        return pc::Retry::disabled();
    }
    let mut out = pc::Retry {
        attempts,
        per_try_timeout_ms: r.per_try_timeout.as_ref().map(ms),
        retry_on: Vec::new(),
        retriable_status_codes: Vec::new(),
        backoff_ms: r.backoff.as_ref().map(ms),
        retry_remote_localities: r.retry_remote_localities.unwrap_or(false),
    };
    match r
        .retry_on
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => {
            let d = pc::Retry::istio_default();
            out.retry_on = d.retry_on;
            out.retriable_status_codes = d.retriable_status_codes;
        }
        Some(list) => {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if let Ok(code) = item.parse::<u16>() {
                    if !out.retriable_status_codes.contains(&code) {
                        out.retriable_status_codes.push(code);
                    }
                } else if !out.retry_on.iter().any(|c| c == item) {
                    out.retry_on.push(item.to_string());
                }
            }
            if !out.retriable_status_codes.is_empty()
                && !out.retry_on.iter().any(|c| c == "retriable-status-codes")
            {
                out.retry_on.push("retriable-status-codes".into());
            }
        }
    }
    out
}

fn fault(f: &vs::HttpFaultInjection) -> Option<pc::Fault> {
    let pct = |p: Option<&mizzen_crds::Percent>| p.map_or(100.0, |p| p.value);
    let delay = f.delay.as_ref().and_then(|d| {
        Some(pc::FaultDelay {
            fixed_delay_ms: ms(d.fixed_delay.as_ref().or(d.exponential_delay.as_ref())?),
            percentage: pct(d.percentage.as_ref()),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let status = if let Some(code) = a.http_status {
            pc::AbortStatus::Http(u16::try_from(code).ok()?)
        } else if let Some(g) = &a.grpc_status {
            pc::AbortStatus::Grpc(grpc_status_code(g)?)
        } else {
            // http2Error has no counterpart in the proxy: an HTTP/2 reset is answered as 503.
            a.http2_error.as_ref()?;
            pc::AbortStatus::Http(503)
        };
        Some(pc::FaultAbort {
            status,
            percentage: pct(a.percentage.as_ref()),
        })
    });
    (delay.is_some() || abort.is_some()).then_some(pc::Fault { delay, abort })
}

fn cors(c: &vs::CorsPolicy) -> pc::Cors {
    pc::Cors {
        allow_origins: c.allow_origins.iter().filter_map(matcher).collect(),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age_s: c.max_age.as_ref().map(|d| d.get().as_secs()),
        allow_credentials: c.allow_credentials,
        // Istio forwards unmatched preflights unless told to ignore them.
        forward_unmatched_preflights: c.unmatched_preflights
            != Some(vs::UnmatchedPreflights::Ignore),
    }
}

/// Decodes standard base64 (a direct response's `body.bytes`).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

fn action(rule: &vs::HttpRoute, ns: &str) -> pc::HttpAction {
    if let Some(r) = &rule.redirect {
        return pc::HttpAction::Redirect(pc::Redirect {
            uri: r.uri.clone(),
            authority: r.authority.clone(),
            port: r.port.and_then(port),
            port_from_request: r.derive_port
                == Some(mizzen_crds::networking::virtual_service::RedirectPortSelection::FromRequestPort),
            scheme: r.scheme.clone(),
            code: r
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(301),
        });
    }
    if let Some(d) = &rule.direct_response {
        let body = d.body.as_ref().and_then(|b| {
            b.string
                .clone()
                .or_else(|| String::from_utf8(base64_decode(b.bytes.as_deref()?)?).ok())
        });
        return pc::HttpAction::DirectResponse(pc::DirectResponse {
            status: u16::try_from(d.status).unwrap_or(500),
            body,
        });
    }
    let single = rule.route.len() == 1;
    pc::HttpAction::Route(
        rule.route
            .iter()
            .map(|r| pc::WeightedDestination {
                destination: destination(&r.destination, ns),
                weight: if single {
                    100
                } else {
                    u32::try_from(r.weight.unwrap_or(0)).unwrap_or(0)
                },
                headers: header_ops(r.headers.as_ref()),
            })
            .collect(),
    )
}

fn mirrors(rule: &vs::HttpRoute, ns: &str) -> Vec<pc::Mirror> {
    let mut out = Vec::new();
    if let Some(m) = &rule.mirror {
        out.push(pc::Mirror {
            destination: destination(m, ns),
            percentage: rule.mirror_percentage.map_or(100.0, |p| p.value),
        });
    }
    out.extend(rule.mirrors.iter().map(|m| pc::Mirror {
        destination: destination(&m.destination, ns),
        percentage: m.percentage.map_or(100.0, |p| p.value),
    }));
    out
}

/// One HTTP rule of VirtualService `vs_ns/vs_name` at `index`, for the proxies of `scope`.
/// `None` when none of its matches applies there. `rule` must not be a delegate (see
/// [`resolve_delegate`]).
pub fn http_route(
    rule: &vs::HttpRoute,
    scope: Scope<'_>,
    vs_ns: &str,
    vs_name: &str,
    index: usize,
) -> Option<pc::HttpRoute> {
    let matches = http_matches(rule, scope, vs_ns)?;
    Some(pc::HttpRoute {
        name: rule
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{vs_ns}/{vs_name}/{index}")),
        matches,
        action: action(rule, vs_ns),
        rewrite: rule.rewrite.as_ref().map(|r| pc::Rewrite {
            uri: r.uri.clone(),
            authority: r.authority.clone(),
            uri_regex: r.uri_regex_rewrite.as_ref().map(|x| pc::RegexRewrite {
                pattern: x.r#match.clone(),
                substitution: x.rewrite.clone(),
            }),
        }),
        timeout_ms: rule.timeout.as_ref().map(ms),
        retry: rule.retries.as_ref().map(retry),
        fault: rule.fault.as_ref().and_then(fault),
        mirrors: mirrors(rule, vs_ns),
        cors: rule.cors_policy.as_ref().map(cors),
        headers: header_ops(rule.headers.as_ref()),
    })
}

/// Merges a parent match into a delegate's: the delegate's conditions narrow the parent's.
fn merge_match(
    parent: &vs::HttpMatchRequest,
    child: &vs::HttpMatchRequest,
) -> vs::HttpMatchRequest {
    let mut m = child.clone();
    m.uri = m.uri.or_else(|| parent.uri.clone());
    m.scheme = m.scheme.or_else(|| parent.scheme.clone());
    m.method = m.method.or_else(|| parent.method.clone());
    m.authority = m.authority.or_else(|| parent.authority.clone());
    m.port = m.port.or(parent.port);
    m.ignore_uri_case = m.ignore_uri_case.or(parent.ignore_uri_case);
    m.source_namespace = m
        .source_namespace
        .or_else(|| parent.source_namespace.clone());
    for (k, v) in &parent.headers {
        m.headers.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &parent.without_headers {
        m.without_headers
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    for (k, v) in &parent.query_params {
        m.query_params.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &parent.source_labels {
        m.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    if m.gateways.is_empty() {
        m.gateways = parent.gateways.clone();
    }
    m
}

/// Replaces a delegating rule with the delegate's rules, each narrowed by the parent's matches
/// (Istio's delegate semantics: the parent's match selects, the delegate's rules decide).
pub fn resolve_delegate(parent: &vs::HttpRoute, delegate: &[vs::HttpRoute]) -> Vec<vs::HttpRoute> {
    delegate
        .iter()
        .map(|child| {
            let mut rule = child.clone();
            rule.r#match = match (parent.r#match.is_empty(), child.r#match.is_empty()) {
                (true, _) => child.r#match.clone(),
                (false, true) => parent.r#match.clone(),
                (false, false) => parent
                    .r#match
                    .iter()
                    .flat_map(|p| child.r#match.iter().map(move |c| merge_match(p, c)))
                    .collect(),
            };
            rule
        })
        .collect()
}

fn l4_match(m: &vs::L4MatchAttributes, scope: Scope<'_>, ns: &str) -> Option<pc::L4Match> {
    scope.admits(&m.gateways, m.port, ns).then(|| pc::L4Match {
        destination_subnets: m.destination_subnets.clone(),
        port: scope.kept_port(m.port),
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
        source_subnet: m.source_subnet.clone(),
        gateways: Vec::new(),
    })
}

fn weighted(routes: &[vs::RouteDestination], ns: &str) -> Vec<pc::WeightedDestination> {
    let single = routes.len() == 1;
    routes
        .iter()
        .map(|r| pc::WeightedDestination {
            destination: destination(&r.destination, ns),
            weight: if single {
                100
            } else {
                u32::try_from(r.weight.unwrap_or(0)).unwrap_or(0)
            },
            headers: pc::HeaderOps::default(),
        })
        .collect()
}

/// One TCP rule for the proxies of `scope`; `None` when none of its matches applies there.
pub fn tcp_route(rule: &vs::TcpRoute, scope: Scope<'_>, ns: &str) -> Option<pc::TcpRoute> {
    let matches: Vec<_> = rule
        .r#match
        .iter()
        .filter_map(|m| l4_match(m, scope, ns))
        .collect();
    if !rule.r#match.is_empty() && matches.is_empty() {
        return None;
    }
    Some(pc::TcpRoute {
        matches,
        destinations: weighted(&rule.route, ns),
    })
}

/// One TLS rule for the proxies of `scope`; `None` when none of its matches applies there.
pub fn tls_route(rule: &vs::TlsRoute, scope: Scope<'_>, ns: &str) -> Option<pc::TlsRoute> {
    let matches: Vec<_> = rule
        .r#match
        .iter()
        .filter(|m| scope.admits(&m.gateways, m.port, ns))
        .map(|m| pc::TlsMatch {
            sni_hosts: m.sni_hosts.iter().map(|h| fqdn(h, ns)).collect(),
            destination_subnets: m.destination_subnets.clone(),
            port: scope.kept_port(m.port),
            source_labels: m.source_labels.clone(),
            source_namespace: m.source_namespace.clone(),
            gateways: Vec::new(),
        })
        .collect();
    if matches.is_empty() {
        return None;
    }
    Some(pc::TlsRoute {
        matches,
        destinations: weighted(&rule.route, ns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_retry_on_and_moves_bare_codes() {
        let r = retry(&vs::HttpRetry {
            attempts: Some(3),
            retry_on: Some(" 5xx, gateway-error ,503,connect-failure,503".into()),
            ..Default::default()
        });
        assert_eq!(
            r.retry_on,
            [
                "5xx",
                "gateway-error",
                "connect-failure",
                "retriable-status-codes"
            ]
        );
        assert_eq!(r.retriable_status_codes, [503]);
        assert_eq!(r.attempts, 3);
        assert_eq!(retry(&vs::HttpRetry::default()), pc::Retry::disabled());
        let d = retry(&vs::HttpRetry {
            attempts: Some(2),
            ..Default::default()
        });
        assert_eq!(d.retry_on, pc::Retry::istio_default().retry_on);
    }

    #[test]
    fn decodes_base64_bodies() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert!(base64_decode("a$").is_none());
    }

    #[test]
    fn gateway_only_matches_are_dropped_for_sidecars() {
        assert!(applies_to_mesh(&[]));
        assert!(applies_to_mesh(&["gw".into(), "mesh".into()]));
        assert!(!applies_to_mesh(&["gw".into()]));
        let rule = vs::HttpRoute {
            r#match: vec![vs::HttpMatchRequest {
                gateways: vec!["gw".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(http_route(&rule, Scope::Mesh, "ns", "vs", 0).is_none());
    }

    #[test]
    fn gateway_scope_narrows_by_gateway_and_port() {
        let at = |gateway, port, bound| Scope::Gateway {
            gateway,
            port,
            bound,
        };
        assert_eq!(gateway_ref("gw", "shop"), "shop/gw");
        assert_eq!(gateway_ref("edge/gw", "shop"), "edge/gw");
        assert_eq!(gateway_ref("mesh", "shop"), "mesh");
        let rule = vs::HttpRoute {
            r#match: vec![
                vs::HttpMatchRequest {
                    gateways: vec!["gw".into()],
                    port: Some(443),
                    ..Default::default()
                },
                vs::HttpMatchRequest {
                    port: Some(80),
                    ..Default::default()
                },
                vs::HttpMatchRequest {
                    gateways: vec!["mesh".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        // Port 443 of shop/gw: the first match only, its port already narrowed.
        let r = http_route(&rule, at("shop/gw", 443, true), "shop", "vs", 0).unwrap();
        assert_eq!(r.matches.len(), 1);
        assert_eq!(r.matches[0].port, None);
        // Port 80 of a Gateway the VirtualService itself names: the match without gateways.
        let r = http_route(&rule, at("shop/gw", 80, true), "shop", "vs", 0).unwrap();
        assert_eq!(r.matches.len(), 1);
        // Bound only through a match's `gateways`: matches without gateways do not inherit it.
        assert!(http_route(&rule, at("shop/gw", 80, false), "shop", "vs", 0).is_none());
        assert!(http_route(&rule, at("other/gw", 443, true), "shop", "vs", 0).is_none());
        // Sidecars keep the port match and the `mesh` match.
        let r = http_route(&rule, Scope::Mesh, "shop", "vs", 0).unwrap();
        assert_eq!(r.matches.len(), 2);
        assert_eq!(r.matches[0].port, Some(80));
    }
}
