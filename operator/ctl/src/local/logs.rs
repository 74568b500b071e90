//! Logs of the local mesh: readable lines (not JSON), each prefixed by its component's span
//! (`agent`, `proxy{workload=reviews-v2}`, `app{workload=...}`, `render`, `traffic`, `canary`)
//! and target. They go to stderr, or to a file when the live view owns the terminal.

use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Installs the process's subscriber: to `file` when given, else stderr. `RUST_LOG` overrides
/// the default level (`info`).
pub fn init(file: Option<&Path>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let installed = match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init()
        }
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// The last `n` lines of the log file, to show after the live view closes.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
