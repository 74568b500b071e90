//! A terminating server's `cipherSuites`: the crypto provider whose TLS 1.2 suites are the
//! listed ones, in their order. TLS 1.3 suites are never restricted (as with Envoy, where the
//! list applies to TLS 1.2 and below). Pure.

use mizzen_proxy_config::CipherSuite;
use rustls::{
    SupportedCipherSuite,
    crypto::{CryptoProvider, ring::cipher_suite as ring},
};

/// The rustls suite of a configured one.
fn rustls_suite(suite: CipherSuite) -> SupportedCipherSuite {
    match suite {
        CipherSuite::EcdheEcdsaAes128GcmSha256 => ring::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheRsaAes128GcmSha256 => ring::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheEcdsaAes256GcmSha384 => ring::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheRsaAes256GcmSha384 => ring::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheEcdsaChacha20Poly1305 => {
            ring::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        CipherSuite::EcdheRsaChacha20Poly1305 => ring::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    }
}

/// `base` offering only `suites` for TLS 1.2 (all of `base`'s when empty), and every TLS 1.3
/// suite of `base`.
pub fn restricted(base: &CryptoProvider, suites: &[CipherSuite]) -> CryptoProvider {
    let mut provider = base.clone();
    if !suites.is_empty() {
        provider
            .cipher_suites
            .retain(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
        provider
            .cipher_suites
            .extend(suites.iter().map(|s| rustls_suite(*s)));
    }
    provider
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls12(p: &CryptoProvider) -> Vec<rustls::CipherSuite> {
        p.cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| s.suite())
            .collect()
    }

    #[test]
    fn every_configured_suite_is_one_of_rings_tls12_suites_once() {
        let base = rustls::crypto::ring::default_provider();
        let all: Vec<CipherSuite> = CipherSuite::ALL.iter().map(|(s, _)| *s).collect();
        let mut mapped = tls12(&restricted(&base, &all));
        let mut ring_suites = tls12(&base);
        mapped.sort_by_key(|s| u16::from(*s));
        ring_suites.sort_by_key(|s| u16::from(*s));
        assert_eq!(mapped, ring_suites);
        // Each maps to the suite of its OpenSSL name.
        for (suite, name) in CipherSuite::ALL {
            let iana = format!("{:?}", rustls_suite(suite).suite());
            let kx_auth = if name.contains("-ECDSA-") {
                "TLS_ECDHE_ECDSA_WITH_"
            } else {
                "TLS_ECDHE_RSA_WITH_"
            };
            let cipher = if name.contains("CHACHA20") {
                "CHACHA20_POLY1305_SHA256"
            } else if name.contains("AES128") {
                "AES_128_GCM_SHA256"
            } else {
                "AES_256_GCM_SHA384"
            };
            assert_eq!(iana, format!("{kx_auth}{cipher}"), "{name}");
        }
    }

    #[test]
    fn the_list_restricts_tls12_in_its_order_and_leaves_tls13() {
        let base = rustls::crypto::ring::default_provider();
        let p = restricted(
            &base,
            &[
                CipherSuite::EcdheRsaChacha20Poly1305,
                CipherSuite::EcdheEcdsaAes256GcmSha384,
            ],
        );
        assert_eq!(
            tls12(&p),
            [
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ]
        );
        let tls13 = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
                .count()
        };
        assert_eq!(tls13(&p), 3);
        assert_eq!(tls13(&p), tls13(&base));
        // Nothing listed: the provider's own suites.
        assert_eq!(restricted(&base, &[]).cipher_suites, base.cipher_suites);
    }
}
