//! `mizzen-operator`: parse flags, install the crypto provider, hand off to the library.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use mizzen_operator::{
    RenderSettings,
    files::render_dir,
    run::{Options, run},
};

/// Renders Istio resources into the proxies' ConfigMaps.
#[derive(Debug, Parser)]
#[command(name = "mizzen-operator", version)]
struct Args {
    /// Where Prometheus scrapes /metrics.
    #[arg(long, env = "MIZZEN_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Where the kubelet probes /healthz and /readyz.
    #[arg(long, env = "MIZZEN_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,
    /// The control-plane (and Istio root) namespace: Lease, CA Secrets, mesh-wide policies.
    #[arg(long, env = "MIZZEN_NAMESPACE", default_value = "mizzen-system")]
    namespace: String,
    /// SPIFFE trust domain written into every proxy config.
    #[arg(long, env = "MIZZEN_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// A namespace of ingress gateway workloads: it gets the `mizzen-gateway-config`
    /// ConfigMap. Repeatable (or comma-separated in the environment).
    #[arg(
        long = "gateway-namespace",
        env = "MIZZEN_GATEWAY_NAMESPACES",
        value_delimiter = ',',
        default_value = mizzen_operator::render::DEFAULT_GATEWAY_NAMESPACE
    )]
    gateway_namespaces: Vec<String>,
    /// Leader-election identity.
    #[arg(long, env = "POD_NAME", default_value = "mizzen-operator")]
    pod_name: String,
    /// Quiet time (ms) before a burst of changes is rendered.
    #[arg(long, env = "MIZZEN_DEBOUNCE_MS", default_value_t = 200)]
    debounce_ms: u64,
    /// Seconds between full write passes that repair drift.
    #[arg(long, env = "MIZZEN_RESYNC_SECONDS", default_value_t = 60)]
    resync_seconds: u64,
    /// PEM bundle of extra CAs the canary controller trusts for https:// webhooks and
    /// Prometheus (besides the public web PKI roots), e.g. an in-cluster private CA.
    #[arg(long, env = "MIZZEN_CANARY_CA_FILE")]
    canary_ca_file: Option<PathBuf>,
    /// File mode: render the YAML under this directory instead of watching a cluster.
    #[arg(long, requires = "output")]
    from_files: Option<PathBuf>,
    /// File mode: write `<namespace>.json` files here.
    #[arg(long, requires = "from_files")]
    output: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    tracing::info!(?args, "starting");
    let settings = RenderSettings {
        root_namespace: args.namespace.clone(),
        trust_domain: args.trust_domain.clone(),
        gateway_namespaces: args.gateway_namespaces.clone(),
        ..RenderSettings::default()
    };
    if let (Some(input), Some(output)) = (&args.from_files, &args.output) {
        let rendered = render_dir(input, output, &settings)?;
        for (obj, st) in rendered.statuses.iter().filter(|(_, s)| !s.accepted) {
            tracing::warn!(object = %obj, problems = %st.message, "invalid, left out");
        }
        for (ns, p) in &rendered.problems {
            tracing::error!(namespace = %ns, problems = ?p, "config refused");
        }
        tracing::info!(namespaces = rendered.configs.len(), output = %output.display(), "rendered");
        return Ok(());
    }
    let client = kube::Client::try_default().await?;
    run(
        client,
        Options {
            settings,
            metrics_addr: args.metrics_addr,
            health_addr: args.health_addr,
            identity: args.pod_name,
            debounce: Duration::from_millis(args.debounce_ms),
            resync: Duration::from_secs(args.resync_seconds),
            canary_ca_file: args.canary_ca_file,
        },
    )
    .await
}
