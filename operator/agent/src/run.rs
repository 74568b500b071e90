//! Wires the parts together, in a cluster or in local mode, and serves until a server fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mizzen_ca::{DEFAULT_ROOT_VALIDITY, LocalCa};
use mizzen_identity::RefreshPolicy;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::Instrument;

use crate::authz::{Authorizer, ClusterAuthorizer, KubeTokenReviewer};
use crate::certify::CertifySettings;
use crate::endpoints::{EndpointsEvent, EndpointsIndex};
use crate::local::LocalAuthorizer;
use crate::metrics::Metrics;
use crate::node_ca::{KubeNodeCaSigner, NodeCaSettings};
use crate::pods::NodePods;
use crate::{admin, endpoints_feed, node_ca, pods, server};

/// Where the agent gets identities and its authority from.
pub enum Mode {
    /// TokenReviews, the node's pods, a node CA through the CSR API, roots from the ConfigMap.
    Cluster {
        client: kube::Client,
        /// The control-plane namespace holding `mizzen-ca-root-cert`.
        namespace: String,
        node_ca_ttl: Duration,
        cluster_domain: String,
    },
    /// A local root CA directory and an identities file (see [`crate::local`]).
    Local {
        ca_dir: PathBuf,
        identities: PathBuf,
    },
}

/// Everything `main` parsed.
pub struct Options {
    pub socket: PathBuf,
    pub node: String,
    pub trust_domain: String,
    pub workload_ttl: Duration,
    pub metrics_addr: SocketAddr,
    pub mode: Mode,
}

/// How long debounced endpoint changes wait for quiet before a snapshot goes out.
pub const ENDPOINTS_DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a change waits under steady churn.
pub const ENDPOINTS_MAX_DELAY: Duration = Duration::from_secs(1);

pub async fn run(options: Options) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let policy = RefreshPolicy::default();
    let (authority_tx, authorities) = watch::channel(None);
    let (endpoints_tx, endpoints_rx) = watch::channel(Arc::new(EndpointsEvent::default()));
    let authorizer: Arc<dyn Authorizer> = match options.mode {
        Mode::Local { ca_dir, identities } => {
            let ca = LocalCa::open_or_create(&ca_dir, &options.trust_domain, DEFAULT_ROOT_VALIDITY)
                .context("opening the local CA")?;
            tracing::info!(dir = %ca_dir.display(), created = ca.created(), "local CA");
            let authority = ca.authority().context("local CA authority")?;
            metrics.node_ca_renewed(authority.validity().not_after);
            authority_tx.send_replace(Some(Arc::new(authority)));
            // Local mode serves no endpoints yet: `/v1/endpoints` streams an empty snapshot.
            Arc::new(LocalAuthorizer::new(identities))
        }
        Mode::Cluster {
            client,
            namespace,
            node_ca_ttl,
            cluster_domain,
        } => {
            let node_pods = NodePods::new();
            tokio::spawn(
                pods::watch_node_pods(client.clone(), options.node.clone(), node_pods.clone())
                    .instrument(tracing::info_span!("node_pods")),
            );
            let (roots_tx, roots_rx) = watch::channel(None);
            tokio::spawn(
                node_ca::watch_roots(client.clone(), namespace, roots_tx)
                    .instrument(tracing::info_span!("roots")),
            );
            let signer = Arc::new(KubeNodeCaSigner {
                client: client.clone(),
                timeout: Duration::from_secs(120),
            });
            tokio::spawn(
                node_ca::keep_node_ca(
                    signer,
                    NodeCaSettings {
                        node: options.node.clone(),
                        ttl: node_ca_ttl,
                        policy: policy.clone(),
                    },
                    roots_rx,
                    authority_tx.clone(),
                    metrics.clone(),
                )
                .instrument(tracing::info_span!("node_ca")),
            );
            tokio::spawn(
                endpoints_feed::run_index(
                    EndpointsIndex::new(&cluster_domain).on_node(&options.node),
                    endpoints_feed::cluster_changes(client.clone()),
                    ENDPOINTS_DEBOUNCE,
                    ENDPOINTS_MAX_DELAY,
                    endpoints_tx.clone(),
                )
                .instrument(tracing::info_span!("endpoints")),
            );
            Arc::new(ClusterAuthorizer {
                reviewer: KubeTokenReviewer { client },
                pods: node_pods,
                node: options.node.clone(),
                trust_domain: options.trust_domain.clone(),
                cache_grace: Duration::from_secs(5),
            })
        }
    };
    let agent = Arc::new(server::Agent {
        authorizer,
        authorities: authorities.clone(),
        endpoints: endpoints_rx,
        settings: CertifySettings {
            ttl: options.workload_ttl,
            policy,
            authority_wait: Duration::from_secs(10),
        },
        metrics,
    });
    let listener = server::bind(&options.socket)?;
    tracing::info!(socket = %options.socket.display(), "workload API listening");
    let admin = admin::router(Arc::new(registry), authorities);
    tokio::select! {
        served = server::serve(listener, agent) => served.context("workload API socket")?,
        served = admin::serve(options.metrics_addr, admin) => {
            served.with_context(|| format!("metrics port {}", options.metrics_addr))?
        }
    }
    // Kept to here so the channels stay open while serving.
    drop((authority_tx, endpoints_tx));
    Ok(())
}
