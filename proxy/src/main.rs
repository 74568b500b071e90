//! `mizzen-proxy sidecar` and `mizzen-proxy gateway`: the data plane. Thin: install the crypto
//! provider (when TLS lands), parse arguments, hand off to [`mizzen_proxy::app::App`].

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use mizzen_proxy::{
    app::App,
    env::{
        AgentSettings, Config, Env, GatewaySettings, InboundListener, LabelFlag, OutboundListener,
        PortMapping, Workload, WorkloadFlags, parse_labels_file,
    },
};
use tracing_subscriber::{EnvFilter, prelude::*, reload};

/// mimalloc, as the process's `malloc`: a request's many short-lived allocations cost a fraction
/// of glibc malloc's. mimalloc is linked with its `override` feature and serves `malloc`,
/// `free` and `realloc` for everything, Rust and C alike; Rust reaches it through the system
/// allocator, which asks `malloc` for every layout up to 16-byte alignment. Not through
/// `mimalloc::MiMalloc`: that hands every allocation to `mi_malloc_aligned`, whose aligned
/// path over-allocates from a larger size class whenever a block size is not a power of two
/// and no free block of the size is at hand, 117 instructions an allocation on average where
/// `malloc` takes 59 (callgrind: 43.5k instructions a request on the outbound side against
/// 42.6k, 59.2k against 57.7k at the gateway). [`allocator_version`] keeps mimalloc linked.
#[global_allocator]
static ALLOCATOR: std::alloc::System = std::alloc::System;

/// mimalloc's version. Calling it is what links mimalloc (and so its `malloc`) into the binary:
/// nothing else names it.
fn allocator_version() -> u32 {
    mimalloc::MiMalloc.version()
}

#[derive(Parser)]
#[command(name = "mizzen-proxy", version, about = "Mizzen's sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start and matched at once: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the proxy beside an app (in a pod, or on this machine with explicit listeners).
    Sidecar(SidecarArgs),
    /// Run the ingress gateway: serve the Gateway servers whose selector this pod's labels
    /// satisfy, and send what they accept into the mesh.
    Gateway(GatewayArgs),
    /// Install the pod's iptables redirection to the sidecar and exit (the init container).
    Init(mizzen_proxy::init::InitArgs),
}

/// The flags of every proxy mode.
#[derive(clap::Args)]
struct ProxyArgs {
    /// The rendered proxy config (the ConfigMap's `config.json`).
    #[arg(long, default_value = "/etc/mizzen/config/config.json")]
    config: PathBuf,
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: std::net::SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15021")]
    health: std::net::SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15090")]
    prometheus: std::net::SocketAddr,
    /// How long in-flight requests may run after SIGTERM, in seconds.
    #[arg(long, default_value_t = 5.0)]
    drain_duration: f64,
    /// Workload name for metrics (default: from POD_NAME).
    #[arg(long)]
    workload_name: Option<String>,
    #[arg(long)]
    app: Option<String>,
    #[arg(long)]
    version: Option<String>,
    /// Namespace (default: POD_NAMESPACE, else `default`).
    #[arg(long)]
    namespace: Option<String>,
    /// Where this proxy runs, `region/zone/subzone`, for locality load balancing (default:
    /// the node's, from the node agent).
    #[arg(long, env = "MIZZEN_LOCALITY")]
    locality: Option<String>,
    /// Do not write the per-request access log.
    #[arg(long)]
    no_access_log: bool,
    /// Worker threads (Istio's sidecar default is 2).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Mesh mTLS from files (local mode, benchmarks): the certificate chain, leaf first (PEM).
    /// Needs `--tls-key` and `--tls-roots`; the identity is the leaf's SPIFFE id.
    #[arg(long, requires_all = ["tls_key", "tls_roots"])]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The mesh's trust bundle (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_roots: Option<PathBuf>,
    /// The node agent's Unix socket: the workload certificate (mTLS) and service endpoints
    /// come from it. The injector sets it; without it the proxy runs plaintext, with the
    /// config's endpoints.
    #[arg(long, env = "MIZZEN_AGENT_SOCKET", conflicts_with = "tls_cert")]
    agent_socket: Option<PathBuf>,
    /// The projected service-account token (audience `mizzen-ca`) shown to the agent.
    #[arg(
        long,
        env = "MIZZEN_TOKEN",
        default_value = "/var/run/secrets/tokens/mizzen-token"
    )]
    token: PathBuf,
}

#[derive(clap::Args)]
struct SidecarArgs {
    #[command(flatten)]
    proxy: ProxyArgs,
    /// Local mode: `LISTEN_ADDR=HOST:PORT`, connections here are for service HOST port PORT.
    #[arg(long = "outbound", value_name = "LISTEN_ADDR=HOST:PORT")]
    outbound: Vec<OutboundListener>,
    /// Local mode: `LISTEN_ADDR=APP_ADDR`, connections here go to the app at APP_ADDR.
    #[arg(long = "inbound", value_name = "LISTEN_ADDR=APP_ADDR")]
    inbound: Vec<InboundListener>,
    /// Do not open the iptables capture ports 15001 and 15006 (local mode).
    #[arg(long)]
    no_capture: bool,
}

#[derive(clap::Args)]
struct GatewayArgs {
    #[command(flatten)]
    proxy: ProxyArgs,
    /// The pod's labels as the downward API writes them (`key="value"` lines).
    #[arg(long)]
    labels_file: Option<PathBuf>,
    /// A label of this gateway, `KEY=VALUE` (repeatable; local mode and tests). Added to the
    /// labels file's.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<LabelFlag>,
    /// Where the TLS Secrets named by `credentialName` are: `<dir>/<name>/tls.crt`, `tls.key`,
    /// `ca.crt`.
    #[arg(long, default_value = "/var/run/mizzen/credentials")]
    credentials_dir: PathBuf,
    /// The address the server ports are bound on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Listen for the server port PORT on LISTEN_ADDR instead of `--bind`:PORT (repeatable;
    /// port 0 takes a free port, logged as `bound` at start).
    #[arg(long = "port-map", value_name = "PORT=LISTEN_ADDR")]
    port_map: Vec<PortMapping>,
}

impl ProxyArgs {
    fn workload_flags(&self) -> WorkloadFlags {
        WorkloadFlags {
            name: self.workload_name.clone(),
            app: self.app.clone(),
            version: self.version.clone(),
            namespace: self.namespace.clone(),
            locality: self.locality.clone(),
        }
    }

    /// Sets what every mode shares: admin ports, drain, access log, mesh identity.
    fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        config.admin = Some(self.admin);
        config.health = Some(self.health);
        config.prometheus = Some(self.prometheus);
        config.drain = Duration::from_secs_f64(self.drain_duration.max(0.0));
        config.access_log = !self.no_access_log;
        if let (Some(cert), Some(key), Some(roots)) =
            (&self.tls_cert, &self.tls_key, &self.tls_roots)
        {
            config.tls = Some(Arc::new(mizzen_proxy::mtls::MeshTls::from_files(
                cert, key, roots,
            )?));
        }
        config.agent = self.agent_socket.clone().map(|socket| AgentSettings {
            socket,
            token_file: self.token.clone(),
        });
        Ok(())
    }
}

fn sidecar_config(args: SidecarArgs) -> anyhow::Result<(Config, usize)> {
    let p = &args.proxy;
    let workload = Workload::from_strings(&Env, &p.workload_flags());
    let mut config = Config::sidecar(p.config.clone(), workload);
    if args.no_capture {
        config.outbound_capture = None;
        config.inbound_capture = None;
    }
    config.outbound = args.outbound;
    config.inbound = args.inbound;
    p.apply(&mut config)?;
    Ok((config, p.concurrency))
}

fn gateway_config(args: GatewayArgs) -> anyhow::Result<(Config, usize)> {
    let p = &args.proxy;
    let mut labels = match &args.labels_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            parse_labels_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => BTreeMap::new(),
    };
    labels.extend(args.labels.into_iter().map(|l| (l.key, l.value)));
    let workload = Workload::for_gateway(&Env, &p.workload_flags(), &labels);
    let settings = GatewaySettings {
        labels,
        credentials_dir: args.credentials_dir,
        bind: args.bind,
        port_map: args
            .port_map
            .into_iter()
            .map(|m| (m.port, m.listen))
            .collect(),
    };
    let mut config = Config::gateway(p.config.clone(), workload, settings);
    p.apply(&mut config)?;
    Ok((config, p.concurrency))
}

fn main() -> anyhow::Result<()> {
    let (filter, handle) = reload::Layer::new(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    );
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr),
        )
        .init();
    // No transparent huge pages. With them each 2 MiB of mimalloc's arena that is touched is
    // resident whole: an idle sidecar with 100 services held 16.0 MiB, 8 MiB of it huge pages;
    // without them it holds 10.7 MiB (2.5 MiB anonymous). mimalloc is built not to ask for
    // them (`no_thp`); this also refuses them where the kernel gives them unasked
    // (`transparent_hugepage=always`), for all but the few megabytes touched before `main`
    // (the image sets `MIMALLOC_ALLOW_THP=0`, which makes mimalloc refuse them before its first
    // allocation). A sidecar runs next to every pod: its memory is worth more than the TLB
    // misses huge pages save.
    // Called whatever the log level, so that no build can compile the reference away.
    let allocator = allocator_version();
    tracing::debug!(mimalloc = allocator, "allocator");
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(error = %e, "could not disable transparent huge pages");
    }
    let (config, concurrency) = match Cli::parse().command {
        Command::Sidecar(args) => sidecar_config(args)?,
        Command::Gateway(args) => gateway_config(args)?,
        Command::Init(args) => return Ok(mizzen_proxy::init::run(&args)?),
    };
    tracing::info!(config = ?config, "effective configuration");

    let set_level: mizzen_proxy::admin::LogLevel = Arc::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| format!("bad level {level:?}: {e}"))?;
        handle.reload(f).map_err(|e| e.to_string())
    });
    // One worker: a current-thread runtime, with no cross-thread wake-ups.
    let rt = if concurrency <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(concurrency)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let app = App::bind(config, Some(set_level)).await?;
        let drain = app.shared.drain.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            } else {
                let _ = tokio::signal::ctrl_c().await;
            }
            tracing::info!("signal received");
            drain.start();
        });
        app.run().await;
        anyhow::Ok(())
    })
}
