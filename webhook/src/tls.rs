//! The serving certificate: read from two PEM files (the mounted Secret `mizzen-webhook-tls`),
//! handed to rustls per handshake, and swapped when the files change. The kubelet updates a
//! mounted Secret by switching a `..data` symlink, so the files are re-read by content on a
//! timer rather than watched: a half-written or mismatched pair is refused and the certificate
//! in use kept, handshakes in progress finish with the certificate they started with, and new
//! ones get the new certificate as soon as it is loaded.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::metrics::{Metrics, ReloadLabel};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {message}")]
    BadPem { path: PathBuf, message: String },
    #[error("{cert} and {key} do not make a usable pair: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// A loaded certificate and the bytes it came from.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// Expiry of the leaf certificate (Unix seconds).
    not_after: i64,
}

/// The current serving certificate, shared by every handshake.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Loaded>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl CertStore {
    /// Loads the pair at `cert_path` and `key_path`; fails when either is missing or they do not
    /// match.
    pub fn load(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let cert_path = cert_path.into();
        let key_path = key_path.into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let loaded = parse(&cert_path, &key_path, cert_pem, key_pem, &provider)?;
        Ok(Self {
            cert_path,
            key_path,
            provider,
            current: ArcSwap::from_pointee(loaded),
        })
    }

    /// Re-reads the files. `Ok(true)` when a new certificate is now served, `Ok(false)` when the
    /// files are unchanged, `Err` (keeping the current one) when they are unreadable or
    /// unusable.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read(&self.cert_path)?;
        let key_pem = read(&self.key_path)?;
        let current = self.current.load();
        if current.cert_pem == cert_pem && current.key_pem == key_pem {
            return Ok(false);
        }
        let loaded = parse(
            &self.cert_path,
            &self.key_path,
            cert_pem,
            key_pem,
            &self.provider,
        )?;
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// When the certificate being served expires (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.current.load().not_after
    }

    /// A rustls server configuration that asks this store for the certificate on every
    /// handshake: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Re-reads the files every `interval` until the returned task is aborted, counting
    /// reloads in `metrics`.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        metrics.certificate_expiry.set(store.not_after());
        let span = tracing::info_span!("certificate-watcher", cert = %store.cert_path.display());
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // File reads are small; keep them off the async workers anyway.
                    let s = store.clone();
                    let result = tokio::task::spawn_blocking(move || s.reload())
                        .await
                        .expect("reload does not panic");
                    match result {
                        Ok(false) => {}
                        Ok(true) => {
                            metrics
                                .certificate_reloads
                                .get_or_create(&ReloadLabel { result: "ok" })
                                .inc();
                            metrics.certificate_expiry.set(store.not_after());
                            tracing::info!(
                                not_after = store.not_after(),
                                "serving certificate reloaded"
                            );
                        }
                        Err(e) => {
                            metrics
                                .certificate_reloads
                                .get_or_create(&ReloadLabel { result: "error" })
                                .inc();
                            tracing::warn!(error = %e, "keeping the current serving certificate");
                        }
                    }
                }
            },
            span,
        ))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

fn parse(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadPem {
        path: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    let (_, leaf) =
        x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| TlsError::BadPem {
            path: cert_path.to_path_buf(),
            message: format!("not an X.509 certificate: {e}"),
        })?;
    let not_after = leaf.validity().not_after.timestamp();
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Pair {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        cert_pem,
        key_pem,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_reloads_and_keeps_the_old_pair_on_bad_input() {
        let dir = std::env::temp_dir().join(format!("mizzen-tls-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (c1, k1) = pair("one.example");
        fs::write(&cert, &c1).unwrap();
        fs::write(&key, &k1).unwrap();
        let store = CertStore::load(&cert, &key).unwrap();
        let first = store.current.load().key.clone();
        assert!(!store.reload().unwrap(), "unchanged files are not reloaded");

        // A new certificate with the old key: refused, the old pair stays.
        let (c2, k2) = pair("two.example");
        fs::write(&cert, &c2).unwrap();
        let err = store.reload().unwrap_err().to_string();
        assert!(err.contains("do not make a usable pair"), "{err}");
        assert!(Arc::ptr_eq(&store.current.load().key, &first));

        // The matching key arrives: swapped.
        fs::write(&key, &k2).unwrap();
        assert!(store.reload().unwrap());
        assert!(!Arc::ptr_eq(&store.current.load().key, &first));

        // Garbage and missing files are refused.
        fs::write(&cert, "garbage").unwrap();
        assert!(
            store
                .reload()
                .unwrap_err()
                .to_string()
                .contains("no PEM certificate")
        );
        fs::remove_file(&key).unwrap();
        assert!(
            store
                .reload()
                .unwrap_err()
                .to_string()
                .starts_with("reading ")
        );
        assert!(CertStore::load(&cert, &key).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
