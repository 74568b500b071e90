//! The inbound policy engine of the Mizzen proxy: what Istio's PeerAuthentication,
//! AuthorizationPolicy and RequestAuthentication mean for one workload, compiled once from the
//! rendered config ([`mizzen_proxy_config::InboundConfig`]) and the pod's labels, then asked
//! per connection or request.
//!
//! - [`peer::PeerPolicy`]: the mutual-TLS mode of each inbound port.
//! - [`jwt::JwtAuthenticator`]: finds and validates a request's JWT (keys inline or from a
//!   [`jwks::JwksCache`]), yielding the request principal; 401 on an invalid token.
//! - [`authz::Authorizer`]: ALLOW / DENY / AUDIT and dry-run policies; 403 on denial.
//!
//! Everything here is pure: no sockets, no clock unless asked ([`jwt::JwtAuthenticator::authenticate`]
//! reads the system clock; `authenticate_at` takes the time). The proxy's inbound path calls
//! it in that order: peer mode at accept, then per request authenticate, then authorize.

pub mod authz;
pub mod jwks;
pub mod jwt;
mod matcher;
pub mod peer;

pub use authz::{Authorizer, HttpAttrs, RequestAttrs, Verdict};
pub use jwks::{JwksCache, JwksSource, KeySet};
pub use jwt::{JwtAuthenticator, JwtError, Principal};
pub use matcher::ValueError;
pub use peer::{MtlsMode, PeerPolicy};
