//! Istio's `VirtualService`: ordered HTTP, TLS (SNI) and TCP routing rules for a set of hosts,
//! applied by the sidecars (`mesh`) and/or by named Gateways.
//!
//! Older spellings are kept as their own fields (`percent`, `mirrorPercent`, `allowOrigin`) so
//! nothing is lost on a round trip; [`Normalize`] moves them into their current form.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Normalize,
    duration::Duration,
    percent::Percent,
    selector::is_dns_label,
    string_match::StringMatch,
    validate::{Checker, Code, Validate, host_error},
};

/// Routing rules for traffic addressed to `hosts`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    plural = "virtualservices",
    doc = "Istio VirtualService: HTTP, TLS and TCP routing rules for a set of hosts.",
    namespaced,
    status = "crate::status::MeshStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "vs",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn = r#"{"name":"Gateways","type":"string","jsonPath":".spec.gateways","description":"The gateways and sidecars that apply these routes"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts","description":"The destination hosts the routes apply to"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Hosts the rules apply to: service names (short or FQDN), `*.`-wildcards or IPs. Empty
    /// only for a delegate VirtualService.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways (`[namespace/]name`) that apply the rules; `mesh` means every sidecar. Empty
    /// means `mesh`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// HTTP rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Rules for TLS that is not terminated here, matched on SNI; first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Rules for opaque TCP; first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces that see this VirtualService: `.` (own), `*` (all), `~` (none) or names.
    /// Empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// A service (or subset of one) that traffic is sent to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service name from the registry (short names resolve in the rule's namespace). Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Subset name defined by a DestinationRule for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port of the service; may be left out when the service has one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// A port of a destination service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub number: u32,
}

impl Destination {
    /// True for a destination with nothing set (how a missing one parses).
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Header changes for requests and for responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Overwrite (`set`), append (`add`) and delete (`remove`) headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// One HTTP rule: conditions, then exactly one action (route, redirect, direct response or
/// delegate) and the policies around it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = keep_mirror_percent_spelling)]
pub struct HttpRoute {
    /// Name for logs and debugging; joined with the match name in access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which activates the rule (each is a set of ANDed conditions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<HttpMatchRequest>,
    /// Weighted destinations to forward to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand the rest of the routing to another VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Rewrite the path and/or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Request timeout; `0s` or unset means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Delays and aborts injected on the client side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Also send a copy of each request (fire and forget) to this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Several mirror destinations, each with its own percentage; excludes `mirror`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated integer form of `mirrorPercentage` (also accepted as `mirror_percent`).
    #[serde(
        default,
        alias = "mirror_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent: Option<u32>,
    /// Share of requests copied to `mirror`; 100 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header changes for every destination of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Istio's CRD lists `mirrorPercent` under its proto JSON name `mirror_percent` too; the schema
/// must name it or the API server prunes it before serde's alias can read it.
fn keep_mirror_percent_spelling(schema: &mut schemars::Schema) {
    if let Some(props) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
        && let Some(current) = props.get("mirrorPercent").cloned()
    {
        props.insert("mirror_percent".into(), current);
    }
}

/// Conditions on a request; all that are set must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Name of the match, appended to the route name in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header conditions keyed by lower-case name; an empty match means "present".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Port the request was addressed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this condition is limited to (overrides the VirtualService's `gateways`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Query parameter conditions; an empty match means "present".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Match `uri` case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    /// Headers that must NOT match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Prefix for the statistics of this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// A weighted HTTP destination with its own header changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Required.
    #[serde(default, skip_serializing_if = "Destination::is_unset")]
    pub destination: Destination,
    /// Share of traffic, 0-100; the weights of a rule add up to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A weighted TLS or TCP destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Required.
    #[serde(default, skip_serializing_if = "Destination::is_unset")]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// A redirect response (301 unless `redirectCode` says otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replaces the path of the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the authority (host) of the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replaces the port of the URL; excludes `derivePort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Picks the port from the scheme's default or from the request; excludes `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    /// Replaces the scheme of the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Status of the redirect response (301, 302, 303, 307 or 308).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

/// How a redirect derives its port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https.
    #[default]
    FromProtocolDefault,
    /// The port the request came in on.
    FromRequestPort,
}

/// A fixed response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// Status code, 200-599. Required.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// Response body: text or base64-encoded bytes, one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Base64-encoded bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// The VirtualService (with empty `hosts`) that continues the routing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// Name of the delegate VirtualService. Required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its namespace; the root's namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Rewrites applied before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the matched prefix (or the whole path for an exact match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the Host/authority header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Regex substitution on the path; excludes `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Replace the parts of the path that `match` matches with `rewrite` (`\1` for groups).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#match: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rewrite: String,
}

/// Retry policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Number of retries (not counting the first try); 0 disables retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Timeout of each try, including the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated conditions (`5xx,reset,connect-failure`, gRPC names or status codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Allow retries in other localities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Avoid hosts already tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// Faults injected for chaos testing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// Delay a share of requests before forwarding them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// Deprecated integer form of `percentage.value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// The delay. Required (or `exponentialDelay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    /// Not implemented by Istio; rejected by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<Duration>,
    /// Share of requests delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Answer a share of requests with an error instead of forwarding them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status to answer with; one of `httpStatus`, `grpcStatus`, `http2Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// gRPC status (name such as `UNAVAILABLE`, or number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// HTTP/2 error name (not implemented by Istio; rejected by validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated integer form of `percentage.value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// One mirror destination with its share of requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Required.
    #[serde(default, skip_serializing_if = "Destination::is_unset")]
    pub destination: Destination,
    /// 100 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Cross-origin resource sharing for the rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated exact origins; use `allowOrigins`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    /// Origins allowed, as string matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a preflight answer may be cached (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// What to do with preflight requests from origins that are not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// Handling of preflight requests whose origin is not allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    /// Same as `FORWARD`.
    #[default]
    Unspecified,
    /// Pass them to the upstream.
    Forward,
    /// Answer them without CORS headers.
    Ignore,
}

/// A rule for TLS traffic that is passed through, matched on SNI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Conditions, any of which activates the rule. Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<TlsMatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TLS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI names to match; each must fall within the VirtualService's hosts. Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// A rule for opaque TCP traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<L4MatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TCP connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Source IP or CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Normalisation

impl Normalize for VirtualServiceSpec {
    fn normalize(&mut self) {
        for route in &mut self.http {
            route.normalize();
        }
    }
}

impl Normalize for HttpRoute {
    fn normalize(&mut self) {
        if let Some(p) = self.mirror_percent.take() {
            self.mirror_percentage
                .get_or_insert(Percent::new(f64::from(p)));
        }
        if let Some(fault) = &mut self.fault {
            if let Some(delay) = &mut fault.delay
                && let Some(p) = delay.percent.take()
            {
                delay.percentage.get_or_insert(Percent::new(f64::from(p)));
            }
            if let Some(abort) = &mut fault.abort
                && let Some(p) = abort.percent.take()
            {
                abort.percentage.get_or_insert(Percent::new(f64::from(p)));
            }
        }
        if let Some(cors) = &mut self.cors_policy {
            let old = std::mem::take(&mut cors.allow_origin);
            if cors.allow_origins.is_empty() {
                cors.allow_origins = old.into_iter().map(StringMatch::exact).collect();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

/// What the checks of nested rules need to know about the whole VirtualService.
struct Scope<'a> {
    hosts: &'a [String],
    /// A delegate VirtualService (no hosts), which cannot delegate further.
    is_delegate: bool,
}

/// Retry conditions Istio accepts in `retryOn`, besides HTTP status codes.
pub const RETRY_ON_CONDITIONS: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const CORS_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl Validate for VirtualServiceSpec {
    fn validate(&self, c: &mut Checker) {
        let applies_to_mesh = self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh");
        let scope = Scope {
            hosts: &self.hosts,
            is_delegate: self.hosts.is_empty(),
        };

        if self.hosts.is_empty() {
            // Only a delegate may leave hosts out, and a delegate only carries HTTP rules.
            if !self.gateways.is_empty() || !self.tls.is_empty() || !self.tcp.is_empty() {
                c.field("hosts", |c| {
                    c.error(
                        Code::MissingField,
                        "hosts is required (only a delegate VirtualService, which has no gateways, tls or tcp rules, may leave it empty)",
                    )
                });
            }
        }
        c.each("hosts", &self.hosts, |c, host| {
            if host == "*" && applies_to_mesh {
                c.error(
                    Code::InvalidHost,
                    "host \"*\" is only allowed when the VirtualService is bound to gateways only (not to mesh)",
                );
            } else {
                c.host(host);
            }
        });
        c.each("gateways", &self.gateways, |c, g| gateway_name(c, g));

        if self.http.is_empty() && self.tls.is_empty() && self.tcp.is_empty() {
            c.error(
                Code::MissingField,
                "a VirtualService needs at least one http, tls or tcp rule",
            );
        }
        c.each("http", &self.http, |c, r| r.validate_in(&scope, c));
        c.each("tls", &self.tls, |c, r| r.validate_in(&scope, c));
        c.each("tcp", &self.tcp, |c, r| r.validate_in(c));
        c.export_to(&self.export_to, false);
    }
}

impl HttpRoute {
    fn validate_in(&self, scope: &Scope<'_>, c: &mut Checker) {
        let actions = [
            (!self.route.is_empty(), "route"),
            (self.redirect.is_some(), "redirect"),
            (self.direct_response.is_some(), "directResponse"),
            (self.delegate.is_some(), "delegate"),
        ];
        let set: Vec<&str> = actions
            .iter()
            .filter(|(s, _)| *s)
            .map(|(_, n)| *n)
            .collect();
        match set.len() {
            0 => c.error(
                Code::MissingField,
                "an http rule needs one of route, redirect, directResponse or delegate",
            ),
            1 => {}
            _ => c.error(
                Code::ConflictingFields,
                format!(
                    "an http rule takes only one of route, redirect, directResponse or delegate (got {})",
                    set.join(" and ")
                ),
            ),
        }
        if self.redirect.is_some() && self.rewrite.is_some() {
            c.field("rewrite", |c| {
                c.error(
                    Code::ConflictingFields,
                    "rewrite cannot be combined with redirect",
                )
            });
        }

        c.each("match", &self.r#match, |c, m| m.validate(c));
        c.field("route", |c| {
            let weights: Vec<Option<i32>> = self.route.iter().map(|r| r.weight).collect();
            for (i, r) in self.route.iter().enumerate() {
                c.index(i, |c| {
                    c.field("destination", |c| r.destination.validate(c));
                    c.opt("headers", r.headers.as_ref(), |c, h| h.validate(c));
                });
            }
            route_weights(c, &weights);
        });
        c.opt("redirect", self.redirect.as_ref(), |c, r| r.validate(c));
        c.opt("directResponse", self.direct_response.as_ref(), |c, r| {
            r.validate(c)
        });
        c.opt("delegate", self.delegate.as_ref(), |c, d| {
            if scope.is_delegate {
                c.error(
                    Code::InvalidValue,
                    "a delegate VirtualService (no hosts) cannot delegate again",
                );
            }
            d.validate(c);
        });
        c.opt("rewrite", self.rewrite.as_ref(), |c, r| r.validate(c));
        c.opt("timeout", self.timeout.as_ref(), |c, t| {
            // 0s turns the timeout off.
            if !t.get().is_zero() {
                min_duration(c, t, "timeout");
            }
        });
        c.opt("retries", self.retries.as_ref(), |c, r| r.validate(c));
        c.opt("fault", self.fault.as_ref(), |c, f| f.validate(c));
        c.opt("mirror", self.mirror.as_ref(), |c, d| d.validate(c));
        if self.mirror.is_some() && !self.mirrors.is_empty() {
            c.field("mirrors", |c| {
                c.error(
                    Code::ConflictingFields,
                    "mirror and mirrors cannot both be set; list every mirror in mirrors",
                )
            });
        }
        c.each("mirrors", &self.mirrors, |c, m| {
            c.field("destination", |c| m.destination.validate(c));
            c.opt("percentage", m.percentage.as_ref(), |c, p| c.percent(p));
        });
        c.opt("mirrorPercent", self.mirror_percent.as_ref(), |c, p| {
            c.warn(
                Code::Deprecated,
                "mirrorPercent is deprecated: use mirrorPercentage.value",
            );
            if *p > 100 {
                c.error(
                    Code::InvalidPercentage,
                    format!("must be between 0 and 100 (got {p})"),
                );
            }
        });
        c.opt(
            "mirrorPercentage",
            self.mirror_percentage.as_ref(),
            |c, p| c.percent(p),
        );
        c.opt("corsPolicy", self.cors_policy.as_ref(), |c, p| {
            p.validate(c)
        });
        c.opt("headers", self.headers.as_ref(), |c, h| h.validate(c));
    }
}

/// Weights: each 0-100, and when a rule has several destinations they add up to 100.
fn route_weights(c: &mut Checker, weights: &[Option<i32>]) {
    let mut in_range = true;
    for (i, w) in weights.iter().enumerate() {
        if let Some(w) = *w
            && !(0..=100).contains(&w)
        {
            in_range = false;
            c.index(i, |c| {
                c.field("weight", |c| {
                    c.error(
                        Code::InvalidWeight,
                        format!("weight must be between 0 and 100 (got {w})"),
                    )
                })
            });
        }
    }
    if in_range && weights.len() > 1 {
        let sum: i64 = weights.iter().map(|w| i64::from(w.unwrap_or(0))).sum();
        if sum != 100 {
            c.error(
                Code::InvalidWeight,
                format!("weights of a route must add up to 100 (got {sum})"),
            );
        }
    }
}

impl Validate for Destination {
    fn validate(&self, c: &mut Checker) {
        if self.host.is_empty() {
            c.require("host", false);
        } else {
            c.field("host", |c| {
                if self.host == "*" {
                    c.error(
                        Code::InvalidHost,
                        "a destination host must name a service, not \"*\"",
                    );
                } else {
                    c.host(&self.host);
                }
            });
        }
        c.opt("subset", self.subset.as_ref(), |c, s| {
            if !is_dns_label(s) {
                c.error(
                    Code::InvalidValue,
                    format!("subset name {s:?} is not a valid name (lower-case letters, digits and '-', at most 63)"),
                );
            }
        });
        c.opt("port", self.port.as_ref(), |c, p| {
            c.field("number", |c| c.port(i64::from(p.number)))
        });
    }
}

impl Validate for Headers {
    fn validate(&self, c: &mut Checker) {
        c.opt("request", self.request.as_ref(), |c, o| o.validate(c));
        c.opt("response", self.response.as_ref(), |c, o| o.validate(c));
    }
}

impl Validate for HeaderOperations {
    fn validate(&self, c: &mut Checker) {
        let check = |c: &mut Checker, name: &str| {
            if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "header {name:?} cannot be changed here; use rewrite.authority for the host"
                    ),
                );
            } else if !is_header_name(name) {
                c.error(
                    Code::InvalidValue,
                    format!("{name:?} is not a valid header name"),
                );
            }
        };
        c.field("set", |c| {
            for name in self.set.keys() {
                c.key(name, |c| check(c, name));
            }
        });
        c.field("add", |c| {
            for name in self.add.keys() {
                c.key(name, |c| check(c, name));
            }
        });
        c.each("remove", &self.remove, |c, name| check(c, name));
    }
}

impl Validate for HttpMatchRequest {
    fn validate(&self, c: &mut Checker) {
        c.opt("uri", self.uri.as_ref(), |c, m| c.string_match(m));
        c.opt("scheme", self.scheme.as_ref(), |c, m| c.string_match(m));
        c.opt("method", self.method.as_ref(), |c, m| c.string_match(m));
        c.opt("authority", self.authority.as_ref(), |c, m| {
            c.string_match(m)
        });
        c.field("headers", |c| header_matches(c, &self.headers));
        c.field("withoutHeaders", |c| {
            header_matches(c, &self.without_headers)
        });
        c.field("queryParams", |c| {
            for (name, m) in &self.query_params {
                c.key(name, |c| {
                    if name.is_empty() {
                        c.error(Code::InvalidValue, "query parameter name must not be empty");
                    }
                    presence_or_string_match(c, m);
                });
            }
        });
        c.opt("port", self.port.as_ref(), |c, p| c.port(i64::from(*p)));
        c.field("sourceLabels", |c| c.labels(&self.source_labels));
        c.each("gateways", &self.gateways, |c, g| gateway_name(c, g));
        c.opt(
            "sourceNamespace",
            self.source_namespace.as_ref(),
            |c, ns| namespace_name(c, ns),
        );
    }
}

/// Header conditions: names are tokens, matched in lower case; an empty match means present.
fn header_matches(c: &mut Checker, headers: &BTreeMap<String, StringMatch>) {
    for (name, m) in headers {
        c.key(name, |c| {
            // JWT claim routing uses pseudo header names; the proxy resolves them.
            if !name.starts_with("@request.auth.claims.") {
                if !is_header_name(name) {
                    c.error(
                        Code::InvalidValue,
                        format!("{name:?} is not a valid header name"),
                    );
                } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    c.warn(
                        Code::InvalidValue,
                        format!(
                            "header names are matched in lower case: write {:?}",
                            name.to_ascii_lowercase()
                        ),
                    );
                }
            }
            presence_or_string_match(c, m);
        });
    }
}

/// A header or query match: empty (presence) or one of exact, prefix, regex.
fn presence_or_string_match(c: &mut Checker, m: &StringMatch) {
    if m.set_count() > 0 {
        c.string_match(m);
    }
}

impl Validate for HttpRedirect {
    fn validate(&self, c: &mut Checker) {
        if self.uri.is_none()
            && self.authority.is_none()
            && self.port.is_none()
            && self.derive_port.is_none()
            && self.scheme.is_none()
        {
            c.error(
                Code::MissingField,
                "a redirect needs at least one of uri, authority, port, derivePort or scheme",
            );
        }
        if self.port.is_some() && self.derive_port.is_some() {
            c.error(
                Code::ConflictingFields,
                "only one of port and derivePort may be set",
            );
        }
        c.opt("port", self.port.as_ref(), |c, p| c.port(i64::from(*p)));
        c.opt("redirectCode", self.redirect_code.as_ref(), |c, code| {
            if !(300..=399).contains(code) {
                c.error(
                    Code::InvalidStatusCode,
                    format!("redirect code must be a 3xx status (got {code})"),
                );
            } else if ![301, 302, 303, 307, 308].contains(code) {
                c.warn(
                    Code::InvalidStatusCode,
                    format!("{code} is not a redirect status; use 301, 302, 303, 307 or 308"),
                );
            }
        });
    }
}

impl Validate for HttpDirectResponse {
    fn validate(&self, c: &mut Checker) {
        c.field("status", |c| {
            if !(200..=599).contains(&self.status) {
                c.error(
                    Code::InvalidStatusCode,
                    format!(
                        "direct response status must be between 200 and 599 (got {})",
                        self.status
                    ),
                );
            }
        });
        c.opt("body", self.body.as_ref(), |c, b| {
            if b.string.is_some() && b.bytes.is_some() {
                c.error(
                    Code::ConflictingFields,
                    "only one of string and bytes may be set",
                );
            }
            c.opt("bytes", b.bytes.as_ref(), |c, s| {
                if !is_base64(s) {
                    c.error(Code::InvalidValue, "bytes must be base64-encoded");
                }
            });
        });
    }
}

impl Validate for Delegate {
    fn validate(&self, c: &mut Checker) {
        if self.name.is_empty() {
            c.require("name", false);
        } else if !is_dns_subdomain(&self.name) {
            c.field("name", |c| {
                c.error(
                    Code::InvalidValue,
                    format!("{:?} is not a valid VirtualService name", self.name),
                )
            });
        }
        c.opt("namespace", self.namespace.as_ref(), |c, ns| {
            namespace_name(c, ns)
        });
    }
}

impl Validate for HttpRewrite {
    fn validate(&self, c: &mut Checker) {
        if self.uri.is_some() && self.uri_regex_rewrite.is_some() {
            c.error(
                Code::ConflictingFields,
                "only one of uri and uriRegexRewrite may be set",
            );
        }
        c.opt(
            "uriRegexRewrite",
            self.uri_regex_rewrite.as_ref(),
            |c, r| {
                if r.r#match.is_empty() {
                    c.require("match", false);
                } else {
                    c.field("match", |c| c.regex(&r.r#match));
                }
                c.require("rewrite", !r.rewrite.is_empty());
            },
        );
    }
}

impl Validate for HttpRetry {
    fn validate(&self, c: &mut Checker) {
        c.opt("attempts", self.attempts.as_ref(), |c, n| {
            if *n < 0 {
                c.error(
                    Code::InvalidValue,
                    format!("attempts cannot be negative (got {n})"),
                );
            } else if *n == 0
                && (self.per_try_timeout.is_some()
                    || self.retry_on.is_some()
                    || self.backoff.is_some())
            {
                c.warn(
                    Code::InvalidValue,
                    "attempts is 0, which turns retries off; the other retry settings have no effect",
                );
            }
        });
        c.opt("perTryTimeout", self.per_try_timeout.as_ref(), |c, d| {
            min_duration(c, d, "perTryTimeout")
        });
        c.opt("backoff", self.backoff.as_ref(), |c, d| {
            min_duration(c, d, "backoff")
        });
        c.opt("retryOn", self.retry_on.as_ref(), |c, s| retry_on(c, s));
    }
}

/// `retryOn`: comma-separated known conditions or HTTP status codes.
fn retry_on(c: &mut Checker, value: &str) {
    for entry in value.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            c.error(
                Code::InvalidValue,
                format!("retryOn {value:?} has an empty entry"),
            );
        } else if let Ok(code) = entry.parse::<i64>() {
            c.http_status(code);
        } else if !RETRY_ON_CONDITIONS.contains(&entry) {
            c.error(
                Code::UnknownEnumValue,
                format!(
                    "unknown retryOn condition {entry:?}: use HTTP status codes or {}",
                    RETRY_ON_CONDITIONS.join(", ")
                ),
            );
        }
    }
}

impl Validate for HttpFaultInjection {
    fn validate(&self, c: &mut Checker) {
        if self.delay.is_none() && self.abort.is_none() {
            c.error(
                Code::MissingField,
                "a fault needs a delay, an abort or both",
            );
        }
        c.opt("delay", self.delay.as_ref(), |c, d| d.validate(c));
        c.opt("abort", self.abort.as_ref(), |c, a| a.validate(c));
    }
}

impl Validate for FaultDelay {
    fn validate(&self, c: &mut Checker) {
        match (&self.fixed_delay, &self.exponential_delay) {
            (None, None) => c.require("fixedDelay", false),
            (Some(_), Some(_)) => c.error(
                Code::ConflictingFields,
                "only one of fixedDelay and exponentialDelay may be set",
            ),
            _ => {}
        }
        c.opt("fixedDelay", self.fixed_delay.as_ref(), |c, d| {
            min_duration(c, d, "fixedDelay")
        });
        c.opt(
            "exponentialDelay",
            self.exponential_delay.as_ref(),
            |c, _| {
                c.error(
                Code::NotSupported,
                "exponentialDelay is not supported (Istio does not implement it); use fixedDelay",
            )
            },
        );
        fault_percentage(c, self.percentage.as_ref(), self.percent);
    }
}

impl Validate for FaultAbort {
    fn validate(&self, c: &mut Checker) {
        let kinds = [
            self.http_status.is_some(),
            self.grpc_status.is_some(),
            self.http2_error.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => c.error(
                Code::MissingField,
                "an abort needs one of httpStatus, grpcStatus or http2Error",
            ),
            1 => {}
            _ => c.error(
                Code::ConflictingFields,
                "only one of httpStatus, grpcStatus and http2Error may be set",
            ),
        }
        c.opt("httpStatus", self.http_status.as_ref(), |c, s| {
            c.http_status(i64::from(*s))
        });
        c.opt("grpcStatus", self.grpc_status.as_ref(), |c, s| {
            c.grpc_status(s)
        });
        c.opt("http2Error", self.http2_error.as_ref(), |c, _| {
            c.error(
                Code::NotSupported,
                "http2Error aborts are not supported (Istio does not implement them); use httpStatus or grpcStatus",
            )
        });
        fault_percentage(c, self.percentage.as_ref(), self.percent);
    }
}

/// A fault applies to `percentage` of requests (or the deprecated integer `percent`); with
/// neither, it applies to none.
fn fault_percentage(c: &mut Checker, percentage: Option<&Percent>, percent: Option<i32>) {
    c.opt("percentage", percentage, |c, p| c.percent(p));
    c.opt("percent", percent.as_ref(), |c, p| {
        c.warn(
            Code::Deprecated,
            "percent is deprecated: use percentage.value",
        );
        if !(0..=100).contains(p) {
            c.error(
                Code::InvalidPercentage,
                format!("must be between 0 and 100 (got {p})"),
            );
        }
    });
    if percentage.is_none() && percent.is_none() {
        c.field("percentage", |c| {
            c.warn(
                Code::MissingField,
                "no percentage is set, so the fault applies to no request; set percentage.value (0-100)",
            )
        });
    }
}

impl Validate for CorsPolicy {
    fn validate(&self, c: &mut Checker) {
        if !self.allow_origin.is_empty() {
            c.field("allowOrigin", |c| {
                c.warn(
                    Code::Deprecated,
                    "allowOrigin is deprecated: use allowOrigins with exact matches",
                )
            });
        }
        c.each("allowOrigins", &self.allow_origins, |c, m| {
            c.string_match(m)
        });
        c.each("allowMethods", &self.allow_methods, |c, m| {
            if !CORS_METHODS.contains(&m.as_str()) {
                c.error(
                    Code::InvalidValue,
                    format!(
                        "{m:?} is not an HTTP method: use one of {}",
                        CORS_METHODS.join(", ")
                    ),
                );
            }
        });
        let header = |c: &mut Checker, h: &String| {
            if h != "*" && !is_header_name(h) {
                c.error(
                    Code::InvalidValue,
                    format!("{h:?} is not a valid header name"),
                );
            }
        };
        c.each("allowHeaders", &self.allow_headers, header);
        c.each("exposeHeaders", &self.expose_headers, header);
        c.opt("maxAge", self.max_age.as_ref(), |c, d| {
            let d = d.get();
            if d.is_zero() || d.subsec_nanos() != 0 {
                c.error(
                    Code::InvalidDuration,
                    format!(
                        "maxAge must be a positive whole number of seconds (got {})",
                        Duration::from(d)
                    ),
                );
            }
        });
    }
}

impl TlsRoute {
    fn validate_in(&self, scope: &Scope<'_>, c: &mut Checker) {
        if self.r#match.is_empty() {
            c.field("match", |c| {
                c.error(
                    Code::MissingField,
                    "a tls rule needs at least one match with sniHosts",
                )
            });
        }
        c.each("match", &self.r#match, |c, m| m.validate_in(scope, c));
        l4_routes(c, &self.route, "tls");
    }
}

impl TlsMatchAttributes {
    fn validate_in(&self, scope: &Scope<'_>, c: &mut Checker) {
        c.require("sniHosts", !self.sni_hosts.is_empty());
        c.each("sniHosts", &self.sni_hosts, |c, sni| {
            if let Some(msg) = host_error(sni) {
                c.error(Code::InvalidHost, msg);
            } else if !scope.hosts.is_empty() && !scope.hosts.iter().any(|h| host_within(sni, h)) {
                c.error(
                    Code::InvalidHost,
                    format!(
                        "SNI host {sni:?} is not within any of the VirtualService's hosts ({})",
                        scope.hosts.join(", ")
                    ),
                );
            }
        });
        c.each("destinationSubnets", &self.destination_subnets, |c, s| {
            subnet(c, s)
        });
        c.opt("port", self.port.as_ref(), |c, p| c.port(i64::from(*p)));
        c.field("sourceLabels", |c| c.labels(&self.source_labels));
        c.each("gateways", &self.gateways, |c, g| gateway_name(c, g));
        c.opt(
            "sourceNamespace",
            self.source_namespace.as_ref(),
            |c, ns| namespace_name(c, ns),
        );
    }
}

impl TcpRoute {
    fn validate_in(&self, c: &mut Checker) {
        c.each("match", &self.r#match, |c, m| m.validate(c));
        l4_routes(c, &self.route, "tcp");
    }
}

impl Validate for L4MatchAttributes {
    fn validate(&self, c: &mut Checker) {
        c.each("destinationSubnets", &self.destination_subnets, |c, s| {
            subnet(c, s)
        });
        c.opt("port", self.port.as_ref(), |c, p| c.port(i64::from(*p)));
        c.opt("sourceSubnet", self.source_subnet.as_ref(), |c, s| {
            subnet(c, s)
        });
        c.field("sourceLabels", |c| c.labels(&self.source_labels));
        c.each("gateways", &self.gateways, |c, g| gateway_name(c, g));
        c.opt(
            "sourceNamespace",
            self.source_namespace.as_ref(),
            |c, ns| namespace_name(c, ns),
        );
    }
}

/// The destinations of a TLS or TCP rule: at least one, with valid weights.
fn l4_routes(c: &mut Checker, route: &[RouteDestination], kind: &str) {
    if route.is_empty() {
        c.field("route", |c| {
            c.error(
                Code::MissingField,
                format!("a {kind} rule needs at least one route destination"),
            )
        });
        return;
    }
    c.field("route", |c| {
        for (i, r) in route.iter().enumerate() {
            c.index(i, |c| c.field("destination", |c| r.destination.validate(c)));
        }
        let weights: Vec<Option<i32>> = route.iter().map(|r| r.weight).collect();
        route_weights(c, &weights);
    });
}

// ---------------------------------------------------------------------------------------------
// Small value checks

/// Durations that must be at least one millisecond (what the proxy can honour).
fn min_duration(c: &mut Checker, d: &Duration, field: &str) {
    if d.get() < std::time::Duration::from_millis(1) {
        c.error(
            Code::InvalidDuration,
            format!("{field} must be at least 1ms (got {d})"),
        );
    }
}

/// A gateway reference: `mesh`, `name` or `namespace/name`.
fn gateway_name(c: &mut Checker, name: &str) {
    if name == "mesh" {
        return;
    }
    match name.split_once('/') {
        Some((ns, gw)) => {
            if !is_dns_label(ns) {
                c.error(
                    Code::InvalidValue,
                    format!("gateway {name:?} has an invalid namespace {ns:?}"),
                );
            } else if !is_dns_subdomain(gw) {
                c.error(
                    Code::InvalidValue,
                    format!("gateway {name:?} has an invalid name {gw:?}"),
                );
            }
        }
        None if name.contains('.') && is_dns_subdomain(name) => c.warn(
            Code::Deprecated,
            format!("gateway {name:?} uses the old FQDN form: write <namespace>/<name>"),
        ),
        None if is_dns_label(name) => {}
        None => c.error(
            Code::InvalidValue,
            format!("{name:?} is not a valid gateway name: use mesh, <name> or <namespace>/<name>"),
        ),
    }
}

fn namespace_name(c: &mut Checker, ns: &str) {
    if !is_dns_label(ns) {
        c.error(
            Code::InvalidValue,
            format!("{ns:?} is not a valid namespace name"),
        );
    }
}

/// An IP address or CIDR block.
fn subnet(c: &mut Checker, s: &str) {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ok = match ip.parse::<std::net::IpAddr>() {
        Ok(addr) => {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            len.is_none_or(|l| l.parse::<u8>().is_ok_and(|l| l <= max))
        }
        Err(_) => false,
    };
    if !ok {
        c.error(
            Code::InvalidValue,
            format!("{s:?} is not an IP address or CIDR block"),
        );
    }
}

/// RFC 7230 token characters, which header names consist of.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Standard or URL-safe base64, padding optional (as protobuf JSON accepts).
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && body.len() % 4 != 1
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
}

/// True when every name `inner` matches is also matched by `outer` (`a.b.com` within
/// `*.b.com`, `*.a.b.com` within `*.b.com`, anything within `*`).
pub fn host_within(inner: &str, outer: &str) -> bool {
    let inner = inner.to_ascii_lowercase();
    let outer = outer.to_ascii_lowercase();
    if outer == "*" || inner == outer {
        return true;
    }
    match outer.strip_prefix('*') {
        Some(suffix) => inner != "*" && inner.ends_with(suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity, validate_spec};

    fn spec(yaml: &str) -> VirtualServiceSpec {
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
    fn assert_round_trip(vs: &VirtualServiceSpec) {
        crate::testing::assert_round_trip(vs);
    }

    /// An http rule around `rule` (YAML flow mapping entries) for host `reviews`.
    fn http(rule: &str) -> String {
        format!("hosts: [reviews]\nhttp:\n- {{{rule}}}")
    }

    const ROUTE: &str = "route: [{destination: {host: reviews}}]";

    const FULL: &str = r#"
hosts: [reviews.prod.svc.cluster.local, uk.bookinfo.com]
gateways: [istio-system/public-gw, mesh]
exportTo: [".", other-ns]
http:
- name: reviews-v2
  match:
  - name: catalog
    uri: {prefix: /wpcatalog}
    scheme: {exact: https}
    method: {regex: "GET|HEAD"}
    authority: {exact: uk.bookinfo.com}
    headers:
      end-user: {exact: jason}
      x-present: {}
      "@request.auth.claims.group": {exact: admin}
    withoutHeaders:
      x-debug: {prefix: "1"}
    port: 9080
    sourceLabels: {app: productpage}
    gateways: [istio-system/public-gw]
    queryParams:
      v: {exact: "2"}
    ignoreUriCase: true
    sourceNamespace: bookinfo
    statPrefix: reviews_v2
  rewrite:
    uri: /newcatalog
    authority: reviews.internal
  route:
  - destination:
      host: reviews.prod.svc.cluster.local
      subset: v2
      port: {number: 9080}
    weight: 75
    headers:
      request:
        set: {x-route: v2}
      response:
        add: {x-served-by: v2}
        remove: [x-internal]
  - destination: {host: reviews.prod.svc.cluster.local, subset: v1}
    weight: 25
  timeout: 10s
  retries:
    attempts: 3
    perTryTimeout: 2s
    retryOn: "5xx,connect-failure,503,unavailable"
    retryRemoteLocalities: true
    retryIgnorePreviousHosts: true
    backoff: 25ms
  fault:
    delay: {fixedDelay: 5s, percentage: {value: 0.1}}
    abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
  mirrors:
  - destination: {host: reviews-shadow}
    percentage: {value: 5}
  - destination: {host: reviews-audit, port: {number: 8080}}
  corsPolicy:
    allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\.example\\.com"}]
    allowMethods: [POST, GET]
    allowHeaders: [x-foo-bar, "*"]
    exposeHeaders: [x-request-id]
    maxAge: 24h
    allowCredentials: false
    unmatchedPreflights: IGNORE
  headers:
    request:
      remove: [cookie]
- name: mirror-one
  route: [{destination: {host: ratings}}]
  mirror: {host: ratings, subset: v2}
  mirrorPercentage: {value: 50}
- name: legacy
  match: [{uri: {exact: /old}}]
  redirect:
    uri: /new
    authority: newratings.default.svc.cluster.local
    derivePort: FROM_REQUEST_PORT
    scheme: https
    redirectCode: 308
- match: [{uri: {exact: /gone}}]
  directResponse:
    status: 410
    body: {string: "gone"}
- match: [{uri: {exact: /bytes}}]
  directResponse:
    status: 200
    body: {bytes: "aGVsbG8="}
- match: [{uri: {prefix: /api}}]
  delegate: {name: api-routes, namespace: api}
- match: [{uri: {regex: "/v[0-9]+/.*"}}]
  rewrite:
    uriRegexRewrite: {match: "^/v[0-9]+/(.*)", rewrite: "/\\1"}
  route: [{destination: {host: reviews.prod.svc.cluster.local}}]
  timeout: 0s
tls:
- match:
  - sniHosts: [uk.bookinfo.com]
    destinationSubnets: [10.0.0.0/8, "2001:db8::/32"]
    port: 443
    sourceLabels: {app: client}
    gateways: [mesh]
    sourceNamespace: bookinfo
  route:
  - destination: {host: reviews.prod.svc.cluster.local, port: {number: 443}}
tcp:
- match:
  - destinationSubnets: [192.168.1.1]
    port: 27017
    sourceSubnet: 10.1.0.0/16
    sourceLabels: {app: mongo-client}
    gateways: [istio-system/public-gw]
    sourceNamespace: bookinfo
  route:
  - destination: {host: mongo.prod.svc.cluster.local, port: {number: 5555}}
    weight: 60
  - destination: {host: mongo-b.prod.svc.cluster.local, port: {number: 5555}}
    weight: 40
"#;

    #[test]
    fn parses_every_field_and_round_trips() {
        let vs = spec(FULL);
        assert_eq!(vs.gateways, ["istio-system/public-gw", "mesh"]);
        let r = &vs.http[0];
        let m = &r.r#match[0];
        assert_eq!(m.uri, Some(StringMatch::prefix("/wpcatalog")));
        assert_eq!(m.headers["x-present"], StringMatch::default());
        assert_eq!(m.port, Some(9080));
        assert_eq!(m.ignore_uri_case, Some(true));
        assert_eq!(r.route[0].weight, Some(75));
        assert_eq!(
            r.route[0].destination.port,
            Some(PortSelector { number: 9080 })
        );
        let ops = r.route[0].headers.as_ref().unwrap();
        assert_eq!(ops.request.as_ref().unwrap().set["x-route"], "v2");
        assert_eq!(r.timeout, Some(Duration::from_secs(10)));
        let retries = r.retries.as_ref().unwrap();
        assert_eq!(retries.backoff, Some(Duration::from_millis(25)));
        assert_eq!(retries.retry_ignore_previous_hosts, Some(true));
        let cors = r.cors_policy.as_ref().unwrap();
        assert_eq!(cors.unmatched_preflights, Some(UnmatchedPreflights::Ignore));
        assert_eq!(cors.max_age, Some(Duration::from_secs(86_400)));
        assert_eq!(
            vs.http[2].redirect.as_ref().unwrap().derive_port,
            Some(RedirectPortSelection::FromRequestPort)
        );
        assert_eq!(vs.http[5].delegate.as_ref().unwrap().name, "api-routes");
        assert_eq!(
            vs.http[6]
                .rewrite
                .as_ref()
                .unwrap()
                .uri_regex_rewrite
                .as_ref()
                .unwrap()
                .rewrite,
            "/\\1"
        );
        assert_eq!(vs.tls[0].r#match[0].sni_hosts, ["uk.bookinfo.com"]);
        assert_eq!(
            vs.tcp[0].r#match[0].source_subnet.as_deref(),
            Some("10.1.0.0/16")
        );
        assert_round_trip(&vs);
        let json = serde_json::to_value(&vs).unwrap();
        assert_eq!(json["http"][0]["match"][0]["uri"]["prefix"], "/wpcatalog");
        assert_eq!(
            json["http"][0]["corsPolicy"]["unmatchedPreflights"],
            "IGNORE"
        );
        assert_eq!(
            json["http"][2]["redirect"]["derivePort"],
            "FROM_REQUEST_PORT"
        );
        assert_eq!(json["http"][0]["retries"]["perTryTimeout"], "2s");
        assert_eq!(json["exportTo"][0], ".");
    }

    #[test]
    fn crd_names_and_the_old_mirror_percent_spelling() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(VirtualService::crd()).unwrap();
        assert_eq!(
            crd["metadata"]["name"],
            "virtualservices.networking.istio.io"
        );
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "vs");
        let version = &crd["spec"]["versions"][0];
        let columns: Vec<_> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Gateways", "Hosts", "Age"]);
        let http = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["http"]
            ["items"]["properties"];
        assert_eq!(http["mirror_percent"], http["mirrorPercent"]);
        assert_eq!(http["mirrorPercent"]["type"], "integer");
    }

    #[test]
    fn full_example_is_clean() {
        // Match names, statPrefix and retryIgnorePreviousHosts only name or tune things and
        // stay quiet; derivePort is applied.
        assert_eq!(problems(FULL), vec![]);
    }

    #[test]
    fn unknown_fields_and_enum_values_are_refused_by_parsing() {
        for bad in [
            "hosts: [a]\nhttp: [{rout: []}]",
            "hosts: [a]\nhttp: [{route: [{destination: {host: a, subnet: v1}}]}]",
            "hosts: [a]\nhttp: [{redirect: {uri: /, derivePort: FROM_NOWHERE}}]",
            "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 10}]",
        ] {
            assert!(
                serde_saphyr::from_str::<VirtualServiceSpec>(bad).is_err(),
                "{bad}"
            );
        }
    }

    // --- The fixtures -------------------------------------------------------------------------

    const FIXTURES: [(&str, &str); 7] = [
        (
            "vs-canary-90-10",
            include_str!("../../../../shared/fixtures/istio/vs-canary-90-10.yaml"),
        ),
        (
            "vs-fault-abort",
            include_str!("../../../../shared/fixtures/istio/vs-fault-abort.yaml"),
        ),
        (
            "vs-fault-delay",
            include_str!("../../../../shared/fixtures/istio/vs-fault-delay.yaml"),
        ),
        (
            "vs-mirror",
            include_str!("../../../../shared/fixtures/istio/vs-mirror.yaml"),
        ),
        (
            "vs-retries",
            include_str!("../../../../shared/fixtures/istio/vs-retries.yaml"),
        ),
        (
            "vs-route-all-v1",
            include_str!("../../../../shared/fixtures/istio/vs-route-all-v1.yaml"),
        ),
        (
            "vs-timeout",
            include_str!("../../../../shared/fixtures/istio/vs-timeout.yaml"),
        ),
    ];

    #[track_caller]
    fn check_fixture(name: &str, mut vs: VirtualService) -> VirtualService {
        let back: VirtualService =
            serde_json::from_value(serde_json::to_value(&vs).unwrap()).unwrap();
        assert_eq!(back, vs, "{name}: round trip");
        let found = validate_spec(&vs.spec);
        assert!(found.iter().all(|p| !p.is_error()), "{name}: {found:#?}");
        if name == "vs-fault-delay" {
            assert_eq!(found.len(), 1, "{found:#?}");
            assert_eq!(
                (found[0].code, found[0].path.as_str()),
                (Code::Deprecated, "spec.http[0].fault.delay.percent")
            );
        } else {
            assert_eq!(found, vec![], "{name}");
        }
        vs.spec.normalize();
        assert_eq!(validate_spec(&vs.spec), vec![], "{name}: after normalising");
        let again = vs.spec.clone();
        vs.spec.normalize();
        assert_eq!(vs.spec, again, "{name}: normalising twice changes nothing");
        vs
    }

    #[test]
    fn fixtures_parse_round_trip_validate_and_normalise() {
        for (name, yaml) in FIXTURES {
            let vs: VirtualService = serde_saphyr::from_str(yaml).unwrap();
            assert_eq!(vs.metadata.name.as_deref(), Some("serviceb"), "{name}");
            assert_eq!(vs.spec.hosts, ["serviceb"], "{name}");
            let vs = check_fixture(name, vs);
            let r = &vs.spec.http[0];
            match name {
                "vs-canary-90-10" => {
                    let w: Vec<_> = r
                        .route
                        .iter()
                        .map(|d| (d.destination.subset.as_deref(), d.weight))
                        .collect();
                    assert_eq!(w, [(Some("v1"), Some(90)), (Some("v2"), Some(10))]);
                }
                "vs-fault-abort" => {
                    let abort = r.fault.as_ref().unwrap().abort.as_ref().unwrap();
                    assert_eq!(abort.http_status, Some(500));
                    assert_eq!(abort.percentage, Some(Percent::new(50.0)));
                }
                "vs-fault-delay" => {
                    let delay = r.fault.as_ref().unwrap().delay.as_ref().unwrap();
                    assert_eq!(delay.fixed_delay, Some(Duration::from_secs(10)));
                    assert_eq!(delay.percentage, Some(Percent::new(50.0)));
                    assert_eq!(delay.percent, None);
                }
                "vs-mirror" => {
                    let mirror = r.mirror.as_ref().unwrap();
                    assert_eq!(
                        (mirror.host.as_str(), mirror.subset.as_deref()),
                        ("serviceb", Some("v2"))
                    );
                    assert_eq!(r.route[0].weight, Some(100));
                }
                "vs-retries" => {
                    let retries = r.retries.as_ref().unwrap();
                    assert_eq!(retries.attempts, Some(3));
                    assert_eq!(retries.per_try_timeout, Some(Duration::from_secs(2)));
                }
                "vs-route-all-v1" => {
                    assert_eq!(r.route[0].destination.subset.as_deref(), Some("v1"))
                }
                "vs-timeout" => assert_eq!(r.timeout, Some(Duration::from_secs(10))),
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn fixture_gateway_bound_cookie_match() {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(include_str!(
            "../../../../shared/fixtures/istio/gateway-and-cookie-match.yaml"
        ))
        .unwrap();
        let doc = docs
            .into_iter()
            .find(|d| d["kind"] == "VirtualService")
            .unwrap();
        let vs: VirtualService = serde_json::from_value(doc).unwrap();
        let vs = check_fixture("gateway-and-cookie-match", vs);
        assert_eq!(vs.spec.gateways, ["bookinfo-gateway"]);
        let m = &vs.spec.http[0].r#match[0];
        assert_eq!(
            m.headers["cookie"],
            StringMatch::regex("^(.*;?)?(user=b-nova)(;.*)?")
        );
        assert_eq!(
            vs.spec.http[0].route[0].destination.port,
            Some(PortSelector { number: 9080 })
        );
    }

    // --- Normalisation ------------------------------------------------------------------------

    #[test]
    fn normalises_older_spellings() {
        let mut vs = spec(&http(
            "route: [{destination: {host: r}}], mirror: {host: m}, mirror_percent: 30, \
             fault: {delay: {fixedDelay: 1s, percent: 20}, abort: {httpStatus: 503, percent: 10}}, \
             corsPolicy: {allowOrigin: ['https://a.com', 'https://b.com']}",
        ));
        assert_eq!(vs.http[0].mirror_percent, Some(30));
        // Both spellings of mirrorPercent are read.
        assert_eq!(
            spec(&http(
                "route: [{destination: {host: r}}], mirrorPercent: 30"
            ))
            .http[0]
                .mirror_percent,
            Some(30)
        );
        assert_round_trip(&vs);
        vs.normalize();
        let r = &vs.http[0];
        assert_eq!(
            (r.mirror_percent, r.mirror_percentage),
            (None, Some(Percent::new(30.0)))
        );
        let fault = r.fault.as_ref().unwrap();
        let delay = fault.delay.as_ref().unwrap();
        assert_eq!(
            (delay.percent, delay.percentage),
            (None, Some(Percent::new(20.0)))
        );
        let abort = fault.abort.as_ref().unwrap();
        assert_eq!(
            (abort.percent, abort.percentage),
            (None, Some(Percent::new(10.0)))
        );
        let cors = r.cors_policy.as_ref().unwrap();
        assert!(cors.allow_origin.is_empty());
        assert_eq!(
            cors.allow_origins,
            [
                StringMatch::exact("https://a.com"),
                StringMatch::exact("https://b.com")
            ]
        );
        assert_eq!(validate_spec(&vs), vec![]);
    }

    #[test]
    fn normalising_keeps_the_current_spelling_when_both_are_set() {
        let mut vs = spec(&http(
            "route: [{destination: {host: r}}], mirror: {host: m}, mirrorPercent: 30, mirrorPercentage: {value: 5}, \
             fault: {delay: {fixedDelay: 1s, percent: 20, percentage: {value: 2}}}, \
             corsPolicy: {allowOrigin: ['https://a.com'], allowOrigins: [{prefix: 'https://'}]}",
        ));
        vs.normalize();
        let r = &vs.http[0];
        assert_eq!(
            (r.mirror_percent, r.mirror_percentage),
            (None, Some(Percent::new(5.0)))
        );
        let delay = r.fault.as_ref().unwrap().delay.as_ref().unwrap();
        assert_eq!(
            (delay.percent, delay.percentage),
            (None, Some(Percent::new(2.0)))
        );
        let cors = r.cors_policy.as_ref().unwrap();
        assert!(cors.allow_origin.is_empty());
        assert_eq!(cors.allow_origins, [StringMatch::prefix("https://")]);
    }

    // --- Hosts, gateways, exportTo ------------------------------------------------------------

    #[test]
    fn hosts_are_checked() {
        let p = assert_one(
            &format!("hosts: [reviews, 'bad_host.com']\nhttp: [{{{ROUTE}}}]"),
            Severity::Error,
            Code::InvalidHost,
            "spec.hosts[1]",
        );
        assert!(p.message.contains("bad_host.com"));
    }

    #[test]
    fn wildcard_host_only_for_gateway_bound_services() {
        assert_one(
            &format!("hosts: ['*']\nhttp: [{{{ROUTE}}}]"),
            Severity::Error,
            Code::InvalidHost,
            "spec.hosts[0]",
        );
        assert_one(
            &format!("hosts: ['*']\ngateways: [gw, mesh]\nhttp: [{{{ROUTE}}}]"),
            Severity::Error,
            Code::InvalidHost,
            "spec.hosts[0]",
        );
        assert_eq!(
            problems(&format!(
                "hosts: ['*']\ngateways: [gw]\nhttp: [{{{ROUTE}}}]"
            )),
            vec![]
        );
    }

    #[test]
    fn only_a_delegate_may_leave_hosts_out() {
        // A delegate: no hosts, no gateways, HTTP rules only.
        assert_eq!(problems(&format!("http: [{{{ROUTE}}}]")), vec![]);
        assert_one(
            &format!("gateways: [gw]\nhttp: [{{{ROUTE}}}]"),
            Severity::Error,
            Code::MissingField,
            "spec.hosts",
        );
        assert_one(
            "tcp: [{route: [{destination: {host: db}}]}]",
            Severity::Error,
            Code::MissingField,
            "spec.hosts",
        );
        assert_one(
            "http: [{delegate: {name: other}}]",
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].delegate",
        );
    }

    #[test]
    fn needs_some_rule() {
        assert_one(
            "hosts: [reviews]",
            Severity::Error,
            Code::MissingField,
            "spec",
        );
    }

    #[test]
    fn gateway_names() {
        assert_one(
            &format!("hosts: [a]\ngateways: ['Bad/gw']\nhttp: [{{{ROUTE}}}]"),
            Severity::Error,
            Code::InvalidValue,
            "spec.gateways[0]",
        );
        assert_one(
            &format!("hosts: [a]\ngateways: [my_gw]\nhttp: [{{{ROUTE}}}]"),
            Severity::Error,
            Code::InvalidValue,
            "spec.gateways[0]",
        );
        assert_one(
            &format!(
                "hosts: [a]\ngateways: [gw.istio-system.svc.cluster.local]\nhttp: [{{{ROUTE}}}]"
            ),
            Severity::Warn,
            Code::Deprecated,
            "spec.gateways[0]",
        );
        assert_one(
            "hosts: [a]\nhttp: [{match: [{gateways: ['a/b/c']}], route: [{destination: {host: a}}]}]",
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].match[0].gateways[0]",
        );
    }

    #[test]
    fn export_to_entries() {
        let base = format!("hosts: [a]\nhttp: [{{{ROUTE}}}]\n");
        for ok in ["['.']", "['*']", "[ns-a, '.']"] {
            assert_eq!(problems(&format!("{base}exportTo: {ok}")), vec![], "{ok}");
        }
        assert_one(
            &format!("{base}exportTo: [Bad_NS]"),
            Severity::Error,
            Code::InvalidValue,
            "spec.exportTo[0]",
        );
        assert_one(
            &format!("{base}exportTo: [a, a]"),
            Severity::Error,
            Code::InvalidValue,
            "spec.exportTo[1]",
        );
        assert_one(
            &format!("{base}exportTo: ['*', a]"),
            Severity::Error,
            Code::ConflictingFields,
            "spec.exportTo",
        );
        // "~" (visible nowhere) is a ServiceEntry-only value in Istio.
        assert_one(
            &format!("{base}exportTo: ['~']"),
            Severity::Error,
            Code::InvalidValue,
            "spec.exportTo[0]",
        );
    }

    // --- HTTP actions -------------------------------------------------------------------------

    #[test]
    fn an_http_rule_needs_exactly_one_action() {
        let p = assert_one(
            &http("name: empty"),
            Severity::Error,
            Code::MissingField,
            "spec.http[0]",
        );
        assert!(p.message.contains("redirect"));
        let p = assert_one(
            &http(&format!("{ROUTE}, redirect: {{uri: /x}}")),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0]",
        );
        assert!(p.message.contains("route and redirect"), "{}", p.message);
        assert_one(
            &http("redirect: {uri: /x}, directResponse: {status: 200}"),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0]",
        );
        assert_one(
            &http(&format!("{ROUTE}, delegate: {{name: d}}")),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0]",
        );
        assert_one(
            &http("redirect: {uri: /x}, rewrite: {uri: /y}"),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0].rewrite",
        );
    }

    // --- Weights ------------------------------------------------------------------------------

    #[test]
    fn weights_must_add_up_to_100() {
        let p = assert_one(
            &http(
                "route: [{destination: {host: a}, weight: 90}, {destination: {host: b}, weight: 20}]",
            ),
            Severity::Error,
            Code::InvalidWeight,
            "spec.http[0].route",
        );
        assert_eq!(p.message, "weights of a route must add up to 100 (got 110)");
        assert_eq!(
            p.to_string(),
            "spec.http[0].route: weights of a route must add up to 100 (got 110)"
        );
        // Unset weights count as 0 once there are several destinations.
        let p = assert_one(
            &http("route: [{destination: {host: a}}, {destination: {host: b}}]"),
            Severity::Error,
            Code::InvalidWeight,
            "spec.http[0].route",
        );
        assert!(p.message.contains("(got 0)"));
        // One destination takes all traffic, whatever its weight says.
        for w in ["", ", weight: 0", ", weight: 100"] {
            assert_eq!(
                problems(&http(&format!("route: [{{destination: {{host: a}}{w}}}]"))),
                vec![],
                "{w}"
            );
        }
    }

    #[test]
    fn each_weight_is_between_0_and_100() {
        // Out-of-range weights are reported one by one; their sum is not checked on top.
        let found = problems(&http(
            "route: [{destination: {host: a}, weight: 110}, {destination: {host: b}, weight: -10}]",
        ));
        let got: Vec<_> = found
            .iter()
            .map(|p| (p.code, p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Code::InvalidWeight,
                    "spec.http[0].route[0].weight",
                    "weight must be between 0 and 100 (got 110)"
                ),
                (
                    Code::InvalidWeight,
                    "spec.http[0].route[1].weight",
                    "weight must be between 0 and 100 (got -10)"
                ),
            ]
        );
        let p = assert_one(
            &http("route: [{destination: {host: a}, weight: -5}]"),
            Severity::Error,
            Code::InvalidWeight,
            "spec.http[0].route[0].weight",
        );
        assert!(p.message.contains("-5"));
    }

    #[test]
    fn tcp_and_tls_weights_follow_the_same_rule() {
        let p = assert_one(
            "hosts: [db]\ntcp: [{route: [{destination: {host: a}, weight: 50}, {destination: {host: b}, weight: 20}]}]",
            Severity::Error,
            Code::InvalidWeight,
            "spec.tcp[0].route",
        );
        assert!(p.message.contains("(got 70)"));
        assert_one(
            "hosts: [db]\ntcp: [{match: [{port: 5432}]}]",
            Severity::Error,
            Code::MissingField,
            "spec.tcp[0].route",
        );
    }

    // --- Destinations -------------------------------------------------------------------------

    #[test]
    fn destinations_need_a_valid_host_subset_and_port() {
        assert_one(
            &http("route: [{destination: {subset: v1}}]"),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].route[0].destination.host",
        );
        assert_one(
            &http("route: [{destination: {host: 'a..b'}}]"),
            Severity::Error,
            Code::InvalidHost,
            "spec.http[0].route[0].destination.host",
        );
        assert_one(
            &http("route: [{destination: {host: '*'}}]"),
            Severity::Error,
            Code::InvalidHost,
            "spec.http[0].route[0].destination.host",
        );
        assert_one(
            &http("route: [{destination: {host: a, subset: V_1}}]"),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].route[0].destination.subset",
        );
        let p = assert_one(
            &http("route: [{destination: {host: a, port: {number: 0}}}]"),
            Severity::Error,
            Code::InvalidPort,
            "spec.http[0].route[0].destination.port.number",
        );
        assert!(p.message.contains("(got 0)"));
        assert_one(
            &http(&format!(
                "{ROUTE}, mirror: {{host: m, port: {{number: 70000}}}}"
            )),
            Severity::Error,
            Code::InvalidPort,
            "spec.http[0].mirror.port.number",
        );
    }

    // --- Matches ------------------------------------------------------------------------------

    #[test]
    fn string_matches_need_exactly_one_kind_and_valid_regexes() {
        assert_one(
            &http(&format!("match: [{{uri: {{}}}}], {ROUTE}")),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].match[0].uri",
        );
        assert_one(
            &http(&format!(
                "match: [{{uri: {{exact: /a, prefix: /b}}}}], {ROUTE}"
            )),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0].match[0].uri",
        );
        let p = assert_one(
            &http(&format!(
                "match: [{{authority: {{regex: '(unclosed'}}}}], {ROUTE}"
            )),
            Severity::Error,
            Code::InvalidRegex,
            "spec.http[0].match[0].authority.regex",
        );
        assert!(p.message.contains("(unclosed"));
        assert_one(
            &http(&format!(
                "match: [{{headers: {{x-a: {{regex: '[z-a]'}}}}}}], {ROUTE}"
            )),
            Severity::Error,
            Code::InvalidRegex,
            "spec.http[0].match[0].headers[x-a].regex",
        );
        assert_one(
            &http(&format!(
                "match: [{{queryParams: {{q: {{exact: a, regex: b}}}}}}], {ROUTE}"
            )),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0].match[0].queryParams[q]",
        );
    }

    #[test]
    fn header_names_in_matches() {
        let p = assert_one(
            &http(&format!(
                "match: [{{headers: {{X-User: {{exact: a}}}}}}], {ROUTE}"
            )),
            Severity::Warn,
            Code::InvalidValue,
            "spec.http[0].match[0].headers[X-User]",
        );
        assert!(p.message.contains("x-user"));
        assert_one(
            &http(&format!(
                "match: [{{withoutHeaders: {{'bad header': {{exact: a}}}}}}], {ROUTE}"
            )),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].match[0].withoutHeaders[bad header]",
        );
    }

    #[test]
    fn match_port_labels_and_namespace() {
        assert_one(
            &http(&format!("match: [{{port: 0}}], {ROUTE}")),
            Severity::Error,
            Code::InvalidPort,
            "spec.http[0].match[0].port",
        );
        assert_one(
            &http(&format!(
                "match: [{{sourceLabels: {{app: 'no spaces'}}}}], {ROUTE}"
            )),
            Severity::Error,
            Code::InvalidSelector,
            "spec.http[0].match[0].sourceLabels[app]",
        );
        assert_one(
            &http(&format!("match: [{{sourceNamespace: Prod}}], {ROUTE}")),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].match[0].sourceNamespace",
        );
    }

    // --- Redirects, direct responses, delegates, rewrites ---------------------------------------

    #[test]
    fn redirects() {
        let p = assert_one(
            &http("redirect: {uri: /x, redirectCode: 200}"),
            Severity::Error,
            Code::InvalidStatusCode,
            "spec.http[0].redirect.redirectCode",
        );
        assert!(p.message.contains("200"));
        assert_one(
            &http("redirect: {uri: /x, redirectCode: 304}"),
            Severity::Warn,
            Code::InvalidStatusCode,
            "spec.http[0].redirect.redirectCode",
        );
        let p = problems(&http(
            "redirect: {port: 8443, derivePort: FROM_PROTOCOL_DEFAULT}",
        ));
        assert_eq!(
            crate::testing::codes(&p),
            [("spec.http[0].redirect", Code::ConflictingFields)]
        );
        assert_one(
            &http("redirect: {redirectCode: 302}"),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].redirect",
        );
        assert_one(
            &http("redirect: {port: 0}"),
            Severity::Error,
            Code::InvalidPort,
            "spec.http[0].redirect.port",
        );
    }

    #[test]
    fn direct_responses() {
        let p = assert_one(
            &http("directResponse: {status: 120}"),
            Severity::Error,
            Code::InvalidStatusCode,
            "spec.http[0].directResponse.status",
        );
        assert!(p.message.contains("120"));
        assert_one(
            &http("directResponse: {status: 200, body: {string: a, bytes: YQ==}}"),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0].directResponse.body",
        );
        assert_one(
            &http("directResponse: {status: 200, body: {bytes: 'not base64!'}}"),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].directResponse.body.bytes",
        );
    }

    #[test]
    fn delegates() {
        assert_one(
            &http("delegate: {namespace: ns}"),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].delegate.name",
        );
        assert_one(
            &http("delegate: {name: d, namespace: 'Not_A_NS'}"),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].delegate.namespace",
        );
    }

    #[test]
    fn rewrites() {
        assert_one(
            &http(&format!(
                "{ROUTE}, rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}"
            )),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0].rewrite",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, rewrite: {{uriRegexRewrite: {{match: '(a', rewrite: b}}}}"
            )),
            Severity::Error,
            Code::InvalidRegex,
            "spec.http[0].rewrite.uriRegexRewrite.match",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, rewrite: {{uriRegexRewrite: {{match: a}}}}"
            )),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].rewrite.uriRegexRewrite.rewrite",
        );
    }

    // --- Timeouts and retries -----------------------------------------------------------------

    #[test]
    fn timeouts() {
        // 0s disables the timeout.
        assert_eq!(problems(&http(&format!("{ROUTE}, timeout: 0s"))), vec![]);
        let p = assert_one(
            &http(&format!("{ROUTE}, timeout: 500us")),
            Severity::Error,
            Code::InvalidDuration,
            "spec.http[0].timeout",
        );
        assert!(p.message.contains("500us"));
    }

    #[test]
    fn retries() {
        assert_one(
            &http(&format!("{ROUTE}, retries: {{attempts: -1}}")),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].retries.attempts",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, retries: {{attempts: 0, perTryTimeout: 1s}}"
            )),
            Severity::Warn,
            Code::InvalidValue,
            "spec.http[0].retries.attempts",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, retries: {{attempts: 2, perTryTimeout: 0s}}"
            )),
            Severity::Error,
            Code::InvalidDuration,
            "spec.http[0].retries.perTryTimeout",
        );
        assert_one(
            &http(&format!("{ROUTE}, retries: {{attempts: 2, backoff: 0s}}")),
            Severity::Error,
            Code::InvalidDuration,
            "spec.http[0].retries.backoff",
        );
    }

    #[test]
    fn retry_on_conditions() {
        for ok in [
            "5xx",
            "gateway-error,reset,connect-failure",
            "retriable-4xx, 503",
            "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable",
            "http3-post-connect-failure,retriable-headers,retriable-status-codes,refused-stream,envoy-ratelimited,reset-before-request",
        ] {
            assert_eq!(
                problems(&http(&format!(
                    "{ROUTE}, retries: {{attempts: 2, retryOn: '{ok}'}}"
                ))),
                vec![],
                "{ok}"
            );
        }
        let p = assert_one(
            &http(&format!(
                "{ROUTE}, retries: {{attempts: 2, retryOn: '5xx,sometimes'}}"
            )),
            Severity::Error,
            Code::UnknownEnumValue,
            "spec.http[0].retries.retryOn",
        );
        assert!(p.message.contains("\"sometimes\""));
        assert_one(
            &http(&format!(
                "{ROUTE}, retries: {{attempts: 2, retryOn: '5xx,'}}"
            )),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].retries.retryOn",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, retries: {{attempts: 2, retryOn: '700'}}"
            )),
            Severity::Error,
            Code::InvalidStatusCode,
            "spec.http[0].retries.retryOn",
        );
    }

    // --- Faults -------------------------------------------------------------------------------

    #[test]
    fn a_fault_needs_a_delay_or_an_abort() {
        assert_one(
            &http(&format!("{ROUTE}, fault: {{}}")),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].fault",
        );
    }

    #[test]
    fn fault_delays() {
        let p = assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{delay: {{fixedDelay: 0s, percentage: {{value: 10}}}}}}"
            )),
            Severity::Error,
            Code::InvalidDuration,
            "spec.http[0].fault.delay.fixedDelay",
        );
        assert!(p.message.contains("1ms"));
        assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{delay: {{percentage: {{value: 10}}}}}}"
            )),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].fault.delay.fixedDelay",
        );
        let p = assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 150}}}}}}"
            )),
            Severity::Error,
            Code::InvalidPercentage,
            "spec.http[0].fault.delay.percentage.value",
        );
        assert!(p.message.contains("150"));
        assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{delay: {{exponentialDelay: 1s, percentage: {{value: 1}}}}}}"
            )),
            Severity::Error,
            Code::NotSupported,
            "spec.http[0].fault.delay.exponentialDelay",
        );
        assert_one(
            &http(&format!("{ROUTE}, fault: {{delay: {{fixedDelay: 1s}}}}")),
            Severity::Warn,
            Code::MissingField,
            "spec.http[0].fault.delay.percentage",
        );
        let found = problems(&http(&format!(
            "{ROUTE}, fault: {{delay: {{fixedDelay: 1s, percent: 120}}}}"
        )));
        let got: Vec<_> = found
            .iter()
            .map(|p| (p.severity, p.code, p.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Severity::Warn,
                    Code::Deprecated,
                    "spec.http[0].fault.delay.percent"
                ),
                (
                    Severity::Error,
                    Code::InvalidPercentage,
                    "spec.http[0].fault.delay.percent"
                ),
            ]
        );
    }

    #[test]
    fn fault_aborts() {
        let pct = "percentage: {value: 5}";
        assert_one(
            &http(&format!("{ROUTE}, fault: {{abort: {{{pct}}}}}")),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].fault.abort",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{abort: {{httpStatus: 500, grpcStatus: INTERNAL, {pct}}}}}"
            )),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0].fault.abort",
        );
        let p = assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{abort: {{httpStatus: 600, {pct}}}}}"
            )),
            Severity::Error,
            Code::InvalidStatusCode,
            "spec.http[0].fault.abort.httpStatus",
        );
        assert!(p.message.contains("600"));
        assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{abort: {{grpcStatus: NOPE, {pct}}}}}"
            )),
            Severity::Error,
            Code::InvalidStatusCode,
            "spec.http[0].fault.abort.grpcStatus",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{abort: {{http2Error: REFUSED_STREAM, {pct}}}}}"
            )),
            Severity::Error,
            Code::NotSupported,
            "spec.http[0].fault.abort.http2Error",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{abort: {{httpStatus: 503, percentage: {{value: -1}}}}}}"
            )),
            Severity::Error,
            Code::InvalidPercentage,
            "spec.http[0].fault.abort.percentage.value",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, fault: {{abort: {{httpStatus: 503, percent: 5}}}}"
            )),
            Severity::Warn,
            Code::Deprecated,
            "spec.http[0].fault.abort.percent",
        );
    }

    // --- Mirrors ------------------------------------------------------------------------------

    #[test]
    fn mirrors() {
        assert_one(
            &http(&format!(
                "{ROUTE}, mirror: {{host: m}}, mirrorPercentage: {{value: 101}}"
            )),
            Severity::Error,
            Code::InvalidPercentage,
            "spec.http[0].mirrorPercentage.value",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, mirrors: [{{destination: {{host: m}}, percentage: {{value: 101}}}}]"
            )),
            Severity::Error,
            Code::InvalidPercentage,
            "spec.http[0].mirrors[0].percentage.value",
        );
        assert_one(
            &http(&format!("{ROUTE}, mirrors: [{{destination: {{}}}}]")),
            Severity::Error,
            Code::MissingField,
            "spec.http[0].mirrors[0].destination.host",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, mirror: {{host: m}}, mirrors: [{{destination: {{host: n}}}}]"
            )),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0].mirrors",
        );
        assert_one(
            &http(&format!("{ROUTE}, mirror: {{host: m}}, mirror_percent: 20")),
            Severity::Warn,
            Code::Deprecated,
            "spec.http[0].mirrorPercent",
        );
    }

    // --- CORS and headers ---------------------------------------------------------------------

    #[test]
    fn cors_policies() {
        assert_one(
            &http(&format!(
                "{ROUTE}, corsPolicy: {{allowOrigin: ['https://a.com']}}"
            )),
            Severity::Warn,
            Code::Deprecated,
            "spec.http[0].corsPolicy.allowOrigin",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, corsPolicy: {{allowOrigins: [{{exact: a, prefix: b}}]}}"
            )),
            Severity::Error,
            Code::ConflictingFields,
            "spec.http[0].corsPolicy.allowOrigins[0]",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, corsPolicy: {{allowMethods: [GET, FETCH]}}"
            )),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].corsPolicy.allowMethods[1]",
        );
        assert_one(
            &http(&format!("{ROUTE}, corsPolicy: {{exposeHeaders: ['x y']}}")),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].corsPolicy.exposeHeaders[0]",
        );
        assert_one(
            &http(&format!("{ROUTE}, corsPolicy: {{maxAge: 1500ms}}")),
            Severity::Error,
            Code::InvalidDuration,
            "spec.http[0].corsPolicy.maxAge",
        );
    }

    #[test]
    fn header_operations() {
        assert_one(
            &http(&format!(
                "{ROUTE}, headers: {{request: {{set: {{':path': /x}}}}}}"
            )),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].headers.request.set[:path]",
        );
        assert_one(
            &http(
                "route: [{destination: {host: a}, headers: {response: {remove: ['bad header']}}}]",
            ),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].route[0].headers.response.remove[0]",
        );
        assert_one(
            &http(&format!(
                "{ROUTE}, headers: {{request: {{add: {{Host: x}}}}}}"
            )),
            Severity::Error,
            Code::InvalidValue,
            "spec.http[0].headers.request.add[Host]",
        );
    }

    // --- TLS and TCP --------------------------------------------------------------------------

    #[test]
    fn tls_routes_need_sni_hosts_within_the_hosts() {
        let route = "route: [{destination: {host: db}}]";
        assert_one(
            &format!("hosts: ['*.example.com']\ntls: [{{{route}}}]"),
            Severity::Error,
            Code::MissingField,
            "spec.tls[0].match",
        );
        assert_one(
            &format!("hosts: ['*.example.com']\ntls: [{{match: [{{port: 443}}], {route}}}]"),
            Severity::Error,
            Code::MissingField,
            "spec.tls[0].match[0].sniHosts",
        );
        let p = assert_one(
            &format!(
                "hosts: ['*.example.com']\ntls: [{{match: [{{sniHosts: [a.example.com, other.org]}}], {route}}}]"
            ),
            Severity::Error,
            Code::InvalidHost,
            "spec.tls[0].match[0].sniHosts[1]",
        );
        assert!(p.message.contains("other.org"));
        assert_one(
            &format!(
                "hosts: ['*.example.com']\ntls: [{{match: [{{sniHosts: [a.example.com], destinationSubnets: [10.0.0.0/33]}}], {route}}}]"
            ),
            Severity::Error,
            Code::InvalidValue,
            "spec.tls[0].match[0].destinationSubnets[0]",
        );
        assert_one(
            "hosts: ['*.example.com']\ntls: [{match: [{sniHosts: [a.example.com]}]}]",
            Severity::Error,
            Code::MissingField,
            "spec.tls[0].route",
        );
    }

    #[test]
    fn tcp_matches() {
        let route = "route: [{destination: {host: db}}]";
        let p = problems(&format!(
            "hosts: [db]\ntcp: [{{match: [{{sourceSubnet: not-an-ip}}], {route}}}]"
        ));
        assert_eq!(
            crate::testing::codes(&p),
            [("spec.tcp[0].match[0].sourceSubnet", Code::InvalidValue)]
        );
        assert_one(
            &format!("hosts: [db]\ntcp: [{{match: [{{port: 70000}}], {route}}}]"),
            Severity::Error,
            Code::InvalidPort,
            "spec.tcp[0].match[0].port",
        );
    }

    #[test]
    fn fields_mizzen_ignores_are_reported() {
        let route = "route: [{destination: {host: db}}]";
        // derivePort is applied: nothing to report.
        assert!(problems(&http("redirect: {uri: /x, derivePort: FROM_REQUEST_PORT}")).is_empty());
        // The conditions Mizzen does match on are quiet.
        assert_eq!(
            problems(&format!(
                "hosts: [db]\ntcp: [{{match: [{{port: 5432, sourceLabels: {{app: web}}, sourceNamespace: web, sourceSubnet: 10.1.0.0/16, destinationSubnets: [10.0.0.0/8]}}], {route}}}]\ntls: [{{match: [{{sniHosts: [db], sourceLabels: {{app: web}}, sourceNamespace: web}}], {route}}}]"
            )),
            vec![]
        );
        assert_eq!(
            problems(&http(&format!(
                "match: [{{name: m, sourceNamespace: web, statPrefix: s}}], {ROUTE}, retries: {{attempts: 2, retryIgnorePreviousHosts: true}}"
            ))),
            vec![]
        );
    }

    #[test]
    fn host_containment() {
        assert!(host_within("a.example.com", "*.example.com"));
        assert!(host_within("*.a.example.com", "*.example.com"));
        assert!(host_within("anything", "*"));
        assert!(host_within("A.example.com", "a.EXAMPLE.com"));
        assert!(!host_within("example.com", "*.example.com"));
        assert!(!host_within("*", "*.example.com"));
        assert!(!host_within("a.example.com", "b.example.com"));
    }
}
