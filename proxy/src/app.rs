//! Wiring: bind every listener from the [`Config`], load the rendered config, run until drained.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch};

use mizzen_identity::CertStore;

use crate::{
    admin::{self, LogLevel},
    agent::AgentEndpoints,
    config::{self, ConfigStore, LoadError},
    drain::Drain,
    endpoints::{ConfigEndpoints, EndpointSource},
    env::{Config, Workload},
    http::{mirror::Mirrors, server::ServerSettings},
    listener::{self, Role},
    mtls::MeshTls,
    telemetry::Telemetry,
    upstream::{Place, Upstreams},
};

/// What every connection handler shares.
pub struct Shared {
    pub store: Arc<ConfigStore>,
    pub endpoints: Arc<dyn EndpointSource>,
    pub upstreams: Upstreams,
    /// The app's ports, for inbound traffic.
    pub inbound: Upstreams,
    pub telemetry: Arc<Telemetry>,
    pub mirrors: Mirrors,
    pub workload: Workload,
    pub drain: Drain,
    pub server: ServerSettings,
    pub log_level: Option<LogLevel>,
    pub policy: crate::http::policy::PolicyCache,
    /// Inbound: the destination-service labels of the hosts this workload is called by.
    pub host_labels: crate::telemetry::HostLabels,
    /// Mesh mTLS, when this proxy has (or will get) a workload certificate.
    pub tls: Option<Arc<crate::mtls::MeshTls>>,
    /// Endpoints from the node agent, when there is one.
    pub agent_endpoints: Option<Arc<AgentEndpoints>>,
    /// Gateway mode: the compiled Gateway servers and their TLS credentials.
    pub gateway: Option<Arc<crate::gateway::Gateway>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] LoadError),
    #[error("workload identity: {0}")]
    Identity(#[from] mizzen_identity::spiffe::SpiffeIdError),
    #[error("mTLS: {0}")]
    Mtls(#[from] crate::mtls::MtlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The addresses actually bound (tests bind port 0).
#[derive(Clone, Debug, Default)]
pub struct Bound {
    pub outbound_capture: Option<SocketAddr>,
    pub inbound_capture: Option<SocketAddr>,
    pub outbound: Vec<SocketAddr>,
    pub inbound: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub health: Option<SocketAddr>,
    pub prometheus: Option<SocketAddr>,
    /// Gateway mode: the listening address of each server port at start (later changes:
    /// `Gateway::bound`).
    pub gateway: BTreeMap<u16, SocketAddr>,
}

enum Job {
    Proxy(TcpListener, Role),
    /// A Gateway server port.
    Gateway(TcpListener, u16),
    Admin(TcpListener, admin::Port),
}

pub struct App {
    pub shared: Arc<Shared>,
    pub bound: Bound,
    config: Config,
    jobs: Vec<Job>,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let a = l
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((l, a))
}

impl App {
    pub async fn bind(config: Config, log_level: Option<LogLevel>) -> Result<App, StartError> {
        let telemetry = Telemetry::new(config.access_log, &config.workload);
        let store = ConfigStore::load(
            &config.config_path,
            telemetry.metrics.clone(),
            config.workload.labels.clone(),
        )?;
        // With a node agent, endpoints come from it (the config's for hosts it does not know)
        // and the workload certificate too.
        let agent_endpoints = config
            .agent
            .as_ref()
            .map(|_| Arc::new(AgentEndpoints::new(store.clone())));
        let endpoints: Arc<dyn EndpointSource> = match &agent_endpoints {
            Some(a) => a.clone(),
            None => Arc::new(ConfigEndpoints::new(store.clone())),
        };
        let mut config = config;
        if config.tls.is_none() && config.agent.is_some() {
            let trust_domain = store.current().config().mesh.trust_domain.clone();
            let id = config.workload.spiffe_id(&trust_domain)?;
            config.tls = Some(Arc::new(MeshTls::new(CertStore::new(id))?));
        }
        let shared = Arc::new(Shared {
            store,
            endpoints,
            upstreams: Upstreams::new(config.connect_timeout, config.tls.clone()).placed(Place {
                locality: config.workload.locality.clone(),
                labels: config.workload.labels.clone(),
            }),
            inbound: Upstreams::new(config.connect_timeout, None),
            telemetry,
            mirrors: Mirrors::default(),
            workload: config.workload.clone(),
            drain: Drain::new(),
            server: ServerSettings {
                header_read_timeout: config.header_read_timeout,
                idle_timeout: config.idle_timeout,
                max_header_bytes: config.max_header_bytes,
            },
            log_level,
            policy: crate::http::policy::PolicyCache::new(),
            host_labels: Default::default(),
            tls: config.tls.clone(),
            agent_endpoints,
            gateway: config
                .gateway
                .as_ref()
                .map(|g| Arc::new(crate::gateway::Gateway::new(g.clone()))),
        });
        let mut jobs = Vec::new();
        let mut bound = Bound::default();
        if let Some(a) = config.outbound_capture {
            let (l, a) = bind(a).await?;
            bound.outbound_capture = Some(a);
            jobs.push(Job::Proxy(l, Role::OutboundCapture));
        }
        if let Some(a) = config.inbound_capture {
            let (l, a) = bind(a).await?;
            bound.inbound_capture = Some(a);
            jobs.push(Job::Proxy(l, Role::InboundCapture));
        }
        for o in &config.outbound {
            let (l, a) = bind(o.listen).await?;
            bound.outbound.push(a);
            jobs.push(Job::Proxy(
                l,
                Role::Outbound {
                    host: o.host.clone(),
                    port: o.port,
                },
            ));
        }
        for i in &config.inbound {
            let (l, a) = bind(i.listen).await?;
            bound.inbound.push(a);
            jobs.push(Job::Proxy(l, Role::Inbound { app: i.app }));
        }
        if let Some(gw) = &shared.gateway {
            let labels = &gw.settings.labels;
            let ports = crate::gateway::ports(shared.store.current().config(), labels);
            if ports.is_empty() {
                tracing::warn!(?labels, "no Gateway server selects this gateway's labels");
            }
            for port in ports {
                let (l, a) = bind(gw.settings.listen_addr(port)).await?;
                bound.gateway.insert(port, a);
                gw.set_bound(port, Some(a));
                jobs.push(Job::Gateway(l, port));
            }
        }
        for (addr, port, slot) in [
            (config.admin, admin::Port::Admin, &mut bound.admin),
            (config.health, admin::Port::Health, &mut bound.health),
            (
                config.prometheus,
                admin::Port::Prometheus,
                &mut bound.prometheus,
            ),
        ] {
            if let Some(a) = addr {
                let (l, a) = bind(a).await?;
                *slot = Some(a);
                jobs.push(Job::Admin(l, port));
            }
        }
        Ok(App {
            shared,
            bound,
            config,
            jobs,
        })
    }

    /// Serves until draining starts (SIGTERM, `/quitquitquit` or [`Drain::start`]), then lets
    /// open connections finish for up to the drain duration.
    pub async fn run(self) {
        let shared = self.shared;
        tracing::info!(
            config = %self.config.config_path.display(),
            workload = %shared.workload.name,
            namespace = %shared.workload.namespace,
            bound = ?self.bound,
            "proxy started"
        );
        let (stop_watch, watch_rx) = watch::channel(false);
        let watcher = tokio::spawn(config::watch(
            shared.store.clone(),
            self.config.poll_interval,
            watch_rx.clone(),
        ));
        if let Some(agent) = &self.config.agent {
            if let Some(tls) = &shared.tls {
                tokio::spawn(crate::agent::keep_identity(
                    agent.socket.clone(),
                    agent.token_file.clone(),
                    tls.store.clone(),
                    watch_rx.clone(),
                ));
            }
            if let Some(endpoints) = &shared.agent_endpoints {
                tokio::spawn(crate::agent::follow_endpoints(
                    agent.socket.clone(),
                    endpoints.clone(),
                    watch_rx.clone(),
                ));
            }
        }
        match crate::http::policy::HttpJwksSource::new() {
            Ok(source) => {
                tokio::spawn(crate::http::policy::refresh_jwks(
                    shared.policy.jwks(),
                    source,
                    watch_rx.clone(),
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "no JWKS fetcher: jwksUri rules will refuse tokens")
            }
        }
        let mut gateway_ports = Vec::new();
        for job in self.jobs {
            let shared = shared.clone();
            match job {
                Job::Proxy(l, role) => {
                    let serving = shared.clone();
                    tokio::spawn(listener::serve(l, serving, move |stream, peer| {
                        listener::connection(stream, peer, role.clone(), shared.clone())
                    }));
                }
                Job::Gateway(l, port) => gateway_ports.push((port, l)),
                Job::Admin(l, port) => {
                    tokio::spawn(admin::serve(l, port, shared));
                }
            }
        }
        if shared.gateway.is_some() {
            tokio::spawn(crate::gateway::ports::follow(
                shared.clone(),
                gateway_ports,
                self.config.poll_interval,
                watch_rx.clone(),
            ));
        }
        let mut signal = shared.drain.signal();
        crate::drain::Drain::started(&mut signal).await;
        tracing::info!(
            open = shared.drain.open_connections(),
            drain = ?self.config.drain,
            "draining"
        );
        let clean = shared.drain.wait(self.config.drain).await;
        tracing::info!(clean, "drained");
        let _ = stop_watch.send(true);
        let _ = watcher.await;
    }
}
