//! Workload leaves: what the node agent signs for a proxy's CSR.
//!
//! The CSR proves possession of the key (its self-signature is checked) and says which identity
//! it wants; the caller says which identity it authorised (from the TokenReview and the pod). The
//! two must be the same single URI SAN, or nothing is signed. Everything else in the CSR
//! (subject, requested CA flag or usages) is ignored: the certificate's shape is fixed here.

use std::time::{Duration, SystemTime};

use mizzen_identity::SpiffeId;
use rcgen::{CertificateSigningRequestParams, SanType};

use crate::authority::{Authority, CaError, Issued};

/// The default workload certificate lifetime, as Istio's.
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a workload CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("CSR is not a PEM PKCS#10 request this CA understands: {0}")]
    Unreadable(rcgen::Error),
    #[error("CSR signature does not verify: the request was altered or not made with its key")]
    BadSignature,
    #[error("CSR must have exactly one SAN, the URI `{expected}`; it has {got:?}")]
    WrongSan {
        expected: SpiffeId,
        got: Vec<String>,
    },
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// A checked CSR: its key and the identity it asks for.
pub(crate) fn read_csr(pem: &str) -> Result<CertificateSigningRequestParams, WorkloadError> {
    CertificateSigningRequestParams::from_pem(pem).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => WorkloadError::BadSignature,
        other => WorkloadError::Unreadable(other),
    })
}

fn describe(san: &SanType) -> String {
    match san {
        SanType::URI(uri) => format!("URI {}", uri.as_str()),
        SanType::DnsName(name) => format!("DNS {}", name.as_str()),
        SanType::Rfc822Name(name) => format!("email {}", name.as_str()),
        SanType::IpAddress(ip) => format!("IP {ip}"),
        other => format!("{other:?}"),
    }
}

impl Authority {
    /// Signs a workload certificate for `expected` from `csr_pem`, valid for `ttl` from now
    /// (capped at this CA's expiry): serverAuth + clientAuth, digitalSignature +
    /// keyEncipherment, CA:false, the SPIFFE URI as its only SAN.
    pub fn sign_workload(
        &self,
        csr_pem: &str,
        expected: &SpiffeId,
        ttl: Duration,
    ) -> Result<Issued, WorkloadError> {
        self.sign_workload_at(csr_pem, expected, ttl, SystemTime::now())
    }

    /// [`Authority::sign_workload`] as of `now`.
    pub fn sign_workload_at(
        &self,
        csr_pem: &str,
        expected: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Issued, WorkloadError> {
        let csr = read_csr(csr_pem)?;
        let wanted = SanType::URI(
            expected
                .uri()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Signing(e.to_string()))?,
        );
        if csr.params.subject_alt_names != [wanted] {
            return Err(WorkloadError::WrongSan {
                expected: expected.clone(),
                got: csr.params.subject_alt_names.iter().map(describe).collect(),
            });
        }
        Ok(self.sign_leaf(&csr.public_key, expected, ttl, now)?)
    }
}
