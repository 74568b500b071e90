//! What a client certificate tells the app behind a proxy: the fields of Envoy's
//! `x-forwarded-client-cert` header (its hash, subject and subject alternative names), read once
//! per connection.

use rustls_pki_types::CertificateDer;
use x509_parser::{
    extensions::GeneralName,
    objects::{oid_registry, oid2abbrev},
    x509::X509Name,
};

use crate::svid::{SvidError, parse};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertDetails {
    /// SHA-256 of the DER certificate, in lower-case hex.
    pub hash: String,
    /// The subject as RFC 2253 writes it (Envoy's form); empty for a workload certificate.
    pub subject: String,
    /// URI subject alternative names (a workload's SPIFFE id).
    pub uris: Vec<String>,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
}

impl CertDetails {
    pub fn of(cert: &CertificateDer<'_>) -> Result<Self, SvidError> {
        let parsed = parse(cert)?;
        let mut details = Self {
            hash: base16ct::lower::encode_string(&cert_sha256(cert)),
            subject: rfc2253(parsed.subject()),
            ..Self::default()
        };
        let san = parsed
            .subject_alternative_name()
            .map_err(|e| SvidError::Parse(e.to_string()))?;
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::URI(uri) => details.uris.push((*uri).to_string()),
                GeneralName::DNSName(dns) => details.dns.push((*dns).to_string()),
                _ => {}
            }
        }
        Ok(details)
    }
}

/// SHA-256 of the DER certificate (what Envoy's `verify_certificate_hash` pins).
pub fn cert_sha256(cert: &CertificateDer<'_>) -> [u8; 32] {
    sha256(cert)
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo (what `verify_certificate_spki` pins: it
/// stays the same when a certificate is reissued for the same key).
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], SvidError> {
    Ok(sha256(parse(cert)?.tbs_certificate.subject_pki.raw))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// RFC 2253: the relative names last to first, `,` between them, `+` between the attributes of
/// one, each as `short-name=value` with the special characters escaped.
fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            let attributes: Vec<String> = rdn
                .iter()
                .map(|a| {
                    let oid = a.attr_type();
                    let key = oid2abbrev(oid, oid_registry())
                        .map(str::to_string)
                        .unwrap_or_else(|_| oid.to_id_string());
                    let value = a.as_str().map(escape).unwrap_or_default();
                    format!("{key}={value}")
                })
                .collect();
            attributes.join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 2253 §2.4: `, + " \ < > ;` escaped anywhere, `#` and space at the start, space at the end.
fn escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `openssl req -x509 -subj "/C=US/O=Example Corp/CN=client, one" -addext
    /// "subjectAltName=URI:spiffe://example.org/ns/a/sa/client,DNS:client.example.org,DNS:alt.example.org"`.
    const CLIENT: &str = "-----BEGIN CERTIFICATE-----
MIICIDCCAcagAwIBAgIUOjKhSw9QHTpId6zabGPUxsX+hzcwCgYIKoZIzj0EAwIw
OjELMAkGA1UEBhMCVVMxFTATBgNVBAoMDEV4YW1wbGUgQ29ycDEUMBIGA1UEAwwL
Y2xpZW50LCBvbmUwHhcNMjYxMTIzMTIzMDE3WhcNMzYxMTIwMTIzMDE3WjA6MQsw
CQYDVQQGEwJVUzEVMBMGA1UECgwMRXhhbXBsZSBDb3JwMRQwEgYDVQQDDAtjbGll
bnQsIG9uZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABMkBrGP1tA3Q1x5yOtG7
Pxtvew1Z75VyPkZKyyOIvVMo+XJOEq6e0dBZiV31uwlyQs+aN+oFdIQO3IDgge6u
1PijgakwgaYwHQYDVR0OBBYEFDzuKR2eZGVVvgiabxWqP7WCpqupMB8GA1UdIwQY
MBaAFDzuKR2eZGVVvgiabxWqP7WCpqupMA8GA1UdEwEB/wQFMAMBAf8wUwYDVR0R
BEwwSoYjc3BpZmZlOi8vZXhhbXBsZS5vcmcvbnMvYS9zYS9jbGllbnSCEmNsaWVu
dC5leGFtcGxlLm9yZ4IPYWx0LmV4YW1wbGUub3JnMAoGCCqGSM49BAMCA0gAMEUC
IG8e7ERbcFLvdbTX60Sg3apNapx28RG3GO+HrJqp4hMcAiEA2BFaArfJ+ToQI8ab
p07hGCbuOGjryRvU5gqVpZ+8i74=
-----END CERTIFICATE-----
";

    #[test]
    fn details_match_what_openssl_prints() {
        let der = CertificateDer::from(pem::parse(CLIENT).unwrap().into_contents());
        let d = CertDetails::of(&der).unwrap();
        // `openssl x509 -noout -fingerprint -sha256`, lower-cased without colons.
        assert_eq!(
            d.hash,
            "53ccd2a2af5a4d051c9a6fc1885fd7d3e149432940f99093d326b310b284a873"
        );
        // `openssl x509 -noout -subject -nameopt RFC2253`.
        assert_eq!(d.subject, r"CN=client\, one,O=Example Corp,C=US");
        assert_eq!(d.uris, ["spiffe://example.org/ns/a/sa/client"]);
        assert_eq!(d.dns, ["client.example.org", "alt.example.org"]);
    }

    #[test]
    fn a_workload_certificate_has_an_empty_subject() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
        )];
        let cert = params.self_signed(&key).unwrap();
        let d = CertDetails::of(cert.der()).unwrap();
        assert_eq!(d.subject, "");
        assert_eq!(d.uris, ["spiffe://cluster.local/ns/a/sa/b"]);
        assert!(d.dns.is_empty());
        assert_eq!(d.hash.len(), 64);
    }

    #[test]
    fn rfc2253_escapes_what_it_must() {
        assert_eq!(escape(r#"a,b+c"d\e<f>g;h"#), r#"a\,b\+c\"d\\e\<f\>g\;h"#);
        assert_eq!(escape("#lead and trail "), r"\#lead and trail\ ");
        assert_eq!(escape(" x"), r"\ x");
        assert_eq!(escape(""), "");
    }
}
