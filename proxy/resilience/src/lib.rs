//! Resilience layers of the Mizzen proxy, one concern per module.
//!
//! - [`timeout`]: the route's whole-request timeout (504, flag UT).
//! - [`retry`]: Istio/Envoy `retries` (retryOn conditions, per-try timeout, jittered backoff,
//!   replayable request bodies, a retry budget per upstream).
//! - [`fault`]: fault injection, delay (DI) and abort (FI), HTTP and gRPC.
//! - [`circuit`]: circuit breaking from `connectionPool` (503 UO at once), shared per upstream.
//! - [`outlier`]: outlier detection as a pure state machine, plus the hooks the balancer uses.
//! - [`mirror`]: fire-and-forget traffic mirroring to `<host>-shadow`.
//! - [`flags`]: Envoy's response flags, carried in response extensions for telemetry.
//! - [`upstream`]: [`UpstreamError`], how the client reports connect failures and resets.
//! - [`reply`]: the local replies the layers answer with; [`draw`]: percentage draws.
//!
//! # Stacking
//!
//! Outermost first, the data path stacks them as:
//!
//! ```text
//! metrics/telemetry      reads ResponseFlags from every response
//!   → fault              delays/aborts before anything else is spent
//!   → (mirror)           the router copies the request once, after fault, never per try
//!   → timeout            whole request, retries included
//!   → retry              per-try timeout, backoff, body replay (needs ReplayBody below it)
//!   → circuit            per-upstream limits; sheds with 503 UO, each try counted
//!   → balance + outlier  skips ejected endpoints; records each endpoint's outcome
//!   → client             returns UpstreamError on connect failure / reset
//! ```
//!
//! Layers that answer on their own need a response body they can build; see
//! [`reply::LocalReply`]. Nothing here queues without bound: mirrors are capped, and the
//! circuit sheds waiting requests once `http1MaxPendingRequests` is set.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use mizzen_proxy_config::{ConnectionPool, Destination, HttpRoute};
//! use mizzen_resilience::{
//!     BoxError, circuit::{CircuitBreakers, CircuitLayer}, fault::FaultLayer,
//!     retry::{ReplayBody, RetryLayer}, timeout::TimeoutLayer,
//! };
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let route = HttpRoute::default();
//! let upstream = Destination { host: "reviews.default.svc.cluster.local".into(), ..Default::default() };
//! let breakers = CircuitBreakers::new(); // one per proxy
//! let limits = breakers.limits(&upstream, Some(&ConnectionPool::default()), None);
//!
//! // Stands in for balancer + client.
//! let client = tower::service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
//!     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"hi"))))
//! });
//! let stack = ServiceBuilder::new()
//!     .layer(FaultLayer::new(route.fault.clone()))
//!     .layer(TimeoutLayer::from_ms(route.timeout_ms))
//!     .layer(RetryLayer::for_route(route.retry.as_ref(), limits.retry_budget()))
//!     .layer(CircuitLayer::new(limits))
//!     .service(client);
//! let response = stack.oneshot(Request::new(Full::new(Bytes::new()))).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod circuit;
pub mod draw;
pub mod fault;
pub mod flags;
pub mod mirror;
pub mod outlier;
pub mod reply;
pub mod retry;
pub mod timeout;
pub mod upstream;

pub use flags::ResponseFlags;
pub use reply::LocalReply;
pub use upstream::{UpstreamError, UpstreamErrorKind};

/// The error type the layers box inner errors into where they must.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
