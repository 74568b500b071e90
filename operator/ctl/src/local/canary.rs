//! `--canary`: runs the directory's `Canary` (the demo's moves reviews from v1 to v2) with the
//! operator's own file driver ([`mizzen_operator::canary::local::LocalCanary`]): each round
//! scrapes the canary subset's sidecars, steps the state machine and writes the VirtualService
//! weights into the directory, which the watch re-renders into the running proxies.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use mizzen_crds::rollouts::canary::{Canary, CanaryPhase, CanaryStatus};
use mizzen_operator::canary::local::LocalCanary;
use mizzen_operator::files::yaml_files;
use tokio::sync::watch;

/// The shortest pause between two rounds.
const MIN_ROUND: Duration = Duration::from_millis(200);

/// The first `Canary` in the YAML under `dir`.
pub fn find(dir: &Path) -> anyhow::Result<Canary> {
    for file in yaml_files(dir)? {
        let text = std::fs::read_to_string(&file)?;
        for doc in mizzen_crds::document::parse_stream(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
        {
            if doc["kind"] == "Canary" {
                return serde_json::from_value(doc)
                    .map_err(|e| anyhow::anyhow!("{}: Canary: {e}", file.display()));
            }
        }
    }
    anyhow::bail!("--canary: no Canary under {}", dir.display())
}

/// One line for the view: phase, weight and the last reason.
pub fn describe(status: &CanaryStatus) -> String {
    let mut line = format!(
        "{:?}, {}% to the canary",
        status.phase, status.canary_weight
    );
    if status.failed_checks > 0 {
        line.push_str(&format!(", {} failed checks", status.failed_checks));
    }
    if let Some(message) = &status.message {
        line.push_str(&format!(" — {message}"));
    }
    line
}

/// Whether the rollout is over.
pub fn finished(status: &CanaryStatus) -> bool {
    matches!(status.phase, CanaryPhase::Succeeded | CanaryPhase::Failed)
}

/// Runs rounds until the rollout ends or `stop` turns true, publishing each status.
pub async fn run(
    mut rollout: LocalCanary,
    status: watch::Sender<Option<CanaryStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = match rollout.round(Timestamp::now()).await {
            Ok(decision) => decision.requeue_after.max(MIN_ROUND),
            Err(e) => {
                tracing::warn!(error = %e, "canary round failed; retrying");
                Duration::from_secs(1)
            }
        };
        let now = rollout.status();
        let done = finished(&now);
        status.send_replace(Some(now));
        if done {
            tracing::info!(status = %describe(&rollout.status()), "canary finished");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_canary_is_found_and_described() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
        let canary = find(&dir).unwrap();
        assert_eq!(canary.spec.service, "reviews");
        assert_eq!(
            (
                canary.spec.stable_subset.as_str(),
                canary.spec.canary_subset.as_str()
            ),
            ("v1", "v2")
        );
        let status = CanaryStatus {
            phase: CanaryPhase::Progressing,
            canary_weight: 40,
            ..CanaryStatus::default()
        };
        assert_eq!(describe(&status), "Progressing, 40% to the canary");
        assert!(!finished(&status));
    }
}
