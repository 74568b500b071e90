//! `security.istio.io`: mutual TLS, authorization and request authentication.

pub mod authorization_policy;
pub mod peer_authentication;
pub mod request_authentication;

pub use authorization_policy::{
    Action, AuthorizationPolicy, AuthorizationPolicySpec, PolicyTargetReference,
};
pub use peer_authentication::{MtlsMode, MutualTls, PeerAuthentication, PeerAuthenticationSpec};
pub use request_authentication::{JwtRule, RequestAuthentication, RequestAuthenticationSpec};
