//! Gateway mode (`mizzen-proxy gateway`): the ingress gateway at the edge of the mesh. It
//! serves the Gateway servers of the config whose selector its pod's labels satisfy — one
//! listener per port — and sends what it accepts into the mesh through the sidecar's own
//! outbound machinery (route engine, resilience stack, balancing, pools, mesh mTLS with the
//! gateway's identity, telemetry with `reporter="source"`).
//!
//! - [`plan`]: the servers of this gateway compiled per config version (pure);
//! - [`sni`]: the SNI of a ClientHello, peeked without consuming it;
//! - [`credentials`]: the terminating servers' TLS configs, re-read when their files change;
//! - [`cert_choice`]: which of a server's certificates (one per key type) a handshake gets;
//! - [`cipher_suites`]: a server's TLS 1.2 suites, as its `cipherSuites` restrict them;
//! - [`ports`]: one listener per server port, following the config;
//! - [`conn`]: a connection's way from accept to TLS (terminated or passed through), HTTP or
//!   TCP;
//! - [`request`]: one HTTP request from Host to virtual host to the shared outbound path.

pub mod cert_choice;
pub mod cipher_suites;
pub mod conn;
pub mod credentials;
pub mod plan;
pub mod ports;
pub mod request;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

pub use plan::{Plan, ports};

use crate::{config::Snapshot, env::GatewaySettings};

/// What the gateway keeps besides the sidecar's shared state.
#[derive(Debug)]
pub struct Gateway {
    pub settings: GatewaySettings,
    pub credentials: credentials::Credentials,
    /// The plan of the config version last asked for.
    plan: Mutex<Option<(u64, Arc<Plan>)>>,
    /// The listening address of each server port served now.
    bound: Mutex<BTreeMap<u16, SocketAddr>>,
}

impl Gateway {
    pub fn new(settings: GatewaySettings) -> Self {
        Self {
            credentials: credentials::Credentials::new(settings.credentials_dir.clone()),
            settings,
            plan: Mutex::new(None),
            bound: Mutex::new(BTreeMap::new()),
        }
    }

    /// Where each server port is listened on now (tests bind port 0 and read it here).
    pub fn bound(&self) -> BTreeMap<u16, SocketAddr> {
        self.bound.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records that `port` is listened on at `addr` (`None`: no longer).
    pub fn set_bound(&self, port: u16, addr: Option<SocketAddr>) {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        match addr {
            Some(a) => bound.insert(port, a),
            None => bound.remove(&port),
        };
    }

    /// The plan for `snap`, compiled once per config version. Servers whose rules do not
    /// compile are logged and left out.
    pub fn plan(&self, snap: &Snapshot) -> Arc<Plan> {
        let mut cached = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((version, plan)) = cached.as_ref()
            && *version == snap.version
        {
            return plan.clone();
        }
        let (plan, errors) = Plan::compile(snap.config(), &self.settings.labels);
        for (server, error) in errors {
            tracing::error!(%server, %error, "gateway server left out: its routes do not compile");
        }
        let plan = Arc::new(plan);
        *cached = Some((snap.version, plan.clone()));
        plan
    }
}
