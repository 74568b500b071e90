//! `mizzenctl inject -f FILE [-o FILE]`: adds the sidecar to the pods and pod templates in a YAML
//! file, as the webhook would at admission (for GitOps users, like `istioctl kube-inject`). It
//! calls the webhook's own injection function on every Pod, Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, ReplicationController, Job and CronJob (also inside `List`s); every other
//! document is written back unchanged. Comments and formatting are not kept.

use std::{
    fs,
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use clap::ArgAction;
use mizzen_webhook::inject::{
    InjectSettings, Outcome,
    workload::{WorkloadOutcome, inject_workload},
};
use serde_json::Value;

fn default_proxy_image() -> String {
    InjectSettings::default().proxy_image
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// YAML (or JSON) file to read; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// Write the result to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Image of the proxy and its init container (the webhook's `--proxy-image`).
    #[arg(long, value_name = "IMAGE", default_value_t = default_proxy_image())]
    proxy_image: String,
    /// Add the proxy as a native sidecar (Kubernetes 1.29+); `false` makes it the first regular
    /// container, as the webhook's `--native-sidecar false` does.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    native_sidecar: bool,
}

/// `Kind/namespace/name` of a document, for messages.
fn describe(doc: &Value) -> String {
    let text = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let kind = Some(text("/kind"))
        .filter(|k| !k.is_empty())
        .unwrap_or("document");
    match (text("/metadata/namespace"), text("/metadata/name")) {
        ("", "") => kind.to_string(),
        ("", name) => format!("{kind}/{name}"),
        (ns, name) => format!("{kind}/{ns}/{name}"),
    }
}

/// Counts and messages of one run.
#[derive(Default)]
struct Report {
    injected: usize,
    notes: Vec<String>,
    errors: Vec<String>,
}

fn inject_doc(doc: &Value, settings: &InjectSettings, report: &mut Report) -> Value {
    let is_list = doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    if is_list && let Some(items) = doc.get("items").and_then(Value::as_array) {
        let mut out = doc.clone();
        out["items"] = Value::Array(
            items
                .iter()
                .map(|item| inject_doc(item, settings, report))
                .collect(),
        );
        return out;
    }
    match inject_workload(doc, settings) {
        Ok((out, WorkloadOutcome::Pod(Outcome::Injected))) => {
            report.injected += 1;
            out
        }
        Ok((out, WorkloadOutcome::Pod(Outcome::Skipped(why)))) => {
            report
                .notes
                .push(format!("{}: not injected: {why}", describe(doc)));
            out
        }
        Ok((out, WorkloadOutcome::NotAWorkload)) => out,
        Err(e) => {
            report.errors.push(format!("{}: {e}", describe(doc)));
            doc.clone()
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid YAML: {e}", args.file.display()))?;
    let settings = InjectSettings {
        proxy_image: args.proxy_image,
        native_sidecar: args.native_sidecar,
        ..InjectSettings::default()
    };

    let mut report = Report::default();
    let out: Vec<Value> = docs
        .iter()
        .filter(|d| !d.is_null())
        .map(|d| inject_doc(d, &settings, &mut report))
        .collect();
    let mut stderr = std::io::stderr().lock();
    for note in &report.notes {
        writeln!(stderr, "{note}")?;
    }
    if !report.errors.is_empty() {
        for e in &report.errors {
            writeln!(stderr, "error: {e}")?;
        }
        writeln!(
            stderr,
            "nothing written: {} object(s) could not be injected",
            report.errors.len()
        )?;
        return Ok(ExitCode::FAILURE);
    }

    let yaml = out
        .iter()
        .map(|d| serde_saphyr::to_string(d).context("writing YAML"))
        .collect::<anyhow::Result<Vec<_>>>()?
        .join("---\n");
    match &args.output {
        Some(path) => {
            fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(yaml.as_bytes())?,
    }
    writeln!(
        stderr,
        "injected the sidecar into {} pod template(s)",
        report.injected
    )?;
    Ok(ExitCode::SUCCESS)
}
