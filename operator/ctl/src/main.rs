//! `mizzenctl`: Mizzen's command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mizzen_crds::resource;

mod analyze;
mod canary;
mod inject;
mod install;
mod proxy_config;

#[derive(Parser)]
#[command(
    name = "mizzenctl",
    version,
    about = "Mizzen service mesh command-line tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate Istio and Mizzen YAML offline, like `istioctl analyze`.
    Analyze(analyze::Args),
    /// Print or write the install manifests.
    Install(install::Args),
    /// Add the sidecar to the pods and workloads in a YAML file, as the webhook would.
    Inject(inject::Args),
    /// Print the proxy config a namespace would receive, rendered offline from YAML.
    ProxyConfig(proxy_config::Args),
    /// Show a Canary rollout: `canary status NAME [-n NS] [-f FILE]`.
    Canary(canary::Args),
    /// Run a mesh on this machine from a directory of Istio YAML (`local up examples/bookinfo`).
    Local(mizzen_local::Args),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Inject(args) => inject::run(args),
        Command::Install(args) => {
            install::run(args, &resource::crds_yaml(&resource::crds())).map(|()| ExitCode::SUCCESS)
        }
        Command::ProxyConfig(args) => proxy_config::run(args),
        Command::Canary(args) => canary::run(args),
        Command::Local(args) => mizzen_local::run(args),
    }
}
