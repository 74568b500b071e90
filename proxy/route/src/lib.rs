//! Mizzen's routing engine: given the rendered [`ProxyConfig`] and the facts of a request, decide
//! where it goes, with Istio's VirtualService semantics. Pure and synchronous (no I/O, no
//! clock, no global randomness), so the proxy routes with it and the operator's traffic
//! simulation tests play requests through the very same code.
//!
//! - [`RouteTable::new`] compiles a config once (regexes, host index).
//! - [`RouteTable::select`] turns a [`RequestInfo`] and a random draw into a [`Decision`];
//!   [`RouteTable::select_l4`] does the same for TCP and passed-through TLS connections.
//! - [`UriRewrite`] / [`apply_rewrite`], [`apply_header_ops`] and friends change the request and
//!   response as the chosen route says; [`redirect_location`] builds redirects.
//! - [`percent_hit`] is the one definition of a percentage draw (faults, mirrors);
//!   [`pick_weighted`] the one definition of a weighted pick.
//! - [`cors`] answers CORS preflights and decorates responses.
//! - [`SimRequest`], [`RouteTable::simulate`] and [`RouteTable::distribution`] play owned
//!   requests through the engine, for traffic simulations and tests.
//!
//! # Semantics
//!
//! Istio's VirtualService, as Envoy executes what Istio renders:
//! - **Hosts**: the authority's port is stripped and the name compared without case and without
//!   a trailing dot; a service's host and aliases match exactly, then wildcard services by
//!   longest suffix (`*.api.example.com` before `*.example.com` before `*`); a wildcard needs at
//!   least one label in front of it. An IP-literal authority finds the service owning that
//!   virtual address (exact IP, then CIDR by longest prefix) and serving `req.port`.
//! - **Rules**: in order, the first whose matches hold wins. Matches are alternatives (OR), the
//!   conditions inside one match must all hold (AND), no matches means everything.
//! - **uri** is compared with the path only (no query string, no fragment); `ignoreUriCase`
//!   makes `exact` and `prefix` ASCII case-insensitive, not `regex` (use `(?i)`), and nothing
//!   else. **method** and **scheme** are case-sensitive. **authority** is compared without the
//!   port and with its case as sent.
//! - **Regexes** are RE2-style (`regex` crate) and must match the whole value.
//! - **headers**: names are case-insensitive; several values of one header are joined with `,`
//!   (`cookie` with `; `, so split HTTP/2 cookies match like one HTTP/1.1 header); `host`,
//!   `:authority`, `:method`, `:path`, `:scheme` read the request's own fields. A condition
//!   without value requires presence. **withoutHeaders** (`invert`) treats a missing header as
//!   the empty string and inverts the result (Istio sets Envoy's
//!   `treat_missing_header_as_empty`), so `withoutHeaders: {x: {exact: a}}` holds when `x` is
//!   missing, and an inverted presence condition holds exactly when the header is missing.
//! - **queryParams**: the first parameter of that name, compared as sent (not
//!   percent-decoded); `?flag` has the value `""`; no value condition means presence.
//! - **port**, **sourceLabels** (all listed labels, others ignored), **sourceNamespace**.
//! - **gateways**: a match listing gateways applies only to requests through them (`mesh` for
//!   sidecars); no gateways means any. When none of a service's rules can apply to `mesh`, its
//!   VirtualService is bound only to gateways and sidecars route to the service by default.
//! - **Weights**: `random % total` over cumulative weights; zero-weight destinations are never
//!   picked; a lone destination (any weight) takes everything.
//! - **Rewrites**, **redirects**, **header operations**, **CORS**: see [`UriRewrite`],
//!   [`redirect_location`], [`apply_header_ops`], [`apply_layered`] and [`cors`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use mizzen_proxy_config::{ProxyConfig, Service};
//! use mizzen_route::{Decision, RequestInfo, RouteTable};
//!
//! let mut config = ProxyConfig::new("default");
//! config.services.push(Service {
//!     host: "reviews.default.svc.cluster.local".into(),
//!     aliases: vec!["reviews".into()],
//!     namespace: "default".into(),
//!     ..Service::default()
//! });
//! let table = RouteTable::new(&config).unwrap();
//! let headers = http::HeaderMap::new();
//! let labels = BTreeMap::new();
//! let req = RequestInfo {
//!     authority: "reviews:9080",
//!     port: 9080,
//!     method: &http::Method::GET,
//!     scheme: "http",
//!     path_and_query: "/reviews/1",
//!     headers: &headers,
//!     source_labels: &labels,
//!     source_namespace: "default",
//!     gateway: "mesh",
//! };
//! match table.select(&req, 0) {
//!     Decision::Forward { destination, .. } => {
//!         assert_eq!(destination.destination.host, "reviews.default.svc.cluster.local")
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

pub mod cors;
mod error;
mod header_ops;
mod host;
mod l4;
mod matcher;
mod redirect;
mod request;
mod rewrite;
mod simulation;
mod table;
mod weight;

pub use error::CompileError;
pub use header_ops::{
    Side, apply_header_ops, apply_layered, apply_request_header_ops, apply_response_header_ops,
};
pub use host::{authority_host, authority_port, normalize_host};
pub use l4::{ConnectionInfo, L4Decision, L4Rule, select_tcp};
pub use matcher::compile_full_match;
pub use mizzen_proxy_config::ProxyConfig;
pub use redirect::{redirect_code, redirect_location};
pub use request::{MESH_GATEWAY, RequestInfo, query_param};
pub use rewrite::{UriRewrite, apply_rewrite};
pub use simulation::{Outcome, SimRequest};
pub use table::{DEFAULT_ROUTE_NAME, Decision, RouteTable, UnknownHostAction};
pub use weight::{PERCENT_DENOMINATOR, percent_hit, pick_weighted};

#[cfg(test)]
mod tests;
