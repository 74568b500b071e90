//! TLS the proxy originates towards a destination outside the mesh: DestinationRule `tls.mode`
//! `SIMPLE` (verify the server) and `MUTUAL` (verify it and present a client certificate), as
//! for an external HTTPS ServiceEntry.
//!
//! The server is verified against `caCertificates` (a PEM file in the proxy's filesystem) or,
//! without one, the web PKI roots; its name against `subjectAltNames` when set (DNS names, IPs or
//! SPIFFE URIs), else against the SNI. With `caCrl` (a PEM file of one or more CRLs) every
//! certificate of the chain is checked against them, as Envoy does: one revoked, one whose
//! issuer has no CRL there, or a CRL past its next update fails the handshake.
//! `insecureSkipVerify` accepts any certificate (the handshake still proves the server holds its
//! key). The SNI is `tls.sni`, else the host.
//!
//! The files are read when the first connection needs them and again whenever one of their
//! modification times changes (checked per new connection, not per request: connections are
//! pooled), so a rotated certificate needs no restart. A reload that fails keeps the last good
//! files and says why in the log; with nothing loaded yet, the connection fails (503 UF).
//!
//! `credentialName` (a Secret) is gateway-only in Istio: a sidecar refuses it when building the
//! [`Originator`], naming the field, rather than connecting without the client certificate.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use mizzen_identity::{SpiffeId, svid};
use mizzen_proxy_config::{ClientTls, ClientTlsMode};
use rustls::{
    CertificateError, ClientConfig, RootCertStore,
    client::danger::{ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{
        CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
        pem::{self, PemObject},
    },
    server::ParsedCertificate,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client};

use super::Alpn;

/// Why TLS origination to a destination cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum OriginationError {
    #[error("tls.mode {0:?} is not TLS origination")]
    NotOrigination(ClientTlsMode),
    #[error(
        "tls.credentialName `{0}`: credentials from a Secret are for gateways; a sidecar reads \
         tls.clientCertificate and tls.privateKey files"
    )]
    CredentialName(String),
    #[error("tls.mode MUTUAL needs tls.clientCertificate and tls.privateKey")]
    MissingClientCertificate,
    #[error("tls.sni `{0}` is not a valid server name")]
    Sni(String),
    #[error("{field} {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{field} {path}: {message}")]
    Pem {
        field: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("building the TLS client: {0}")]
    Config(rustls::Error),
}

/// One destination's TLS origination: its settings and the client configs made from its files.
pub struct Originator {
    settings: Settings,
    loaded: Mutex<Option<Arc<Loaded>>>,
}

impl std::fmt::Debug for Originator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Originator")
            .field("mutual", &self.settings.client.is_some())
            .field("ca", &self.settings.ca)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    sni: Option<String>,
    subject_alt_names: Vec<String>,
    ca: Option<PathBuf>,
    crl: Option<PathBuf>,
    /// (certificate chain, private key), for MUTUAL.
    client: Option<(PathBuf, PathBuf)>,
    insecure_skip_verify: bool,
}

impl Settings {
    fn files(&self) -> impl Iterator<Item = &Path> {
        self.ca
            .iter()
            .chain(&self.crl)
            .chain(self.client.iter().flat_map(|(c, k)| [c, k]))
            .map(PathBuf::as_path)
    }
}

/// The configs made from one reading of the files, with the modification times read.
struct Loaded {
    stamps: Vec<Option<SystemTime>>,
    /// One per ALPN choice: `h2`, `http/1.1`, none.
    connectors: [(Alpn, TlsConnector); 3],
}

impl Originator {
    /// The originator for a DestinationRule's `tls` (mode SIMPLE or MUTUAL). Nothing is read
    /// yet: the files are the first connection's business.
    pub fn new(tls: &ClientTls) -> Result<Self, OriginationError> {
        if let Some(name) = &tls.credential_name {
            return Err(OriginationError::CredentialName(name.clone()));
        }
        let client = match tls.mode {
            ClientTlsMode::Simple => None,
            ClientTlsMode::Mutual => match (&tls.client_certificate, &tls.private_key) {
                (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
                _ => return Err(OriginationError::MissingClientCertificate),
            },
            other => return Err(OriginationError::NotOrigination(other)),
        };
        if let Some(sni) = &tls.sni {
            ServerName::try_from(sni.as_str()).map_err(|_| OriginationError::Sni(sni.clone()))?;
        }
        Ok(Originator {
            settings: Settings {
                sni: tls.sni.clone(),
                subject_alt_names: tls.subject_alt_names.clone(),
                ca: tls.ca_certificates.as_ref().map(PathBuf::from),
                crl: tls.ca_crl.as_ref().map(PathBuf::from),
                client,
                insecure_skip_verify: tls.insecure_skip_verify,
            },
            loaded: Mutex::new(None),
        })
    }

    /// Opens TLS over `stream` to `host` (the destination's name: the SNI unless `tls.sni`
    /// says otherwise).
    pub async fn connect(
        &self,
        stream: TcpStream,
        host: &str,
        alpn: Alpn,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let loaded = self.current().map_err(io::Error::other)?;
        let name = self.settings.sni.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not a valid TLS server name"),
            )
        })?;
        let connector = &loaded
            .connectors
            .iter()
            .find(|(a, _)| *a == alpn)
            .expect("a connector for every ALPN choice")
            .1;
        connector.connect(name, stream).await
    }

    /// The configs for the files as they are now: the loaded ones while no file changed, else
    /// freshly read ones (or the last good ones when reading fails).
    fn current(&self) -> Result<Arc<Loaded>, OriginationError> {
        let stamps: Vec<Option<SystemTime>> = self
            .settings
            .files()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect();
        let mut slot = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loaded) = slot.as_ref().filter(|l| l.stamps == stamps) {
            return Ok(loaded.clone());
        }
        match load(&self.settings, stamps) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *slot = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => match slot.as_ref() {
                Some(last) => {
                    tracing::warn!(error = %e, "TLS origination files changed but cannot be used; keeping the last good ones");
                    Ok(last.clone())
                }
                None => Err(e),
            },
        }
    }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, OriginationError> {
    std::fs::read(path).map_err(|source| OriginationError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, OriginationError> {
    pem_all(field, path, "no CERTIFICATE block")
}

/// The CRLs of a `caCrl` file: at least one, each parsed.
fn crls(path: &Path) -> Result<Vec<webpki::CertRevocationList<'static>>, OriginationError> {
    let field = "tls.caCrl";
    let ders: Vec<CertificateRevocationListDer<'static>> =
        pem_all(field, path, "no X509 CRL block")?;
    ders.iter()
        .map(|der| {
            webpki::OwnedCertRevocationList::from_der(der)
                .map(webpki::CertRevocationList::from)
                .map_err(|e| pem_error(field, path, format!("not a CRL: {e}")))
        })
        .collect()
}

/// Every PEM item of one kind in the file at `path` (`field`'s); at least one.
fn pem_all<T: PemObject>(
    field: &'static str,
    path: &Path,
    none: &str,
) -> Result<Vec<T>, OriginationError> {
    let pem = read(field, path)?;
    let items = T::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| pem_error(field, path, e.to_string()))?;
    if items.is_empty() {
        return Err(pem_error(field, path, none.into()));
    }
    Ok(items)
}

fn pem_error(field: &'static str, path: &Path, message: String) -> OriginationError {
    OriginationError::Pem {
        field,
        path: path.to_path_buf(),
        message,
    }
}

fn load(settings: &Settings, stamps: Vec<Option<SystemTime>>) -> Result<Loaded, OriginationError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &settings.ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("tls.caCertificates", path)? {
                roots
                    .add(cert)
                    .map_err(|e| pem_error("tls.caCertificates", path, e.to_string()))?;
            }
            roots
        }
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let crls = match &settings.crl {
        Some(path) => crls(path)?,
        None => Vec::new(),
    };
    let verifier = Arc::new(Verifier {
        roots,
        crls,
        subject_alt_names: settings.subject_alt_names.clone(),
        insecure_skip_verify: settings.insecure_skip_verify,
        provider: provider.clone(),
    });
    let client_auth = match &settings.client {
        None => None,
        Some((cert, key)) => {
            let chain = certs("tls.clientCertificate", cert)?;
            let key_der = PrivateKeyDer::from_pem_slice(&read("tls.privateKey", key)?)
                .map_err(|e| pem_error("tls.privateKey", key, e.to_string()))?;
            Some((chain, key_der))
        }
    };
    let config = |alpn: Alpn| -> Result<(Alpn, TlsConnector), OriginationError> {
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(OriginationError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut config = match &client_auth {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(OriginationError::Config)?,
        };
        config.alpn_protocols = alpn.protocols();
        Ok((alpn, TlsConnector::from(Arc::new(config))))
    };
    Ok(Loaded {
        stamps,
        connectors: [config(Alpn::H2)?, config(Alpn::Http1)?, config(Alpn::Tcp)?],
    })
}

/// Verifies the server's chain against `roots` and its name against `subject_alt_names` (or
/// the SNI when there are none), unless told to skip verification.
#[derive(Debug)]
struct Verifier {
    roots: RootCertStore,
    /// `caCrl`'s lists; none: revocation is not checked.
    crls: Vec<webpki::CertRevocationList<'static>>,
    subject_alt_names: Vec<String>,
    insecure_skip_verify: bool,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    /// The chain up to a root, every certificate in it checked against the CRLs (Envoy's
    /// default: the whole chain, an issuer without a CRL fails, so does an expired CRL).
    fn verify_chain_not_revoked(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let crls: Vec<&webpki::CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crls)
            .expect("checked only with CRLs")
            .with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
            .build();
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            Some(revocation),
            None,
        )
        .map(|_| ())
        .map_err(pki_error)
    }

    /// Whether the leaf carries one of the accepted names: a DNS name or IP through webpki's
    /// matching, a SPIFFE URI through its URI SAN.
    fn names_match(&self, leaf: &CertificateDer<'_>, parsed: &ParsedCertificate<'_>) -> bool {
        let spiffe = || svid::spiffe_id(leaf).ok();
        self.subject_alt_names.iter().any(|san| {
            if san.contains("://") {
                let want = SpiffeId::parse(san).ok();
                want.is_some() && want == spiffe()
            } else {
                ServerName::try_from(san.as_str())
                    .is_ok_and(|name| rustls::client::verify_server_name(parsed, &name).is_ok())
            }
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure_skip_verify {
            return Ok(ServerCertVerified::assertion());
        }
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if self.crls.is_empty() {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &self.roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        } else {
            self.verify_chain_not_revoked(end_entity, intermediates, now)?;
        }
        if self.subject_alt_names.is_empty() {
            rustls::client::verify_server_name(&parsed, server_name)?;
        } else if !self.names_match(end_entity, &parsed) {
            return Err(CertificateError::NotValidForName.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    mizzen_identity::handshake_signatures!();
}

/// A webpki verdict as a rustls certificate error: revocation by name, the rest as they read.
fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let error = match e {
        E::CertRevoked => CertificateError::Revoked,
        E::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus,
        E::CrlExpired { .. } => CertificateError::ExpiredRevocationList,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    error.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: ClientTlsMode) -> ClientTls {
        ClientTls {
            mode,
            ..Default::default()
        }
    }

    #[test]
    fn settings_are_checked_before_any_file_is_read() {
        assert!(Originator::new(&tls(ClientTlsMode::Simple)).is_ok());
        let err = Originator::new(&tls(ClientTlsMode::Mutual)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tls.mode MUTUAL needs tls.clientCertificate and tls.privateKey"
        );
        let err = Originator::new(&ClientTls {
            credential_name: Some("client-credential".into()),
            ..tls(ClientTlsMode::Mutual)
        })
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "tls.credentialName `client-credential`: credentials from a Secret are for gateways"
            ),
            "{err}"
        );
        assert!(matches!(
            Originator::new(&tls(ClientTlsMode::IstioMutual)),
            Err(OriginationError::NotOrigination(_))
        ));
        let err = Originator::new(&ClientTls {
            sni: Some("not a name".into()),
            ..tls(ClientTlsMode::Simple)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tls.sni `not a name` is not a valid server name"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named_and_web_pki_roots_need_no_file() {
        let o = Originator::new(&ClientTls {
            ca_certificates: Some("/nonexistent/ca.pem".into()),
            ..tls(ClientTlsMode::Simple)
        })
        .unwrap();
        let err = o.current().err().expect("no CA file");
        assert!(
            err.to_string()
                .starts_with("tls.caCertificates /nonexistent/ca.pem: "),
            "{err}"
        );
        let o = Originator::new(&tls(ClientTlsMode::Simple)).unwrap();
        assert!(o.current().is_ok());
    }

    #[test]
    fn a_crl_file_without_a_crl_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["a".to_string()]).unwrap();
        std::fs::write(&path, cert.cert.pem()).unwrap();
        let o = Originator::new(&ClientTls {
            ca_crl: Some(path.display().to_string()),
            ..tls(ClientTlsMode::Simple)
        })
        .unwrap();
        let err = o.current().err().expect("no CRL in the file");
        assert_eq!(
            err.to_string(),
            format!("tls.caCrl {}: no X509 CRL block", path.display())
        );
    }
}
