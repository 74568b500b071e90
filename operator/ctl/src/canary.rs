//! `mizzenctl canary status NAME [-n NS] [-f FILE]`: a Canary's phase, weight, failed checks,
//! last metric values and history, as tables. The Canary is read from the cluster (kubeconfig)
//! or from a saved YAML/JSON file; the rendering is the pure [`render_status`].

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Subcommand;
use mizzen_crds::rollouts::canary::{Canary, CanaryMetric, CanaryPhase};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: CanaryCommand,
}

#[derive(Subcommand)]
enum CanaryCommand {
    /// Print a Canary's phase, weight, checks and history.
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The Canary's name (optional with -f when the file holds one Canary).
    name: Option<String>,
    /// Its namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Read the Canary from this YAML or JSON file instead of the cluster.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        CanaryCommand::Status(a) => {
            let canary = match &a.file {
                Some(path) => from_file(path, a.name.as_deref())?,
                None => {
                    let name = a
                        .name
                        .as_deref()
                        .context("a Canary name is required (or -f FILE)")?;
                    from_cluster(&a.namespace, name)?
                }
            };
            print!("{}", render_status(&canary));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The Canary in `path` (YAML or JSON; a stream or a List is searched for `name`).
fn from_file(path: &std::path::Path, name: Option<&str>) -> anyhow::Result<Canary> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs = mizzen_crds::document::parse_stream(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let canaries: Vec<Canary> = docs
        .into_iter()
        .filter(|d| d["kind"] == "Canary")
        .map(|d| {
            serde_json::from_value(d)
                .with_context(|| format!("{}: not a valid Canary", path.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut matching = canaries
        .into_iter()
        .filter(|c| name.is_none_or(|n| c.metadata.name.as_deref() == Some(n)));
    let first = matching.next().with_context(|| {
        format!(
            "{}: no Canary{}",
            path.display(),
            name.map(|n| format!(" named {n}")).unwrap_or_default()
        )
    })?;
    if name.is_none() && matching.next().is_some() {
        anyhow::bail!("{}: several Canaries; name one", path.display());
    }
    Ok(first)
}

fn from_cluster(namespace: &str, name: &str) -> anyhow::Result<Canary> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the cluster (kubeconfig)")?;
        kube::Api::<Canary>::namespaced(client, namespace)
            .get(name)
            .await
            .with_context(|| format!("reading Canary {namespace}/{name}"))
    })
}

/// The status report: a summary, the last check round and the history, as aligned text.
pub fn render_status(canary: &Canary) -> String {
    let status = canary.status.clone().unwrap_or_default();
    let spec = &canary.spec;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Canary {}/{}: {} from subset {} to {}",
        canary.metadata.namespace.as_deref().unwrap_or("default"),
        canary.metadata.name.as_deref().unwrap_or("?"),
        spec.service,
        spec.stable_subset,
        spec.canary_subset
    );
    let threshold = spec
        .analysis
        .as_ref()
        .map_or(1, |a| a.threshold_or_default());
    let mut summary = vec![
        ("Phase", phase(status.phase).to_string()),
        ("Canary weight", format!("{}%", status.canary_weight)),
        (
            "Failed checks",
            format!("{} of {threshold}", status.failed_checks),
        ),
    ];
    if let Some(r) = &status.last_applied_revision {
        summary.push(("Revision", r.clone()));
    }
    if let Some(r) = &status.last_promoted_revision {
        summary.push(("Promoted revision", r.clone()));
    }
    if let Some(t) = &status.last_analysis_time {
        summary.push(("Last analysis", t.clone()));
    }
    if let Some(reason) = &status.reason {
        let message = status.message.as_deref().unwrap_or_default();
        summary.push(("Reason", format!("{reason}: {message}")));
    }
    for (k, v) in summary {
        let _ = writeln!(out, "{:<18} {v}", format!("{k}:"));
    }

    out.push('\n');
    if status.last_metrics.is_empty() {
        out.push_str("No check round yet.\n");
    } else {
        let metrics: &[CanaryMetric] = spec.analysis.as_ref().map_or(&[], |a| &a.metrics);
        let rows = status.last_metrics.iter().map(|m| {
            let range = metrics
                .iter()
                .find(|s| s.name == m.name)
                .and_then(|s| s.threshold_range)
                .map(|r| match (r.min, r.max) {
                    (Some(min), Some(max)) => format!("{min} to {max}"),
                    (Some(min), None) => format!(">= {min}"),
                    (None, Some(max)) => format!("<= {max}"),
                    (None, None) => "-".into(),
                })
                .unwrap_or_else(|| "-".into());
            vec![
                m.name.clone(),
                m.value.map_or("no data".into(), |v| format!("{v:.2}")),
                range,
                if m.passed { "passed" } else { "FAILED" }.into(),
            ]
        });
        table(&mut out, &["METRIC", "VALUE", "RANGE", "RESULT"], rows);
    }

    out.push('\n');
    if status.history.is_empty() {
        out.push_str("No history yet.\n");
    } else {
        let rows = status.history.iter().map(|h| {
            vec![
                h.time.clone(),
                phase(h.phase).to_string(),
                format!("{}%", h.weight),
                h.reason.clone().unwrap_or_default(),
            ]
        });
        table(&mut out, &["TIME", "PHASE", "WEIGHT", "REASON"], rows);
    }
    out
}

fn phase(p: CanaryPhase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Appends a table whose columns are as wide as their widest cell, two spaces apart.
fn table(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows);
    let widths: Vec<usize> = (0..header.len())
        .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in all {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_crds::rollouts::canary::CanaryStatus;

    fn with_status(mut canary: Canary, status: CanaryStatus) -> Canary {
        canary.status = Some(status);
        canary
    }

    fn canary() -> Canary {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollouts.mizzen.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"service": "reviews", "stableSubset": "v1", "canarySubset": "v2",
              "analysis": {"interval": "1m", "threshold": 2, "stepWeight": 20, "maxWeight": 60,
                "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}},
                            {"name": "request-duration", "thresholdRange": {"max": 500}}]}},
            "status": {"phase": "Progressing", "canaryWeight": 20, "failedChecks": 1,
              "lastAppliedRevision": "abc", "lastAnalysisTime": "2026-01-01T00:02:00Z",
              "reason": "ChecksFailed",
              "message": "checks failed (1 of 2): request-success-rate: 80 is below the minimum 99",
              "lastMetrics": [{"name": "request-success-rate", "value": 80.0, "passed": false},
                              {"name": "request-duration", "passed": false}],
              "history": [
                {"time": "2026-01-01T00:00:00Z", "phase": "Progressing", "weight": 0, "reason": "NewRevision"},
                {"time": "2026-01-01T00:01:00Z", "phase": "Progressing", "weight": 20, "reason": "StepWeight"},
                {"time": "2026-01-01T00:02:00Z", "phase": "Progressing", "weight": 20, "reason": "ChecksFailed"}]}
        }))
        .unwrap()
    }

    #[test]
    fn status_renders_summary_checks_and_history() {
        let text = render_status(&canary());
        let expected = "\
Canary shop/reviews: reviews from subset v1 to v2
Phase:             Progressing
Canary weight:     20%
Failed checks:     1 of 2
Revision:          abc
Last analysis:     2026-01-01T00:02:00Z
Reason:            ChecksFailed: checks failed (1 of 2): request-success-rate: 80 is below the minimum 99

METRIC                VALUE    RANGE   RESULT
request-success-rate  80.00    >= 99   FAILED
request-duration      no data  <= 500  FAILED

TIME                  PHASE        WEIGHT  REASON
2026-01-01T00:00:00Z  Progressing  0%      NewRevision
2026-01-01T00:01:00Z  Progressing  20%     StepWeight
2026-01-01T00:02:00Z  Progressing  20%     ChecksFailed
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn a_new_canary_says_it_has_no_rounds_yet() {
        let text = render_status(&with_status(canary(), CanaryStatus::default()));
        assert!(text.contains("Phase:             Initializing"), "{text}");
        assert!(text.contains("No check round yet."), "{text}");
        assert!(text.contains("No history yet."), "{text}");
    }

    #[test]
    fn files_are_read_as_yaml_streams_and_searched_by_name() {
        let dir = std::env::temp_dir().join(format!("mizzenctl-canary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("canaries.yaml");
        let mut other = canary();
        other.metadata.name = Some("ratings".into());
        let stream = format!(
            "{}---\n{}",
            serde_saphyr::to_string(&canary()).unwrap(),
            serde_saphyr::to_string(&other).unwrap()
        );
        std::fs::write(&path, stream).unwrap();
        let found = from_file(&path, Some("ratings")).unwrap();
        assert_eq!(found.metadata.name.as_deref(), Some("ratings"));
        let err = from_file(&path, None).unwrap_err().to_string();
        assert!(err.contains("several Canaries"), "{err}");
        let err = from_file(&path, Some("nope")).unwrap_err().to_string();
        assert!(err.contains("no Canary named nope"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
