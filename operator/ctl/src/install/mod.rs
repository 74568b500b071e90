//! `mizzenctl install`: the manifests that install Mizzen (`kubectl apply -f manifests/`).
//!
//! Each part is a YAML template beside this file, compiled in, with two placeholders: `{{hub}}`
//! and `{{tag}}`. [`render`] fills them in by plain string replacement; the only values it
//! takes are those of [`Options`], whose defaults are [`DEFAULT_HUB`] and [`DEFAULT_TAG`]. The
//! CRDs come from `mizzen-crds` as text and are written as they are. The committed `manifests/`
//! directory is this render with the defaults; `tests/install.rs` fails when the two drift.

use std::{fs, path::PathBuf};

use anyhow::{Context, bail};

/// The registry and organisation images are pulled from, unless `--hub` says otherwise.
pub const DEFAULT_HUB: &str = "ghcr.io/mizzen-mesh";
/// The image tag unless `--tag` says otherwise: this mizzenctl's own version.
pub const DEFAULT_TAG: &str = env!("CARGO_PKG_VERSION");

/// The file that carries the CRDs, whose text [`render`] is given rather than templating it.
pub const CRDS_FILE: &str = "01-crds.yaml";

/// Every part in `kubectl apply` order (it applies a directory's files alphabetically): the
/// namespace before what lives in it, the CRDs before anything that names their kinds, the
/// webhook configurations after the webhook so they never point at a Service that does not
/// exist yet, and the ingress gateway (its own namespace, RBAC and workload in one file) last:
/// nothing else depends on it. `None` marks the CRDs.
const PARTS: [(&str, Option<&str>); 8] = [
    ("00-namespace.yaml", Some(include_str!("00-namespace.yaml"))),
    (CRDS_FILE, None),
    ("02-rbac.yaml", Some(include_str!("02-rbac.yaml"))),
    ("03-operator.yaml", Some(include_str!("03-operator.yaml"))),
    ("04-webhook.yaml", Some(include_str!("04-webhook.yaml"))),
    ("05-agent.yaml", Some(include_str!("05-agent.yaml"))),
    (
        "06-webhook-configurations.yaml",
        Some(include_str!("06-webhook-configurations.yaml")),
    ),
    (
        "07-ingress-gateway.yaml",
        Some(include_str!("07-ingress-gateway.yaml")),
    ),
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Registry and organisation of the images: {hub}/mizzen-operator:{tag}, mizzen-webhook,
    /// mizzen-agent and mizzen-proxy.
    #[arg(long, value_name = "HUB", default_value = DEFAULT_HUB)]
    hub: String,
    /// Tag of every image; also the app.kubernetes.io/version label of every object.
    #[arg(long, value_name = "TAG", default_value = DEFAULT_TAG)]
    tag: String,
    /// Write one file per part into DIR (created if missing) instead of one YAML stream on
    /// stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// What varies between installs: where the images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    hub: String,
    tag: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            hub: DEFAULT_HUB.to_string(),
            tag: DEFAULT_TAG.to_string(),
        }
    }
}

impl Options {
    /// Checks that `hub` and `tag` make valid image references and that `tag` is a valid label
    /// value, so that replacing the placeholders cannot produce broken YAML. A trailing `/` on
    /// the hub is dropped.
    pub fn new(hub: &str, tag: &str) -> anyhow::Result<Self> {
        let hub = hub.trim_end_matches('/');
        let hub_ok = !hub.is_empty()
            && !hub.starts_with('/')
            && !hub.contains("//")
            && hub
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c));
        if !hub_ok {
            bail!(
                "--hub {hub:?} is not a registry path: use lowercase letters, digits and . _ - / : \
                 (for example ghcr.io/mizzen-mesh)"
            );
        }
        let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        let tag_ok = tag.len() <= 63
            && edge_ok(tag.chars().next())
            && edge_ok(tag.chars().last())
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !tag_ok {
            bail!(
                "--tag {tag:?} cannot be used: it is also the app.kubernetes.io/version label, so \
                 it must be 1 to 63 letters, digits, '.', '_' or '-', beginning and ending with a \
                 letter or digit"
            );
        }
        Ok(Self {
            hub: hub.to_string(),
            tag: tag.to_string(),
        })
    }
}

/// Every manifest file, in apply order, as `(file name, YAML)`. `crds_yaml` is written as
/// [`CRDS_FILE`] unchanged.
pub fn render(options: &Options, crds_yaml: &str) -> Vec<(&'static str, String)> {
    PARTS
        .iter()
        .map(|&(name, template)| {
            let text = match template {
                Some(template) => template
                    .replace("{{hub}}", &options.hub)
                    .replace("{{tag}}", &options.tag),
                None => crds_yaml.to_string(),
            };
            (name, text)
        })
        .collect()
}

/// The parts as one YAML stream, `---` between them; parts with no content are left out.
pub fn stream(parts: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (_, text) in parts.iter().filter(|(_, text)| !text.trim().is_empty()) {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// `mizzenctl install`: prints the stream, or writes the files into `--out-dir`.
pub fn run(args: Args, crds_yaml: &str) -> anyhow::Result<()> {
    let options = Options::new(&args.hub, &args.tag)?;
    let parts = render(&options, crds_yaml);
    let Some(dir) = args.out_dir else {
        print!("{}", stream(&parts));
        return Ok(());
    };
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in &parts {
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "wrote {} manifest files to {} (images {}/mizzen-*:{})",
        parts.len(),
        dir.display(),
        options.hub,
        options.tag
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder_and_keeps_the_crds_verbatim() {
        let options = Options::new("registry.example.com/team/", "1.2.3-rc.1").unwrap();
        let parts = render(&options, "kind: CustomResourceDefinition\n");
        let names: Vec<_> = parts.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "00-namespace.yaml",
                "01-crds.yaml",
                "02-rbac.yaml",
                "03-operator.yaml",
                "04-webhook.yaml",
                "05-agent.yaml",
                "06-webhook-configurations.yaml",
                "07-ingress-gateway.yaml"
            ]
        );
        for (name, text) in &parts {
            assert!(!text.contains("{{"), "{name} still has a placeholder");
        }
        assert_eq!(parts[1].1, "kind: CustomResourceDefinition\n");
        assert!(
            parts[3]
                .1
                .contains("image: \"registry.example.com/team/mizzen-operator:1.2.3-rc.1\"")
        );
    }

    #[test]
    fn stream_separates_parts_and_skips_empty_ones() {
        let parts = [
            ("a.yaml", "a: 1\n".to_string()),
            ("b.yaml", String::new()),
            ("c.yaml", "c: 3".to_string()),
        ];
        assert_eq!(stream(&parts), "a: 1\n---\nc: 3\n");
    }

    #[test]
    fn options_reject_what_would_break_an_image_or_a_label() {
        assert!(Options::new("", "1.0").is_err());
        assert!(Options::new("Ghcr.io/x", "1.0").is_err());
        assert!(Options::new("ghcr.io//x", "1.0").is_err());
        assert!(Options::new("ghcr.io/x y", "1.0").is_err());
        assert!(Options::new("ghcr.io/x", "").is_err());
        assert!(Options::new("ghcr.io/x", "-dev").is_err());
        assert!(Options::new("ghcr.io/x", "1.0\nkind: Secret").is_err());
        assert!(Options::new("ghcr.io/x", &"9".repeat(64)).is_err());
        let err = Options::new("ghcr.io/x", "v1:2").unwrap_err().to_string();
        assert!(err.contains("--tag \"v1:2\""), "{err}");
        assert_eq!(
            Options::new("localhost:5000/mizzen", "dev_1").unwrap(),
            Options {
                hub: "localhost:5000/mizzen".into(),
                tag: "dev_1".into()
            }
        );
    }
}
