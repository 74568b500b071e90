//! Workload identity shared by the proxy and the node agent.
//!
//! SPIFFE ids ([`spiffe`]), keys and CSRs made where the key lives ([`csr`]), the renewal policy
//! ([`refresh`]), trust bundles ([`bundle`]), certificate checks ([`svid`]), what a client certificate tells
//! the app ([`details`]), rustls configs that
//! pick up new certificates and roots per handshake ([`tls`]), and the messages of the agent's
//! workload API ([`workload_api`]). No Kubernetes here: the sidecar depends on this crate.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod csr;
pub mod details;
pub mod refresh;
pub mod spiffe;
pub mod svid;
pub mod tls;
pub mod workload_api;

pub use bundle::TrustBundle;
pub use csr::{CertificateRequest, PrivateKey};
pub use details::CertDetails;
pub use refresh::RefreshPolicy;
pub use spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeId};
pub use tls::{CertStore, ExpectedPeer};
