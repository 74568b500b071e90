//! `mizzen-agent credentials`: the ingress gateway's credentials syncer. It runs beside the
//! gateway proxy, watches the Secrets of its own namespace (the only ones its Role lets it
//! read), and keeps a copy of each TLS Secret as files in a directory the two containers
//! share (an in-memory `emptyDir`), where the proxy picks up `credentialName`s:
//!
//! ```text
//! <dir>/<secret-name>/tls.crt   server certificate chain
//! <dir>/<secret-name>/tls.key   its private key (mode 0600)
//! <dir>/<secret-name>/ca.crt    CA bundle for client certificates (MUTUAL)
//! <dir>/<secret-name>/ca.crl    revocation lists for them (MUTUAL)
//! ```
//!
//! Which Secrets, and what their keys become, is the pure [`bundle_of`]. [`CredentialDir`]
//! writes a bundle atomically: the files go into a fresh hidden directory, and `<secret-name>`
//! is a symlink switched to it with one `rename`, so a reader never sees half an update; the
//! old directory is removed after the switch. Secret data never reaches a log line or an error
//! message, only Secret names do.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

/// The files the gateway reads, and the Secret keys each comes from: Kubernetes' TLS Secret
/// keys first, then Istio's generic-Secret spellings (`cert`, `key`, `cacert`, `crl`).
const FILES: [(&str, [&str; 2]); 4] = [
    ("tls.crt", ["tls.crt", "cert"]),
    ("tls.key", ["tls.key", "key"]),
    ("ca.crt", ["ca.crt", "cacert"]),
    ("ca.crl", ["ca.crl", "crl"]),
];

/// The Secret types that can hold gateway credentials (`None`/empty is `Opaque`).
const TYPES: [&str; 3] = ["kubernetes.io/tls", "Opaque", ""];

/// The files of one Secret, by file name.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub name: String,
    pub files: BTreeMap<&'static str, Vec<u8>>,
}

impl std::fmt::Debug for Bundle {
    /// Names only: the contents are secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("name", &self.name)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The mode a credential file gets: private keys are readable by their owner only.
pub fn file_mode(file: &str) -> u32 {
    if file.ends_with(".key") { 0o600 } else { 0o644 }
}

/// Whether a Secret name is safe as one path component (Kubernetes names always are).
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// What the gateway gets from a Secret: `None` when it holds no gateway credentials (wrong
/// type, none of the keys, or a name that is not a plain path component).
pub fn bundle_of(secret: &Secret) -> Option<Bundle> {
    let name = secret.metadata.name.as_deref()?;
    if !safe_name(name) || !TYPES.contains(&secret.type_.as_deref().unwrap_or_default()) {
        return None;
    }
    let data = secret.data.as_ref()?;
    let files: BTreeMap<&'static str, Vec<u8>> = FILES
        .iter()
        .filter_map(|(file, keys)| {
            let value = keys.iter().find_map(|k| data.get(*k))?;
            Some((*file, value.0.clone()))
        })
        .collect();
    (!files.is_empty()).then(|| Bundle {
        name: name.to_string(),
        files,
    })
}

/// Why a bundle could not be written or removed (names the Secret and the path, never data).
#[derive(Debug, thiserror::Error)]
#[error("credentials of Secret {secret}: {action} {path}: {source}")]
pub struct CredentialError {
    pub secret: String,
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The shared directory of credential bundles.
pub struct CredentialDir {
    dir: PathBuf,
    /// Counter for the names of fresh directories within this process.
    serial: u64,
}

impl CredentialDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            serial: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The bundle now on disk under `name`, if complete and readable.
    fn current(&self, name: &str, files: &BTreeMap<&'static str, Vec<u8>>) -> bool {
        let link = self.dir.join(name);
        let Ok(entries) = std::fs::read_dir(&link) else {
            return false;
        };
        let on_disk = entries.filter_map(Result::ok).count();
        on_disk == files.len()
            && files
                .iter()
                .all(|(f, want)| std::fs::read(link.join(f)).is_ok_and(|got| got == *want))
    }

    /// Writes `bundle` (unless it is already there) and switches `<dir>/<name>` to it.
    /// Returns whether anything changed.
    pub fn write(&mut self, bundle: &Bundle) -> Result<bool, CredentialError> {
        if self.current(&bundle.name, &bundle.files) {
            return Ok(false);
        }
        let err = |action, path: &Path| {
            let secret = bundle.name.clone();
            let path = path.to_path_buf();
            move |source| CredentialError {
                secret,
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&self.dir).map_err(err("creating", &self.dir))?;
        self.serial += 1;
        let fresh_name = format!(".{}.{}-{}", bundle.name, std::process::id(), self.serial);
        let fresh = self.dir.join(&fresh_name);
        std::fs::create_dir(&fresh).map_err(err("creating", &fresh))?;
        for (file, bytes) in &bundle.files {
            let path = fresh.join(file);
            write_file(&path, bytes, file_mode(file)).map_err(err("writing", &path))?;
        }
        let link = self.dir.join(&bundle.name);
        let old = std::fs::read_link(&link).ok();
        // A plain directory in the way (not written by this syncer): remove it, so the symlink
        // can take its place.
        if old.is_none() && link.is_dir() {
            std::fs::remove_dir_all(&link).map_err(err("removing", &link))?;
        }
        let tmp_link = self.dir.join(format!(".{}.link", bundle.name));
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&fresh_name, &tmp_link).map_err(err("linking", &tmp_link))?;
        std::fs::rename(&tmp_link, &link).map_err(err("renaming", &link))?;
        if let Some(old) = old {
            let old = self.dir.join(old);
            if old != fresh {
                std::fs::remove_dir_all(&old).map_err(err("removing", &old))?;
            }
        }
        Ok(true)
    }

    /// Removes the bundle `name` (its link and directory). Returns whether it existed.
    pub fn remove(&mut self, name: &str) -> Result<bool, CredentialError> {
        let link = self.dir.join(name);
        let err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CredentialError {
                secret: name.to_string(),
                action,
                path,
                source,
            }
        };
        let Ok(meta) = std::fs::symlink_metadata(&link) else {
            return Ok(false);
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&link).map_err(err("reading", &link))?;
            std::fs::remove_file(&link).map_err(err("removing", &link))?;
            let target = self.dir.join(target);
            if target.starts_with(&self.dir) {
                let _ = std::fs::remove_dir_all(&target);
            }
        } else if meta.is_dir() {
            std::fs::remove_dir_all(&link).map_err(err("removing", &link))?;
        } else {
            std::fs::remove_file(&link).map_err(err("removing", &link))?;
        }
        Ok(true)
    }

    /// Removes every bundle not in `keep`, and hidden directories no link points to (left by an
    /// earlier run that stopped half-way).
    pub fn retain(&mut self, keep: &BTreeSet<String>) -> Result<Vec<String>, CredentialError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let mut removed = Vec::new();
        for name in names.iter().filter(|n| !n.starts_with('.')) {
            if !keep.contains(name) && self.remove(name)? {
                removed.push(name.clone());
            }
        }
        let targets: BTreeSet<PathBuf> = keep
            .iter()
            .filter_map(|n| std::fs::read_link(self.dir.join(n)).ok())
            .collect();
        for name in names.iter().filter(|n| n.starts_with('.')) {
            if !targets.contains(Path::new(name)) {
                let path = self.dir.join(name);
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        Ok(removed)
    }

    /// Brings the directory in line with one Secret: writes its bundle, or removes the
    /// directory of a Secret that no longer holds credentials.
    pub fn apply(&mut self, secret: &Secret) -> Result<Change, CredentialError> {
        match bundle_of(secret) {
            Some(b) => Ok(if self.write(&b)? {
                Change::Written
            } else {
                Change::Unchanged
            }),
            None => {
                let name = secret.metadata.name.as_deref().unwrap_or_default();
                if safe_name(name) && self.remove(name)? {
                    Ok(Change::Removed)
                } else {
                    Ok(Change::Unchanged)
                }
            }
        }
    }
}

/// What [`CredentialDir::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Written,
    Removed,
    Unchanged,
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Watches the Secrets of `namespace` and keeps `dir` in step, until the watch ends. Errors
/// of one Secret are logged (by name) and the others carry on.
pub async fn run(client: Client, namespace: &str, dir: PathBuf) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut store = CredentialDir::new(dir);
    tracing::info!(namespace, dir = %store.path().display(), "syncing gateway credentials");
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let log = |name: &str, result: Result<Change, CredentialError>| match result {
        Ok(Change::Unchanged) => {}
        Ok(change) => tracing::info!(secret = name, ?change, "credentials updated"),
        Err(e) => tracing::warn!(secret = name, error = %e, "credentials not updated"),
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(s)) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                if bundle_of(&s).is_some() {
                    listed.insert(name.clone());
                }
                log(&name, store.apply(&s));
            }
            Ok(watcher::Event::InitDone) => match store.retain(&listed) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(?removed, "credentials of deleted Secrets removed");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove stale credentials"),
            },
            Ok(watcher::Event::Apply(s)) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                log(&name, store.apply(&s));
            }
            Ok(watcher::Event::Delete(s)) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                if safe_name(&name) {
                    log(&name, store.remove(&name).map(|_| Change::Removed));
                }
            }
            Err(e) => tracing::warn!(error = %e, "Secret watch failed; retrying with backoff"),
        }
    }
    anyhow::bail!("the Secret watch of namespace {namespace} ended")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(name: &str, type_: Option<&str>, keys: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.type_ = type_.map(String::from);
        s.data = Some(
            keys.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        s
    }

    fn read(dir: &Path, name: &str, file: &str) -> String {
        std::fs::read_to_string(dir.join(name).join(file)).unwrap()
    }

    #[test]
    fn tls_secrets_and_generic_spellings_become_files() {
        let tls = secret(
            "web",
            Some("kubernetes.io/tls"),
            &[("tls.crt", "C"), ("tls.key", "K"), ("extra", "x")],
        );
        let b = bundle_of(&tls).unwrap();
        assert_eq!(
            b.files.keys().copied().collect::<Vec<_>>(),
            ["tls.crt", "tls.key"]
        );
        assert_eq!(b.files["tls.key"], b"K");
        let generic = secret(
            "web-mtls",
            None,
            &[("cert", "C"), ("key", "K"), ("cacert", "A"), ("crl", "R")],
        );
        let b = bundle_of(&generic).unwrap();
        assert_eq!(
            b.files.keys().copied().collect::<Vec<_>>(),
            ["ca.crl", "ca.crt", "tls.crt", "tls.key"]
        );
        assert_eq!(b.files["ca.crl"], b"R");
        // `<name>-cacert` Secrets carry the CA alone.
        let ca = secret("web-cacert", Some("Opaque"), &[("ca.crt", "A")]);
        assert_eq!(bundle_of(&ca).unwrap().files.len(), 1);
    }

    #[test]
    fn other_secrets_are_ignored() {
        assert!(
            bundle_of(&secret(
                "tok",
                Some("kubernetes.io/service-account-token"),
                &[("ca.crt", "A")]
            ))
            .is_none()
        );
        assert!(
            bundle_of(&secret(
                "helm",
                Some("helm.sh/release.v1"),
                &[("tls.crt", "C")]
            ))
            .is_none()
        );
        assert!(bundle_of(&secret("plain", None, &[("password", "p")])).is_none());
        assert!(bundle_of(&secret("..", None, &[("tls.crt", "C")])).is_none());
    }

    #[test]
    fn debug_shows_names_never_data() {
        let b = bundle_of(&secret("web", None, &[("tls.key", "SECRET-KEY")])).unwrap();
        let text = format!("{b:?}");
        assert!(
            text.contains("tls.key") && !text.contains("SECRET-KEY"),
            "{text}"
        );
    }

    #[test]
    fn writes_with_modes_replaces_atomically_and_removes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("creds");
        let mut store = CredentialDir::new(&dir);
        let v1 = secret(
            "web",
            Some("kubernetes.io/tls"),
            &[("tls.crt", "C1"), ("tls.key", "K1"), ("ca.crt", "A1")],
        );
        assert_eq!(store.apply(&v1).unwrap(), Change::Written);
        assert_eq!(read(&dir, "web", "tls.crt"), "C1");
        let mode = |f: &str| {
            std::fs::metadata(dir.join("web").join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("tls.key"), 0o600);
        assert_eq!(mode("tls.crt"), 0o644);
        // The same data again writes nothing.
        assert_eq!(store.apply(&v1).unwrap(), Change::Unchanged);

        // An update switches the link to a complete new directory; the old one is gone and a
        // key the Secret no longer has is not left behind.
        let v2 = secret(
            "web",
            Some("kubernetes.io/tls"),
            &[("tls.crt", "C2"), ("tls.key", "K2")],
        );
        let before = std::fs::read_link(dir.join("web")).unwrap();
        assert_eq!(store.apply(&v2).unwrap(), Change::Written);
        let after = std::fs::read_link(dir.join("web")).unwrap();
        assert_ne!(before, after);
        assert!(!dir.join(&before).exists());
        assert_eq!(
            (read(&dir, "web", "tls.crt"), read(&dir, "web", "tls.key")),
            ("C2".into(), "K2".into())
        );
        assert!(!dir.join("web/ca.crt").exists());

        // A Secret that loses its credentials, and a deleted one, leave nothing behind.
        assert_eq!(
            store
                .apply(&secret("web", None, &[("other", "x")]))
                .unwrap(),
            Change::Removed
        );
        assert!(!dir.join("web").exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    /// The watch shell against kube's tower-test mock: it lists and watches the Secrets of its
    /// own namespace only, writes what the list brings, drops what an earlier run left for a
    /// Secret that is gone, and removes a deleted Secret's files.
    #[tokio::test]
    async fn the_watch_reads_its_own_namespace_and_keeps_the_directory_in_step() {
        use http::{Request, Response};
        use kube::client::Body;

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        CredentialDir::new(&dir)
            .apply(&secret("left-over", None, &[("tls.crt", "x")]))
            .unwrap();
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let task = tokio::spawn(run(client, "mizzen-ingress", dir.clone()));

        let mut next = async || {
            let (req, send) =
                tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
                    .await
                    .expect("no request came")
                    .expect("client gone");
            (req.uri().path_and_query().unwrap().to_string(), send)
        };
        let respond = |send: tower_test::mock::SendResponse<Response<Body>>, body: String| {
            send.send_response(
                Response::builder()
                    .body(Body::from(body.into_bytes()))
                    .unwrap(),
            );
        };
        let (path, send) = next().await;
        assert!(
            path.starts_with("/api/v1/namespaces/mizzen-ingress/secrets?"),
            "{path}"
        );
        respond(
            send,
            serde_json::json!({
                "apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "7"},
                "items": [{
                    "metadata": {"name": "web", "namespace": "mizzen-ingress", "resourceVersion": "5"},
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}
                }]
            })
            .to_string(),
        );
        let (path, send) = next().await;
        assert!(
            path.starts_with("/api/v1/namespaces/mizzen-ingress/secrets?")
                && path.contains("watch=true"),
            "{path}"
        );
        assert_eq!(read(&dir, "web", "tls.crt"), "CERT");
        assert_eq!(read(&dir, "web", "tls.key"), "KEY");
        assert!(!dir.join("left-over").exists());
        respond(
            send,
            serde_json::json!({"type": "DELETED", "object": {
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": "web", "namespace": "mizzen-ingress", "resourceVersion": "8"}
            }})
            .to_string()
                + "\n",
        );
        // The watch ends with that event; the next request is the shell watching again.
        let (path, _send) = next().await;
        assert!(path.contains("watch=true"), "{path}");
        assert!(!dir.join("web").exists());
        task.abort();
    }

    #[test]
    fn a_relist_removes_bundles_of_secrets_deleted_meanwhile() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = CredentialDir::new(tmp.path());
        for name in ["a", "b"] {
            store
                .apply(&secret(name, None, &[("tls.crt", name)]))
                .unwrap();
        }
        // A half-written directory from a run that stopped.
        std::fs::create_dir(tmp.path().join(".c.1-1")).unwrap();
        let removed = store.retain(&["a".to_string()].into()).unwrap();
        assert_eq!(removed, ["b"]);
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(left[1], "a");
        assert_eq!(read(tmp.path(), "a", "tls.crt"), "a");
    }
}
