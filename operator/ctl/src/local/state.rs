//! The state directory of one `local up`: the local CA, the agent's socket, the identities
//! file and tokens, the rendered configs and the log. Private (0700), since the tokens are
//! bearer secrets; removed when the mesh stops.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mizzen_agent::local::LocalIdentities;

/// Why the state directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory: {0}")]
    Create(std::io::Error),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A private temporary directory, removed on [`StateDir::remove`] (or drop).
pub struct StateDir {
    dir: tempfile::TempDir,
}

impl StateDir {
    pub fn create() -> Result<Self, StateError> {
        let dir = tempfile::Builder::new()
            .prefix("mizzen-local-")
            .tempdir()
            .map_err(StateError::Create)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(StateError::Create)?;
        Ok(StateDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the rendered `<namespace>.json` files go.
    pub fn configs(&self) -> PathBuf {
        self.path().join("config")
    }

    pub fn config(&self, namespace: &str) -> PathBuf {
        self.configs().join(format!("{namespace}.json"))
    }

    pub fn ca(&self) -> PathBuf {
        self.path().join("ca")
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("agent.sock")
    }

    pub fn identities(&self) -> PathBuf {
        self.path().join("identities.json")
    }

    pub fn log(&self) -> PathBuf {
        self.path().join("mesh.log")
    }

    pub fn token(&self, workload: &str) -> PathBuf {
        self.path().join("tokens").join(workload)
    }

    /// Gives each workload (name → SPIFFE id) a fresh random token: writes the token files the
    /// proxies present and the identities file the agent checks them against.
    pub fn issue_tokens(&self, workloads: &BTreeMap<String, String>) -> Result<(), StateError> {
        let mut identities = LocalIdentities::default();
        for (name, id) in workloads {
            let token: String = rand::random::<[u8; 24]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            private_write(&self.token(name), token.as_bytes())?;
            identities.tokens.insert(token, id.clone());
        }
        let json = serde_json::to_vec_pretty(&identities).expect("identities serialize");
        private_write(&self.identities(), &json)
    }

    /// Removes the directory and everything in it.
    pub fn remove(self) -> std::io::Result<()> {
        self.dir.close()
    }
}

/// Writes a file only its owner can read.
fn private_write(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let fail = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_private_and_map_to_their_identity() {
        let state = StateDir::create().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(state.path()), 0o700);
        let ids = BTreeMap::from([
            (
                "a".to_string(),
                "spiffe://cluster.local/ns/x/sa/a".to_string(),
            ),
            (
                "b".to_string(),
                "spiffe://cluster.local/ns/x/sa/b".to_string(),
            ),
        ]);
        state.issue_tokens(&ids).unwrap();
        let file = LocalIdentities::load(&state.identities()).unwrap();
        for (name, id) in &ids {
            let token = std::fs::read_to_string(state.token(name)).unwrap();
            assert_eq!(file.identity(&token).unwrap().to_string(), *id);
            assert_eq!(mode(&state.token(name)), 0o600);
        }
        assert_eq!(mode(&state.identities()), 0o600);
        let path = state.path().to_path_buf();
        state.remove().unwrap();
        assert!(!path.exists());
    }
}
