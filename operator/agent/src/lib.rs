//! Mizzen's node CA agent: one per node, it signs and renews the certificates of the pods on
//! its node and serves them, with the endpoints of every service, to the local proxies over a
//! Unix socket.
//!
//! Pure decisions with thin I/O around them: [`authz`] (who may have which identity),
//! [`certify`] (sign, renew, push), [`endpoints`] (the endpoint index); the Kubernetes calls sit
//! behind small traits ([`authz::TokenReviewer`], [`node_ca::NodeCaSigner`]) or in feeders
//! ([`pods`], [`endpoints_feed`], [`node_ca::watch_roots`]); [`server`] is the workload API,
//! [`admin`] the health and metrics port, [`local`] the cluster-free mode, [`run`] the wiring.
//! [`credentials`] is a separate mode (`mizzen-agent credentials`): the ingress gateway's
//! syncer of TLS Secrets into files.
#![forbid(unsafe_code)]

pub mod admin;
pub mod authz;
pub mod certify;
pub mod credentials;
pub mod endpoints;
pub mod endpoints_feed;
pub mod local;
pub mod metrics;
pub mod node_ca;
pub mod pods;
pub mod run;
pub mod server;
