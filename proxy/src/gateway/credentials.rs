//! TLS at the edge: the rustls server config of each terminating Gateway server, built from
//! the files its credentials syncer writes from Kubernetes TLS Secrets:
//! `<dir>/<credentialName>/tls.crt` and `tls.key`, and for `MUTUAL` the client CA `ca.crt`
//! beside them or in `<dir>/<credentialName>-cacert/ca.crt`, with the revocation lists
//! `ca.crl` beside that `ca.crt` when the Secret has them (Istio's `ca.crl` key): then every
//! certificate of a client's chain is checked against them, as Envoy does (revoked, an issuer
//! without a list, or a list past its next update refuse the handshake). A server with `credentialNames`
//! holds one certificate per Secret and picks one per handshake ([`super::cert_choice`]); its
//! client CA is the first Secret's, as in Istio. Its TLS 1.2 suites are its `cipherSuites`
//! ([`super::cipher_suites`]).
//!
//! The config is looked up on every handshake and rebuilt when a file of any of its Secrets
//! changed (its inode, size or modification time; a Secret volume swaps a symlink, a test
//! rewrites in place), so a rotated certificate serves the next handshake and open connections
//! keep theirs. A file that is missing or does not parse — or a key that does not fit the
//! certificate, as happens between the writes of the two files — keeps the last good config;
//! the error is logged once per change of the files, naming the file, never showing key
//! material.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use mizzen_proxy_config::{CipherSuite, ServerTls, ServerTlsMode, Sha256, TlsVersion};
use rustls::{
    DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{
        CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
        pem::PemObject,
    },
    server::{
        ParsedCertificate, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

use super::{cert_choice::ByKeyType, cipher_suites};

/// Why a server's TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("tls.mode {0:?} has no credentialName or credentialNames")]
    NoCredentialName(ServerTlsMode),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{cert} and {key}: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("MUTUAL TLS needs a client CA: neither {0} nor {1} exists")]
    NoClientCa(PathBuf, PathBuf),
    #[error("TLS settings: {0}")]
    Config(String),
}

/// The files of one credential (Secret).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    /// `ca.crt` beside the certificate, then the `-cacert` Secret's.
    cas: [PathBuf; 2],
}

impl Files {
    fn new(dir: &Path, name: &str) -> Self {
        let own = dir.join(name);
        Self {
            cert: own.join("tls.crt"),
            key: own.join("tls.key"),
            cas: [
                own.join("ca.crt"),
                dir.join(format!("{name}-cacert")).join("ca.crt"),
            ],
        }
    }

    /// What identifies the files' current contents without reading them.
    fn stamp(&self) -> Stamp {
        let one = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.ino(), m.len(), m.modified().ok())
            })
        };
        Stamp([
            one(&self.cert),
            one(&self.key),
            one(&self.cas[0]),
            one(&self.cas[1]),
            one(&crl_beside(&self.cas[0])),
            one(&crl_beside(&self.cas[1])),
        ])
    }
}

type FileStamp = Option<(u64, u64, Option<SystemTime>)>;

/// The stamps of one credential's files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp([FileStamp; 6]);

/// The revocation lists that go with a client CA file: `ca.crl` in its directory.
fn crl_beside(ca: &Path) -> PathBuf {
    ca.with_file_name("ca.crl")
}

/// What a server config is built from: its credentials' files, in order, and its settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    /// At least one; the first holds the client CA.
    credentials: Vec<Files>,
    mode: ServerTlsMode,
    subject_alt_names: Vec<String>,
    /// `verifyCertificateHash` and `verifyCertificateSpki`.
    pins: Pins,
    versions: (Option<TlsVersion>, Option<TlsVersion>),
    cipher_suites: Vec<CipherSuite>,
    alpn: Vec<Vec<u8>>,
}

impl Key {
    fn stamps(&self) -> Vec<Stamp> {
        self.credentials.iter().map(Files::stamp).collect()
    }
}

struct Entry {
    /// The files the config was built from.
    built: Vec<Stamp>,
    /// The last good config.
    config: Option<Arc<ServerConfig>>,
    /// The files last refused, so each bad state is logged once.
    refused: Option<Vec<Stamp>>,
}

/// The terminating servers' TLS configs, rebuilt when their files change.
pub struct Credentials {
    dir: PathBuf,
    /// The provider every server's is derived from (its `cipherSuites` restrict it).
    provider: CryptoProvider,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("dir", &self.dir)
            .finish()
    }
}

impl Credentials {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            provider: rustls::crypto::ring::default_provider(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The server config for `tls` offering `alpn`, current with the files on disk. `None`
    /// when there has never been a good one (the error is logged).
    pub fn server_config(&self, tls: &ServerTls, alpn: &[&[u8]]) -> Option<Arc<ServerConfig>> {
        let names: Vec<&str> = tls.credentials().collect();
        if names.is_empty() {
            let error = CredentialError::NoCredentialName(tls.mode);
            tracing::warn!(%error, "cannot terminate TLS");
            return None;
        }
        let name = names.join(",");
        let key = Key {
            credentials: names.iter().map(|n| Files::new(&self.dir, n)).collect(),
            mode: tls.mode,
            subject_alt_names: tls.subject_alt_names.clone(),
            pins: Pins {
                certs: tls.client_cert_sha256.clone(),
                spkis: tls.client_spki_sha256.clone(),
            },
            versions: (tls.min_protocol_version, tls.max_protocol_version),
            cipher_suites: tls.cipher_suites.clone(),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        };
        let stamp = key.stamps();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(&key)
            && (e.built == stamp || e.refused.as_ref() == Some(&stamp))
        {
            return e.config.clone();
        }
        let built = build(&key, &self.provider);
        let entry = entries.entry(key).or_insert(Entry {
            built: stamp.clone(),
            config: None,
            refused: None,
        });
        match built {
            Ok(config) => {
                if entry.config.is_some() {
                    tracing::info!(credential = %name, "TLS credential reloaded");
                }
                *entry = Entry {
                    built: stamp,
                    config: Some(Arc::new(config)),
                    refused: None,
                };
            }
            Err(error) => {
                let kept_previous = entry.config.is_some();
                tracing::error!(credential = %name, %error, kept_previous, "TLS credential refused");
                entry.refused = Some(stamp);
            }
        }
        entry.config.clone()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    pem_all(path, "certificates", "no certificate in the file")
}

/// The revocation lists of a `ca.crl` file: at least one.
fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, CredentialError> {
    pem_all(path, "revocation lists", "no X509 CRL in the file")
}

/// Every PEM item of one kind in the file at `path`; at least one.
fn pem_all<T: PemObject>(path: &Path, kind: &str, none: &str) -> Result<Vec<T>, CredentialError> {
    let invalid = |message: String| CredentialError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let items = T::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not PEM {kind}: {e}")))?;
    if items.is_empty() {
        return Err(invalid(none.into()));
    }
    Ok(items)
}

/// One credential's certificate chain with its private key, checked to fit each other.
fn certified_key(
    files: &Files,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, CredentialError> {
    let chain = certs(&files.cert)?;
    // The error names the file only: a parser's message could quote key bytes.
    let private = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|_| {
        CredentialError::Invalid {
            path: files.key.clone(),
            message: "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file".into(),
        }
    })?;
    CertifiedKey::from_der(chain, private, provider)
        .map(Arc::new)
        .map_err(|e| CredentialError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message: e.to_string(),
        })
}

fn build(key: &Key, base: &CryptoProvider) -> Result<ServerConfig, CredentialError> {
    let provider = Arc::new(cipher_suites::restricted(base, &key.cipher_suites));
    let certified = key
        .credentials
        .iter()
        .map(|files| certified_key(files, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| key.versions.0.is_none_or(|min| *v >= min))
    .filter(|(v, _)| key.versions.1.is_none_or(|max| *v <= max))
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| CredentialError::Config(e.to_string()))?;
    let builder = match key.mode {
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            // The first Secret's CA verifies clients, as Istio does with credentialNames.
            let cas = &key.credentials[0].cas;
            let ca = cas
                .iter()
                .find(|p| p.exists())
                .ok_or_else(|| CredentialError::NoClientCa(cas[0].clone(), cas[1].clone()))?;
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| CredentialError::Invalid {
                    path: ca.clone(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let crl = crl_beside(ca);
            if crl.exists() {
                // rustls checks the whole chain and refuses an unknown status by default.
                verifier = verifier
                    .with_crls(crls(&crl)?)
                    .enforce_revocation_expiration();
            }
            if key.mode == ServerTlsMode::OptionalMutual {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| CredentialError::Config(e.to_string()))?;
            let verifier: Arc<dyn ClientCertVerifier> =
                if key.subject_alt_names.is_empty() && key.pins.is_empty() {
                    verifier
                } else {
                    Arc::new(ClientCheck {
                        inner: verifier,
                        names: key.subject_alt_names.clone(),
                        pins: key.pins.clone(),
                    })
                };
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(ByKeyType::new(certified)));
    config.alpn_protocols = key.alpn.clone();
    Ok(config)
}

/// The client-certificate pins of a server (`verifyCertificateHash`, `verifyCertificateSpki`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Pins {
    certs: Vec<Sha256>,
    spkis: Vec<Sha256>,
}

impl Pins {
    fn is_empty(&self) -> bool {
        self.certs.is_empty() && self.spkis.is_empty()
    }

    /// Whether `cert` is a pinned certificate or has a pinned public key (either list, as
    /// Envoy: a match in one is enough).
    fn admit(&self, cert: &CertificateDer<'_>) -> bool {
        use mizzen_identity::details::{cert_sha256, spki_sha256};
        if self.is_empty() {
            return true;
        }
        if !self.certs.is_empty() && self.certs.contains(&Sha256(cert_sha256(cert))) {
            return true;
        }
        !self.spkis.is_empty()
            && spki_sha256(cert).is_ok_and(|spki| self.spkis.contains(&Sha256(spki)))
    }
}

/// What a `MUTUAL` server asks of a client certificate beyond a chain to its CA: one of the
/// `subjectAltNames` (a DNS name or IP, or a URI such as a SPIFFE id), and to be pinned when
/// pins are set. Checked in the handshake, which fails as a wrong name or an unknown issuer
/// would.
#[derive(Debug)]
struct ClientCheck {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
    pins: Pins,
}

impl ClientCheck {
    fn carries_a_name(&self, cert: &CertificateDer<'_>) -> bool {
        if self.names.is_empty() {
            return true;
        }
        let uri = mizzen_identity::svid::spiffe_id(cert)
            .ok()
            .map(|id| id.uri());
        let Ok(parsed) = ParsedCertificate::try_from(cert) else {
            return false;
        };
        self.names.iter().any(|name| {
            if name.contains("://") {
                uri.as_deref() == Some(name.as_str())
            } else {
                ServerName::try_from(name.as_str())
                    .is_ok_and(|n| rustls::client::verify_server_name(&parsed, &n).is_ok())
            }
        })
    }
}

impl ClientCertVerifier for ClientCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !self.carries_a_name(end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        if !self.pins.admit(end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str, host: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(d.join("tls.key"), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    fn simple(name: &str) -> ServerTls {
        ServerTls {
            mode: ServerTlsMode::Simple,
            credential_name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn rebuilds_when_files_change_and_keeps_the_last_good_config() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "web", "a.example.com");
        let creds = Credentials::new(dir.path().to_path_buf());
        let first = creds.server_config(&simple("web"), &[b"h2"]).unwrap();
        assert_eq!(first.alpn_protocols, vec![b"h2".to_vec()]);
        // Unchanged files: the same config.
        let again = creds.server_config(&simple("web"), &[b"h2"]).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // A new pair: a new config.
        std::thread::sleep(std::time::Duration::from_millis(10));
        write_pair(dir.path(), "web", "b.example.com");
        let second = creds.server_config(&simple("web"), &[b"h2"]).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        // A key that does not fit the certificate (half of a rotation): the last good one.
        let other = dir.path().join("other");
        write_pair(dir.path(), "other", "c.example.com");
        std::fs::copy(other.join("tls.key"), dir.path().join("web/tls.key")).unwrap();
        let kept = creds.server_config(&simple("web"), &[b"h2"]).unwrap();
        assert!(Arc::ptr_eq(&second, &kept));
        // A garbage certificate, likewise.
        std::fs::write(dir.path().join("web/tls.crt"), "garbage").unwrap();
        assert!(Arc::ptr_eq(
            &second,
            &creds.server_config(&simple("web"), &[b"h2"]).unwrap()
        ));
        // Never anything good: none.
        assert!(creds.server_config(&simple("missing"), &[]).is_none());
    }

    #[test]
    fn two_credentials_rebuild_when_either_changes_and_mutual_reads_the_first_ca() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "rsa", "a.example.com");
        write_pair(dir.path(), "ecdsa", "a.example.com");
        let creds = Credentials::new(dir.path().to_path_buf());
        let both = ServerTls {
            mode: ServerTlsMode::Simple,
            credential_names: vec!["rsa".into(), "ecdsa".into()],
            ..Default::default()
        };
        let first = creds.server_config(&both, &[]).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &creds.server_config(&both, &[]).unwrap()
        ));
        // The second Secret rotated: a new config.
        std::thread::sleep(std::time::Duration::from_millis(10));
        write_pair(dir.path(), "ecdsa", "b.example.com");
        let second = creds.server_config(&both, &[]).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        // Half of a rotation of the second: the last good config.
        std::fs::write(dir.path().join("ecdsa/tls.crt"), "garbage").unwrap();
        assert!(Arc::ptr_eq(
            &second,
            &creds.server_config(&both, &[]).unwrap()
        ));

        // MUTUAL: the CA is the first Secret's; the second's is not looked at.
        let key = |names: &[&str]| Key {
            credentials: names.iter().map(|n| Files::new(dir.path(), n)).collect(),
            mode: ServerTlsMode::Mutual,
            subject_alt_names: vec![],
            pins: Pins::default(),
            versions: (None, None),
            cipher_suites: vec![],
            alpn: vec![],
        };
        write_pair(dir.path(), "ecdsa", "a.example.com");
        let ca = rcgen::CertifiedIssuer::self_signed(
            {
                let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p
            },
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("ecdsa/ca.crt"), ca.pem()).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let err = build(&key(&["rsa", "ecdsa"]), &provider)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rsa/ca.crt") && err.contains("rsa-cacert/ca.crt"),
            "{err}"
        );
        assert!(build(&key(&["ecdsa", "rsa"]), &provider).is_ok());
    }

    #[test]
    fn errors_name_the_file_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "web", "a.example.com");
        std::fs::write(
            dir.path().join("web/tls.key"),
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let key = Key {
            credentials: vec![Files::new(dir.path(), "web")],
            mode: ServerTlsMode::Simple,
            subject_alt_names: vec![],
            pins: Pins::default(),
            versions: (None, None),
            cipher_suites: vec![],
            alpn: vec![],
        };
        let provider = rustls::crypto::ring::default_provider();
        let err = build(&key, &provider).unwrap_err().to_string();
        assert!(err.contains("tls.key") || err.contains("tls.crt"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        // MUTUAL without any CA file says where it looked.
        let key = Key {
            mode: ServerTlsMode::Mutual,
            ..key
        };
        write_pair(dir.path(), "web", "a.example.com");
        let err = build(&key, &provider).unwrap_err().to_string();
        assert!(err.contains("web-cacert/ca.crt"), "{err}");
    }
}
