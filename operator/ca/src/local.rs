//! The local CA directory of `mizzenctl local`: a root made on first use and kept on disk.
//!
//! Layout: `<dir>/root-cert.pem` and `<dir>/root-key.pem` (PKCS#8). The directory is created
//! with mode 0700 and the key with 0600; a key file that group or others can read is refused
//! rather than used, as ssh does. The certificate is written last, so a run interrupted halfway
//! leaves a key without a certificate, which is reported instead of silently replaced.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::authority::{Authority, CaError};
use crate::root::RootCa;

pub const LOCAL_ROOT_CERT: &str = "root-cert.pem";
pub const LOCAL_ROOT_KEY: &str = "root-key.pem";

/// Why the local CA directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    #[error("local CA: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("local CA: {0} has mode {1:o}; the key must be readable by its owner only (chmod 600)")]
    KeyTooOpen(PathBuf, u32),
    #[error(
        "local CA: {0} exists without {LOCAL_ROOT_CERT} (an interrupted first run?); remove it to start over"
    )]
    KeyWithoutCert(PathBuf),
    #[error("local CA: {0} exists without {LOCAL_ROOT_KEY}")]
    CertWithoutKey(PathBuf),
    #[error("local CA: {0}")]
    Ca(#[from] CaError),
}

/// A root CA kept in a directory.
#[derive(Debug)]
pub struct LocalCa {
    dir: PathBuf,
    root: RootCa,
    created: bool,
}

impl LocalCa {
    /// Loads the root from `dir`, or creates `dir` and a new root for `trust_domain` (valid for
    /// `validity`) when neither file exists.
    pub fn open_or_create(
        dir: &Path,
        trust_domain: &str,
        validity: Duration,
    ) -> Result<Self, LocalCaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalCaError::Io { path, source }
        };
        let cert_path = dir.join(LOCAL_ROOT_CERT);
        let key_path = dir.join(LOCAL_ROOT_KEY);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let mode = fs::metadata(&key_path)
                    .map_err(io(&key_path))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(LocalCaError::KeyTooOpen(key_path, mode & 0o777));
                }
                let cert = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
                let key = fs::read_to_string(&key_path).map_err(io(&key_path))?;
                Ok(LocalCa {
                    dir: dir.to_path_buf(),
                    root: RootCa::from_pem(&cert, &key)?,
                    created: false,
                })
            }
            (false, true) => Err(LocalCaError::KeyWithoutCert(key_path)),
            (true, false) => Err(LocalCaError::CertWithoutKey(cert_path)),
            (false, false) => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io(dir))?;
                let root = RootCa::generate(trust_domain, validity)?;
                write_new(&key_path, root.key_pem().as_bytes(), 0o600).map_err(io(&key_path))?;
                write_new(&cert_path, root.cert_pem().as_bytes(), 0o644).map_err(io(&cert_path))?;
                Ok(LocalCa {
                    dir: dir.to_path_buf(),
                    root,
                    created: true,
                })
            }
        }
    }

    /// The root.
    pub fn root(&self) -> &RootCa {
        &self.root
    }

    /// Whether this call created the root (false when it was loaded).
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An authority signing with the local root.
    pub fn authority(&self) -> Result<Authority, LocalCaError> {
        Ok(self.root.authority(None)?)
    }
}

/// Creates `path` (failing if it exists) with `mode` from the start, so the key is never
/// readable by others even for an instant.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
