//! `mizzenctl analyze -f PATH...`: reads YAML files or directories and reports every problem as
//! `ERROR|WARN CODE kind/namespace/name field: message`, like `istioctl analyze`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use mizzen_crds::{
    document,
    inventory::Inventory,
    resource::ObjectRef,
    validate::{self, Code, Finding, Problem, Severity},
};

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for .yaml, .yml and .json) to analyse.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Namespace for objects that name none.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Every file under `paths`, in a stable order.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|p| p.is_dir());
            out.extend(files.into_iter().filter(|p| is_manifest(p)));
            out.extend(collect_files(&dirs)?);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads the files into an inventory; documents that cannot be read become findings.
pub fn load(files: &[PathBuf], namespace: &str) -> anyhow::Result<(Inventory, Vec<Finding>)> {
    let mut inv = Inventory::default();
    let mut findings = Vec::new();
    for file in files {
        let text =
            fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let origin = file.display().to_string();
        let docs = match document::parse_stream(&text) {
            Ok(docs) => docs,
            Err(e) => {
                let object = ObjectRef {
                    kind: "File".into(),
                    namespace: String::new(),
                    name: origin.clone(),
                };
                findings.push(Finding {
                    object,
                    origin,
                    problem: Problem::error(Code::SchemaError, "", e.to_string()),
                });
                continue;
            }
        };
        for (i, doc) in docs.iter().enumerate() {
            if let Err(f) = inv.add(doc, namespace, &format!("{origin} (document {})", i + 1)) {
                let object = ObjectRef {
                    kind: f.kind,
                    namespace: f.namespace.unwrap_or_else(|| namespace.to_string()),
                    name: f.name.unwrap_or_default(),
                };
                findings.push(Finding {
                    object,
                    origin: origin.clone(),
                    problem: f.problem,
                });
            }
        }
    }
    Ok((inv, findings))
}

pub fn render_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}\n",
                f.problem.severity, f.problem.code, f.object, f.problem
            )
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let files = collect_files(&args.paths)?;
    let (inv, mut findings) = load(&files, &args.namespace)?;
    findings.extend(validate::analyze(&inv));
    findings.sort_by(|a, b| {
        (a.problem.severity, &a.object, &a.problem.path).cmp(&(
            b.problem.severity,
            &b.object,
            &b.problem.path,
        ))
    });
    let errors = findings
        .iter()
        .filter(|f| f.problem.severity == Severity::Error)
        .count();
    match args.output {
        Output::Text => {
            print!("{}", render_text(&findings));
            let warnings = findings.len() - errors;
            let objects = inv.resources.len()
                + inv.services.len()
                + inv.workloads.len()
                + inv.namespaces.len();
            eprintln!(
                "{} error(s), {warnings} warning(s) in {objects} object(s) from {} file(s)",
                errors,
                files.len()
            );
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
