//! rustls configurations for mesh mTLS whose certificate and roots are read per handshake.
//!
//! A [`CertStore`] holds the current certificate, key and trust bundle behind an `ArcSwap`. The
//! configs built here never copy them: the certificate resolvers and verifiers load the store on
//! every handshake, so a renewal or a root rotation takes effect on the next handshake while
//! established connections carry on with the keys they negotiated. Build a config once per
//! listener (or per expected peer) and keep it.
//!
//! Choices made here (the proxy may change the returned configs before wrapping them in `Arc`):
//! - ALPN: `h2` then `http/1.1`. Istio's `istio-peer-exchange`/`istio` tokens are not offered:
//!   Mizzen proxies carry peer metadata in headers, and an extra token the server does not list
//!   would make rustls refuse a client that offers only it.
//! - TLS 1.3 and 1.2 (rustls's safe defaults), ring provider only.
//! - The server side checks only that the client's chain reaches a current root and names a
//!   workload; which principals may call is AuthorizationPolicy's job, fed by [`peer_identity`].
//! - The client side ignores the SNI for authentication: the server is accepted when its SPIFFE
//!   id is one of the expected identities (Istio's secure naming). For SNI use
//!   [`outbound_sni`], Istio's `outbound_.<port>_.<subset>_.<host>` form.
//! - No session resumption, on either side: a resumed session would skip the certificate
//!   checks, letting a peer back in after its certificate expired or its root was withdrawn.

#[doc(hidden)]
pub use rustls;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, DistinguishedName, OtherError, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, InvalidDnsNameError, ServerName, UnixTime};

use crate::bundle::{TrustBundle, certs_from_pem};
use crate::csr::PrivateKey;
use crate::spiffe::SpiffeId;
use crate::svid::{self, PROVIDER, Role, SvidError, Validity};

/// ALPN protocols offered by both sides, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why new material was refused by [`CertStore::update`], or a config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate chain PEM: {0}")]
    ChainPem(rustls_pki_types::pem::Error),
    #[error("certificate chain PEM holds no CERTIFICATE block")]
    EmptyChain,
    #[error("leaf certificate: {0}")]
    Leaf(SvidError),
    #[error("leaf certificate is for `{got}`, but this store serves `{expected}`")]
    WrongIdentity {
        expected: Box<SpiffeId>,
        got: Box<SpiffeId>,
    },
    #[error("private key does not match the leaf certificate, or cannot be loaded: {0}")]
    Key(rustls::Error),
    #[error("certificate chain does not verify to the new trust bundle: {0}")]
    Untrusted(SvidError),
    #[error("building the rustls config: {0}")]
    Config(rustls::Error),
}

/// The certificate, key and roots a proxy uses, swapped atomically.
pub struct CertStore {
    id: SpiffeId,
    certified: ArcSwapOption<Issued>,
    bundle: ArcSwapOption<TrustBundle>,
}

/// The current certificate as rustls uses it, with its validity for renewal decisions.
struct Issued {
    key: Arc<CertifiedKey>,
    validity: Validity,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("id", &self.id)
            .field("validity", &self.validity())
            .field("roots", &self.bundle().map(|b| b.len()))
            .finish()
    }
}

impl CertStore {
    /// An empty store for `id`. Until [`CertStore::update`] succeeds, handshakes fail: a server
    /// has no certificate to present and a verifier has no roots.
    pub fn new(id: SpiffeId) -> Arc<Self> {
        Arc::new(CertStore {
            id,
            certified: ArcSwapOption::empty(),
            bundle: ArcSwapOption::empty(),
        })
    }

    /// The identity this store serves.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Installs a new certificate chain (leaf first, PEM), its key and the trust bundle.
    ///
    /// Refused, leaving the current material in place, when the leaf is for another identity,
    /// the key does not match, or the chain does not reach a root of `bundle`. The chain is
    /// checked at the current time clamped into the leaf's validity, so a clock a little behind
    /// the CA's does not refuse a fresh certificate (expiry is the handshake's business).
    pub fn update(
        &self,
        chain_pem: &str,
        key: PrivateKey,
        bundle: TrustBundle,
    ) -> Result<(), TlsError> {
        let chain = certs_from_pem(chain_pem).map_err(TlsError::ChainPem)?;
        let (leaf, intermediates) = chain.split_first().ok_or(TlsError::EmptyChain)?;
        let got = svid::spiffe_id(leaf).map_err(TlsError::Leaf)?;
        if got != self.id {
            return Err(TlsError::WrongIdentity {
                expected: Box::new(self.id.clone()),
                got: Box::new(got),
            });
        }
        let validity = svid::validity(leaf).map_err(TlsError::Leaf)?;
        // Not `clamp`: it panics on a certificate whose validity is inverted.
        let now = std::time::SystemTime::now()
            .max(validity.not_before)
            .min(validity.not_after);
        svid::verify_chain(
            &bundle,
            leaf,
            intermediates,
            UnixTime::since_unix_epoch(
                now.duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            Role::Server,
        )
        .map_err(TlsError::Untrusted)?;
        let certified =
            CertifiedKey::from_der(chain, key.to_rustls(), &PROVIDER).map_err(TlsError::Key)?;
        self.bundle.store(Some(Arc::new(bundle)));
        self.certified.store(Some(Arc::new(Issued {
            key: Arc::new(certified),
            validity,
        })));
        Ok(())
    }

    /// Replaces only the trust bundle (a root rotation announced without a new certificate).
    pub fn set_bundle(&self, bundle: TrustBundle) {
        self.bundle.store(Some(Arc::new(bundle)));
    }

    /// The current trust bundle, if any.
    pub fn bundle(&self) -> Option<Arc<TrustBundle>> {
        self.bundle.load_full()
    }

    /// The validity of the current certificate, if any (input to [`crate::refresh`]).
    pub fn validity(&self) -> Option<Validity> {
        self.certified.load().as_ref().map(|i| i.validity)
    }

    /// The current certificate and key, as rustls presents them.
    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.certified.load().as_ref().map(|i| i.key.clone())
    }

    fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        role: Role,
    ) -> Result<SpiffeId, rustls::Error> {
        let bundle = self.bundle().ok_or_else(|| {
            rustls::Error::General(format!("{}: no trust bundle loaded yet", self.id))
        })?;
        svid::verify_chain(&bundle, end_entity, intermediates, now, role).map_err(to_rustls)
    }
}

/// Which server identities a client accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedPeer {
    /// Any workload of our own trust domain whose chain verifies.
    Any,
    /// Exactly one of these identities (a service's `subjectAltNames` / its workloads' accounts).
    OneOf(Vec<SpiffeId>),
}

/// The server cannot be trusted for this destination.
#[derive(Debug, thiserror::Error)]
#[error("server identity `{got}` is not {expected}")]
pub struct UnexpectedPeer {
    pub got: SpiffeId,
    pub expected: String,
}

impl ExpectedPeer {
    /// Exactly the identities `ids`, in a canonical order so that equal sets compare (and hash)
    /// equal and can share one client config. No identities: [`ExpectedPeer::Any`], the
    /// destination's identity being unknown.
    pub fn one_of(ids: impl IntoIterator<Item = SpiffeId>) -> ExpectedPeer {
        let mut ids: Vec<SpiffeId> = ids.into_iter().collect();
        if ids.is_empty() {
            return ExpectedPeer::Any;
        }
        ids.sort();
        ids.dedup();
        ExpectedPeer::OneOf(ids)
    }

    fn check(&self, ours: &SpiffeId, got: SpiffeId) -> Result<(), UnexpectedPeer> {
        let ok = match self {
            ExpectedPeer::Any => got.trust_domain() == ours.trust_domain(),
            ExpectedPeer::OneOf(ids) => ids.contains(&got),
        };
        if ok {
            return Ok(());
        }
        let expected = match self {
            ExpectedPeer::Any => format!("in trust domain `{}`", ours.trust_domain()),
            ExpectedPeer::OneOf(ids) => {
                let list: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
                format!("one of [{}]", list.join(", "))
            }
        };
        Err(UnexpectedPeer { got, expected })
    }
}

/// The server config for an inbound mTLS listener. With `require_client_cert` false a client
/// without a certificate is admitted (its connection then has no [`peer_identity`]); a client
/// that does present one must still verify.
pub fn server_config(
    store: &Arc<CertStore>,
    require_client_cert: bool,
) -> Result<ServerConfig, TlsError> {
    let verifier = ClientVerifier {
        store: store.clone(),
        mandatory: require_client_cert,
    };
    let mut config = ServerConfig::builder_with_provider(PROVIDER.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(StoreResolver(store.clone())));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // No resumption: a resumed session skips the certificate checks, so a peer could come back
    // after its certificate expired or its root was withdrawn. Mesh connections are pooled, so
    // a full handshake per connection costs little.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The client config for outbound mTLS to a destination whose identity must match `expected`.
pub fn client_config(
    store: &Arc<CertStore>,
    expected: ExpectedPeer,
) -> Result<ClientConfig, TlsError> {
    let verifier = ServerVerifier {
        store: store.clone(),
        expected,
    };
    let mut config = ClientConfig::builder_with_provider(PROVIDER.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(StoreResolver(store.clone())));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // As on the server side: every connection verifies the peer's current certificate.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The SPIFFE id the peer of an established connection presented, if any.
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| svid::spiffe_id(leaf).ok())
}

/// Istio's SNI for a mesh destination: `outbound_.<port>_.<subset>_.<host>` (an empty subset
/// is written as nothing, as Istio does). Fails for hosts that are IP addresses.
pub fn outbound_sni(
    port: u16,
    subset: &str,
    host: &str,
) -> Result<ServerName<'static>, InvalidDnsNameError> {
    ServerName::try_from(format!("outbound_.{port}_.{subset}_.{host}"))
}

/// Presents the store's current certificate on both sides of a connection.
#[derive(Debug)]
struct StoreResolver(Arc<CertStore>);

impl ResolvesServerCert for StoreResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }
}

impl ResolvesClientCert for StoreResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The handshake-signature methods of a rustls certificate verifier, with the mesh's (ring)
/// algorithms: both verifiers here use it, and so does any other verifier in the mesh (the
/// proxy's TLS origination), so the three methods are written once.
#[macro_export]
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &$crate::tls::rustls::pki_types::CertificateDer<'_>,
            dss: &$crate::tls::rustls::DigitallySignedStruct,
        ) -> Result<
            $crate::tls::rustls::client::danger::HandshakeSignatureValid,
            $crate::tls::rustls::Error,
        > {
            $crate::tls::rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &$crate::svid::PROVIDER.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &$crate::tls::rustls::pki_types::CertificateDer<'_>,
            dss: &$crate::tls::rustls::DigitallySignedStruct,
        ) -> Result<
            $crate::tls::rustls::client::danger::HandshakeSignatureValid,
            $crate::tls::rustls::Error,
        > {
            $crate::tls::rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &$crate::svid::PROVIDER.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<$crate::tls::rustls::SignatureScheme> {
            $crate::svid::PROVIDER
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Verifies client chains against the store's current roots.
#[derive(Debug)]
struct ClientVerifier {
    store: Arc<CertStore>,
    mandatory: bool,
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: every mesh client has exactly one certificate to offer.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.store
            .verify_peer(end_entity, intermediates, now, Role::Client)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Verifies server chains against the store's current roots, then secure naming.
#[derive(Debug)]
struct ServerVerifier {
    store: Arc<CertStore>,
    expected: ExpectedPeer,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = self
            .store
            .verify_peer(end_entity, intermediates, now, Role::Server)?;
        self.expected
            .check(self.store.id(), got)
            .map_err(|e| other(&e))?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Maps a verification failure to the rustls error that selects the right TLS alert.
fn to_rustls(err: SvidError) -> rustls::Error {
    let cert_error = match &err {
        SvidError::Chain(webpki::Error::CertExpired { .. }) => CertificateError::Expired,
        SvidError::Chain(webpki::Error::CertNotValidYet { .. }) => CertificateError::NotValidYet,
        SvidError::Chain(webpki::Error::UnknownIssuer) => CertificateError::UnknownIssuer,
        SvidError::Chain(webpki::Error::InvalidSignatureForPublicKey) => {
            CertificateError::BadSignature
        }
        _ => return other(&err).into(),
    };
    cert_error.into()
}

/// A certificate error carrying our message. rustls prints the wrapped error with `Debug`, so
/// the wrapper's `Debug` is the message itself and logs read as sentences.
fn other(err: &dyn std::error::Error) -> CertificateError {
    CertificateError::Other(OtherError(Arc::new(Reason(err.to_string()))))
}

struct Reason(String);

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_style_sni_is_a_valid_server_name() {
        let sni = outbound_sni(9080, "v1", "reviews.default.svc.cluster.local").unwrap();
        assert_eq!(
            sni.to_str(),
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
        );
        assert!(outbound_sni(9080, "", "reviews.default.svc.cluster.local").is_ok());
        assert!(outbound_sni(80, "", "10.0.0.1").is_err());
    }

    #[test]
    fn expected_peer_any_means_our_trust_domain() {
        let ours = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/x").unwrap();
        let same = SpiffeId::parse("spiffe://cluster.local/ns/b/sa/y").unwrap();
        let other = SpiffeId::parse("spiffe://other.mesh/ns/b/sa/y").unwrap();
        assert!(ExpectedPeer::Any.check(&ours, same.clone()).is_ok());
        let err = ExpectedPeer::Any.check(&ours, other).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server identity `spiffe://other.mesh/ns/b/sa/y` is not in trust domain `cluster.local`"
        );
        let one_of = ExpectedPeer::OneOf(vec![ours.clone()]);
        let err = one_of.check(&ours, same).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server identity `spiffe://cluster.local/ns/b/sa/y` is not one of \
             [`spiffe://cluster.local/ns/a/sa/x`]"
        );
        assert!(one_of.check(&ours, ours.clone()).is_ok());
    }

    #[test]
    fn one_of_is_canonical_and_empty_means_any() {
        let a = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/x").unwrap();
        let b = SpiffeId::parse("spiffe://cluster.local/ns/b/sa/y").unwrap();
        assert_eq!(
            ExpectedPeer::one_of([b.clone(), a.clone(), b.clone()]),
            ExpectedPeer::OneOf(vec![a, b])
        );
        assert_eq!(ExpectedPeer::one_of(Vec::new()), ExpectedPeer::Any);
    }
}
