//! What a workload certificate (an X.509 SVID) says, and whether its chain reaches a trusted root.
//!
//! Both the TLS verifiers and the CA's own checks go through [`verify_chain`], so there is one
//! definition of "a valid mesh peer": a chain to a root in the current bundle, valid now, with
//! the right extended key usage, and exactly one URI SAN that is a workload SPIFFE id.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::TrustBundle;
use crate::spiffe::{SpiffeId, SpiffeIdError};

/// The ring provider, the only crypto backend the mesh uses; built once.
pub static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// Why a certificate is not a valid workload identity.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    #[error("certificate is not valid DER X.509: {0}")]
    Parse(String),
    #[error("certificate has no URI subject alternative name (expected a SPIFFE id)")]
    NoUriSan,
    #[error("certificate has {0} URI subject alternative names; a workload has exactly one")]
    SeveralUriSans(usize),
    #[error("certificate URI SAN: {0}")]
    BadSpiffeId(#[from] SpiffeIdError),
    #[error("certificate chain does not verify to the trust bundle: {0}")]
    Chain(#[from] webpki::Error),
}

/// Which side of a TLS connection a certificate authenticates; selects the required EKU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// A certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(SvidError::Parse(
            "trailing bytes after the certificate".into(),
        )),
        Err(e) => Err(SvidError::Parse(e.to_string())),
    }
}

/// The SPIFFE id in the certificate's single URI SAN.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Result<SpiffeId, SvidError> {
    let cert = parse(cert)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::Parse(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris[..] {
        [] => Err(SvidError::NoUriSan),
        [uri] => Ok(SpiffeId::parse(uri)?),
        _ => Err(SvidError::SeveralUriSans(uris.len())),
    }
}

/// The certificate's validity period.
pub fn validity(cert: &CertificateDer<'_>) -> Result<Validity, SvidError> {
    let cert = parse(cert)?;
    let to_system = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    Ok(Validity {
        not_before: to_system(cert.validity().not_before),
        not_after: to_system(cert.validity().not_after),
    })
}

/// Verifies `end_entity` (with `intermediates`, leaf's issuer first) up to a root of `bundle` at
/// time `now` for `role`, then returns the SPIFFE id it carries.
pub fn verify_chain(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    role: Role,
) -> Result<SpiffeId, SvidError> {
    let cert = webpki::EndEntityCert::try_from(end_entity)?;
    let usage = match role {
        Role::Client => webpki::KeyUsage::client_auth(),
        Role::Server => webpki::KeyUsage::server_auth(),
    };
    cert.verify_for_usage(
        PROVIDER.signature_verification_algorithms.all,
        bundle.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )?;
    spiffe_id(end_entity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with(sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.not_before = rcgen::date_time_ymd(2030, 1, 2);
        params.not_after = rcgen::date_time_ymd(2030, 1, 3);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn exactly_one_uri_san_that_is_a_workload_id() {
        let id = "spiffe://cluster.local/ns/a/sa/b";
        let dns = SanType::DnsName("b.a.svc".try_into().unwrap());
        assert_eq!(
            spiffe_id(&cert_with(vec![dns.clone(), uri(id)])).unwrap(),
            SpiffeId::parse(id).unwrap()
        );
        assert!(matches!(
            spiffe_id(&cert_with(vec![dns])),
            Err(SvidError::NoUriSan)
        ));
        assert!(matches!(
            spiffe_id(&cert_with(Vec::new())),
            Err(SvidError::NoUriSan)
        ));
        assert!(matches!(
            spiffe_id(&cert_with(vec![
                uri(id),
                uri("spiffe://cluster.local/ns/a/sa/c")
            ])),
            Err(SvidError::SeveralUriSans(2))
        ));
        let err = spiffe_id(&cert_with(vec![uri("spiffe://cluster.local/a/b")])).unwrap_err();
        assert!(err.to_string().contains("path"), "{err}");
        assert!(matches!(
            spiffe_id(&CertificateDer::from(vec![1, 2, 3])),
            Err(SvidError::Parse(_))
        ));
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let v = validity(&cert_with(Vec::new())).unwrap();
        assert_eq!(
            v.not_after.duration_since(v.not_before).unwrap(),
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(
            v.not_before.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_secs(1_893_542_400)
        );
    }
}
