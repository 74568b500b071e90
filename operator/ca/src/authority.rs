//! A signing CA: its certificate and key, the chain above it, and the roots its chains end at.
//!
//! The operator's authority is the mesh root (or the user's plug-in intermediate); the node
//! agent's is its per-node intermediate. Both sign through the same type (see [`crate::node`] and
//! [`crate::workload`]), and every authority checks itself when built: the key must match the
//! certificate, and a probe leaf it signs must verify to its roots, so a broken plug-in Secret is
//! refused at load with a message instead of handing out chains nobody accepts.

use std::time::{Duration, SystemTime};

use mizzen_identity::bundle::{TrustBundle, certs_from_pem, certs_to_pem};
use mizzen_identity::svid::{self, Role, Validity};
use mizzen_identity::{CertificateRequest, PrivateKey, SpiffeId};
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// How far back `notBefore` is set, so a peer whose clock is a little behind accepts a fresh
/// certificate.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// Why an authority could not be built or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{what}: reading PEM: {source}")]
    Pem {
        what: &'static str,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{what}: no CERTIFICATE block found")]
    NoCertificate { what: &'static str },
    #[error("{what}: {reason}")]
    BadCertificate { what: &'static str, reason: String },
    #[error("{what}: private key: {source}")]
    Key {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{what}: the private key does not belong to the CA certificate")]
    KeyMismatch { what: &'static str },
    #[error("{what}: the signing certificate is not a CA (basicConstraints CA:false or absent)")]
    NotCa { what: &'static str },
    #[error("{what}: trust bundle: {source}")]
    Bundle {
        what: &'static str,
        source: mizzen_identity::bundle::BundleError,
    },
    #[error("{what}: a certificate it signs does not verify to its roots: {source}")]
    BrokenChain {
        what: &'static str,
        source: svid::SvidError,
    },
    #[error("the signing CA expired at {0:?}; nothing it signs would be valid")]
    IssuerExpired(SystemTime),
    #[error("{0}")]
    Signing(String),
}

/// A CA that can sign node intermediates and workload leaves.
#[derive(Debug)]
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate (unless it is a root) followed by the intermediates above it:
    /// what follows a leaf in the chain it is handed.
    chain: Vec<CertificateDer<'static>>,
    roots: TrustBundle,
    validity: Validity,
    /// The signing certificate's pathLenConstraint, when it has one.
    path_len: Option<u32>,
}

/// A certificate just signed, ready for the workload API or a CSR's `status.certificate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The new certificate followed by the intermediates (roots excluded), PEM.
    pub chain_pem: String,
    /// The roots the chain verifies to, PEM.
    pub roots_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Authority {
    /// The node agent's authority: its intermediate chain as the operator returned it (node CA
    /// first), the key it generated for the CSR, and the mesh roots.
    pub fn from_node_ca(
        chain_pem: &str,
        key: PrivateKey,
        roots: TrustBundle,
    ) -> Result<Self, CaError> {
        const WHAT: &str = "node CA";
        let mut chain =
            certs_from_pem(chain_pem).map_err(|source| CaError::Pem { what: WHAT, source })?;
        if chain.is_empty() {
            return Err(CaError::NoCertificate { what: WHAT });
        }
        let cert = chain.remove(0);
        let key = KeyPair::try_from(key.key_pair().serialize_der())
            .map_err(|source| CaError::Key { what: WHAT, source })?;
        Self::from_der(WHAT, cert, key, chain, roots)
    }

    pub(crate) fn from_der(
        what: &'static str,
        cert: CertificateDer<'static>,
        key: KeyPair,
        above: Vec<CertificateDer<'static>>,
        roots: TrustBundle,
    ) -> Result<Self, CaError> {
        let facts = ca_facts(what, &cert)?;
        if facts.spki != key.subject_public_key_info() {
            return Err(CaError::KeyMismatch { what });
        }
        // A root signing directly is not repeated after the leaf: peers have it already.
        let mut chain = Vec::new();
        if !roots.contains(&cert) {
            chain.push(cert.clone());
        }
        for c in above {
            if !chain.contains(&c) && !roots.contains(&c) {
                chain.push(c);
            }
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| CaError::BadCertificate {
            what,
            reason: e.to_string(),
        })?;
        let authority = Authority {
            issuer,
            chain,
            roots,
            validity: facts.validity,
            path_len: facts.path_len,
        };
        authority.self_check(what)?;
        Ok(authority)
    }

    /// Signs a throwaway leaf and verifies it to the roots, as of now (or the nearest instant
    /// inside this CA's validity).
    fn self_check(&self, what: &'static str) -> Result<(), CaError> {
        let probe = SpiffeId::new("probe.invalid", "probe", "probe")
            .map_err(|e| CaError::Signing(format!("self-check identity: {e}")))?;
        let request = CertificateRequest::for_workload(&probe)
            .map_err(|e| CaError::Signing(format!("self-check key: {e}")))?;
        // Now, kept inside this CA's own validity (not `clamp`: it panics on inverted bounds),
        // so the rest of the chain is checked as of now too.
        let at = SystemTime::now()
            .min(self.validity.not_after - Duration::from_secs(1))
            .max(self.validity.not_before);
        let issued = self.sign_leaf(request.key.key_pair(), &probe, Duration::from_secs(60), at)?;
        let chain =
            certs_from_pem(&issued.chain_pem).map_err(|source| CaError::Pem { what, source })?;
        svid::verify_chain(&self.roots, &chain[0], &chain[1..], unix(at), Role::Client)
            .map_err(|source| CaError::BrokenChain { what, source })?;
        Ok(())
    }

    /// The roots this authority's chains end at.
    pub fn roots(&self) -> &TrustBundle {
        &self.roots
    }

    /// Hands out `roots` from now on (during a root rotation: the merged old and new roots).
    /// The chain must still verify to them.
    pub fn with_roots(mut self, roots: TrustBundle) -> Result<Self, CaError> {
        self.roots = roots;
        self.self_check("authority with new roots")?;
        Ok(self)
    }

    /// The signing certificate and the intermediates above it, PEM.
    pub fn chain_pem(&self) -> String {
        certs_to_pem(&self.chain)
    }

    /// The signing certificate's validity.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    pub(crate) fn path_len(&self) -> Option<u32> {
        self.path_len
    }

    /// The validity for a certificate signed at `now` for `ttl`: backdated by [`BACKDATE`] (not
    /// before the issuer's own start), capped at the issuer's expiry, in whole seconds as X.509
    /// stores it (so [`Issued`] says exactly what the certificate says).
    pub(crate) fn window(&self, now: SystemTime, ttl: Duration) -> Result<Validity, CaError> {
        if now >= self.validity.not_after {
            return Err(CaError::IssuerExpired(self.validity.not_after));
        }
        let not_before =
            whole_seconds(now.checked_sub(BACKDATE).unwrap_or(now)).max(self.validity.not_before);
        let not_after = now
            .checked_add(ttl)
            .map_or(self.validity.not_after, whole_seconds)
            .min(self.validity.not_after);
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    /// Signs `params` (validity and serial filled in here) for `public_key`; returns the chain.
    pub(crate) fn sign(
        &self,
        mut params: CertificateParams,
        public_key: &impl PublicKeyData,
        validity: Validity,
    ) -> Result<Issued, CaError> {
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Ok(Issued {
            chain_pem: certs_to_pem(&chain),
            roots_pem: self.roots.to_pem(),
            not_before: validity.not_before,
            not_after: validity.not_after,
        })
    }

    /// Signs a workload leaf for `id` (no CSR checks: callers in this crate did them).
    pub(crate) fn sign_leaf(
        &self,
        public_key: &impl PublicKeyData,
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        let uri = id
            .uri()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Signing(format!("URI SAN `{id}`: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let validity = self.window(now, ttl)?;
        self.sign(params, public_key, validity)
    }
}

/// What the CA needs to know about its own certificate.
struct CaFacts {
    spki: Vec<u8>,
    validity: Validity,
    path_len: Option<u32>,
}

fn ca_facts(what: &'static str, cert: &CertificateDer<'_>) -> Result<CaFacts, CaError> {
    let bad = |reason: String| CaError::BadCertificate { what, reason };
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| bad(e.to_string()))?;
    let constraints = parsed
        .basic_constraints()
        .map_err(|e| bad(e.to_string()))?
        .map(|ext| ext.value.clone());
    let Some(constraints) = constraints.filter(|bc| bc.ca) else {
        return Err(CaError::NotCa { what });
    };
    Ok(CaFacts {
        spki: parsed.public_key().raw.to_vec(),
        validity: svid::validity(cert).map_err(|e| bad(e.to_string()))?,
        path_len: constraints.path_len_constraint,
    })
}

/// Exactly one certificate from a PEM string.
pub(crate) fn one_cert(what: &'static str, pem: &str) -> Result<CertificateDer<'static>, CaError> {
    let mut certs = certs_from_pem(pem).map_err(|source| CaError::Pem { what, source })?;
    match certs.len() {
        0 => Err(CaError::NoCertificate { what }),
        1 => Ok(certs.remove(0)),
        n => Err(CaError::BadCertificate {
            what,
            reason: format!("expected one certificate, found {n}"),
        }),
    }
}

/// A random positive 128-bit serial number (RFC 5280 asks for unique serials per issuer).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

/// `t` rounded down to a whole second.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}
