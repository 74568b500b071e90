//! Writes every CRD Mizzen installs into a directory (default: `crds/` beside this crate's
//! manifest), one YAML file each. CI's drift test fails when the committed files differ.

use std::{fs, path::PathBuf};

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for (name, yaml) in mizzen_crds::resource::crd_files() {
        let path = dir.join(name);
        fs::write(&path, yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
