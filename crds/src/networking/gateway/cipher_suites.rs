//! `tls.cipherSuites` of a Gateway server: what each entry names and whether Mizzen's gateway
//! can offer it. Pure: no I/O.
//!
//! Istio passes the list to Envoy, which reads OpenSSL (BoringSSL) names such as
//! `ECDHE-ECDSA-AES256-GCM-SHA384` and equal-preference groups `[A|B]`, and restricts the
//! TLS 1.2 suites it offers (TLS 1.3 suites are not affected). Istio itself warns about and
//! drops names it does not know. Mizzen's gateway terminates TLS with rustls, which implements
//! TLS 1.2 only with ECDHE key exchange and an AEAD cipher (AES-GCM or ChaCha20-Poly1305):
//! other real suites cannot be offered.

/// The TLS 1.2 suites of OpenSSL that a gateway configuration may name: OpenSSL name, then the
/// IANA name (the spelling of Go and of the RFCs, for a hint when a list uses it).
const TLS12: [(&str, &str); 24] = [
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES128-SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    ),
    ("ECDHE-RSA-AES128-SHA", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (
        "ECDHE-ECDSA-AES256-SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    ),
    ("ECDHE-RSA-AES256-SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (
        "ECDHE-ECDSA-AES128-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    ),
    (
        "ECDHE-RSA-AES256-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    ),
    ("AES128-GCM-SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256"),
    ("AES256-GCM-SHA384", "TLS_RSA_WITH_AES_256_GCM_SHA384"),
    ("AES128-SHA", "TLS_RSA_WITH_AES_128_CBC_SHA"),
    ("AES256-SHA", "TLS_RSA_WITH_AES_256_CBC_SHA"),
    ("AES128-SHA256", "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    ("AES256-SHA256", "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    ("DES-CBC3-SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (
        "DHE-RSA-AES128-GCM-SHA256",
        "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "DHE-RSA-AES256-GCM-SHA384",
        "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "DHE-RSA-CHACHA20-POLY1305",
        "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// The TLS 1.3 suites (OpenSSL uses their IANA names).
const TLS13: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// OpenSSL's alias for every suite; for Mizzen, every suite it can offer.
const ALL: &str = "ALL";

/// What one name of a `cipherSuites` entry is to Mizzen's gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite<'a> {
    /// A TLS 1.2 suite the gateway offers, by its OpenSSL name.
    Offered(&'static str),
    /// A real TLS 1.2 suite that rustls does not implement, and why.
    NotOffered {
        name: &'static str,
        why: &'static str,
    },
    /// A TLS 1.3 suite: `cipherSuites` does not restrict TLS 1.3, whose suites are always
    /// offered (as with Envoy).
    Tls13(&'a str),
    /// Not an OpenSSL cipher suite name: ignored, as Istio ignores it. `openssl` is the
    /// OpenSSL spelling when the name is a suite's IANA name.
    Unknown {
        name: &'a str,
        openssl: Option<&'static str>,
    },
}

impl Suite<'_> {
    /// Whether the name is a cipher suite Envoy would accept in the list (Istio keeps it).
    pub fn is_real(&self) -> bool {
        matches!(self, Self::Offered(_) | Self::NotOffered { .. })
    }
}

/// Whether rustls offers an OpenSSL TLS 1.2 suite, and if not, why.
fn offered(name: &'static str) -> Result<(), &'static str> {
    let aead = name.contains("-GCM-") || name.ends_with("-CHACHA20-POLY1305");
    if name.contains("CBC3") {
        Err("3DES")
    } else if name.starts_with("DHE-") {
        Err("finite-field Diffie-Hellman key exchange")
    } else if !name.starts_with("ECDHE-") {
        Err("RSA key exchange, without forward secrecy")
    } else if !aead {
        Err("CBC mode")
    } else {
        Ok(())
    }
}

/// What `name` (one name, not a group) is.
pub fn classify(name: &str) -> Suite<'_> {
    if let Some((openssl, _)) = TLS12.iter().find(|(o, _)| *o == name) {
        return match offered(openssl) {
            Ok(()) => Suite::Offered(openssl),
            Err(why) => Suite::NotOffered { name: openssl, why },
        };
    }
    if TLS13.contains(&name) {
        return Suite::Tls13(name);
    }
    Suite::Unknown {
        name,
        openssl: TLS12.iter().find(|(_, i)| *i == name).map(|(o, _)| *o),
    }
}

/// Every TLS 1.2 suite the gateway offers, in OpenSSL's order of the table above.
pub fn all_offered() -> impl Iterator<Item = &'static str> {
    TLS12.iter().map(|(o, _)| *o).filter(|o| offered(o).is_ok())
}

/// The names of one entry: the members of an equal-preference group `[A|B]`, `ALL` as every
/// suite the gateway offers, else the entry itself.
pub fn names(entry: &str) -> Vec<&str> {
    let entry = entry.trim();
    if entry == ALL {
        return all_offered().collect();
    }
    match entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        Some(group) => group.split('|').map(str::trim).collect(),
        None => vec![entry],
    }
}

/// The suites the gateway offers for `entries`, in their order, each once. Empty when none
/// applies: the gateway then offers rustls' defaults.
pub fn offered_suites(entries: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for entry in entries {
        for name in names(entry) {
            if let Suite::Offered(n) = classify(name)
                && !out.contains(&n)
            {
                out.push(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_offers_ecdhe_with_aead_only() {
        assert_eq!(
            all_offered().collect::<Vec<_>>(),
            [
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-CHACHA20-POLY1305",
                "ECDHE-RSA-CHACHA20-POLY1305",
            ]
        );
        let why = |name| match classify(name) {
            Suite::NotOffered { why, .. } => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(why("ECDHE-RSA-AES128-SHA"), "CBC mode");
        assert_eq!(
            why("AES128-GCM-SHA256"),
            "RSA key exchange, without forward secrecy"
        );
        assert_eq!(why("DES-CBC3-SHA"), "3DES");
        assert_eq!(
            why("DHE-RSA-CHACHA20-POLY1305"),
            "finite-field Diffie-Hellman key exchange"
        );
    }

    #[test]
    fn names_are_tls13_iana_spellings_or_unknown() {
        assert_eq!(
            classify("TLS_AES_128_GCM_SHA256"),
            Suite::Tls13("TLS_AES_128_GCM_SHA256")
        );
        assert_eq!(
            classify("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            Suite::Unknown {
                name: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                openssl: Some("ECDHE-RSA-AES128-GCM-SHA256"),
            }
        );
        let unknown = classify("ecdhe-rsa-aes128-gcm-sha256");
        assert!(!unknown.is_real());
        assert!(matches!(unknown, Suite::Unknown { openssl: None, .. }));
    }

    #[test]
    fn groups_and_all_open_into_names_in_order_once_each() {
        assert_eq!(
            names("[ECDHE-ECDSA-AES128-GCM-SHA256| ECDHE-ECDSA-CHACHA20-POLY1305]"),
            [
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-CHACHA20-POLY1305"
            ]
        );
        let entries = [
            "AES128-SHA",
            "[ECDHE-RSA-CHACHA20-POLY1305|ECDHE-RSA-AES128-GCM-SHA256]",
            "nonsense",
            "ECDHE-RSA-AES128-GCM-SHA256",
        ]
        .map(String::from);
        assert_eq!(
            offered_suites(&entries),
            ["ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-GCM-SHA256"]
        );
        assert_eq!(
            offered_suites(&["ALL".to_string()]),
            all_offered().collect::<Vec<_>>()
        );
        assert!(offered_suites(&["AES256-SHA".to_string()]).is_empty());
    }
}
