//! File mode: the same renderer over YAML files, for the local mesh and `mizzenctl proxy-config`.

use std::path::{Path, PathBuf};

use mizzen_crds::document::parse_stream;

use crate::{
    index::Index,
    render::{RenderSettings, Rendered, render},
};

/// Why file mode failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Document { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The YAML files under `dir` (recursively), sorted, or `dir` itself when it is a file.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io(&d))? {
            let path = entry.map_err(io(&d))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every document of `text` into `index`. Objects without a namespace go to
/// `default_namespace`.
pub fn load_text(
    index: &mut Index,
    text: &str,
    default_namespace: &str,
    origin: &Path,
) -> Result<(), FileError> {
    let docs = parse_stream(text).map_err(|e| FileError::Document {
        path: origin.to_path_buf(),
        message: e.to_string(),
    })?;
    for doc in &docs {
        index
            .apply_document(doc, default_namespace)
            .map_err(|e| FileError::Document {
                path: origin.to_path_buf(),
                message: e.to_string(),
            })?;
    }
    Ok(())
}

/// An index of every YAML file under `input`.
pub fn load_dir(input: &Path, settings: &RenderSettings) -> Result<Index, FileError> {
    let mut index = Index::new(settings.root_namespace.clone());
    for file in yaml_files(input)? {
        let text = std::fs::read_to_string(&file).map_err(io(&file))?;
        load_text(&mut index, &text, "default", &file)?;
    }
    Ok(index)
}

/// File-mode settings: when the input has no Namespace objects, every namespace holding objects
/// counts as meshed.
pub fn file_settings(mut settings: RenderSettings) -> RenderSettings {
    settings.implicit_namespaces = true;
    settings
}

/// Renders every YAML file under `input` and writes `<namespace>.json` (pretty) into `output`.
/// Returns the render, for its statuses and problems.
pub fn render_dir(
    input: &Path,
    output: &Path,
    settings: &RenderSettings,
) -> Result<Rendered, FileError> {
    let settings = file_settings(settings.clone());
    let index = load_dir(input, &settings)?;
    let rendered = render(&index, &settings);
    write_configs(&rendered, output)?;
    Ok(rendered)
}

/// Writes each config of `rendered` to `<output>/<namespace>.json`.
pub fn write_configs(rendered: &Rendered, output: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(output).map_err(io(output))?;
    for (ns, cfg) in &rendered.configs {
        // Written aside and renamed over, so a proxy watching the file (the local mesh
        // re-renders while its proxies run) never reads half a config.
        let path = output.join(format!("{ns}.json"));
        let partial = output.join(format!(".{ns}.json.tmp"));
        std::fs::write(&partial, cfg.config().to_json() + "\n").map_err(io(&partial))?;
        std::fs::rename(&partial, &path).map_err(io(&path))?;
    }
    Ok(())
}
