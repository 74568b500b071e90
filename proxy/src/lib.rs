//! Mizzen's data plane: the sidecar proxy.
//!
//! - [`listener`]: capture and explicit listeners, protocol detection, original destination;
//! - [`http`]: the HTTP server side, the outbound and inbound request paths, the client pools;
//! - [`tcp`]: raw TCP forwarding;
//! - [`upstream`] and [`balance`]: per-destination state and endpoint choice;
//! - [`endpoints`]: where endpoints come from;
//! - [`config`]: the rendered config file, its watch and atomic swap;
//! - [`telemetry`]: Istio's metrics, access log, trace headers;
//! - [`admin`]: admin, health and Prometheus ports; [`drain`]: graceful shutdown;
//! - [`env`]: the proxy's own settings, parsed once; [`app`]: wiring.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod app;
pub mod balance;
pub mod config;
pub mod drain;
pub mod endpoints;
pub mod env;
pub mod gateway;
pub mod http;
pub mod init;
pub mod listener;
pub mod mtls;
pub mod proxy_protocol;
pub mod sni;
pub mod stream;
pub mod tcp;
pub mod telemetry;
pub mod tunnel;
pub mod upstream;
