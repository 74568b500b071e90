//! Which certificate a handshake gets when a server has one per key type (Istio's
//! `credentialNames`, typically RSA and ECDSA): one whose key the client can verify, judged by
//! the signature schemes of its ClientHello (which rustls has already narrowed to the schemes
//! the cipher suites both sides offer allow). ECDSA is preferred when several fit, as Envoy
//! prefers it; else the first that fits; else the first, and the handshake fails as it would
//! with that certificate alone.

use std::sync::Arc;

use rustls::{
    SignatureAlgorithm, SignatureScheme,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// A server's certificates, in configured order (at least one).
#[derive(Debug)]
pub struct ByKeyType {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ByKeyType {
    pub fn new(keys: Vec<Arc<CertifiedKey>>) -> Self {
        Self { keys }
    }

    /// The certificate for a client offering `schemes`.
    pub fn choose(&self, schemes: &[SignatureScheme]) -> Option<&Arc<CertifiedKey>> {
        let fits = |k: &&Arc<CertifiedKey>| k.key.choose_scheme(schemes).is_some();
        self.keys
            .iter()
            .filter(fits)
            .find(|k| k.key.algorithm() == SignatureAlgorithm::ECDSA)
            .or_else(|| self.keys.iter().find(fits))
            .or_else(|| self.keys.first())
    }
}

impl ResolvesServerCert for ByKeyType {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.signature_schemes()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `key` (PEM), as a rustls certified key.
    fn certified(key: rcgen::KeyPair) -> Arc<CertifiedKey> {
        use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
        let cert = rcgen::CertificateParams::new(vec!["a.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let private = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        Arc::new(CertifiedKey::from_der(vec![cert.der().clone()], private, &provider).unwrap())
    }

    /// ring cannot generate RSA keys: the RSA key the policy tests sign JWTs with.
    fn rsa() -> Arc<CertifiedKey> {
        certified(rcgen::KeyPair::from_pem(include_str!("../../policy/testdata/rsa.pem")).unwrap())
    }

    fn ecdsa() -> Arc<CertifiedKey> {
        certified(rcgen::KeyPair::generate().unwrap())
    }

    const ECDSA_ONLY: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];
    const RSA_ONLY: &[SignatureScheme] = &[
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];

    fn algorithm(c: &ByKeyType, schemes: &[SignatureScheme]) -> SignatureAlgorithm {
        c.choose(schemes).unwrap().key.algorithm()
    }

    #[test]
    fn each_client_gets_a_key_it_can_verify_ecdsa_first() {
        let both = ByKeyType::new(vec![rsa(), ecdsa()]);
        assert_eq!(algorithm(&both, ECDSA_ONLY), SignatureAlgorithm::ECDSA);
        assert_eq!(algorithm(&both, RSA_ONLY), SignatureAlgorithm::RSA);
        let all: Vec<SignatureScheme> = [RSA_ONLY, ECDSA_ONLY].concat();
        assert_eq!(algorithm(&both, &all), SignatureAlgorithm::ECDSA);
        // Nothing fits: the first, which fails the handshake as it alone would.
        assert_eq!(
            algorithm(&both, &[SignatureScheme::ED25519]),
            SignatureAlgorithm::RSA
        );
        // One certificate: that one, whatever the client offers.
        let one = ByKeyType::new(vec![rsa()]);
        assert_eq!(algorithm(&one, ECDSA_ONLY), SignatureAlgorithm::RSA);
    }
}
