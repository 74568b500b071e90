//! Mizzen's admission webhook: injects the sidecar into pods ([`inject`]), validates the mesh
//! resources ([`admission`]), serves both over HTTPS with a certificate it re-reads when it
//! changes ([`server`], [`tls`]), and plans the serving certificate the operator keeps in the
//! Secret `mizzen-webhook-tls` ([`bootstrap`]).

pub mod admission;
pub mod bootstrap;
pub mod config;
pub mod inject;
pub mod metrics;
pub mod server;
pub mod tls;
