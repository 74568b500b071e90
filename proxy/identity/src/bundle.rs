//! The set of mesh roots a peer's chain may end at.
//!
//! During a root rotation the old and the new root are trusted together, so a bundle holds
//! several roots. It is immutable: a new bundle replaces the old one in the [`crate::tls`] store,
//! and the webpki trust anchors are derived once here rather than on every handshake.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

/// Why a trust bundle could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("trust bundle: reading PEM: {0}")]
    Pem(rustls_pki_types::pem::Error),
    #[error("trust bundle: no CERTIFICATE block found")]
    Empty,
    #[error("trust bundle: root certificate {index} is not a usable trust anchor: {source}")]
    Anchor { index: usize, source: webpki::Error },
}

/// One or more trusted root certificates, without duplicates, in the order first given.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// Every `CERTIFICATE` block of `pem` (other blocks are ignored); at least one is required.
    pub fn from_pem(pem: &str) -> Result<Self, BundleError> {
        let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(BundleError::Pem)?;
        Self::from_der(roots)
    }

    /// Roots given as DER; at least one is required.
    pub fn from_der(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, BundleError> {
        let mut unique: Vec<CertificateDer<'static>> = Vec::new();
        for root in roots {
            if !unique.contains(&root) {
                unique.push(root);
            }
        }
        if unique.is_empty() {
            return Err(BundleError::Empty);
        }
        let anchors = unique
            .iter()
            .enumerate()
            .map(|(index, der)| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|source| BundleError::Anchor { index, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustBundle {
            roots: unique,
            anchors,
        })
    }

    /// This bundle's roots followed by those of `other` that it lacks.
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        let mut merged = self.clone();
        for (root, anchor) in other.roots.iter().zip(&other.anchors) {
            if !merged.roots.contains(root) {
                merged.roots.push(root.clone());
                merged.anchors.push(anchor.clone());
            }
        }
        merged
    }

    /// The roots as DER, in order.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The roots as webpki trust anchors (same order as [`TrustBundle::roots`]).
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    pub fn contains(&self, root: &CertificateDer<'_>) -> bool {
        self.roots.iter().any(|r| r.as_ref() == root.as_ref())
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Always false: a bundle holds at least one root. Present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The roots as concatenated PEM `CERTIFICATE` blocks (what the `mizzen-ca-root-cert`
    /// ConfigMap and the workload API carry).
    pub fn to_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots
    }
}

impl Eq for TrustBundle {}

/// Concatenated PEM `CERTIFICATE` blocks (LF line endings) for DER certificates.
pub fn certs_to_pem<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    let blocks: Vec<pem::Pem> = certs
        .into_iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref().to_vec()))
        .collect();
    pem::encode_many_config(
        &blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// All `CERTIFICATE` blocks of a PEM string, in order (other blocks are skipped).
pub fn certs_from_pem(
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, rustls_pki_types::pem::Error> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn root(name: &str) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn pem_round_trip_keeps_order_and_drops_duplicates() {
        let (a, b) = (root("a"), root("b"));
        let pem = certs_to_pem([&a, &b, &a]);
        let bundle = TrustBundle::from_pem(&pem).unwrap();
        assert_eq!(bundle.roots(), &[a.clone(), b.clone()]);
        assert_eq!(bundle.anchors().len(), 2);
        assert_eq!(TrustBundle::from_pem(&bundle.to_pem()).unwrap(), bundle);
        assert!(bundle.contains(&a) && bundle.contains(&b));
    }

    #[test]
    fn merge_adds_only_new_roots() {
        let (a, b, c) = (root("a"), root("b"), root("c"));
        let first = TrustBundle::from_der([a.clone(), b.clone()]).unwrap();
        let second = TrustBundle::from_der([b.clone(), c.clone()]).unwrap();
        let merged = first.merged(&second);
        assert_eq!(merged.roots(), &[a, b, c]);
        assert_eq!(merged.anchors().len(), 3);
    }

    #[test]
    fn empty_and_garbage_are_refused() {
        assert!(matches!(
            TrustBundle::from_pem("no pem here"),
            Err(BundleError::Empty)
        ));
        let bad = certs_to_pem([&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])]);
        let err = TrustBundle::from_pem(&bad).unwrap_err();
        assert!(matches!(err, BundleError::Anchor { index: 0, .. }), "{err}");
    }
}
