//! The control plane of the local mesh: the operator's renderer in file mode, run once at start
//! and again whenever a YAML file in the directory changes, so an edited VirtualService reaches
//! the running proxies within a second or two.
//!
//! A render with invalid objects is not written: the proxies keep the last good config and the
//! log names what is wrong, as the operator keeps serving the last good ConfigMap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mizzen_operator::files::{FileError, file_settings, load_dir, write_configs};
use mizzen_operator::{RenderSettings, render};
use mizzen_proxy_config::ProxyConfig;
use notify::Watcher;
use tokio::sync::{mpsc, watch};

/// How long the watch waits for more file events before rendering (editors write in steps).
pub const SETTLE: Duration = Duration::from_millis(200);

/// Why a render was not written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Files(#[from] FileError),
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{dir}: no namespace to mesh (no Istio resources found)")]
    Empty { dir: PathBuf },
    #[error("watching {dir}: {source}")]
    Watch { dir: PathBuf, source: notify::Error },
}

/// Renders `input` into `output` (one `<namespace>.json` each) and returns the configs, unless
/// some object is invalid.
pub fn render_once(
    input: &Path,
    output: &Path,
    settings: &RenderSettings,
) -> Result<Vec<ProxyConfig>, RenderError> {
    let settings = file_settings(settings.clone());
    let index = load_dir(input, &settings)?;
    let rendered = render(&index, &settings);
    let mut problems: Vec<String> = rendered
        .statuses
        .iter()
        .filter(|(_, s)| !s.accepted)
        .map(|(object, s)| format!("{object}: {}", s.message))
        .collect();
    problems.extend(
        rendered
            .problems
            .iter()
            .flat_map(|(ns, p)| p.iter().map(move |p| format!("namespace {ns}: {p}"))),
    );
    if !problems.is_empty() {
        return Err(RenderError::Invalid(problems));
    }
    if rendered.configs.is_empty() {
        return Err(RenderError::Empty {
            dir: input.to_path_buf(),
        });
    }
    write_configs(&rendered, output)?;
    Ok(rendered.configs.values().map(|c| c.config()).collect())
}

/// Re-renders on every change under `input` until `stop` turns true. Each good render bumps
/// `generation` (the live view shows it).
pub async fn watch_and_render(
    input: PathBuf,
    output: PathBuf,
    settings: RenderSettings,
    generation: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RenderError> {
    let (tx, mut changes) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = event.map_or(true, |e| {
            !matches!(e.kind, notify::EventKind::Access(_))
                && e.paths
                    .iter()
                    .any(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        });
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|source| RenderError::Watch {
        dir: input.clone(),
        source,
    })?;
    watcher
        .watch(&input, notify::RecursiveMode::Recursive)
        .map_err(|source| RenderError::Watch {
            dir: input.clone(),
            source,
        })?;
    loop {
        tokio::select! {
            changed = changes.recv() => if changed.is_none() { return Ok(()) },
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        // Let the editor finish writing, and fold the burst of events into one render.
        tokio::time::sleep(SETTLE).await;
        while changes.try_recv().is_ok() {}
        match render_once(&input, &output, &settings) {
            Ok(configs) => {
                generation.send_modify(|g| *g += 1);
                tracing::info!(
                    generation = *generation.borrow(),
                    namespaces = configs.len(),
                    "re-rendered; the proxies pick it up"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "not applied, the proxies keep the last good config")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLIT: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-v1, namespace: shop}
spec:
  address: 127.0.0.1
  ports: {http: 18080}
  labels: {app: web, version: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: v1}
      weight: WEIGHT
    - destination: {host: web, subset: v1}
      weight: 10
"#;

    #[tokio::test]
    async fn an_edit_is_rendered_and_a_bad_one_keeps_the_last_good_config() {
        let input = tempfile::tempdir().unwrap();
        let output = tempfile::tempdir().unwrap();
        let file = input.path().join("mesh.yaml");
        std::fs::write(&file, SPLIT.replace("WEIGHT", "90")).unwrap();
        let settings = RenderSettings::default();
        let configs = render_once(input.path(), output.path(), &settings).unwrap();
        let web = configs[0].service("web.shop.svc.cluster.local").unwrap();
        assert_eq!(web.endpoints[0].ports["http"], 18080);
        let written = output.path().join("shop.json");
        let first = std::fs::read_to_string(&written).unwrap();

        let (generation, mut renders) = watch::channel(0);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(watch_and_render(
            input.path().to_path_buf(),
            output.path().to_path_buf(),
            settings,
            generation,
            stopped,
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Weights that do not add up to 100: refused, the file stays as it was.
        std::fs::write(&file, SPLIT.replace("WEIGHT", "95")).unwrap();
        tokio::time::sleep(SETTLE * 4).await;
        assert_eq!(*renders.borrow(), 0);
        assert_eq!(std::fs::read_to_string(&written).unwrap(), first);
        let err = render_once(input.path(), output.path(), &RenderSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VirtualService") && err.contains("100"),
            "{err}"
        );

        // A good edit (a header match added) is rendered within the bound.
        std::fs::write(
            &file,
            SPLIT.replace("WEIGHT", "90").replace(
                "  - route:",
                "  - match: [{headers: {x-canary: {exact: \"1\"}}}]\n    route:",
            ),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), renders.changed())
            .await
            .expect("re-rendered within 10 s")
            .unwrap();
        assert_ne!(std::fs::read_to_string(&written).unwrap(), first);
        stop.send_replace(true);
        task.await.unwrap().unwrap();
    }
}
