//! What `mizzen-proxy init` is asked to capture, parsed from its flags: the values the injector
//! writes (`docs/injection.md`). Every list flag takes a comma-separated list, `*` for all, or
//! the empty string for none, so "not given" and "nothing" can never be confused.

use std::{fmt, net::IpAddr, str::FromStr};

/// A value of a list flag: everything, or exactly these (possibly none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Set<T> {
    /// `*`.
    All,
    /// A comma-separated list; empty means none. Duplicates removed, first order kept.
    Only(Vec<T>),
}

impl<T> Set<T> {
    pub fn none() -> Self {
        Set::Only(Vec::new())
    }

    /// Nothing at all (`""`): the flag turns its part of the capture off.
    pub fn is_empty(&self) -> bool {
        matches!(self, Set::Only(v) if v.is_empty())
    }

    /// The listed values; nothing for `*`.
    pub fn listed(&self) -> &[T] {
        match self {
            Set::All => &[],
            Set::Only(v) => v,
        }
    }
}

/// Why a flag's value was refused; names the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{0:?} is not a port number (1 to 65535)")]
    Port(String),
    #[error("{0:?} is not a CIDR range (ADDRESS/PREFIX, e.g. 10.96.0.0/12 or fd00::/8)")]
    Cidr(String),
    #[error("{value:?}: prefix length {prefix} is longer than {max} bits")]
    Prefix { value: String, prefix: u8, max: u8 },
    #[error("{0:?}: `*` cannot be combined with other values")]
    MixedAll(String),
}

impl<T: FromStr<Err = SpecError> + PartialEq> FromStr for Set<T> {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        if s == "*" {
            return Ok(Set::All);
        }
        let mut values = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                return Err(SpecError::MixedAll(s.to_string()));
            }
            let value = item.parse()?;
            if !values.contains(&value) {
                values.push(value);
            }
        }
        Ok(Set::Only(values))
    }
}

/// A TCP port, 1 to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port(pub u16);

impl FromStr for Port {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(SpecError::Port(s.to_string())),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An address range. The address is kept as written (iptables masks it itself), so the rules
/// say what the pod's annotation said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl FromStr for Cidr {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = || SpecError::Cidr(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(SpecError::Prefix {
                value: s.to_string(),
                prefix,
                max,
            });
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Everything the rules are made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The proxy's UID; its traffic is never captured (so the proxy's own upstream
    /// connections do not loop back into it).
    pub proxy_uid: u32,
    /// The proxy's GID, skipped the same way.
    pub proxy_gid: u32,
    pub inbound_capture_port: u16,
    pub outbound_capture_port: u16,
    pub include_inbound_ports: Set<Port>,
    pub exclude_inbound_ports: Set<Port>,
    pub include_outbound_ip_ranges: Set<Cidr>,
    pub exclude_outbound_ip_ranges: Set<Cidr>,
    pub include_outbound_ports: Set<Port>,
    pub exclude_outbound_ports: Set<Port>,
}

impl Spec {
    /// What the injector passes for a pod without traffic annotations.
    pub fn injector_default() -> Self {
        Spec {
            proxy_uid: 1337,
            proxy_gid: 1337,
            inbound_capture_port: 15006,
            outbound_capture_port: 15001,
            include_inbound_ports: Set::All,
            exclude_inbound_ports: Set::Only(vec![Port(15020), Port(15021), Port(15090)]),
            include_outbound_ip_ranges: Set::All,
            exclude_outbound_ip_ranges: Set::none(),
            include_outbound_ports: Set::none(),
            exclude_outbound_ports: Set::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_star_empty_and_duplicates() {
        assert_eq!("*".parse::<Set<Port>>().unwrap(), Set::All);
        assert_eq!("".parse::<Set<Port>>().unwrap(), Set::none());
        assert_eq!(
            "80,443,80".parse::<Set<Port>>().unwrap(),
            Set::Only(vec![Port(80), Port(443)])
        );
        assert_eq!(
            "10.0.0.0/8,fd00::/8".parse::<Set<Cidr>>().unwrap().listed(),
            &[
                "10.0.0.0/8".parse::<Cidr>().unwrap(),
                "fd00::/8".parse::<Cidr>().unwrap()
            ]
        );
    }

    #[test]
    fn bad_values_name_themselves() {
        assert_eq!(
            "80,http".parse::<Set<Port>>().unwrap_err().to_string(),
            "\"http\" is not a port number (1 to 65535)"
        );
        assert!("0".parse::<Set<Port>>().is_err());
        assert!("65536".parse::<Set<Port>>().is_err());
        assert_eq!(
            "10.0.0.1".parse::<Cidr>().unwrap_err(),
            SpecError::Cidr("10.0.0.1".into())
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>().unwrap_err().to_string(),
            "\"10.0.0.0/33\": prefix length 33 is longer than 32 bits"
        );
        assert!("*,80".parse::<Set<Port>>().is_err());
    }
}
