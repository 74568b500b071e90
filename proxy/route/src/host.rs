//! Host names: splitting an authority, normalising a host for lookup, and the index from host
//! names (exact and wildcard) to services.

use std::collections::HashMap;
use std::net::IpAddr;

/// The host part of an authority (`Host` header or `:authority`): the port is stripped, IPv6
/// brackets are removed (`[::1]:80` → `::1`), and any `user@` prefix is dropped. The case is
/// kept; see [`normalize_host`] for the form used in lookups.
pub fn authority_host(authority: &str) -> &str {
    // One pass over the bytes (every request comes here, often twice; authorities are short,
    // where a SIMD search costs more to set up than it saves): where the userinfo ends, and
    // the last colon after it with how many there are.
    let (mut start, mut colon, mut colons) = (0, 0, 0);
    for (i, b) in authority.bytes().enumerate() {
        match b {
            b'@' => (start, colons) = (i + 1, 0),
            b':' => (colon, colons) = (i, colons + 1),
            _ => {}
        }
    }
    let a = &authority[start..];
    if let Some(rest) = a.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        return match rest.find(']') {
            Some(end) => &rest[..end],
            None => rest,
        };
    }
    match colons {
        // One colon: a port to strip. More than one without brackets: a bare IPv6 address.
        1 => &authority[start..colon],
        _ => a,
    }
}

/// The port of an authority, when it names one (`example.com:8080` → 8080, `[::1]:80` → 80).
pub fn authority_port(authority: &str) -> Option<u16> {
    let a = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let tail = if a.starts_with('[') {
        &a[a.find(']')? + 1..]
    } else if a.matches(':').count() > 1 {
        return None;
    } else {
        a
    };
    tail.strip_prefix(':')
        .or_else(|| tail.rfind(':').map(|i| &tail[i + 1..]))
        .and_then(|p| p.parse().ok())
}

/// The form of a host name used for lookups: ASCII lower case, without one trailing dot
/// (`Reviews.Default.` → `reviews.default`). Host names are case-insensitive (RFC 4343).
pub fn normalize_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

/// Every request looks its host up here: a fast hasher instead of SipHash (a third of the
/// lookup's cost). Only the config inserts keys, so request-chosen names cannot flood a map.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Hosts and aliases to service indexes. Exact names win over wildcards; among wildcards the
/// longest suffix wins (`*.b.example.com` before `*.example.com` before `*`).
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    exact: Map<String, usize>,
    /// `*.example.com` is stored under `example.com`; `*` under the empty string.
    wildcard: Map<String, usize>,
    /// Virtual addresses: exact IPs and CIDR blocks.
    ips: Map<IpAddr, Vec<usize>>,
    cidrs: Vec<(Cidr, usize)>,
}

impl HostIndex {
    /// Adds a name for service `index`; the first service to claim a name keeps it.
    pub(crate) fn insert(&mut self, name: &str, index: usize) {
        let name = normalize_host(name);
        if name == "*" {
            self.wildcard.entry(String::new()).or_insert(index);
        } else if let Some(suffix) = name.strip_prefix("*.") {
            self.wildcard.entry(suffix.to_string()).or_insert(index);
        } else {
            self.exact.entry(name).or_insert(index);
        }
    }

    /// Adds a virtual address (`10.96.0.5`, `fd00::5`, or a CIDR `240.0.0.0/16`). Returns false
    /// when it is neither.
    pub(crate) fn insert_address(&mut self, address: &str, index: usize) -> bool {
        if address.contains('/') {
            let Some(cidr) = Cidr::parse(address) else {
                return false;
            };
            self.cidrs.push((cidr, index));
            // Longest prefix first (stable: equal prefixes keep config order).
            self.cidrs.sort_by_key(|c| std::cmp::Reverse(c.0.bits));
            return true;
        }
        match address.parse::<IpAddr>() {
            Ok(ip) => {
                self.ips.entry(canonical(ip)).or_default().push(index);
                true
            }
            Err(_) => false,
        }
    }

    /// The service for a host name (any case, no port).
    pub(crate) fn lookup(&self, host: &str) -> Option<usize> {
        let host = host.strip_suffix('.').unwrap_or(host);
        // Avoid allocating when the host is already lower case (the common case).
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // `a.b.example.com`: try `b.example.com`, `example.com`, `com`, then `*`. A wildcard
        // needs at least one label in front of it, so the host itself is never tried.
        let mut rest = host;
        // A byte search: `str::find` with a `char` sets up a searcher per call.
        while let Some(dot) = rest.bytes().position(|b| b == b'.') {
            rest = &rest[dot + 1..];
            if let Some(&i) = self.wildcard.get(rest) {
                return Some(i);
            }
        }
        self.wildcard.get("").copied()
    }

    /// The services owning a virtual address; `accepts` says whether a candidate serves the
    /// port. Exact addresses before CIDR blocks, longer prefixes first.
    pub(crate) fn lookup_address(
        &self,
        ip: IpAddr,
        accepts: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let ip = canonical(ip);
        if let Some(found) = self
            .ips
            .get(&ip)
            .and_then(|c| c.iter().copied().find(|&i| accepts(i)))
        {
            return Some(found);
        }
        self.cidrs
            .iter()
            .filter(|(cidr, _)| cidr.contains(ip))
            .map(|&(_, i)| i)
            .find(|&i| accepts(i))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are looked up as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An address block: `10.0.0.0/8`, or one address (`10.0.0.1` is `10.0.0.1/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, Some(bits.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let ip = canonical(ip);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Self { net: ip, bits })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (canonical(ip), self.net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_host_strips_ports_brackets_and_userinfo() {
        assert_eq!(authority_host("reviews"), "reviews");
        assert_eq!(authority_host("reviews:9080"), "reviews");
        assert_eq!(authority_host("Reviews.Default:9080"), "Reviews.Default");
        assert_eq!(authority_host("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(authority_host("[::1]:80"), "::1");
        assert_eq!(authority_host("[::1]"), "::1");
        assert_eq!(authority_host("[fd00::1"), "fd00::1");
        assert_eq!(authority_host("::1"), "::1");
        assert_eq!(authority_host("user:pw@example.com:8443"), "example.com");
        assert_eq!(authority_host(""), "");
    }

    #[test]
    fn authority_port_reads_the_port() {
        assert_eq!(authority_port("reviews:9080"), Some(9080));
        assert_eq!(authority_port("reviews"), None);
        assert_eq!(authority_port("[::1]:80"), Some(80));
        assert_eq!(authority_port("[::1]"), None);
        assert_eq!(authority_port("::1"), None);
        assert_eq!(authority_port("a:notaport"), None);
        assert_eq!(authority_port("u@h:81"), Some(81));
    }

    #[test]
    fn normalize_host_lowers_and_drops_the_root_dot() {
        assert_eq!(
            normalize_host("Reviews.Default.SVC."),
            "reviews.default.svc"
        );
        assert_eq!(normalize_host("*.Example.com"), "*.example.com");
    }

    #[test]
    fn exact_names_win_then_longest_wildcard_suffix() {
        let mut idx = HostIndex::default();
        idx.insert("*", 0);
        idx.insert("*.example.com", 1);
        idx.insert("*.api.example.com", 2);
        idx.insert("www.api.example.com", 3);
        idx.insert("WWW.API.EXAMPLE.COM", 4); // taken already: first claim wins
        assert_eq!(idx.lookup("www.api.example.com"), Some(3));
        assert_eq!(idx.lookup("WWW.Api.Example.Com."), Some(3));
        assert_eq!(idx.lookup("v1.api.example.com"), Some(2));
        assert_eq!(idx.lookup("a.b.api.example.com"), Some(2));
        assert_eq!(idx.lookup("shop.example.com"), Some(1));
        // A wildcard needs a label in front of its suffix.
        assert_eq!(idx.lookup("example.com"), Some(0));
        assert_eq!(idx.lookup("other.org"), Some(0));

        let mut idx = HostIndex::default();
        idx.insert("*.example.com", 0);
        assert_eq!(idx.lookup("example.com"), None);
        assert_eq!(idx.lookup("a.example.com"), Some(0));
        assert_eq!(idx.lookup("aexample.com"), None);
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.255.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let one = Cidr::parse("10.0.0.1").unwrap();
        assert!(one.contains("10.0.0.1".parse().unwrap()));
        assert!(!one.contains("10.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("x/8"), None);
        assert_eq!(Cidr::parse("10.0.0.0/x"), None);
    }

    #[test]
    fn addresses_exact_then_longest_cidr_and_port_filter() {
        let mut idx = HostIndex::default();
        assert!(idx.insert_address("10.96.0.5", 0));
        assert!(idx.insert_address("10.96.0.5", 1));
        assert!(idx.insert_address("240.0.0.0/8", 2));
        assert!(idx.insert_address("240.1.0.0/16", 3));
        assert!(idx.insert_address("fd00::/64", 4));
        assert!(!idx.insert_address("not-an-ip", 5));
        assert!(!idx.insert_address("10.0.0.0/33", 5));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(idx.lookup_address(ip("10.96.0.5"), |_| true), Some(0));
        assert_eq!(idx.lookup_address(ip("10.96.0.5"), |i| i == 1), Some(1));
        assert_eq!(
            idx.lookup_address(ip("::ffff:10.96.0.5"), |_| true),
            Some(0)
        );
        assert_eq!(idx.lookup_address(ip("240.1.2.3"), |_| true), Some(3));
        assert_eq!(idx.lookup_address(ip("240.2.2.3"), |_| true), Some(2));
        assert_eq!(idx.lookup_address(ip("fd00::9"), |_| true), Some(4));
        assert_eq!(idx.lookup_address(ip("10.96.0.6"), |_| true), None);
        assert_eq!(idx.lookup_address(ip("0.0.0.0"), |_| true), None);
    }
}
