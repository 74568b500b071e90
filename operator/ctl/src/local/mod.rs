//! `mizzenctl local up DIR`: a whole mesh on this machine, in this one process, from a
//! directory of Istio YAML (ServiceEntries and WorkloadEntries for the workloads, the usual
//! routing and security resources on top) — no cluster, no new config language.
//!
//! What runs, each as tokio tasks with its own log prefix:
//! - [`render`]: the operator's renderer in file mode, re-run whenever a YAML file changes;
//! - the node agent in local-CA mode ([`mizzen_agent::run`]), in a private state directory
//!   ([`state`]), signing each sidecar's certificate for its WorkloadEntry's service account;
//! - [`mesh`]: one sidecar per meshed WorkloadEntry ([`plan`] works them out), explicit
//!   listeners on loopback, mTLS between them, and the demo app behind each demo entry;
//! - [`driver`]: traffic to productpage through the driver's own sidecar;
//! - [`stats`] and [`view`]: the sidecars' Istio metrics scraped every second into a live view;
//! - [`canary`] with `--canary`: the operator's canary file driver moving reviews to v2.
//!
//! Ctrl-C (or `--duration`) stops the driver, drains the sidecars, stops the apps and the
//! agent, and removes the state directory.
#![forbid(unsafe_code)]

pub mod canary;
pub mod driver;
pub mod logs;
pub mod mesh;
pub mod plan;
pub mod render;
pub mod state;
pub mod stats;
pub mod view;

use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mizzen_crds::rollouts::canary::CanaryStatus;
use mizzen_operator::RenderSettings;
use mizzen_operator::canary::local::LocalCanary;
use tokio::sync::watch;
use tracing::Instrument;

use crate::driver::Counters;
use crate::mesh::{DemoOptions, Mesh};
use crate::plan::Plan;
use crate::state::StateDir;
use crate::stats::{Scraper, Target};
use crate::view::{Screen, Snapshot};

/// The fraction of requests reviews v2 fails with `--faulty`.
pub const FAULTY_ERROR_RATE: f64 = 0.2;

/// `mizzenctl local ...`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the mesh of a directory of Istio YAML on this machine, with the demo app and a live
    /// view, until Ctrl-C.
    Up(UpArgs),
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// The directory of Istio YAML (e.g. examples/bookinfo). Edits are applied live.
    dir: PathBuf,
    /// Stop after this long (e.g. 30s, 2m) and print a summary; fails if no request succeeded.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Run the directory's Canary (reviews v1 → v2) on a working copy of it.
    #[arg(long)]
    canary: bool,
    /// reviews v2 fails 20% of its requests (with --canary: watch it roll back).
    #[arg(long)]
    faulty: bool,
    /// Requests per second the driver sends to productpage.
    #[arg(long, default_value_t = 20)]
    rps: u32,
    /// Print one summary line a second instead of the live view.
    #[arg(long)]
    no_ui: bool,
}

/// What [`up`] runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub duration: Option<Duration>,
    pub canary: bool,
    pub faulty: bool,
    pub rps: u32,
    /// Redraw the live view (else one line a second).
    pub ui: bool,
}

/// How the run went.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// The final frame: the driver's counts, the last seconds and everything the sidecars
    /// served since the start.
    pub last: Snapshot,
    pub canary: Option<CanaryStatus>,
}

/// The CLI: a runtime, the state directory, logs, [`up`] until Ctrl-C, the final summary.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Command::Up(args) = args.command;
    let ui = !args.no_ui && std::io::stdout().is_terminal();
    let options = Options {
        dir: args.dir,
        duration: args.duration,
        canary: args.canary,
        faulty: args.faulty,
        rps: args.rps,
        ui,
    };
    let state = StateDir::create()?;
    logs::init(ui.then_some(state.log().as_path()))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(async {
        up(options, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    });
    let summary = summary?;
    println!("{}", view::render(&summary.last));
    if summary.last.driver.sent > 0 && summary.last.driver.ok == 0 {
        eprintln!("no request succeeded");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the local mesh of `options.dir` until `options.duration` has passed or `interrupt`
/// completes, then stops it and removes `state`.
pub async fn up(
    options: Options,
    state: StateDir,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut result = run_mesh(&options, &state, interrupt).await;
    if options.ui
        && let Err(e) = &result
    {
        // The log file goes with the state directory: keep its end in the error.
        let tail = logs::tail(&state.log(), 20);
        result = Err(anyhow::anyhow!("{e:#}\n\nlast log lines:\n{tail}"));
    }
    if let Err(e) = state.remove() {
        tracing::warn!(error = %e, "could not remove the state directory");
    }
    result
}

async fn run_mesh(
    options: &Options,
    state: &StateDir,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let settings = RenderSettings::default();
    // The canary writes its routes into the directory: give it a copy, not the user's files.
    let input = if options.canary {
        let copy = state.path().join("mesh");
        copy_yaml(&options.dir, &copy)?;
        tracing::info!(copy = %copy.display(), "--canary runs on a working copy of the directory");
        copy
    } else {
        options.dir.clone()
    };
    let configs = render::render_once(&input, &state.configs(), &settings)
        .with_context(|| format!("rendering {}", options.dir.display()))?;
    let plan = Plan::of(&configs)?;
    let trust_domain = configs[0].mesh.trust_domain.clone();
    tracing::info!(
        workloads = ?plan.workloads.iter().map(|w| &w.name).collect::<Vec<_>>(),
        state = %state.path().display(),
        "starting the local mesh"
    );
    let demo = DemoOptions {
        v2_error_rate: if options.faulty {
            FAULTY_ERROR_RATE
        } else {
            0.0
        },
    };
    let mesh = Mesh::start(&plan, state, &trust_domain, demo).await?;

    let (stop, stopped) = watch::channel(false);
    let (renders_tx, renders) = watch::channel(1u64);
    let watcher = tokio::spawn(
        render::watch_and_render(
            input.clone(),
            state.configs(),
            settings,
            renders_tx,
            stopped.clone(),
        )
        .instrument(tracing::info_span!("render")),
    );
    let counters = Arc::new(Counters::default());
    let driver = match &mesh.entry {
        Some(entry) => Some(tokio::spawn(
            driver::drive(
                entry.clone(),
                "/productpage",
                options.rps,
                counters.clone(),
                stopped.clone(),
            )
            .instrument(tracing::info_span!("traffic")),
        )),
        None => {
            tracing::warn!("no productpage WorkloadEntry: no traffic is driven");
            None
        }
    };
    let (canary_tx, canary_rx) = watch::channel(None);
    let rollout = if options.canary {
        let canary = canary::find(&input)?;
        let urls = canary_scrape_urls(&mesh, &canary.spec.service, &canary.spec.canary_subset);
        let rollout = LocalCanary::new(&input, canary, urls);
        Some(tokio::spawn(
            canary::run(rollout, canary_tx, stopped.clone())
                .instrument(tracing::info_span!("canary")),
        ))
    } else {
        None
    };

    let targets = mesh.sidecars.iter().map(|s| Target {
        addr: s.prometheus,
        principal: s.principal.clone(),
    });
    let mut scraper = Scraper::new(targets.collect());
    let snapshot = |scraper: &Scraper| Snapshot {
        elapsed: started.elapsed(),
        renders: *renders.borrow(),
        driver: counters.get(),
        recent: scraper.recent(),
        total: scraper.total(),
        canary: canary_rx.borrow().as_ref().map(canary::describe),
    };
    let deadline = options.duration.map(|d| Instant::now() + d);
    let screen = Screen::new(options.ui);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut interrupt => break,
        }
        scraper.scrape().await;
        screen.show(&snapshot(&scraper));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    drop(screen);
    tracing::info!("stopping");
    stop.send_replace(true);
    if let Some(driver) = driver {
        let _ = driver.await;
    }
    // The last numbers, with every request the driver sent accounted for.
    scraper.scrape().await;
    let last = snapshot(&scraper);
    if let Some(rollout) = rollout {
        let _ = rollout.await;
    }
    let _ = watcher.await;
    mesh.stop().await;
    tracing::info!("stopped");
    Ok(Summary {
        canary: canary_rx.borrow().clone(),
        last,
    })
}

/// The canary subset's sidecars (same app as the service, version named like the subset);
/// every sidecar of the app when none matches.
fn canary_scrape_urls(mesh: &Mesh, service: &str, subset: &str) -> Vec<String> {
    let app = service.split('.').next().unwrap_or(service);
    let of_app = || mesh.sidecars.iter().filter(|s| s.app == app);
    let mut picked: Vec<_> = of_app().filter(|s| s.version == subset).collect();
    if picked.is_empty() {
        picked = of_app().collect();
    }
    picked
        .iter()
        .map(|s| format!("http://{}/stats/prometheus", s.prometheus))
        .collect()
}

/// Copies the YAML files under `from` into `to`, keeping the layout.
fn copy_yaml(from: &Path, to: &Path) -> anyhow::Result<()> {
    for file in mizzen_operator::files::yaml_files(from)? {
        let relative = file.strip_prefix(from).unwrap_or(&file);
        let target = to.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&file, &target)
            .with_context(|| format!("copying {} to {}", file.display(), target.display()))?;
    }
    Ok(())
}

/// `<number><unit>` with unit `ms`, `s`, `m` or `h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 2m or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{text}`: the unit must be ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3d").unwrap_err().contains("unit"));
        assert!(parse_duration("s").is_err());
    }
}
