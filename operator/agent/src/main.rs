//! `mizzen-agent`: parse flags, install the crypto provider, hand off to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mizzen_agent::run::{Mode, Options, run};

/// The node CA agent: signs and rotates the certificates of this node's meshed pods.
#[derive(Debug, Parser)]
#[command(name = "mizzen-agent", version)]
struct Args {
    /// The workload API's Unix socket.
    #[arg(
        long,
        env = "MIZZEN_AGENT_SOCKET",
        default_value = "/var/run/mizzen/agent.sock"
    )]
    socket: PathBuf,
    /// This node's name (the agent serves only its pods and names its CSR after it); required
    /// outside local mode.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// SPIFFE trust domain of the identities it signs.
    #[arg(long, env = "MIZZEN_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// DNS suffix of service hosts in the endpoints it serves.
    #[arg(long, env = "MIZZEN_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Lifetime of workload certificates (e.g. 24h, 30m, 90s).
    #[arg(long, env = "MIZZEN_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    workload_cert_ttl: Duration,
    /// Lifetime asked for the node intermediate CA.
    #[arg(long, env = "MIZZEN_NODE_CA_TTL", default_value = "48h", value_parser = parse_duration)]
    node_ca_ttl: Duration,
    /// Where Prometheus scrapes /metrics and the kubelet probes /healthz and /readyz.
    #[arg(long, env = "MIZZEN_METRICS_ADDR", default_value = "0.0.0.0:9091")]
    metrics_addr: SocketAddr,
    /// The control-plane namespace (holds the mesh roots ConfigMap).
    #[arg(long, env = "MIZZEN_NAMESPACE", default_value = "mizzen-system")]
    namespace: String,
    /// Local mode: sign with the root CA kept in this directory; no cluster.
    #[arg(long, env = "MIZZEN_LOCAL_CA", requires = "local_identities")]
    local_ca: Option<PathBuf>,
    /// Local mode: JSON file mapping each workload's token to its SPIFFE id.
    #[arg(long, env = "MIZZEN_LOCAL_IDENTITIES", requires = "local_ca")]
    local_identities: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Beside an ingress gateway: copy the TLS Secrets of this pod's namespace into files the
    /// gateway reads (`<dir>/<secret>/{tls.crt,tls.key,ca.crt}`).
    Credentials {
        /// The directory shared with the gateway (an in-memory emptyDir).
        #[arg(
            long,
            env = "MIZZEN_CREDENTIALS_DIR",
            default_value = "/var/run/mizzen/credentials"
        )]
        dir: PathBuf,
        /// The namespace whose Secrets are read: the pod's own (default: the client's).
        #[arg(long = "secrets-namespace", env = "POD_NAMESPACE")]
        secrets_namespace: Option<String>,
    },
}

/// `<number><unit>` with unit `s`, `m` or `h` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 24h, 30m or 90s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{text}`: unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("a lifetime must be positive".into());
    }
    Ok(Duration::from_secs(secs))
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
    if let Some(Command::Credentials {
        dir,
        secrets_namespace,
    }) = args.command
    {
        let client = kube::Client::try_default().await?;
        let ns = secrets_namespace.unwrap_or_else(|| client.default_namespace().to_string());
        return mizzen_agent::credentials::run(client, &ns, dir).await;
    }
    let (mode, node) = match (args.local_ca, args.local_identities) {
        (Some(ca_dir), Some(identities)) => (
            Mode::Local { ca_dir, identities },
            args.node_name.unwrap_or_else(|| "local".into()),
        ),
        _ => {
            let Some(node) = args.node_name else {
                anyhow::bail!("--node-name (or NODE_NAME) is required outside local mode");
            };
            let mode = Mode::Cluster {
                client: kube::Client::try_default().await?,
                namespace: args.namespace,
                node_ca_ttl: args.node_ca_ttl,
                cluster_domain: args.cluster_domain,
            };
            (mode, node)
        }
    };
    run(Options {
        socket: args.socket,
        node,
        trust_domain: args.trust_domain,
        workload_ttl: args.workload_cert_ttl,
        metrics_addr: args.metrics_addr,
        mode,
    })
    .await
}
