//! `mizzenctl proxy-config -f DIR -n NAMESPACE`: what a proxy in NAMESPACE would receive, rendered
//! offline from YAML by the operator's own renderer (file mode).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use mizzen_operator::{
    Index, RenderSettings,
    files::{file_settings, load_text, yaml_files},
    render,
};

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for .yaml and .yml) to render.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// The namespace of the proxy whose config to print.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The mesh root namespace (mesh-wide policies, fallback DestinationRules).
    #[arg(long, default_value = "mizzen-system")]
    root_namespace: String,
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config, notes, ok) = render_for(&args)?;
    eprint!("{notes}");
    print!("{config}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The config (pretty JSON) for `args.namespace`, notes for stderr, and whether it rendered.
fn render_for(args: &Args) -> anyhow::Result<(String, String, bool)> {
    let settings = file_settings(RenderSettings {
        root_namespace: args.root_namespace.clone(),
        trust_domain: args.trust_domain.clone(),
        ..RenderSettings::default()
    });
    let mut index = Index::new(settings.root_namespace.clone());
    for path in &args.paths {
        for file in yaml_files(path)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // Objects that name no namespace belong to the default namespace, as with kubectl.
            load_text(&mut index, &text, "default", &file)?;
        }
    }
    let rendered = render(&index, &settings);
    let mut notes = String::new();
    for (object, status) in rendered.statuses.iter().filter(|(_, s)| !s.accepted) {
        notes.push_str(&format!("left out {object}: {}\n", status.message));
    }
    if let Some(problems) = rendered.problems.get(&args.namespace) {
        for p in problems {
            notes.push_str(&format!("{p}\n"));
        }
        return Ok((String::new(), notes, false));
    }
    match rendered.configs.get(&args.namespace) {
        Some(config) => Ok((config.config().to_json() + "\n", notes, true)),
        None => {
            let meshed: Vec<&str> = rendered.meshed.iter().map(String::as_str).collect();
            notes.push_str(&format!(
                "namespace {:?} is not meshed in this input (meshed: {})\n",
                args.namespace,
                if meshed.is_empty() {
                    "none".to_string()
                } else {
                    meshed.join(", ")
                }
            ));
            Ok((String::new(), notes, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(paths: &[&str], namespace: &str) -> Args {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Args {
            paths: paths.iter().map(|p| root.join(p)).collect(),
            namespace: namespace.into(),
            root_namespace: "mizzen-system".into(),
            trust_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn prints_the_config_a_namespace_receives() {
        let (config, notes, ok) = render_for(&args(
            &[
                "examples/services.yaml",
                "../shared/fixtures/istio/dr-serviceb-subsets.yaml",
                "../shared/fixtures/istio/vs-canary-90-10.yaml",
            ],
            "default",
        ))
        .unwrap();
        assert!(ok, "{notes}");
        let cfg: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(cfg["format"], "mizzen.io/proxy-config/v1");
        let svc = cfg["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["host"] == "serviceb.default.svc.cluster.local")
            .unwrap();
        assert_eq!(svc["httpRoutes"][0]["action"]["route"][1]["weight"], 10);
        assert_eq!(svc["subsets"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn says_when_the_namespace_is_not_meshed() {
        let (config, notes, ok) =
            render_for(&args(&["examples/services.yaml"], "elsewhere")).unwrap();
        assert!(!ok);
        assert!(config.is_empty());
        assert!(
            notes.contains("\"elsewhere\" is not meshed in this input (meshed: default)"),
            "{notes}"
        );
    }
}
