//! SPIFFE ids of meshed workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Parsing is strict on purpose: the id is what authorization decides on, so two spellings of the
//! same workload (upper case, a trailing slash, an extra path segment) must never both be valid.

use std::fmt;
use std::str::FromStr;

/// The trust domain Istio and Mizzen use when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// A workload identity in Istio's Kubernetes layout.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// The part of a SPIFFE id that a parse error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Scheme,
    TrustDomain,
    Path,
    Namespace,
    ServiceAccount,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Scheme => "scheme",
            Part::TrustDomain => "trust domain",
            Part::Path => "path",
            Part::Namespace => "namespace",
            Part::ServiceAccount => "service account",
        })
    }
}

/// Why a string is not a valid workload SPIFFE id; names the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE id `{input}`: {part} {reason}")]
pub struct SpiffeIdError {
    pub input: String,
    pub part: Part,
    pub reason: String,
}

impl SpiffeId {
    /// Builds an id from its parts, checking each as [`SpiffeId::parse`] would.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        let id = SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        let fail = |part, reason: String| SpiffeIdError {
            input: id.to_string(),
            part,
            reason,
        };
        check_dns_subdomain(&id.trust_domain).map_err(|r| fail(Part::TrustDomain, r))?;
        check_dns_label(&id.namespace).map_err(|r| fail(Part::Namespace, r))?;
        check_dns_subdomain(&id.service_account).map_err(|r| fail(Part::ServiceAccount, r))?;
        Ok(id)
    }

    /// Parses `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` exactly: lower-case
    /// scheme, no port, user info, query, fragment, percent-encoding or trailing slash; the trust
    /// domain and service account are DNS subdomains (RFC 1123), the namespace a DNS label, as
    /// Kubernetes requires of those names.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        let fail = |part, reason: &str| SpiffeIdError {
            input: input.to_string(),
            part,
            reason: reason.to_string(),
        };
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| fail(Part::Scheme, "must be `spiffe://`"))?;
        let (trust_domain, path) = rest.split_once('/').ok_or_else(|| {
            fail(
                Part::Path,
                "is missing; expected `/ns/<namespace>/sa/<name>`",
            )
        })?;
        let segments: Vec<&str> = path.split('/').collect();
        let [ns_key, namespace, sa_key, service_account] = segments[..] else {
            return Err(fail(
                Part::Path,
                "must be exactly `/ns/<namespace>/sa/<service-account>`",
            ));
        };
        if ns_key != "ns" || sa_key != "sa" {
            return Err(fail(
                Part::Path,
                "must be exactly `/ns/<namespace>/sa/<service-account>`",
            ));
        }
        let with_input = |part, reason: String| SpiffeIdError {
            input: input.to_string(),
            part,
            reason,
        };
        check_dns_subdomain(trust_domain).map_err(|r| with_input(Part::TrustDomain, r))?;
        check_dns_label(namespace).map_err(|r| with_input(Part::Namespace, r))?;
        check_dns_subdomain(service_account).map_err(|r| with_input(Part::ServiceAccount, r))?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The URI form, as it appears in a certificate's URI SAN.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

/// RFC 1123 label: 1–63 of `[a-z0-9-]`, starting and ending with a letter or digit.
fn check_dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("is empty".into());
    }
    if label.len() > 63 {
        return Err(format!("`{label}` is longer than 63 characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "`{label}` has `{c}`; only lower-case letters, digits and '-' are allowed"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "`{label}` must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 253 {
        return Err(format!("`{name}` is longer than 253 characters"));
    }
    name.split('.').try_for_each(check_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
        let id: SpiffeId = s.parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(id.to_string(), s);
        assert_eq!(
            SpiffeId::new("cluster.local", "default", "bookinfo-productpage").unwrap(),
            id
        );
    }

    #[test]
    fn service_account_may_have_dots() {
        let id = SpiffeId::parse("spiffe://td.example/ns/a/sa/build.robot").unwrap();
        assert_eq!(id.service_account(), "build.robot");
    }

    fn part_of(input: &str) -> Part {
        SpiffeId::parse(input).unwrap_err().part
    }

    #[test]
    fn errors_name_the_part_at_fault() {
        assert_eq!(part_of("https://cluster.local/ns/a/sa/b"), Part::Scheme);
        assert_eq!(part_of("SPIFFE://cluster.local/ns/a/sa/b"), Part::Scheme);
        assert_eq!(part_of("spiffe://cluster.local"), Part::Path);
        assert_eq!(part_of("spiffe://cluster.local/ns/a/sa/b/"), Part::Path);
        assert_eq!(part_of("spiffe://cluster.local/ns/a/sa/b/c"), Part::Path);
        assert_eq!(part_of("spiffe://cluster.local/ns/a/sb/b"), Part::Path);
        assert_eq!(part_of("spiffe://cluster.local/sa/b/ns/a"), Part::Path);
        assert_eq!(part_of("spiffe:///ns/a/sa/b"), Part::TrustDomain);
        assert_eq!(
            part_of("spiffe://Cluster.local/ns/a/sa/b"),
            Part::TrustDomain
        );
        assert_eq!(
            part_of("spiffe://cluster.local:443/ns/a/sa/b"),
            Part::TrustDomain
        );
        assert_eq!(
            part_of("spiffe://user@cluster.local/ns/a/sa/b"),
            Part::TrustDomain
        );
        assert_eq!(
            part_of("spiffe://cluster..local/ns/a/sa/b"),
            Part::TrustDomain
        );
        assert_eq!(part_of("spiffe://cluster.local/ns//sa/b"), Part::Namespace);
        assert_eq!(
            part_of("spiffe://cluster.local/ns/a.b/sa/b"),
            Part::Namespace
        );
        assert_eq!(
            part_of("spiffe://cluster.local/ns/-a/sa/b"),
            Part::Namespace
        );
        assert_eq!(
            part_of("spiffe://cluster.local/ns/a/sa/B"),
            Part::ServiceAccount
        );
        assert_eq!(
            part_of("spiffe://cluster.local/ns/a/sa/b%41"),
            Part::ServiceAccount
        );
        assert_eq!(
            part_of("spiffe://cluster.local/ns/a/sa/b?x=1"),
            Part::ServiceAccount
        );
        assert_eq!(
            part_of("spiffe://cluster.local/ns/a/sa/b#f"),
            Part::ServiceAccount
        );
        let long = "a".repeat(64);
        assert_eq!(
            part_of(&format!("spiffe://cluster.local/ns/{long}/sa/b")),
            Part::Namespace
        );
    }

    #[test]
    fn error_message_names_input_part_and_reason() {
        let err = SpiffeId::parse("spiffe://cluster.local/ns/Default/sa/b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid SPIFFE id `spiffe://cluster.local/ns/Default/sa/b`: namespace `Default` has \
             `D`; only lower-case letters, digits and '-' are allowed"
        );
        let err = SpiffeId::new("cluster.local", "ns", "").unwrap_err();
        assert_eq!(err.part, Part::ServiceAccount);
    }
}
