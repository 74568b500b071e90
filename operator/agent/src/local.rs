//! Local mode (`--local-ca DIR --local-identities FILE`): no cluster, no TokenReview.
//!
//! `mizzenctl local` gives each local workload a random secret token and writes which identity
//! each token stands for into the identities file:
//!
//! ```json
//! {"v": 1, "tokens": {"9f1c…e2": "spiffe://cluster.local/ns/default/sa/web"}}
//! ```
//!
//! The proxy presents its token exactly as in a cluster; the agent signs only the identity the
//! file maps that token to. The file is read on every request, so workloads added after the
//! agent started need no restart. It holds bearer secrets: keep it readable by its owner only.
//! The certificates are signed directly by the local root (see `mizzen_ca::LocalCa`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use mizzen_identity::SpiffeId;
use mizzen_identity::workload_api::Version;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::authz::{Authorizer, Grant, Refusal};

/// The identities file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalIdentities {
    pub v: Version,
    /// Token → SPIFFE id.
    pub tokens: BTreeMap<String, String>,
}

/// Why the identities file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum LocalIdentitiesError {
    #[error("local identities {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("local identities {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("local identities {path}: token entry {index}: {source}")]
    BadId {
        path: PathBuf,
        index: usize,
        source: mizzen_identity::spiffe::SpiffeIdError,
    },
}

impl LocalIdentities {
    /// Reads and checks the file: every id must be a valid workload SPIFFE id.
    pub fn load(path: &Path) -> Result<Self, LocalIdentitiesError> {
        let text = std::fs::read(path).map_err(|source| LocalIdentitiesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: LocalIdentities =
            serde_json::from_slice(&text).map_err(|source| LocalIdentitiesError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        for (index, id) in file.tokens.values().enumerate() {
            SpiffeId::parse(id).map_err(|source| LocalIdentitiesError::BadId {
                path: path.to_path_buf(),
                index,
                source,
            })?;
        }
        Ok(file)
    }

    /// The identity `token` stands for.
    pub fn identity(&self, token: &str) -> Option<SpiffeId> {
        self.tokens
            .get(token)
            .and_then(|id| SpiffeId::parse(id).ok())
    }
}

/// Grants each token the identity the file maps it to.
pub struct LocalAuthorizer {
    pub identities: PathBuf,
    /// Never ticks: local workloads are not watched.
    changes: watch::Sender<()>,
}

impl LocalAuthorizer {
    pub fn new(identities: PathBuf) -> Self {
        LocalAuthorizer {
            identities,
            changes: watch::channel(()).0,
        }
    }

    fn decide(&self, token: &str, requested: &SpiffeId) -> Result<Grant, Refusal> {
        let file = LocalIdentities::load(&self.identities)
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let id = file.identity(token).ok_or(Refusal::UnknownLocalToken)?;
        if *requested != id {
            return Err(Refusal::WrongIdentity {
                requested: requested.to_string(),
                allowed: id.to_string(),
            });
        }
        Ok(Grant { id, pod: None })
    }
}

impl Authorizer for LocalAuthorizer {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        requested: &'a SpiffeId,
    ) -> BoxFuture<'a, Result<Grant, Refusal>> {
        Box::pin(std::future::ready(self.decide(token, requested)))
    }

    fn still_present(&self, _grant: &Grant) -> bool {
        true
    }

    fn changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_map_to_their_identity_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identities.json");
        std::fs::write(
            &path,
            r#"{"v":1,"tokens":{"s3cret":"spiffe://cluster.local/ns/default/sa/web"}}"#,
        )
        .unwrap();
        let authz = LocalAuthorizer::new(path.clone());
        let web = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        let db = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/db").unwrap();
        assert_eq!(
            authz.authorize("s3cret", &web).await.unwrap(),
            Grant {
                id: web.clone(),
                pod: None
            }
        );
        let err = authz.authorize("s3cret", &db).await.unwrap_err();
        assert!(matches!(err, Refusal::WrongIdentity { .. }), "{err}");
        let err = authz.authorize("guess", &web).await.unwrap_err();
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);

        std::fs::write(
            &path,
            r#"{"v":1,"tokens":{"t":"spiffe://cluster.local/web"}}"#,
        )
        .unwrap();
        let err = LocalIdentities::load(&path).unwrap_err();
        assert!(err.to_string().contains("token entry 0"), "{err}");
        let err = authz.authorize("t", &web).await.unwrap_err();
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
