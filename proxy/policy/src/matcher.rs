//! The value forms of Istio's security policies, compiled once: strings with a leading or
//! trailing `*`, paths (the same, plus `{*}`/`{**}` templates) and IP blocks.

use std::net::IpAddr;

/// Why a policy value could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0:?} is not an IP address or CIDR block")]
    Cidr(String),
    #[error("{0:?} is not a port number (0-65535)")]
    Port(String),
    #[error("{0:?} is not a valid path template: {1}")]
    PathTemplate(String, &'static str),
}

/// Istio's string forms: `exact`, `prefix*`, `*suffix`, and `*` (any non-empty value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// `*`: present and not empty.
    NonEmpty,
}

impl StrMatch {
    pub fn new(v: &str) -> Self {
        if v == "*" {
            StrMatch::NonEmpty
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.into())
        } else {
            StrMatch::Exact(v.into())
        }
    }

    /// As [`new`](Self::new), for values compared without regard to ASCII case (hosts): the
    /// pattern is lowered once so a match lowers nothing.
    pub fn new_ignore_case(v: &str) -> Self {
        Self::new(&v.to_ascii_lowercase())
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            StrMatch::Exact(e) => s == &**e,
            StrMatch::Prefix(p) => s.starts_with(&**p),
            StrMatch::Suffix(x) => s.ends_with(&**x),
            StrMatch::NonEmpty => !s.is_empty(),
        }
    }

    /// Matches `s` ignoring ASCII case; the pattern must come from
    /// [`new_ignore_case`](Self::new_ignore_case).
    pub fn matches_ignore_case(&self, s: &str) -> bool {
        let b = s.as_bytes();
        match self {
            StrMatch::Exact(e) => s.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => {
                b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            StrMatch::Suffix(x) => {
                b.len() >= x.len() && b[b.len() - x.len()..].eq_ignore_ascii_case(x.as_bytes())
            }
            StrMatch::NonEmpty => !s.is_empty(),
        }
    }
}

/// A header value pattern: as [`StrMatch`], except that `*` only asks for the header to be
/// present (Envoy's `present_match`), even with an empty value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMatch {
    Present,
    Value(StrMatch),
}

impl HeaderMatch {
    pub fn new(v: &str) -> Self {
        if v == "*" {
            HeaderMatch::Present
        } else {
            HeaderMatch::Value(StrMatch::new(v))
        }
    }

    /// `value` is the header's value, `None` when absent. Several values of one header are
    /// compared joined with `,`, as Envoy does.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (_, None) => false,
            (HeaderMatch::Present, Some(_)) => true,
            (HeaderMatch::Value(m), Some(v)) => m.matches(v),
        }
    }
}

/// One segment of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(Box<str>),
    /// `{*}`: exactly one non-empty segment.
    One,
    /// `{**}`: one or more segments, the rest of the path; only last.
    Rest,
}

/// An `operation.paths` value: Istio's string forms on the path without its query, or a path
/// template (`/users/{*}/orders`, `/static/{**}`) when the value holds `{*}` or `{**}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Str(StrMatch),
    Template(Box<[Segment]>),
}

impl PathMatch {
    pub fn new(v: &str) -> Result<Self, ValueError> {
        if !v.contains("{*}") && !v.contains("{**}") {
            return Ok(PathMatch::Str(StrMatch::new(v)));
        }
        let bad = |why| ValueError::PathTemplate(v.to_string(), why);
        let rest = v
            .strip_prefix('/')
            .ok_or_else(|| bad("must start with '/'"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "{*}" => Segment::One,
                "{**}" if i + 1 == parts.len() => Segment::Rest,
                "{**}" => return Err(bad("{**} must be the last segment")),
                p if p.contains('{') || p.contains('}') || p.contains('*') => {
                    return Err(bad("an operator must fill a whole segment"));
                }
                p => Segment::Literal(p.into()),
            };
            segments.push(seg);
        }
        Ok(PathMatch::Template(segments.into()))
    }

    /// `path` is the request path without its query string.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(segments) => {
                let Some(mut rest) = path.strip_prefix('/') else {
                    return false;
                };
                for (i, seg) in segments.iter().enumerate() {
                    if let Segment::Rest = seg {
                        // One or more segments, none of them empty.
                        return !rest.is_empty() && rest.split('/').all(|s| !s.is_empty());
                    }
                    let last = i + 1 == segments.len();
                    let (head, tail) = match rest.split_once('/') {
                        Some((h, t)) if !last => (h, t),
                        Some(_) => return false,
                        None if last => (rest, ""),
                        None => return false,
                    };
                    let ok = match seg {
                        Segment::Literal(l) => head == &**l,
                        Segment::One => !head.is_empty(),
                        Segment::Rest => unreachable!("handled above"),
                    };
                    if !ok {
                        return false;
                    }
                    rest = tail;
                }
                true
            }
        }
    }
}

/// An IP block: a single address or a CIDR range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(v: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::Cidr(v.to_string());
        let (addr, prefix) = match v.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (v, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address (what a dual-stack socket
    /// reports for an IPv4 peer) is compared as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_string_forms() {
        let cases: &[(&str, &str, bool)] = &[
            ("/a", "/a", true),
            ("/a", "/ab", false),
            ("/a*", "/ab", true),
            ("/a*", "/a", true),
            ("/a*", "/b", false),
            ("*.js", "/x/y.js", true),
            ("*.js", "/x/y.css", false),
            ("*", "x", true),
            ("*", "", false),
        ];
        for (pattern, value, want) in cases {
            assert_eq!(
                StrMatch::new(pattern).matches(value),
                *want,
                "{pattern} ~ {value}"
            );
        }
    }

    #[test]
    fn case_insensitive_forms_for_hosts() {
        assert!(StrMatch::new_ignore_case("Example.COM").matches_ignore_case("example.com"));
        assert!(StrMatch::new_ignore_case("*.Example.com").matches_ignore_case("API.EXAMPLE.COM"));
        assert!(StrMatch::new_ignore_case("API.*").matches_ignore_case("api.example.com"));
        assert!(!StrMatch::new_ignore_case("*.example.com").matches_ignore_case("example.org"));
        assert!(!StrMatch::new_ignore_case("example.com").matches_ignore_case("example.com:80"));
    }

    #[test]
    fn header_star_means_present() {
        assert!(HeaderMatch::new("*").matches(Some("")));
        assert!(!HeaderMatch::new("*").matches(None));
        assert!(HeaderMatch::new("Mozilla/*").matches(Some("Mozilla/5.0")));
        assert!(!HeaderMatch::new("Mozilla/*").matches(None));
    }

    #[test]
    fn path_templates() {
        let t = |p: &str| PathMatch::new(p).unwrap();
        assert!(t("/users/{*}/orders").matches("/users/7/orders"));
        assert!(!t("/users/{*}/orders").matches("/users//orders"));
        assert!(!t("/users/{*}/orders").matches("/users/7/8/orders"));
        assert!(!t("/users/{*}/orders").matches("/users/7/orders/9"));
        assert!(t("/static/{**}").matches("/static/a"));
        assert!(t("/static/{**}").matches("/static/a/b/c.css"));
        assert!(!t("/static/{**}").matches("/static/"));
        assert!(!t("/static/{**}").matches("/static"));
        assert!(t("/{*}").matches("/x"));
        assert!(!t("/{*}").matches("/"));
        assert!(PathMatch::new("/a/{**}/b").is_err());
        assert!(PathMatch::new("/a/x{*}").is_err());
        assert!(PathMatch::new("a/{*}").is_err());
    }

    #[test]
    fn cidr_blocks() {
        let c = |v: &str| Cidr::new(v).unwrap();
        let ip = |v: &str| v.parse::<IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.200.1.2")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!c("10.1.2.3").contains(ip("10.1.2.4")));
        assert!(c("0.0.0.0/0").contains(ip("192.168.1.1")));
        assert!(c("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(!c("fd00::/8").contains(ip("10.0.0.1")));
        assert!(c("::/0").contains(ip("2001:db8::1")));
        assert!(Cidr::new("10.0.0.0/33").is_err());
        assert!(Cidr::new("not-an-ip").is_err());
    }
}
