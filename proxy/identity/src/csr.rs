//! Key pairs and certificate signing requests made where the key will be used.
//!
//! The proxy (and the node agent, for its intermediate) generates its own P-256 key and sends only
//! the CSR; the private key stays in this process's memory. Nothing here prints it: `Debug` is
//! redacted and there is no PEM export.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::spiffe::SpiffeId;

/// Why a key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("generating a P-256 key pair: {0}")]
    KeyGeneration(rcgen::Error),
    #[error("SPIFFE id `{id}` is not a valid URI SAN: {source}")]
    San { id: String, source: rcgen::Error },
    #[error("serializing the certificate signing request: {0}")]
    Serialize(rcgen::Error),
    #[error("reading the private key: {0}")]
    KeyPem(rcgen::Error),
}

/// An ECDSA P-256 private key that never leaves memory.
pub struct PrivateKey(KeyPair);

impl PrivateKey {
    /// A fresh random P-256 key.
    pub fn generate() -> Result<Self, CsrError> {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map(PrivateKey)
            .map_err(CsrError::KeyGeneration)
    }

    /// The key in the form rustls loads (PKCS#8 DER; pki-types redacts it in `Debug` too).
    pub fn to_rustls(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.0.serialize_der()))
    }

    /// The DER SubjectPublicKeyInfo, to match a certificate against this key.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.0)
    }

    /// The rcgen key pair, for signing (the CA crate signs CSRs and certificates with it).
    pub fn key_pair(&self) -> &KeyPair {
        &self.0
    }

    /// Wraps an rcgen key pair (for keys the CA crate loads from a file).
    pub fn from_key_pair(key: KeyPair) -> Self {
        PrivateKey(key)
    }

    /// A key read from PEM (PKCS#8 or SEC1), for certificates issued outside the agent: local
    /// mode and benchmarks that hand the proxy key files.
    pub fn from_pem(pem: &str) -> Result<Self, CsrError> {
        KeyPair::from_pem(pem)
            .map(PrivateKey)
            .map_err(CsrError::KeyPem)
    }

    /// A second handle on the same key (the proxy installs it again with each renewal).
    pub fn duplicate(&self) -> Result<Self, CsrError> {
        let der = PrivatePkcs8KeyDer::from(self.0.serialize_der());
        KeyPair::try_from(&der)
            .map(PrivateKey)
            .map_err(CsrError::KeyPem)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(P-256, redacted)")
    }
}

/// A CSR (PEM) and the key it was made with.
#[derive(Debug)]
pub struct CertificateRequest {
    pub csr_pem: String,
    pub key: PrivateKey,
}

impl CertificateRequest {
    /// A new key and a CSR whose only subject alternative name is `id`'s URI and whose subject is
    /// empty (the identity lives in the SAN alone, as SPIFFE X.509-SVIDs have it).
    pub fn for_workload(id: &SpiffeId) -> Result<Self, CsrError> {
        let uri = id.uri();
        let san = SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|source| CsrError::San { id: uri, source })?,
        );
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![san];
        Self::with_params(&params)
    }

    /// A new key and a CSR built from `params` (the node agent's intermediate request uses this
    /// with a subject naming the node).
    pub fn with_params(params: &CertificateParams) -> Result<Self, CsrError> {
        let key = PrivateKey::generate()?;
        let csr = params
            .serialize_request(&key.0)
            .map_err(CsrError::Serialize)?;
        let csr_pem = csr.pem().map_err(CsrError::Serialize)?;
        Ok(CertificateRequest { csr_pem, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::CertificateSigningRequestParams;

    #[test]
    fn csr_carries_only_the_spiffe_uri() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/cart").unwrap();
        let req = CertificateRequest::for_workload(&id).unwrap();
        assert!(
            req.csr_pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        let parsed = CertificateSigningRequestParams::from_pem(&req.csr_pem).unwrap();
        assert_eq!(
            parsed.params.subject_alt_names,
            vec![SanType::URI(id.uri().try_into().unwrap())]
        );
        assert_eq!(parsed.params.distinguished_name, DistinguishedName::new());
        assert_eq!(
            rcgen::PublicKeyData::der_bytes(&parsed.public_key),
            req.key.key_pair().public_key_raw()
        );
    }

    #[test]
    fn debug_never_prints_the_key() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/cart").unwrap();
        let req = CertificateRequest::for_workload(&id).unwrap();
        assert_eq!(format!("{:?}", req.key), "PrivateKey(P-256, redacted)");
        let shown = format!("{req:?}");
        assert!(shown.contains("PrivateKey(P-256, redacted)"), "{shown}");
        assert!(!shown.contains("serialized_der"), "{shown}");
    }
}
